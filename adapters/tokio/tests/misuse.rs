//! Calls in the wrong order on the shared handles: every one is an error (or a no-op that
//! says so), none panics, and the counts and the report stay exact.

use std::time::Duration;

use lameduck::{Config, ConnState, Counts, Phase};
use lameduck_core::Error;

fn config() -> Config {
    Config::default().with_deadline(Some(Duration::from_secs(5)))
}

#[tokio::test]
async fn events_out_of_order_are_errors_that_change_nothing() {
    let shutdown = lameduck::tokio::shutdown(config());
    let conn = shutdown.accept().unwrap();
    // The end of a request that never started.
    assert!(matches!(
        conn.request_finished(),
        Err(Error::InvalidTransition { .. })
    ));
    // An upgrade without a request.
    assert!(conn.upgraded().is_err());
    assert_eq!(conn.state(), ConnState::New);
    assert_eq!(shutdown.counts().new, 1);
    conn.request_started().unwrap();
    // A request that starts twice.
    assert!(conn.request_started().is_err());
    assert_eq!(conn.state(), ConnState::Active);
    assert_eq!(
        shutdown.counts(),
        Counts {
            active: 1,
            ..Counts::default()
        }
    );

    // Events through a handle that outlives its connection.
    let handle = conn.handle();
    let id = handle.id();
    drop(conn);
    assert_eq!(handle.request_finished(), Err(Error::Closed(id)));
    assert_eq!(handle.request_started(), Err(Error::Closed(id)));
    assert_eq!(handle.upgraded(), Err(Error::Closed(id)));
    handle.data_received();
    assert_eq!(handle.state(), ConnState::Closed);
    assert_eq!(shutdown.counts(), Counts::default());
}

#[tokio::test]
async fn a_second_begin_and_a_handle_used_after_the_drain_are_harmless() {
    let shutdown = lameduck::tokio::shutdown(config());
    let listener = shutdown.register_listener();
    let conn = shutdown.accept().unwrap();
    conn.request_started().unwrap();
    assert!(shutdown.begin());
    assert!(!shutdown.begin(), "the second begin reports it had begun");
    drop(listener);
    // Accept after every listener closed: refused, not tracked.
    assert_eq!(shutdown.accept().err(), Some(Error::NotAccepting));
    conn.request_finished().unwrap();
    drop(conn);
    let report = tokio::time::timeout(Duration::from_secs(5), shutdown.drained())
        .await
        .unwrap();
    assert_eq!(report.finished, 1, "{report:?}");
    assert_eq!(
        report.total(),
        1,
        "the refused accept is not counted: {report:?}"
    );

    // After the drain: more begins, a force, another listener, another wait.
    assert!(!shutdown.begin());
    shutdown.force_close();
    assert_eq!(shutdown.accept().err(), Some(Error::NotAccepting));
    let late_listener = shutdown.register_listener();
    drop(late_listener);
    assert_eq!(shutdown.phase(), Phase::Drained);
    let again = tokio::time::timeout(Duration::from_secs(1), shutdown.drained())
        .await
        .expect("a finished drain returns at once");
    assert_eq!(again, report, "the report does not change after the drain");
    assert_eq!(shutdown.counts(), Counts::default());
}

#[tokio::test]
async fn force_close_before_begin_begins_and_cuts() {
    let shutdown = lameduck::tokio::shutdown(config());
    let conn = shutdown.accept().unwrap();
    conn.request_started().unwrap();
    let notices = conn.notices();
    shutdown.force_close();
    assert_eq!(notices.notice(), Some(lameduck::Notice::Close));
    assert!(!shutdown.begin(), "the force began the shutdown");
    drop(conn);
    let report = tokio::time::timeout(Duration::from_secs(5), shutdown.drained())
        .await
        .unwrap();
    assert_eq!(report.cut.active, 1, "{report:?}");
    assert_eq!(report.accounted(), report.total());
}
