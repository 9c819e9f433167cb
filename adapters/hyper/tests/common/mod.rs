//! What the hyper adapter's test suites share.

use std::net::SocketAddr;

use lameduck_tokio::{self as lameduck, Config, Shutdown};

/// A shutdown handle and a tracked TCP listener on a free loopback port.
pub async fn listen(config: Config) -> (Shutdown, lameduck::Listener, SocketAddr) {
    let shutdown = lameduck::shutdown(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let listener = lameduck::Listener::Tcp(lameduck::track_tcp(&shutdown, listener));
    (shutdown, listener, addr)
}
