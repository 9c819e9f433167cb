//! The drain waiter's timer on tokio's paused clock: it sleeps until the lifecycle's next
//! timeout, and an event that brings a timeout earlier re-arms it (the waiter is woken only
//! for such events, so this is the case that must not be missed).

use std::time::Duration;

use lameduck::{Config, IdlePolicy};

#[tokio::test(start_paused = true)]
async fn an_earlier_timer_armed_mid_drain_rearms_the_waiter() {
    let grace = Duration::from_secs(1);
    let shutdown = lameduck::tokio::shutdown(
        Config::default()
            .with_idle_policy(IdlePolicy::AwaitNextRequest { grace })
            .with_deadline(Some(Duration::from_secs(30))),
    );
    let conn = shutdown.accept().unwrap();
    conn.request_started().unwrap();
    let began = tokio::time::Instant::now();
    shutdown.begin();
    // The waiter now sleeps until the deadline (30 s): the only timer.
    let waiter = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { shutdown.drained().await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The response went out but could not say close: Idle, with a grace timer at 1.1 s.
    conn.request_finished().unwrap();
    // The connection's task closes when told to.
    let notices = conn.notices();
    tokio::spawn(async move {
        notices.wait_close().await;
        drop(conn);
    });
    let report = waiter.await.unwrap();
    let took = began.elapsed();
    assert_eq!(report.closed_idle, 1, "{report:?}");
    assert!(
        took >= Duration::from_millis(1100) && took < Duration::from_millis(1200),
        "closed at the grace (1.1 s), not the deadline: {took:?}"
    );
}
