//! Hostile and unlucky HTTP clients against the hyper adapter, over loopback: what each
//! one gets, what the drain report says, and that none of them holds the drain open past
//! the rule that applies to it.
//!
//! - slowloris (1,000 clients that connect and never send): closed as stale, no bytes sent
//!   to them, the drain ends within `stale_new`;
//! - slow headers (half a request line, then nothing): Active, waited for until the
//!   deadline, then cut — and the report says so;
//! - idle forever (keep-alive, then silence): closed after the idle grace;
//! - streams: a finite streaming body finishes within the deadline; an endless one (SSE)
//!   and an upgraded connection that ignores GOAWAY are cut at the deadline, reported;
//! - disconnects mid-request and mid-stream: counted Closed, live counts back to zero.

mod common;

use common::until;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use lameduck::{Config, Counts, DrainReport, IdlePolicy, Shutdown};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// A body of `chunks` lines, one every `every` (`None` chunks: endless, like SSE). A polite
/// one ends at the next tick once its connection was asked to finish.
struct Ticker {
    interval: tokio::time::Interval,
    left: Option<u32>,
    polite: Option<lameduck::Notices>,
}

impl Ticker {
    fn new(every: Duration, chunks: Option<u32>) -> Ticker {
        Ticker {
            interval: tokio::time::interval(every),
            left: chunks,
            polite: None,
        }
    }
}

impl Body for Ticker {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == Some(0) {
            return Poll::Ready(None);
        }
        if self.interval.poll_tick(cx).is_pending() {
            return Poll::Pending;
        }
        if self.polite.as_ref().is_some_and(|n| n.notice().is_some()) {
            return Poll::Ready(None);
        }
        if let Some(left) = &mut self.left {
            *left -= 1;
        }
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"data: tick\n\n")))))
    }
}

/// A streaming service built per connection, so that it can watch the connection's
/// notices: it ends its SSE stream at a message boundary when the drain asks.
async fn start_polite(config: Config) -> (Shutdown, SocketAddr) {
    let (shutdown, mut listener, addr) = common::listen(config).await;
    tokio::spawn(async move {
        while let Some(Ok(stream)) = listener.accept().await {
            let notices = stream.conn().notices();
            let service = hyper::service::service_fn(move |_req| {
                let mut body = Ticker::new(Duration::from_millis(50), None);
                body.polite = Some(notices.clone());
                async move { Ok::<_, Infallible>(Response::new(body)) }
            });
            tokio::spawn(lameduck_hyper::serve_connection(stream, service));
        }
    });
    (shutdown, addr)
}

async fn app(req: Request<Incoming>) -> Result<Response<Ticker>, Infallible> {
    let tick = Duration::from_millis(50);
    Ok(match req.uri().path() {
        // 20 chunks over ~1 s.
        "/stream" => Response::new(Ticker::new(tick, Some(20))),
        // An endless body that is no event stream: only the deadline ends it.
        "/endless" => Response::new(Ticker::new(tick, None)),
        "/sse" => {
            let mut response = Response::new(Ticker::new(tick, None));
            response
                .headers_mut()
                .insert("content-type", "text/event-stream".parse().unwrap());
            response
        }
        "/upload" => {
            // Reads the whole request body first: Active until the last byte arrives.
            let _ = http_body_util::BodyExt::collect(req.into_body()).await;
            Response::new(Ticker::new(tick, Some(1)))
        }
        "/stubborn-ws" => {
            // An upgraded connection whose handler ignores every notice: it holds the
            // stream forever and never reads, writes or watches. Only the deadline's cut,
            // done at the socket, ends it for the client.
            tokio::spawn(async move {
                let upgraded = hyper::upgrade::on(req).await.unwrap();
                let _held_forever = hyper_util::rt::TokioIo::new(upgraded);
                std::future::pending::<()>().await;
            });
            let mut response = Response::new(Ticker::new(tick, Some(0)));
            *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let headers = response.headers_mut();
            headers.insert("upgrade", "test".parse().unwrap());
            headers.insert("connection", "upgrade".parse().unwrap());
            response
        }
        _ => Response::new(Ticker::new(tick, Some(1))),
    })
}

async fn start(config: Config) -> (Shutdown, SocketAddr) {
    let (shutdown, listener, addr) = common::listen(config).await;
    tokio::spawn(lameduck_hyper::serve(
        listener,
        hyper::service::service_fn(app),
    ));
    (shutdown, addr)
}

async fn drain(shutdown: &Shutdown) -> (DrainReport, Duration) {
    let began = Instant::now();
    shutdown.begin();
    let report = tokio::time::timeout(Duration::from_secs(20), shutdown.drained())
        .await
        .expect("drained within 20 s");
    assert_eq!(shutdown.counts(), Counts::default(), "nothing leaked");
    assert_eq!(report.accounted(), report.total(), "{report:?}");
    (report, began.elapsed())
}

