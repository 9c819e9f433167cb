//! Scale, in one process, without sockets (a socket per connection needs an fd; this
//! machine's hard limit is 20,000): N tracked connections, for `benches/run.sh`.
//!
//! `scale N...` prints, for each N, one CSV line:
//!
//! `conns,core_bytes_per_conn,handle_bytes_per_conn,core_sweep_ms,handle_sweep_ms`
//!
//! - `core_bytes_per_conn`: heap of a `Lifecycle` holding N connections (Idle), per
//!   connection;
//! - `handle_bytes_per_conn`: heap of the whole shared handle (`lameduck-driver`'s `Shutdown`:
//!   lifecycle, mailboxes, each `Conn`), per connection;
//! - `core_sweep_ms`: `begin_shutdown` plus pulling every action it produces (N closes);
//! - `handle_sweep_ms`: `Shutdown::begin`: the same, plus posting each close to its
//!   connection's mailbox and waking its task.

use std::time::{Duration, Instant as StdInstant};

use lameduck::{Shutdown, Timers};
use lameduck_core::{Config, IdlePolicy, Instant, Lifecycle};
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};

#[global_allocator]
static HEAP: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

fn live() -> i64 {
    let s = HEAP.stats();
    s.bytes_allocated as i64 - s.bytes_deallocated as i64
}

fn config() -> Config {
    Config::default().with_idle_policy(IdlePolicy::CloseImmediately)
}

fn core(n: usize) -> (i64, Duration) {
    let before = live();
    let mut lc = Lifecycle::new(config());
    let mut t = 0u64;
    for _ in 0..n {
        t += 1;
        let id = lc.accept(Instant::from_nanos(t)).unwrap();
        lc.request_started(id, Instant::from_nanos(t)).unwrap();
        lc.request_finished(id, Instant::from_nanos(t)).unwrap();
    }
    let bytes = live() - before;
    let start = StdInstant::now();
    lc.begin_shutdown(Instant::from_nanos(t + 1)).unwrap();
    let mut actions = 0;
    while lc.poll_action().is_some() {
        actions += 1;
    }
    let took = start.elapsed();
    assert!(actions >= n, "{actions} actions for {n} connections");
    (bytes, took)
}

fn handle(n: usize) -> (i64, Duration) {
    let runtime = Timers {
        now: StdInstant::now,
        sleep_until: |_| Box::pin(std::future::pending()),
        spawn: |_| false,
        watch_signals: |_, _| Err(std::io::Error::other("no signals here")),
    };
    let before = live();
    let shutdown = Shutdown::new(config(), runtime);
    let conns: Vec<_> = (0..n)
        .map(|_| {
            let conn = shutdown.accept().unwrap();
            conn.request_started().unwrap();
            conn.request_finished().unwrap();
            conn
        })
        .collect();
    let bytes = live() - before;
    let start = StdInstant::now();
    shutdown.begin();
    let took = start.elapsed();
    assert!(
        conns
            .iter()
            .all(|c| c.notice() == Some(lameduck::Notice::Close))
    );
    (bytes, took)
}

fn main() {
    for n in std::env::args()
        .skip(1)
        .map(|a| a.parse::<usize>().unwrap())
    {
        let (core_bytes, core_sweep) = core(n);
        let (handle_bytes, handle_sweep) = handle(n);
        println!(
            "{n},{:.1},{:.1},{:.3},{:.3}",
            core_bytes as f64 / n as f64,
            handle_bytes as f64 / n as f64,
            core_sweep.as_secs_f64() * 1e3,
            handle_sweep.as_secs_f64() * 1e3,
        );
    }
}
