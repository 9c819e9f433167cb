//! Every interleaving of the shared handle's races, explored by `loom` on the real code
//! (`Shutdown`, `Conn` and their mailboxes and events, on loom's mutex and atomics):
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test -p lameduck-driver --test loom --release
//! ```
//!
//! A lost wake-up shows up as loom's deadlock report (every thread blocked), a double close
//! or a wrong count as a failed assertion in some interleaving. The clock is frozen and the
//! runtime's timer never fires, so every drain here must end through events alone.
#![cfg(loom)]

use std::sync::OnceLock;
use std::time::Instant;

use lameduck_core::{Config, ConnState, Counts, DrainReport, Error, IdlePolicy};
use lameduck_driver::{Shutdown, Timers};
use loom::thread;

/// A frozen clock, a timer that never fires, no spawner (the drain waiters drive).
fn runtime() -> Timers {
    Timers {
        now: || {
            static ORIGIN: OnceLock<Instant> = OnceLock::new();
            *ORIGIN.get_or_init(Instant::now)
        },
        sleep_until: |_| Box::pin(std::future::pending()),
        spawn: |_| false,
        watch_signals: |_, _| Err(std::io::Error::other("no signals here")),
    }
}

fn shutdown() -> Shutdown {
    Shutdown::new(
        Config::default().with_idle_policy(IdlePolicy::CloseImmediately),
        runtime(),
    )
}

/// A fresh handle with one connection, mid-request.
fn an_active_connection() -> (Shutdown, lameduck_driver::Conn) {
    let shutdown = shutdown();
    let conn = shutdown.accept().unwrap();
    conn.request_started().unwrap();
    (shutdown, conn)
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    // Bounded preemptions: the standard loom trade-off (bugs need few preemptions), and it
    // keeps each model to seconds.
    builder.preemption_bound = Some(3);
    builder.check(f);
}

fn assert_accounted(report: &DrainReport, shutdown: &Shutdown) {
    assert_eq!(shutdown.counts(), Counts::default(), "a connection leaked");
    assert_eq!(report.accounted(), report.total(), "{report:?}");
    assert!(report.drained_at.is_some(), "{report:?}");
}

/// The last connection finishes and closes on one thread while the drain begins and is
/// awaited on another: the drain sees the close whichever comes first.
#[test]
fn the_last_close_racing_the_drain_start_is_never_missed() {
    model(|| {
        let shutdown = shutdown();
        let listener = shutdown.register_listener();
        let conn = shutdown.accept().unwrap();
        conn.request_started().unwrap();
        let worker = thread::spawn(move || {
            // The response is out; the connection goes.
            let _ = conn.request_finished();
            drop(conn);
        });
        assert!(shutdown.begin());
        drop(listener); // the backlog is drained
        let report = loom::future::block_on(shutdown.drained());
        worker.join().unwrap();
        assert_accounted(&report, &shutdown);
        assert_eq!(
            report.at_begin.total(),
            report.finished + report.closed_idle
        );
        assert_eq!(report.cut, Counts::default());
    });
}

/// A listener accepts while another thread begins the shutdown: the connection is either
/// tracked (and then drained and counted) or refused with `NotAccepting` — never accepted
/// untracked, never left out of the report.
#[test]
fn accept_racing_begin_shutdown_is_tracked_or_refused() {
    model(|| {
        let shutdown = shutdown();
        let listener = shutdown.register_listener();
        let acceptor = {
            let shutdown = shutdown.clone();
            thread::spawn(move || match shutdown.accept() {
                Ok(conn) => {
                    // Serve until the drain asks this connection to finish: it is open when
                    // the shutdown begins, or accepted during it — counted either way.
                    conn.request_started().unwrap();
                    loom::future::block_on(conn.notices().wait_notice());
                    conn.request_finished().unwrap();
                    assert_eq!(conn.state(), ConnState::Idle);
                    drop(conn);
                    true
                }
                Err(e) => {
                    assert_eq!(e, Error::NotAccepting);
                    false
                }
            })
        };
        shutdown.begin();
        drop(listener);
        let report = loom::future::block_on(shutdown.drained());
        let accepted = acceptor.join().unwrap();
        assert_accounted(&report, &shutdown);
        assert_eq!(
            report.at_begin.total() + report.accepted_during,
            usize::from(accepted)
        );
    });
}

/// Two tasks wait for the drain at once while the last connection closes: both wake, both
/// get the same report.
#[test]
fn two_drain_waiters_both_wake() {
    model(|| {
        let (shutdown, conn) = an_active_connection();
        shutdown.begin();
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let shutdown = shutdown.clone();
                thread::spawn(move || loom::future::block_on(shutdown.drained()))
            })
            .collect();
        drop(conn);
        let reports: Vec<DrainReport> = waiters.into_iter().map(|w| w.join().unwrap()).collect();
        assert_eq!(reports[0], reports[1]);
        assert_accounted(&reports[0], &shutdown);
        assert_eq!(reports[0].finished, 1);
    });
}

