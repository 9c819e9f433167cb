//! Nanoseconds per connection event, with 1, 10k and 100k live connections.
//!
//! Each iteration runs one full cycle on one slot — close an old connection, accept a new
//! one, request started, finished, started, finished — keeping the live count constant, so
//! a figure is the cost of one event (`Throughput::Elements(6)`). The baseline, measured in
//! the same run, is the tracker servers hand-roll: a `HashMap` from connection number to
//! state plus per-state counters.
//!
//! `cargo bench -p lameduck-core --bench lifecycle`

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use lameduck_core::{Config, ConnId, Instant, Lifecycle};

const EVENTS_PER_CYCLE: u64 = 6;

struct Core {
    lc: Lifecycle,
    live: Vec<ConnId>,
    next: usize,
    t: u64,
}

impl Core {
    fn new(n: usize) -> Core {
        let mut lc = Lifecycle::with_capacity(Config::default(), n);
        let live = (0..n).map(|_| lc.accept(Instant::ZERO).unwrap()).collect();
        Core {
            lc,
            live,
            next: 0,
            t: 0,
        }
    }

    fn cycle(&mut self) {
        self.t += 1;
        let now = Instant::from_nanos(self.t);
        let lc = &mut self.lc;
        let slot = self.next;
        self.next = (self.next + 1) % self.live.len();
        lc.closed(self.live[slot], now).unwrap();
        let id = lc.accept(now).unwrap();
        lc.request_started(id, now).unwrap();
        lc.request_finished(id, now).unwrap();
        lc.request_started(id, now).unwrap();
        lc.request_finished(id, now).unwrap();
        self.live[slot] = black_box(id);
    }
}

/// What a server hand-rolls: connection number → state, and a counter per state.
struct Naive {
    states: HashMap<u64, u8>,
    counts: [usize; 4],
    live: Vec<u64>,
    next_id: u64,
    next: usize,
}

impl Naive {
    fn new(n: usize) -> Naive {
        let mut naive = Naive {
            states: HashMap::with_capacity(n),
            counts: [0; 4],
            live: Vec::with_capacity(n),
            next_id: 0,
            next: 0,
        };
        for _ in 0..n {
            let id = naive.accept();
            naive.live.push(id);
        }
        naive
    }

    fn accept(&mut self) -> u64 {
        self.next_id += 1;
        self.states.insert(self.next_id, 0);
        self.counts[0] += 1;
        self.next_id
    }

    fn set(&mut self, id: u64, to: u8) {
        let state = self.states.get_mut(&id).unwrap();
        self.counts[*state as usize] -= 1;
        self.counts[to as usize] += 1;
        *state = to;
    }

    fn cycle(&mut self) {
        let slot = self.next;
        self.next = (self.next + 1) % self.live.len();
        let old = self.states.remove(&self.live[slot]).unwrap();
        self.counts[old as usize] -= 1;
        let id = self.accept();
        self.set(id, 1);
        self.set(id, 2);
        self.set(id, 1);
        self.set(id, 2);
        self.live[slot] = black_box(id);
    }
}

fn per_event(c: &mut Criterion) {
    let mut group = c.benchmark_group("event");
    group.throughput(Throughput::Elements(EVENTS_PER_CYCLE));
    for live in [1usize, 10_000, 100_000] {
        group.bench_with_input(BenchmarkId::new("lameduck-core", live), &live, |b, &n| {
            let mut core = Core::new(n);
            b.iter(|| core.cycle());
        });
        group.bench_with_input(
            BenchmarkId::new("hashmap-baseline", live),
            &live,
            |b, &n| {
                let mut naive = Naive::new(n);
                b.iter(|| naive.cycle());
            },
        );
    }
    group.finish();
}

/// `begin_shutdown` plus pulling every resulting action, with 100k live connections.
fn shutdown_sweep(c: &mut Criterion) {
    let mut group = c.benchmark_group("shutdown-sweep");
    group.sample_size(20);
    for live in [10_000usize, 100_000] {
        group.bench_with_input(BenchmarkId::from_parameter(live), &live, |b, &n| {
            b.iter_batched(
                || {
                    let mut core = Core::new(n);
                    for _ in 0..n {
                        core.cycle();
                    }
                    core.lc
                },
                |mut lc| {
                    lc.begin_shutdown(Instant::from_nanos(u64::MAX / 2))
                        .unwrap();
                    let mut actions = 0usize;
                    while lc.poll_action().is_some() {
                        actions += 1;
                    }
                    assert_eq!(actions, n + 1);
                    lc
                },
                criterion::BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, per_event, shutdown_sweep);
criterion_main!(benches);
