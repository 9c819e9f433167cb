//! The connection transfer between two servers in one process, each with its own shutdown
//! handle, sharing one listening socket as a predecessor and its successor do: an idle
//! keep-alive connection goes from one to the other over a Unix socket pair, a request
//! sent while its socket is in flight is answered by the successor, and a connection whose
//! next request was already read stays where it is.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use lameduck_os::handover::TransferVersion;
use lameduck_os::transfer::Record;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use lameduck::{Config, Shutdown};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A tracked listener on (a duplicate of) `listener`.
fn track(shutdown: &Shutdown, listener: std::net::TcpListener) -> lameduck::tokio::Listener {
    lameduck::tokio::Listener::from_tcp(
        shutdown,
        tokio::net::TcpListener::from_std(listener).unwrap(),
    )
}

/// A server that says who it is: `{name} {path}`.
fn serve(listener: lameduck::tokio::Listener, name: &'static str) {
    let service = hyper::service::service_fn(move |req: Request<Incoming>| async move {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(format!(
            "{name} {}\n",
            req.uri().path()
        )))))
    });
    tokio::spawn(lameduck_hyper::serve(listener, service));
}

/// The old server, serving, and the new one's handle and listener on a duplicate of the
/// listening socket — not yet serving, as a successor before its accept loop starts:
/// `(old, new, new's listener, addr)`.
fn pair() -> (Shutdown, Shutdown, lameduck::tokio::Listener, SocketAddr) {
    let config = Config::default().with_deadline(Some(Duration::from_secs(10)));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let (old, new) = (
        lameduck::tokio::shutdown(config),
        lameduck::tokio::shutdown(config),
    );
    let successor = track(&new, listener.try_clone().unwrap());
    serve(track(&old, listener), "old");
    (old, new, successor, addr)
}

async fn response(client: &mut TcpStream) -> String {
    let mut text = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&text).ends_with('\n')
        || !String::from_utf8_lossy(&text).contains("\r\n\r\n")
    {
        let n = tokio::time::timeout(Duration::from_secs(10), client.read(&mut buf))
            .await
            .expect("a response within 10 s")
            .expect("no reset");
        assert!(
            n > 0,
            "the connection ended: {:?}",
            String::from_utf8_lossy(&text)
        );
        text.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(text).unwrap()
}

