//! What the hyper adapter's test suites share.

use std::net::SocketAddr;
use std::time::Duration;

use lameduck::{Config, Counts, Shutdown};

/// A shutdown handle and a tracked TCP listener on a free loopback port.
#[allow(dead_code)] // not every suite binds its listener this way (transfer.rs shares one)
pub async fn listen(config: Config) -> (Shutdown, lameduck::tokio::Listener, SocketAddr) {
    let shutdown = lameduck::tokio::shutdown(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let listener = lameduck::tokio::Listener::from_tcp(&shutdown, listener);
    (shutdown, listener, addr)
}

/// Waits until the lifecycle's counts satisfy `f` (the server reports on its own tasks),
/// for at most 10 s.
pub async fn until(shutdown: &Shutdown, what: &str, f: impl Fn(Counts) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f(shutdown.counts()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {:?}",
            shutdown.counts()
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
