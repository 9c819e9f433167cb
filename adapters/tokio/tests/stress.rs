//! Many threads open, use and close connections on one shutdown handle while the shutdown
//! begins, round after round. Whatever the interleaving, the live counts return to zero,
//! every connection is in the report exactly once, nothing is cut, and the drain completes.

use std::sync::Barrier;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::runtime::Handle;

use lameduck::{Config, ConnState, Counts, IdlePolicy, Notice, Shutdown};

const THREADS: usize = 8;
const ROUNDS: u64 = 150;

/// A small deterministic generator (xorshift), one per thread and round.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// One worker: accepts until the listener is gone, and does one of five things with each
/// connection, answering the lifecycle's notices as a server must.
fn worker(shutdown: &Shutdown, mut rng: Rng, accepted: &AtomicUsize, rt: &Handle) {
    while let Ok(conn) = shutdown.accept() {
        accepted.fetch_add(1, Ordering::Relaxed);
        match rng.next() % 5 {
            // The client connected and left without a word.
            0 => {}
            // One request, then the client leaves.
            1 => {
                let _ = conn.request_started();
                let _ = conn.request_finished();
            }
            // Keep-alive: requests until the lifecycle asks to finish (or to close).
            2 => loop {
                if conn.request_started().is_err() {
                    break;
                }
                std::thread::yield_now();
                let _ = conn.request_finished();
                if conn.should_close_after_response() {
                    break;
                }
            },
            // A silent client: New until the lifecycle closes it as stale.
            3 => rt.block_on(conn.notices().wait_close()),
            // A keep-alive client gone quiet: Idle until closed (or told to finish).
            _ => {
                let _ = conn.request_started();
                let _ = conn.request_finished();
                let notice = rt.block_on(conn.notices().wait_notice());
                assert!(matches!(notice, Notice::FinishThenClose | Notice::Close));
                assert_ne!(conn.state(), ConnState::Active);
            }
        }
        // Dropping the connection reports it Closed.
    }
}

#[test]
fn threads_racing_the_shutdown_always_drain_to_zero() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let config = Config::default()
        .with_stale_new(Duration::from_millis(20))
        .with_idle_policy(IdlePolicy::CloseImmediately)
        .with_deadline(Some(Duration::from_secs(30)));
    let mut total = 0;
    for round in 0..ROUNDS {
        let _entered = runtime.enter();
        let shutdown = lameduck::tokio::shutdown(config);
        let listener = shutdown.register_listener();
        let accepted = AtomicUsize::new(0);
        let start = Barrier::new(THREADS + 1);
        let report = std::thread::scope(|s| {
            for t in 0..THREADS {
                let (shutdown, accepted, start) = (&shutdown, &accepted, &start);
                let rt = runtime.handle().clone();
                s.spawn(move || {
                    start.wait();
                    worker(shutdown, Rng(round * 1000 + t as u64 + 1), accepted, &rt);
                });
            }
            start.wait();
            // Let the workers get going for a varying while (a deliberate instant).
            std::thread::sleep(Duration::from_micros(round * 37 % 2000));
            shutdown.begin();
            drop(listener); // the accept loops end: accept now fails with NotAccepting
            runtime.block_on(async {
                tokio::time::timeout(Duration::from_secs(20), shutdown.drained())
                    .await
                    .unwrap_or_else(|_| {
                        panic!("round {round}: no drain in 20 s: {:?}", shutdown.counts())
                    })
            })
        });
        assert_eq!(shutdown.counts(), Counts::default(), "round {round}");
        assert_eq!(
            report.accounted(),
            report.total(),
            "round {round}: {report:?}"
        );
        assert!(report.is_clean(), "round {round}: {report:?}");
        assert!(
            report.total() <= accepted.load(Ordering::Relaxed),
            "round {round}: more reported than accepted: {report:?}"
        );
        total += accepted.load(Ordering::Relaxed);
    }
    assert!(
        total > ROUNDS as usize * THREADS,
        "the workers barely ran: {total}"
    );
}