/// `GET /two` answered by the old process with `Connection: close`; then its drain's report.
async fn answered_here(client: &mut TcpStream, old: &Shutdown) -> lameduck_core::DrainReport {
    client
        .write_all(b"GET /two HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let text = response(client).await;
    assert!(text.ends_with("old /two\n"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    tokio::time::timeout(Duration::from_secs(10), old.drained())
        .await
        .expect("drained")
}

/// A response from the old server on a fresh keep-alive connection, then Idle.
async fn idle_client(old: &Shutdown, addr: SocketAddr) -> TcpStream {
    let mut client = TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(response(&mut client).await.ends_with("old /one\n"));
    common::until(old, "Idle", |c| c.idle == 1).await;
    client
}

/// A version-2 predecessor (the socket leaves once sent) and this successor.
#[tokio::test]
async fn a_request_sent_while_its_socket_is_in_flight_is_answered_by_the_successor() {
    let (old, new, successor, addr) = pair();
    let mut client = idle_client(&old, addr).await;
    let (ours, theirs) = UnixStream::pair().unwrap();
    old.hand_over_to_version(OwnedFd::from(ours), TransferVersion::Unacknowledged)
        .unwrap();
    old.begin();
    let report = tokio::time::timeout(Duration::from_secs(10), old.drained())
        .await
        .expect("drained");
    assert_eq!(
        (report.handed_over, report.finished, report.cut.total()),
        (1, 0, 0),
        "{report:?}"
    );
    // The socket is in flight: sent, not yet received. The request waits in the kernel.
    client
        .write_all(b"GET /two HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // The successor starts: it takes the socket, then its accept loop runs.
    new.adopt_from(theirs).unwrap();
    serve(successor, "new");
    let text = response(&mut client).await;
    assert!(text.ends_with("new /two\n"), "{text}");
    assert!(
        !text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    assert_eq!(new.totals().adopted, 1);
    assert_eq!(new.totals().accepted, 0);
    // And it goes on there.
    client
        .write_all(b"GET /three HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(response(&mut client).await.ends_with("new /three\n"));
}

/// Version 3: the successor holds the socket before it leaves here; a request the client
/// sends at once, racing the transfer, is answered (by whichever process held it then),
/// and the connection goes on in the successor.
#[tokio::test]
async fn an_acknowledged_transfer_answers_a_racing_request_and_the_connection_goes_on_there() {
    let (old, new, successor, addr) = pair();
    let mut client = idle_client(&old, addr).await;
    let (ours, theirs) = UnixStream::pair().unwrap();
    new.adopt_from(theirs).unwrap();
    serve(successor, "new");
    old.hand_over_to(OwnedFd::from(ours)).unwrap();
    old.begin();
    client
        .write_all(b"GET /two HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let text = response(&mut client).await;
    assert!(text.ends_with(" /two\n"), "{text}");
    let report = tokio::time::timeout(Duration::from_secs(10), old.drained())
        .await
        .expect("drained");
    if text.ends_with("new /two\n") {
        assert_eq!(
            (report.handed_over, report.cut.total()),
            (1, 0),
            "{report:?}"
        );
        client
            .write_all(b"GET /three HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(response(&mut client).await.ends_with("new /three\n"));
    } else {
        // Read here before the offer: answered with `Connection: close`.
        assert_eq!((report.handed_over, report.finished), (0, 1), "{report:?}");
    }
}

/// Version 3: a successor that never answers (stopped, hung) gets nothing: after the
/// answer timeout the connection is taken back, and the request the client sent while its
/// socket was in flight is answered here.
#[tokio::test]
async fn a_socket_the_successor_never_answers_for_is_taken_back_and_its_request_answered_here() {
    let (old, _new, _successor, addr) = pair();
    let mut client = idle_client(&old, addr).await;
    let (ours, theirs) = UnixStream::pair().unwrap();
    // Credit for one socket, and then silence: nothing reads `theirs` any more.
    lameduck_os::transfer::send_records(theirs.as_fd(), &[Record::Credit(1)]).unwrap();
    old.hand_over_to(OwnedFd::from(ours)).unwrap();
    old.begin();
    // It receives the hello and the socket, then answers nothing.
    let theirs = tokio::task::spawn_blocking(move || {
        let mut fds = Vec::new();
        for expected in [Record::Hello(3), Record::Connection(0)] {
            let mut record = [0u8; Record::LEN];
            lameduck_os::transfer::recv(theirs.as_fd(), &mut record, &mut fds).unwrap();
            assert_eq!(Record::decode(&record), Some(expected));
        }
        (theirs, fds)
    })
    .await
    .unwrap();
    let report = answered_here(&mut client, &old).await;
    assert_eq!(
        (report.handed_over, report.taken_back, report.finished),
        (0, 1, 1),
        "{report:?}"
    );
    drop(theirs);
}

/// Version 3's credit: a successor with no room (no `Credit` yet) is sent nothing; once it
/// grants one socket, the connection goes, is held, committed, and served there.
#[tokio::test]
async fn nothing_is_sent_before_the_successor_grants_credit() {
    let (old, _new, _successor, addr) = pair();
    let mut client = idle_client(&old, addr).await;
    let (ours, theirs) = UnixStream::pair().unwrap();
    old.hand_over_to(OwnedFd::from(ours)).unwrap();
    old.begin();
    let successor = tokio::task::spawn_blocking(move || {
        let read = |fds: &mut Vec<OwnedFd>| {
            let mut record = [0u8; Record::LEN];
            lameduck_os::transfer::recv(theirs.as_fd(), &mut record, fds).unwrap();
            Record::decode(&record).unwrap()
        };
        let mut fds = Vec::new();
        assert_eq!(read(&mut fds), Record::Hello(3));
        // No credit: nothing comes.
        theirs
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut record = [0u8; Record::LEN];
        let early = lameduck_os::transfer::recv(theirs.as_fd(), &mut record, &mut fds);
        assert!(early.is_err(), "sent without credit: {early:?}");
        theirs.set_read_timeout(None).unwrap();
        lameduck_os::transfer::send_records(theirs.as_fd(), &[Record::Credit(1)]).unwrap();
        assert_eq!(read(&mut fds), Record::Connection(0));
        assert_eq!(fds.len(), 1);
        lameduck_os::transfer::send_records(theirs.as_fd(), &[Record::Held(0)]).unwrap();
        assert_eq!(read(&mut fds), Record::Commit(0));
        // Served here: the client's next request, answered by this "successor".
        let mut adopted = std::net::TcpStream::from(fds.pop().unwrap());
        adopted.set_nonblocking(false).unwrap();
        let mut request = [0u8; 256];
        let n = std::io::Read::read(&mut adopted, &mut request).unwrap();
        assert!(request[..n].starts_with(b"GET /two"));
        std::io::Write::write_all(
            &mut adopted,
            b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nnew /two\n",
        )
        .unwrap();
        adopted
    });
    let report = tokio::time::timeout(Duration::from_secs(10), old.drained())
        .await
        .expect("drained");
    assert_eq!(
        (report.handed_over, report.taken_back, report.finished),
        (1, 0, 0),
        "{report:?}"
    );
    client
        .write_all(b"GET /two HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let text = response(&mut client).await;
    assert!(text.ends_with("new /two\n"), "{text}");
    drop(successor.await.unwrap());
}

#[tokio::test]
async fn a_connection_whose_next_request_was_read_already_stays_and_is_answered_here() {
    let (old, _new, _successor, addr) = pair();
    let mut client = TcpStream::connect(addr).await.unwrap();
    // Pipelined: the start of the next request comes with the first, and hyper reads both.
    client
        .write_all(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHo")
        .await
        .unwrap();
    assert!(response(&mut client).await.ends_with("old /one\n"));
    common::until(&old, "Idle", |c| c.idle == 1).await;
    let (ours, theirs) = UnixStream::pair().unwrap();
    old.hand_over_to(OwnedFd::from(ours)).unwrap();
    old.begin();
    client.write_all(b"st: x\r\n\r\n").await.unwrap();
    let text = response(&mut client).await;
    assert!(text.ends_with("old /two\n"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    let report = tokio::time::timeout(Duration::from_secs(10), old.drained())
        .await
        .expect("drained");
    assert_eq!((report.handed_over, report.finished), (0, 1), "{report:?}");
    // Nothing was sent.
    theirs.set_nonblocking(true).unwrap();
    let mut fds = Vec::new();
    let error = lameduck_os_recv(&theirs, &mut fds);
    assert_eq!(error.kind(), std::io::ErrorKind::WouldBlock, "{error}");
}

#[tokio::test]
async fn without_a_successor_that_takes_connections_the_drain_is_as_before() {
    let (old, _new, _successor, addr) = pair();
    let (ours, theirs) = UnixStream::pair().unwrap();
    // The successor is gone before the first offer: the send fails, the connection stays.
    drop(theirs);
    let mut client = idle_client(&old, addr).await;
    old.hand_over_to(OwnedFd::from(ours)).unwrap();
    old.begin();
    let report = answered_here(&mut client, &old).await;
    assert_eq!((report.handed_over, report.finished), (0, 1), "{report:?}");
}

/// `recvmsg` on the socket past the hello record: its error (nothing else is expected to
/// arrive).
fn lameduck_os_recv(sock: &UnixStream, fds: &mut Vec<OwnedFd>) -> std::io::Error {
    let mut payload = [0u8; Record::LEN];
    let n = lameduck_os::transfer::recv(sock.as_fd(), &mut payload, fds).unwrap();
    assert_eq!(
        Record::decode(&payload),
        Some(Record::Hello(3)),
        "{n} bytes"
    );
    match lameduck_os::transfer::recv(sock.as_fd(), &mut payload, fds) {
        Ok(n) => panic!("received {n} bytes and {} descriptors", fds.len()),
        Err(e) => e,
    }
}
