//! The hyper adapter seen from raw HTTP clients over loopback: Go's connection states at
//! exactly the right moments, `Connection: close` while draining, HTTP/1.0 keep-alive,
//! half-received requests, stale connections, pipelining with a lingering close, upgrades,
//! and faults that must not stall the drain.

mod common;

use common::until;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use lameduck::{Config, Shutdown};
use lameduck::{ConnHandle, Notice};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn app(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    match req.uri().path() {
        "/panic" => panic!("handler bug"),
        "/echo" => {
            // Answers once the request body has ended: the client decides when.
            use http_body_util::BodyExt;
            let body = req.into_body().collect().await.unwrap().to_bytes();
            Ok(Response::new(Full::new(body)))
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok(Response::new(Full::new(Bytes::from("slow\n"))))
        }
        "/ws" => {
            // A WebSocket-style upgrade: the handler keeps the connection and leaves when
            // the lifecycle tells it to go away.
            let conn = req.extensions().get::<ConnHandle>().cloned().unwrap();
            tokio::spawn(async move {
                let upgraded = hyper::upgrade::on(req).await.unwrap();
                let mut io = hyper_util::rt::TokioIo::new(upgraded);
                assert_eq!(conn.notices().wait_notice().await, Notice::AskToLeave);
                let _ = io.write_all(b"bye\n").await;
            });
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            response
                .headers_mut()
                .insert("upgrade", "test".parse().unwrap());
            response
                .headers_mut()
                .insert("connection", "upgrade".parse().unwrap());
            Ok(response)
        }
        path => Ok(Response::new(Full::new(Bytes::from(format!("{path}\n"))))),
    }
}

async fn start(config: Config) -> (Shutdown, SocketAddr) {
    let (shutdown, listener, addr) = common::listen(config).await;
    tokio::spawn(lameduck_hyper::serve(
        listener,
        hyper::service::service_fn(app),
    ));
    (shutdown, addr)
}

fn config() -> Config {
    Config::default().with_deadline(Some(Duration::from_secs(10)))
}

async fn read_to_end(client: &mut TcpStream) -> String {
    let mut text = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut text))
        .await
        .expect("closed within 10 s")
        .expect("closed cleanly, not reset");
    String::from_utf8(text).unwrap()
}

async fn read_response(client: &mut TcpStream) -> String {
    let mut buf = vec![0u8; 4096];
    let mut text = String::new();
    while !text.contains("\r\n\r\n") || !complete(&text) {
        let n = client.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed mid-response: {text:?}");
        text.push_str(std::str::from_utf8(&buf[..n]).unwrap());
    }
    text
}

fn complete(text: &str) -> bool {
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    body.len() >= length
}