/// A client that reads everything the server sends until it closes, then closes too (as
/// real clients do; the server's lingering close waits for that). `Err` if it was reset.
fn read_until_closed(mut client: TcpStream) -> JoinHandle<std::io::Result<Vec<u8>>> {
    tokio::spawn(async move {
        let mut bytes = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), client.read_to_end(&mut bytes))
            .await
            .expect("closed within 20 s")?;
        Ok(bytes)
    })
}

/// A client streaming `GET path`: it has read the first bytes of the response (so the
/// stream is under way), and reads the rest until the server closes.
struct Streaming {
    first: Vec<u8>,
    rest: JoinHandle<std::io::Result<Vec<u8>>>,
}

impl Streaming {
    async fn get(addr: SocketAddr, path: &str) -> Streaming {
        let mut client = TcpStream::connect(addr).await.unwrap();
        client
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut first = vec![0u8; 16];
        let n = client.read(&mut first).await.unwrap();
        first.truncate(n);
        Streaming {
            first,
            rest: read_until_closed(client),
        }
    }

    /// Everything received, ended by a clean close (not a reset).
    async fn received(self) -> String {
        let mut got = self.first;
        got.extend(self.rest.await.unwrap().expect("closed cleanly, not reset"));
        String::from_utf8(got).unwrap()
    }