/// A forced close (a second Ctrl-C) races a connection closing on its own: the connection
/// is closed once — counted either finished or cut, never both, never neither.
#[test]
fn force_close_racing_a_close_counts_the_connection_once() {
    model(|| {
        let (shutdown, conn) = an_active_connection();
        let closer = thread::spawn(move || drop(conn));
        shutdown.force_close();
        let report = loom::future::block_on(shutdown.drained());
        closer.join().unwrap();
        assert_accounted(&report, &shutdown);
        // Closed before the force (not in the report) or during it: finished or cut, once.
        assert_eq!(
            report.finished + report.cut.total(),
            report.at_begin.total(),
            "{report:?}"
        );
    });
}

/// A connection's task waits for its close notice while another thread forces the close:
/// the notice always wakes it (no lost wake-up on the mailbox), and the drain ends once the
/// task lets the connection go.
#[test]
fn a_close_notice_always_wakes_the_waiting_task() {
    model(|| {
        let (shutdown, conn) = an_active_connection();
        let task = thread::spawn(move || {
            loom::future::block_on(conn.notices().wait_close());
            drop(conn);
        });
        shutdown.force_close();
        let report = loom::future::block_on(shutdown.drained());
        task.join().unwrap();
        assert_accounted(&report, &shutdown);
        assert_eq!(report.cut.active, 1, "{report:?}");
    });
}

/// The poll-based watcher a protocol driver uses: a close forced on another thread always
/// wakes it, whether it lands before the watcher listens, between, or after.
#[test]
fn a_notice_watch_never_misses_the_close() {
    model(|| {
        let (shutdown, conn) = an_active_connection();
        let mut watch = conn.notices().watch();
        let forcer = {
            let shutdown = shutdown.clone();
            thread::spawn(move || shutdown.force_close())
        };
        let notice = loom::future::block_on(std::future::poll_fn(|cx| {
            watch.poll_notice(cx, lameduck_driver::Notice::Close)
        }));
        assert_eq!(notice, lameduck_driver::Notice::Close);
        forcer.join().unwrap();
        drop(conn);
    });
}

/// The watcher of a connection first told to finish, then (the deadline) to close: the
/// second notice wakes it too, though the first one used up its listener.
#[test]
fn a_notice_watch_sees_the_close_after_the_finish() {
    model(|| {
        let (shutdown, conn) = an_active_connection();
        let mut watch = conn.notices().watch();
        let driver = {
            let shutdown = shutdown.clone();
            thread::spawn(move || {
                shutdown.begin(); // FinishThenClose
                shutdown.force_close(); // Close
            })
        };
        // One task (one waker) waits for both, as a protocol driver does.
        let mut told = false;
        let close = loom::future::block_on(std::future::poll_fn(|cx| {
            loop {
                let at_least = if told {
                    lameduck_driver::Notice::Close
                } else {
                    lameduck_driver::Notice::FinishThenClose
                };
                match watch.poll_notice(cx, at_least) {
                    std::task::Poll::Ready(lameduck_driver::Notice::Close) => {
                        return std::task::Poll::Ready(lameduck_driver::Notice::Close);
                    }
                    std::task::Poll::Ready(_) => told = true,
                    std::task::Poll::Pending => return std::task::Poll::Pending,
                }
            }
        }));
        assert_eq!(close, lameduck_driver::Notice::Close);
        driver.join().unwrap();
        drop(conn);
    });
}

/// While Serving, a response's end is a compare-and-swap on the connection's own state, no
/// lock. Here it races the drain's start: the lifecycle must still learn the connection
/// went Idle — `begin` reads the swapped state, or the swap fails on `begin`'s mark and
/// goes through the lifecycle — so that the idle policy closes it and the drain can end.
#[test]
fn a_lock_free_transition_racing_begin_reaches_the_lifecycle() {
    model(|| {
        let (shutdown, conn) = an_active_connection();
        let worker = thread::spawn(move || {
            conn.request_finished().unwrap();
            conn
        });
        assert!(shutdown.begin());
        let conn = worker.join().unwrap();
        assert_eq!(conn.state(), ConnState::Idle);
        assert_eq!(shutdown.counts().idle, 1, "{:?}", shutdown.counts());
        // CloseImmediately: an Idle connection is told to close, whichever came first.
        assert_eq!(conn.notice(), Some(lameduck_driver::Notice::Close));
        drop(conn);
        let report = loom::future::block_on(shutdown.drained());
        assert_eq!(report.closed_idle, 1, "{report:?}");
        assert_accounted(&report, &shutdown);
    });
}

/// A request starting lock-free on an Idle connection while the drain begins: started
/// either way (the connection is still open), and the lifecycle counts it where it is.
#[test]
fn a_request_starting_as_the_drain_begins_is_counted_where_it_is() {
    model(|| {
        let (shutdown, conn) = an_active_connection();
        conn.request_finished().unwrap();
        let worker = thread::spawn(move || {
            let started = conn.request_started();
            (conn, started)
        });
        assert!(shutdown.begin());
        let (conn, started) = worker.join().unwrap();
        assert!(started.is_ok(), "{started:?}");
        assert_eq!(conn.state(), ConnState::Active);
        let counts = shutdown.counts();
        assert_eq!((counts.active, counts.idle), (1, 0), "{counts:?}");
        drop(conn);
        let report = loom::future::block_on(shutdown.drained());
        assert_accounted(&report, &shutdown);
    });
}
