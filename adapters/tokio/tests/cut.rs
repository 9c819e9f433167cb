//! A cut is done, not only counted: a handler that holds its tracked stream and never polls
//! it again still loses the connection the moment the lifecycle cuts it, in a process that
//! keeps running afterwards.

use std::time::Duration;

use lameduck::{Config, Counts};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn a_held_stream_is_shut_down_and_fails_after_a_cut() {
    let shutdown = lameduck::tokio::shutdown(Config::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut listener = lameduck::tokio::Listener::from_tcp(&shutdown, listener);

    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(b"x").await.unwrap();
    let mut held = listener.accept().await.unwrap().unwrap();
    let mut first = [0u8; 1];
    held.read_exact(&mut first).await.unwrap(); // Active

    shutdown.force_close();
    // The client sees the end although `held` is neither dropped nor polled.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the client saw no end within 5 s");
    // The cut connection counts as closed: the drain does not wait for the holder.
    drop(listener);
    let report = tokio::time::timeout(Duration::from_secs(5), shutdown.drained())
        .await
        .expect("drained while the stream is still held");
    assert_eq!(report.cut.active, 1, "{report:?}");
    assert_eq!(shutdown.counts(), Counts::default());
    // And the holder's own I/O fails from then on.
    let err = held.write_all(b"too late").await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionAborted);
    let err = held.read(&mut first).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionAborted);
    // Dropping it late changes nothing.
    drop(held);
    assert_eq!(shutdown.counts(), Counts::default());
}