    /// Everything received before the server closed or cut the connection.
    async fn received_until_cut(self) -> String {
        let mut got = self.first;
        got.extend(self.rest.await.unwrap().unwrap_or_default());
        String::from_utf8_lossy(&got).into_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_clients_are_closed_as_stale_without_a_byte() {
    const CLIENTS: usize = 1000;
    // Two fds per client (ours and the server's), plus headroom.
    rlimit::increase_nofile_limit(4 * CLIENTS as u64).unwrap();
    let stale_new = Duration::from_millis(500);
    let (shutdown, addr) = start(Config::default().with_stale_new(stale_new)).await;
    let mut clients = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        clients.push(TcpStream::connect(addr).await.unwrap());
    }
    until(&shutdown, "all accepted", |c| c.new == CLIENTS).await;
    let readers: Vec<_> = clients.into_iter().map(read_until_closed).collect();
    let (report, took) = drain(&shutdown).await;
    assert_eq!(report.closed_stale, CLIENTS, "{report:?}");
    assert!(report.is_clean(), "{report:?}");
    assert!(
        took <= stale_new + Duration::from_millis(500),
        "the drain took {took:?}, stale_new is {stale_new:?}"
    );
    for reader in readers {
        let got = reader.await.unwrap().expect("a clean close");
        assert!(
            got.is_empty(),
            "sent to a client that asked nothing: {got:?}"
        );
    }
}

#[tokio::test]
async fn slow_headers_are_waited_for_until_the_deadline_then_cut_and_reported() {
    let deadline = Duration::from_millis(700);
    let (shutdown, addr) = start(Config::default().with_deadline(Some(deadline))).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(b"GET /half-a-requ").await.unwrap();
    until(&shutdown, "Active at the first byte", |c| c.active == 1).await;
    let reader = read_until_closed(client);
    let (report, took) = drain(&shutdown).await;
    assert!(took >= deadline, "cut before the deadline: {took:?}");
    assert!(took < deadline + Duration::from_secs(1), "{took:?}");
    assert_eq!(report.cut.active, 1, "{report:?}");
    assert!(report.deadline_hit && !report.is_clean(), "{report:?}");
    let got = reader.await.unwrap().unwrap_or_default();
    assert!(got.is_empty(), "no response to half a request: {got:?}");
}

#[tokio::test]
async fn a_keep_alive_client_gone_quiet_is_closed_after_the_grace() {
    let grace = Duration::from_millis(300);
    let config = Config::default().with_idle_policy(IdlePolicy::AwaitNextRequest { grace });
    let (shutdown, addr) = start(config).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    until(&shutdown, "Idle after the response", |c| c.idle == 1).await;
    let reader = read_until_closed(client);
    let (report, took) = drain(&shutdown).await;
    assert_eq!(report.closed_idle, 1, "{report:?}");
    assert!(report.is_clean(), "{report:?}");
    assert!(
        took >= grace && took < grace + Duration::from_secs(1),
        "{took:?}"
    );
    let got = String::from_utf8(reader.await.unwrap().unwrap()).unwrap();
    assert_eq!(
        got.matches("HTTP/1.1 200").count(),
        1,
        "only its own answer: {got}"
    );
}

#[tokio::test]
async fn a_finite_stream_finishes_during_the_drain() {
    let grace = Duration::from_millis(200);
    let config = Config::default().with_idle_policy(IdlePolicy::AwaitNextRequest { grace });
    let (shutdown, addr) = start(config).await;
    let stream = Streaming::get(addr, "/stream").await;
    let (report, _) = drain(&shutdown).await;
    // Its headers had promised keep-alive before the drain began, so the connection ends
    // Idle after the last chunk and the idle policy closes it: nothing cut.
    assert_eq!(report.finished + report.closed_idle, 1, "{report:?}");
    assert!(report.is_clean(), "{report:?}");
    let got = stream.received().await;
    assert_eq!(
        got.matches("data: tick").count(),
        20,
        "the whole stream: {got}"
    );
    assert!(got.ends_with("0\r\n\r\n"), "the chunked body ended: {got}");
}

#[tokio::test]
async fn an_endless_stream_is_cut_at_the_deadline_and_reported() {
    let deadline = Duration::from_millis(600);
    let (shutdown, addr) = start(Config::default().with_deadline(Some(deadline))).await;
    let stream = Streaming::get(addr, "/endless").await;
    let (report, took) = drain(&shutdown).await;
    assert!(took >= deadline, "cut before the deadline: {took:?}");
    assert_eq!(report.cut.active, 1, "{report:?}");
    assert!(report.deadline_hit, "{report:?}");
    let got = stream.received_until_cut().await;
    assert!(
        got.matches("data: tick").count() >= 5,
        "streamed until cut: {got}"
    );
    assert!(
        !got.ends_with("0\r\n\r\n"),
        "a cut stream must not look complete: {got}"
    );
}

/// An event stream whose handler knows nothing of the shutdown still ends at its ask, with
/// the chunked body's last chunk: lameduck ends every `text/event-stream` body there.
#[tokio::test]
async fn an_endless_event_stream_ends_at_its_ask_by_itself() {
    let config = Config::default().with_deadline(Some(Duration::from_secs(5)));
    let (shutdown, addr) = start(config).await;
    let stream = Streaming::get(addr, "/sse").await;
    let (report, took) = drain(&shutdown).await;
    assert!(report.is_clean(), "{report:?}");
    assert!(
        took < Duration::from_secs(2),
        "ended at its ask, not at the deadline: {took:?}"
    );
    let got = stream.received().await;
    assert!(
        got.ends_with("0\r\n\r\n"),
        "the chunked body ended properly: {got}"
    );
}

#[tokio::test]
async fn a_stream_that_watches_its_connection_ends_cleanly_when_asked() {
    let config = Config::default().with_deadline(Some(Duration::from_secs(5)));
    let (shutdown, addr) = start_polite(config).await;
    let stream = Streaming::get(addr, "/events").await;
    let (report, took) = drain(&shutdown).await;
    assert!(report.is_clean(), "{report:?}");
    assert!(
        took < Duration::from_secs(2),
        "ended when asked, not at the deadline: {took:?}"
    );
    let got = stream.received().await;
    assert!(
        got.ends_with("0\r\n\r\n"),
        "the chunked body ended properly: {got}"
    );
}

#[tokio::test]
async fn an_upgraded_connection_that_ignores_goaway_is_cut_at_the_deadline() {
    let deadline = Duration::from_millis(600);
    let (shutdown, addr) = start(Config::default().with_deadline(Some(deadline))).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    client
        .write_all(
            b"GET /stubborn-ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: test\r\n\r\n",
        )
        .await
        .unwrap();
    until(&shutdown, "Upgraded", |c| c.upgraded == 1).await;
    let reader = read_until_closed(client);
    let (report, took) = drain(&shutdown).await;
    assert!(took >= deadline, "cut before the deadline: {took:?}");
    assert_eq!(report.cut.upgraded, 1, "{report:?}");
    assert!(report.deadline_hit, "{report:?}");
    // The client sees the connection end right at the cut, though the handler still holds
    // the stream (the shutdown(2) of its socket, not a drop, ended it).
    let _ = tokio::time::timeout(Duration::from_secs(2), reader)
        .await
        .expect("the client saw the connection end within 2 s of the cut");
}

#[tokio::test]
async fn clients_vanishing_mid_request_and_mid_stream_are_counted_closed() {
    let (shutdown, addr) = start(Config::default()).await;
    // Mid-request: headers promise a body that never comes in full, to a handler that reads
    // it all (one that answered at once would close the connection before it could vanish).
    let mut mid_request = TcpStream::connect(addr).await.unwrap();
    mid_request
        .write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    // Mid-stream: reading an endless body.
    let mut mid_stream = TcpStream::connect(addr).await.unwrap();
    mid_stream
        .write_all(b"GET /sse HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 16];
    let _ = mid_stream.read(&mut first).await.unwrap();
    until(&shutdown, "both Active", |c| c.active == 2).await;
    drop(mid_request);
    drop(mid_stream);
    until(&shutdown, "both Closed", |c| c == Counts::default()).await;
    // Nothing left for the drain to wait for.
    let (report, took) = drain(&shutdown).await;
    assert_eq!(report.total(), 0, "{report:?}");
    assert!(took < Duration::from_millis(100), "{took:?}");
}
