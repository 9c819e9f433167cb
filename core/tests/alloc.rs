//! No event allocates in steady state: once the slab has grown to the peak number of live
//! connections, accept → request → idle → request → close reuses slots and allocates
//! nothing. Runs without the test harness so that no other thread allocates meanwhile.

use std::alloc::System;

use lameduck_core::{Config, ConnId, Instant, Lifecycle};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const LIVE: usize = 10_000;
const CYCLES: u64 = 200_000;

fn cycle(lc: &mut Lifecycle, live: &mut [ConnId], i: u64) {
    let now = Instant::from_nanos(i);
    let slot = (i as usize) % live.len();
    lc.closed(live[slot], now).unwrap();
    let id = lc.accept(now).unwrap();
    lc.request_started(id, now).unwrap();
    lc.request_finished(id, now).unwrap();
    lc.request_started(id, now).unwrap();
    lc.request_finished(id, now).unwrap();
    live[slot] = id;
}

fn main() {
    let mut lc = Lifecycle::new(Config::default());
    let mut live: Vec<ConnId> = (0..LIVE)
        .map(|_| lc.accept(Instant::ZERO).unwrap())
        .collect();
    // Warm up: every slot has been freed and reused at least once.
    for i in 0..LIVE as u64 * 2 {
        cycle(&mut lc, &mut live, i);
    }

    let region = Region::new(GLOBAL);
    for i in 0..CYCLES {
        cycle(&mut lc, &mut live, LIVE as u64 * 2 + i);
    }
    let stats = region.change();

    assert_eq!(lc.counts().idle, LIVE);
    let events = CYCLES * 6;
    println!(
        "alloc: {events} events with {LIVE} live connections: {} allocations, {} reallocations",
        stats.allocations, stats.reallocations
    );
    assert_eq!(stats.allocations, 0, "steady-state events allocated");
    assert_eq!(stats.reallocations, 0, "steady-state events reallocated");
    println!("1 passed, 0 failed");
}