#[tokio::test]
async fn states_follow_the_request_byte_by_byte() {
    let (shutdown, addr) = start(config()).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    until(&shutdown, "New on accept", |c| c.new == 1).await;
    // The first byte of a request, long before its header is complete: Active.
    client.write_all(b"G").await.unwrap();
    until(&shutdown, "Active at the first byte", |c| c.active == 1).await;
    client
        .write_all(b"ET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let response = read_response(&mut client).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    until(&shutdown, "Idle once the response is out", |c| c.idle == 1).await;
    drop(client);
    until(&shutdown, "Closed", |c| c.total() == 0).await;
}

#[tokio::test]
async fn draining_answers_with_connection_close_then_closes() {
    let (shutdown, addr) = start(config()).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    until(&shutdown, "Active", |c| c.active == 1).await;
    shutdown.begin();
    let text = read_to_end(&mut client).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    assert!(text.ends_with("slow\n"), "{text}");
    let report = shutdown.drained().await;
    assert_eq!((report.finished, report.cut.total()), (1, 0), "{report:?}");
}

#[tokio::test]
async fn http10_keep_alive_is_not_promised_while_draining() {
    let (shutdown, addr) = start(config()).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"GET /one HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .await
        .unwrap();
    let first = read_response(&mut client).await.to_ascii_lowercase();
    assert!(first.contains("connection: keep-alive"), "{first}");
    until(&shutdown, "Idle", |c| c.idle == 1).await;
    shutdown.begin();
    client
        .write_all(b"GET /two HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .await
        .unwrap();
    let last = read_to_end(&mut client).await.to_ascii_lowercase();
    assert!(last.starts_with("http/1.0 200"), "{last}");
    assert!(
        !last.contains("keep-alive"),
        "no keep-alive promised before closing: {last}"
    );
    assert!(last.ends_with("/two\n"), "{last}");
}

/// hyperium/hyper#3792: a request whose header is still arriving when the drain begins is
/// served, not closed.
#[tokio::test]
async fn a_half_received_request_at_shutdown_is_served() {
    let (shutdown, addr) = start(config()).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(b"GET /half HTTP/1.1\r\nHo").await.unwrap();
    until(&shutdown, "Active", |c| c.active == 1).await;
    shutdown.begin();
    tokio::time::sleep(Duration::from_millis(50)).await;
    client.write_all(b"st: x\r\n\r\n").await.unwrap();
    let text = read_to_end(&mut client).await;
    assert!(
        text.starts_with("HTTP/1.1 200") && text.ends_with("/half\n"),
        "{text}"
    );
}

#[tokio::test]
async fn a_connection_that_never_sends_is_closed_once_stale() {
    let (shutdown, addr) = start(config().with_stale_new(Duration::from_millis(200))).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    until(&shutdown, "New", |c| c.new == 1).await;
    shutdown.begin();
    assert_eq!(
        read_to_end(&mut client).await,
        "",
        "no response it did not ask for"
    );
    assert_eq!(shutdown.drained().await.closed_stale, 1);
}

/// Two pipelined requests as the drain begins: both answered, the second says close, and
/// the close lingers so the client reads everything instead of a reset.
#[tokio::test]
async fn pipelined_requests_are_both_answered_without_a_reset() {
    let (shutdown, addr) = start(config()).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"GET /warm HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    read_response(&mut client).await;
    until(&shutdown, "Idle", |c| c.idle == 1).await;
    shutdown.begin();
    client
        .write_all(b"GET /p1 HTTP/1.1\r\nHost: x\r\n\r\nGET /p2 HTTP/1.1\r\nHost: x\r\n\r\nGET /p3 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let text = read_to_end(&mut client).await;
    assert!(text.contains("/p1\n"), "{text}");
    assert_eq!(
        text.matches("HTTP/1.1 200").count(),
        1,
        "one answer, with close: {text}"
    );
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
}

#[tokio::test]
async fn upgraded_connections_stay_tracked_and_are_told_to_go_away() {
    let (shutdown, addr) = start(config()).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: test\r\n\r\n")
        .await
        .unwrap();
    let head = read_response(&mut client).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    until(&shutdown, "Upgraded", |c| c.upgraded == 1).await;
    shutdown.begin();
    let rest = read_to_end(&mut client).await;
    assert_eq!(rest, "bye\n");
    let report = shutdown.drained().await;
    assert_eq!((report.at_begin.upgraded, report.cut.total()), (1, 0));
}

#[tokio::test]
async fn faults_close_only_their_connection_and_never_stall_the_drain() {
    let (shutdown, addr) = start(config()).await;
    // A handler that panics.
    let mut panicking = TcpStream::connect(addr).await.unwrap();
    panicking
        .write_all(b"GET /panic HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let _ = read_to_end(&mut panicking).await;
    // A malformed request: hyper answers 400.
    let mut malformed = TcpStream::connect(addr).await.unwrap();
    malformed
        .write_all(b"NOT HTTP AT ALL\r\n\r\n")
        .await
        .unwrap();
    let text = read_to_end(&mut malformed).await;
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    // A client that leaves mid-response.
    let mut leaving = TcpStream::connect(addr).await.unwrap();
    leaving
        .write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    until(&shutdown, "Active", |c| c.active >= 1).await;
    drop(leaving);
    until(&shutdown, "all Closed, none leaked", |c| c.total() == 0).await;
    shutdown.begin();
    let report = tokio::time::timeout(Duration::from_secs(5), shutdown.drained())
        .await
        .expect("the drain is not stalled");
    assert!(report.is_clean());
}

#[tokio::test]
async fn http2_gets_goaway_and_its_streams_finish() {
    use http_body_util::{BodyExt, Empty};
    let (shutdown, addr) = start(config()).await;
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let driver = tokio::spawn(connection);
    let request = Request::get(format!("http://{addr}/slow"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let in_flight = tokio::spawn(sender.send_request(request));
    until(&shutdown, "the stream is Active", |c| c.active == 1).await;
    shutdown.begin();
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"slow\n");
    // The server said GOAWAY and closed; the client's connection ends cleanly.
    tokio::time::timeout(Duration::from_secs(5), driver)
        .await
        .expect("the h2 connection ends")
        .unwrap()
        .unwrap();
    let report = shutdown.drained().await;
    assert_eq!((report.finished, report.cut.total()), (1, 0));
}

/// After its final GOAWAY, the server ignores the frames of the streams the client opened
/// too late (RFC 9113 §6.8) — a WINDOW_UPDATE too, which gRPC's C core sends right after a
/// new stream's HEADERS: the stream it still answers gets its answer. (h2 alone ends the
/// connection with PROTOCOL_ERROR there: lameduck-hyper's `goaway` guard drops the frame.)
#[tokio::test]
async fn http2_ignores_a_window_update_for_a_stream_opened_after_its_goaway() {
    let (shutdown, addr) = start(config()).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    client.write_all(&h2_frame(0x4, 0, 0, &[])).await.unwrap(); // SETTINGS
    // Stream 1: POST /echo, its body still to come, so it stays open.
    let post_echo = [&[0x83, 0x86, 0x04, 0x05][..], b"/echo", &[0x01, 0x01], b"x"].concat();
    client
        .write_all(&h2_frame(0x1, 0x4, 1, &post_echo))
        .await
        .unwrap();
    until(&shutdown, "stream 1 is Active", |c| c.active == 1).await;
    shutdown.begin();
    // GOAWAY(max) and its PING; the ACK; then the final GOAWAY names stream 1.
    loop {
        let (kind, flags, _, payload) = read_h2_frame(&mut client).await;
        match kind {
            0x4 if flags & 1 == 0 => {
                client.write_all(&h2_frame(0x4, 1, 0, &[])).await.unwrap();
            }
            0x6 if flags & 1 == 0 => {
                client
                    .write_all(&h2_frame(0x6, 1, 0, &payload))
                    .await
                    .unwrap();
            }
            0x7 if payload[..4] == [0, 0, 0, 1] => break,
            _ => {}
        }
    }
    // Too late: stream 3 (GET /), with a WINDOW_UPDATE; then stream 1's body ends.
    let get = [&[0x82, 0x86, 0x84, 0x01, 0x01][..], b"x"].concat();
    client
        .write_all(&h2_frame(0x1, 0x5, 3, &get))
        .await
        .unwrap();
    client
        .write_all(&h2_frame(0x8, 0, 3, &1000u32.to_be_bytes()))
        .await
        .unwrap();
    client
        .write_all(&h2_frame(0x0, 0x1, 1, b"hi"))
        .await
        .unwrap();
    // Stream 1's answer, and no connection error.
    let mut answer = Vec::new();
    loop {
        let (kind, flags, stream, payload) = read_h2_frame(&mut client).await;
        assert!(
            kind != 0x7 || payload[4..8] == [0, 0, 0, 0],
            "GOAWAY with error code {:?}",
            &payload[4..8]
        );
        if kind == 0x0 && stream == 1 {
            answer.extend_from_slice(&payload);
            if flags & 1 != 0 {
                break;
            }
        }
    }
    assert_eq!(answer, b"hi");
    let report = tokio::time::timeout(Duration::from_secs(5), shutdown.drained())
        .await
        .expect("the drain ends");
    assert_eq!((report.finished, report.cut.total()), (1, 0));
}

/// An HTTP/2 frame: type, flags, stream, payload.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut frame = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// The next HTTP/2 frame from `client` (within 5 s): type, flags, stream, payload.
async fn read_h2_frame(client: &mut TcpStream) -> (u8, u8, u32, Vec<u8>) {
    let read = async {
        let mut header = [0u8; 9];
        client.read_exact(&mut header).await.expect("a frame");
        let len =
            usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
        let mut payload = vec![0u8; len];
        client.read_exact(&mut payload).await.expect("its payload");
        let stream = u32::from_be_bytes([header[5], header[6], header[7], header[8]]);
        (header[3], header[4], stream, payload)
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("the server sends a frame")
}

/// An HTTP/2 connection made in the lame-duck window serves its first request, then gets
/// its GOAWAY — as an HTTP/1 one gets one response with `Connection: close`. Told at once,
/// it would serve nothing: a client that opens a connection per call (a gRPC health probe)
/// would only ever see GOAWAY until the listener closed.
#[tokio::test]
async fn http2_made_in_the_lame_duck_window_serves_a_request_before_its_goaway() {
    use http_body_util::{BodyExt, Empty};
    let config = config().with_lame_duck(Duration::from_secs(10));
    let (shutdown, addr) = start(config).await;
    shutdown.begin();
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let mut driver = tokio::spawn(connection);
    // The preface and SETTINGS are in: the connection is Idle, and was told to finish.
    until(&shutdown, "the h2 connection is Idle", |c| c.idle == 1).await;
    // A GOAWAY sent now would reach the client before its request (and the server then
    // close the empty connection): give it the time to, and see the connection stay.
    let closed = tokio::time::timeout(Duration::from_millis(300), &mut driver).await;
    assert!(
        closed.is_err(),
        "the server ended the connection before any request: {closed:?}"
    );
    let request = Request::get(format!("http://{addr}/first"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender
        .send_request(request)
        .await
        .expect("served, not refused");
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"/first\n");
    // Then the GOAWAY: the connection ends.
    tokio::time::timeout(Duration::from_secs(5), driver)
        .await
        .expect("the h2 connection ends after its request")
        .unwrap()
        .unwrap();
}

/// The drain's end is when the last lingering close ends, and the report says so: a client
/// that keeps its socket open after the last `Connection: close` response holds the drain
/// for the linger (1 s), and `drained_at` is that moment, not the response's.
#[tokio::test]
async fn the_report_says_the_drain_ended_when_the_last_linger_did() {
    let (shutdown, addr) = start(config()).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    read_response(&mut client).await;
    until(&shutdown, "Idle after the response", |c| c.idle == 1).await;
    let began = std::time::Instant::now();
    shutdown.begin();
    // The idle connection's next request is served with `Connection: close`; the client
    // then neither sends nor closes, so the server's close lingers.
    client
        .write_all(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let response = read_response(&mut client).await;
    assert!(response.contains("connection: close"), "{response}");
    let report = tokio::time::timeout(Duration::from_secs(10), shutdown.drained())
        .await
        .expect("drained within 10 s");
    let returned = began.elapsed();
    let drained_after = report.drained_at.unwrap().as_duration() - report.began_at.as_duration();
    assert!(
        returned >= Duration::from_millis(900),
        "drained() returned {returned:?} after begin, before the linger ended"
    );
    assert!(
        drained_after + Duration::from_millis(200) >= returned,
        "the report says drained {drained_after:?} after begin, drained() returned after {returned:?}"
    );
    drop(client);
}

/// The linger is the configuration's (`Config::linger`, `LAMEDUCK_LINGER`), not a constant:
/// a client that keeps its socket open after its last response holds the drain for exactly
/// that long.
#[tokio::test]
async fn the_linger_is_the_configurations() {
    let linger = Duration::from_millis(2500);
    let (shutdown, addr) = start(config().with_linger(linger)).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let response = read_response(&mut client).await;
    assert!(response.contains("connection: close"), "{response}");
    // The server closed its side and lingers; the client neither sends nor closes.
    let began = std::time::Instant::now();
    shutdown.begin();
    tokio::time::timeout(Duration::from_secs(10), shutdown.drained())
        .await
        .expect("drained within 10 s");
    let returned = began.elapsed();
    assert!(
        returned >= linger - Duration::from_millis(100),
        "drained after {returned:?}: the linger of {linger:?} was not honoured"
    );
    drop(client);
}
