//! lameduck for hyper: serve any hyper `Service` — an axum `Router` included — over HTTP/1.1
//! and HTTP/2 (detected; h2c with prior knowledge), and shut down or restart without a
//! failed request, on tokio (feature `tokio`), smol (`smol`) or async-std (`async-std`).
//!
//! Built on `hyper::rt` and lameduck's runtime seam: the same code serves every runtime, and
//! only how a runtime's stream becomes hyper's I/O differs ([`HttpRuntime`]). On tokio:
//!
//! ```no_run
//! use std::convert::Infallible;
//!
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use hyper::{Request, Response};
//! use lameduck::{Config, hyper::serve, signals, tokio::{Listener, shutdown}};
//!
//! #[tokio::main]
//! async fn main() -> std::io::Result<()> {
//!     let shutdown = shutdown(Config::default());
//!     signals::drain_on_signals(&shutdown)?;
//!     let listener = Listener::bind_or_inherit(&shutdown, "127.0.0.1:8080")?;
//!     let hello = hyper::service::service_fn(|_req: Request<hyper::body::Incoming>| async {
//!         Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("hello\n"))))
//!     });
//!     serve(listener, hello).await;                 // until shutdown stops the listener
//!     println!("{:?}", shutdown.drained().await);   // every request answered
//!     Ok(())
//! }
//! ```
//!
//! On smol, the same with `lameduck::smol` and `smol::block_on`:
//!
//! ```no_run
//! # #[cfg(feature = "smol")]
//! # fn main() -> std::io::Result<()> {
//! use std::convert::Infallible;
//!
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use hyper::{Request, Response};
//! use lameduck::{Config, signals, smol::{Listener, shutdown}};
//!
//! smol::block_on(async {
//!     let shutdown = shutdown(Config::default());
//!     signals::drain_on_signals(&shutdown)?;
//!     let listener = Listener::bind_or_inherit(&shutdown, "127.0.0.1:8080")?;
//!     let hello = hyper::service::service_fn(|_req: Request<hyper::body::Incoming>| async {
//!         Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("hello\n"))))
//!     });
//!     lameduck::hyper::serve(listener, hello).await;
//!     println!("{:?}", shutdown.drained().await);
//!     Ok(())
//! })
//! # }
//! # #[cfg(not(feature = "smol"))]
//! # fn main() {}
//! ```
//!
//! What each connection gets, after Go's `ConnState` and beyond it:
//!
//! - **New** on accept; **Active** from the first byte of a request (not after its header is
//!   parsed, so a half-received request is never mistaken for an idle connection); **Idle**
//!   once the response is flushed; **Upgraded** on `101 Switching Protocols` — still tracked,
//!   its handler finds the [`ConnHandle`] in the request's extensions and watches its
//!   notices (a WebSocket sends its close frame at the ask).
//! - An event stream (a `text/event-stream` response of unknown length) ends at its
//!   connection's ask by itself, with the chunked body's last chunk: its handler does nothing.
//! - Every HTTP/2 request carries its [`ConnHandle`] too (axum: `Extension<ConnHandle>`): a
//!   gRPC stream ends at the connection's ask with
//!   [`Notices::end_when_asked`](lameduck_driver::Notices::end_when_asked), the streams of a
//!   service you did not write (a health `Watch`) with [`EndStreamsWhenAsked`]. Other HTTP/1
//!   requests do not carry it (an extension costs an allocation per request); a handler that
//!   needs it anyway builds its service per connection with [`serve_connection`], capturing
//!   `stream.conn().handle()`.
//! - With a [`spread`](lameduck_core::Config::spread), each connection's ask — its
//!   `Connection: close`, GOAWAY, close frame or the end of its stream — comes at its own
//!   moment in the window, not all at the shutdown's begin.
//! - While draining, every HTTP/1.1 response carries `Connection: close` and the connection
//!   closes after it (an HTTP/1.0 keep-alive client is not promised `keep-alive`); HTTP/2
//!   gets the graceful double GOAWAY — after its first request, on a connection that has not
//!   had one yet (one made in the lame-duck window, say), so that every connection serves
//!   at least one request. HTTP/1 never uses hyper's `graceful_shutdown`: it would
//!   close a connection whose request is still arriving (hyperium/hyper#3792) and close
//!   after a response that already promised keep-alive, into the client's next request. A
//!   response already under way when the drain begins keeps its promise; the connection is
//!   then Idle and its next request gets the `Connection: close`.
//! - After its final GOAWAY, an HTTP/2 connection ignores the frames of the streams the
//!   client opened too late (RFC 9113 §6.8), a WINDOW_UPDATE among them: h2 alone takes one
//!   for a connection error and ends the streams it still answers — a call lost per ~150
//!   restarts to gRPC's C core (`grpcio`), which sends one right after a new stream's
//!   HEADERS. Each HTTP/2 connection reads through a guard that drops exactly those frames.
//! - Idle keep-alive connections follow the lifecycle's idle policy: by default a request
//!   that arrives within the grace is served with `Connection: close`.
//! - Closing lingers (RFC 9112 §9.6): the write side is shut, then what the client still
//!   sends is read and discarded for up to a second, so unread pipelined bytes never turn
//!   into a reset that destroys the last response.
//! - A connection still detecting HTTP/1 vs HTTP/2 at shutdown is New: it is neither cut
//!   with its preface lost nor waited for without bound.
//! - Tower services (an axum `Router`, tonic's routes) are served by [`serve_tower`], or
//!   any function here after [`tower`].
//! - HTTPS (feature `rustls`): `serve_tls` with a `Tls` loaded from PEM files. The
//!   handshake is New (the stale-New rule and the deadline end a client that never
//!   completes it; a handshake timeout while serving), Active starts at the first decrypted
//!   byte, ALPN offers `h2` and `http/1.1`, and closing sends `close_notify`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod goaway;
mod grpc;
mod http1;
mod io;
mod service;
#[cfg(feature = "rustls")]
mod tls;

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Poll, ready};

use bytes::Bytes;
use http_body::Body;
use hyper::body::Incoming;
use hyper::rt::{Read, Write};
use hyper::{Request, Response};
use lameduck_driver::{ConnHandle, IoFamily, Notice, RequestStart, Runtime};
use lameduck_driver::{Listener, NoticeWatch, Notices, Stream};

pub use crate::grpc::{EndStreamsWhenAsked, EndWhenAskedBody};
use crate::io::{HttpIo, HttpState, read};
pub use crate::service::{TrackedBody, TrackedFuture};
#[cfg(feature = "rustls")]
pub use crate::tls::{Handshake, Tls, TlsError, TlsRuntime};

/// The HTTP/2 client preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A runtime lameduck serves HTTP on: the shared [`Runtime`] (spawning, timers) plus how its
/// tracked streams become hyper's I/O. Every runtime whose streams implement tokio's I/O
/// traits (feature `tokio`: hyper-util's `TokioIo`) or `futures-io`'s (features `smol`,
/// `async-std`: smol-hyper's `FuturesIo`) is one: it is decided by
/// [`Runtime::IoTraits`], never per runtime.
pub trait HttpRuntime: Runtime {
    /// A tracked stream as hyper's I/O.
    type Io: Read + Write + Unpin + Send + 'static;

    /// Wraps a tracked stream for hyper.
    fn io(stream: Stream<Self>) -> Self::Io;

    /// The tracked stream inside hyper's I/O.
    fn stream(io: &Self::Io) -> &Stream<Self>;
}

impl<R: Runtime> HttpRuntime for R
where
    R::IoTraits: HyperIo<R>,
{
    type Io = <R::IoTraits as HyperIo<R>>::Io;

    #[inline]
    fn io(stream: Stream<Self>) -> Self::Io {
        <R::IoTraits as HyperIo<R>>::io(stream)
    }

    #[inline]
    fn stream(io: &Self::Io) -> &Stream<Self> {
        <R::IoTraits as HyperIo<R>>::stream(io)
    }
}

/// How hyper reads and writes a tracked stream of one I/O family: written once per family
/// of traits, for every runtime of that family.
pub trait HyperIo<R: Runtime>: IoFamily {
    /// The stream as hyper's I/O.
    type Io: Read + Write + Unpin + Send + 'static;

    /// Wraps the stream.
    fn io(stream: Stream<R>) -> Self::Io;

    /// The stream inside.
    fn stream(io: &Self::Io) -> &Stream<R>;
}

#[cfg(feature = "tokio")]
impl<R: Runtime> HyperIo<R> for lameduck_driver::TokioTraits
where
    Stream<R>: tokio::io::AsyncRead + tokio::io::AsyncWrite,
{
    type Io = hyper_util::rt::TokioIo<Stream<R>>;

    #[inline]
    fn io(stream: Stream<R>) -> Self::Io {
        hyper_util::rt::TokioIo::new(stream)
    }

    #[inline]
    fn stream(io: &Self::Io) -> &Stream<R> {
        io.inner()
    }
}

#[cfg(feature = "async-io")]
impl<R: Runtime> HyperIo<R> for lameduck_driver::FuturesTraits
where
    Stream<R>: futures_io::AsyncRead + futures_io::AsyncWrite,
{
    type Io = smol_hyper::rt::FuturesIo<Stream<R>>;

    #[inline]
    fn io(stream: Stream<R>) -> Self::Io {
        smol_hyper::rt::FuturesIo::new(stream)
    }

    #[inline]
    fn stream(io: &Self::Io) -> &Stream<R> {
        io.get_ref()
    }
}

/// hyper's executor for HTTP/2 streams: runtime `R`'s spawner.
struct Spawn<R>(PhantomData<fn() -> R>);

impl<R> Clone for Spawn<R> {
    fn clone(&self) -> Self {
        Spawn(PhantomData)
    }
}

impl<R: Runtime, F> hyper::rt::Executor<F> for Spawn<R>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, task: F) {
        R::spawn(async move {
            task.await;
        });
    }
}

/// Accepts from `listener` until shutdown stops it (after its backlog is drained) and serves
/// every connection with `service` on its own task, spawned on the listener's runtime.
pub async fn serve<R, S, B>(mut listener: Listener<R>, service: S)
where
    R: HttpRuntime,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    while let Some(stream) = listener.accept().await {
        let Ok(stream) = stream else { continue };
        R::spawn(serve_connection(stream, service.clone()));
    }
}

/// Like [`serve`], over TLS (feature `rustls`): every connection's handshake runs on its
/// own task, raced against the lifecycle — a client that never completes it is New, so the
/// stale-New rule and the deadline end it during shutdown, and the configuration's
/// [`handshake_timeout`](lameduck_core::Config::handshake_timeout) while serving.
///
/// ```no_run
/// # #[cfg(feature = "tokio")]
/// # async fn run(service: impl hyper::service::Service<hyper::Request<hyper::body::Incoming>,
/// #     Response = hyper::Response<http_body_util::Full<bytes::Bytes>>, Error = std::convert::Infallible,
/// #     Future: Send> + Clone + Send + Sync + 'static) -> Result<(), Box<dyn std::error::Error>> {
/// use lameduck::{Config, hyper::{Tls, serve_tls}, signals, tokio::{Listener, shutdown}};
///
/// let tls = Tls::from_pem_files("cert.pem", "key.pem")?;
/// let shutdown = shutdown(Config::default());
/// signals::drain_on_signals(&shutdown)?;
/// let listener = Listener::bind_or_inherit(&shutdown, "127.0.0.1:8443")?;
/// serve_tls(listener, tls, service).await;
/// println!("{:?}", shutdown.drained().await);
/// # Ok(()) }
/// ```
#[cfg(feature = "rustls")]
pub async fn serve_tls<R, S, B>(mut listener: Listener<R>, tls: Tls, service: S)
where
    R: TlsRuntime,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    while let Some(stream) = listener.accept().await {
        let Ok(stream) = stream else { continue };
        R::spawn(serve_tls_connection(stream, tls.clone(), service.clone()));
    }
}

/// Like [`serve_connection`], over TLS: the handshake (New until it completes, bounded by
/// the lifecycle and [`Config::handshake_timeout`](lameduck_core::Config::handshake_timeout)), then HTTP/1.1 or HTTP/2 (ALPN offers
/// both) with requests starting at their first decrypted byte. Closing sends
/// `close_notify`.
#[cfg(feature = "rustls")]
pub async fn serve_tls_connection<R, S, B>(stream: Stream<R>, tls: Tls, service: S)
where
    R: TlsRuntime,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let conn = stream.conn().handle();
    // Records, the handshake first, are not requests: the decrypted side marks them.
    conn.set_request_start(RequestStart::FirstDecryptedByte);
    let notices = conn.notices();
    let until = R::now() + conn.shutdown().config().handshake_timeout;
    let handshake = futures_lite::future::or(
        async { Some(R::handshake(tls.config().clone(), stream).await) },
        async {
            R::sleep_until(until).await;
            None
        },
    );
    // Dropping the handshake drops the stream: the connection is Closed.
    let Some(Some(Ok(io))) = notices.unless_closed(handshake).await else {
        return;
    };
    serve_io::<R, _, _, _>(io, conn, service).await;
}

/// Like [`serve`], for a tower service — an axum `Router`, tonic's routes, anything built
/// with tower — adapted to hyper's with [`tower`].
///
/// ```no_run
/// use axum::{routing::get, Router};
/// use lameduck::{Config, env::ConfigFromEnv, tokio::{Listener, shutdown}};
///
/// # #[cfg(feature = "tokio")]
/// #[tokio::main]
/// async fn main() -> Result<(), Box<dyn std::error::Error>> {
///     let app = Router::new().route("/", get(|| async { "hello\n" }));
///     let shutdown = shutdown(Config::from_env()?);
///     lameduck::signals::drain_on_signals(&shutdown)?;
///     let listener = Listener::bind_or_inherit(&shutdown, "127.0.0.1:3000")?;
///     lameduck::hyper::serve_tower(listener, app).await;
///     println!("{:?}", shutdown.drained().await);
///     Ok(())
/// }
/// # #[cfg(not(feature = "tokio"))]
/// # fn main() {}
/// ```
pub async fn serve_tower<R, S, B>(listener: Listener<R>, service: S)
where
    R: HttpRuntime,
    S: tower_service::Service<Request<Incoming>, Response = Response<B>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve(listener, tower(service)).await
}

/// The answer to a readiness probe (Kubernetes' `readinessProbe`, a load balancer's health
/// check): `200 ready` while serving, `503 shutting down` from the moment the shutdown
/// begins — the lame-duck window included, while `/` and every other route still answer —
/// so the balancer stops sending before the server stops accepting. Both say
/// `Cache-Control: no-store`. Mount it where your probe looks:
///
/// ```no_run
/// # #[cfg(feature = "tokio")]
/// # fn main() {
/// use axum::{routing::get, Router};
/// use lameduck::{Config, tokio::shutdown};
///
/// let shutdown = shutdown(Config::default());
/// let app: Router = Router::new()
///     .route("/", get(|| async { "hello\n" }))
///     .route("/ready", get({
///         let shutdown = shutdown.clone();
///         move || async move { lameduck::hyper::readiness(&shutdown) }
///     }));
/// # }
/// # #[cfg(not(feature = "tokio"))]
/// # fn main() {}
/// ```
///
/// Other protocols watch the same state with
/// [`Shutdown::is_ready`](lameduck_driver::Shutdown::is_ready) and
/// [`Shutdown::begun`](lameduck_driver::Shutdown::begun).
pub fn readiness(shutdown: &lameduck_driver::Shutdown) -> Response<String> {
    let (status, body) = if shutdown.is_ready() {
        (hyper::StatusCode::OK, "ready\n")
    } else {
        (hyper::StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    };
    let mut response = Response::new(body.to_owned());
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    response
}

/// A tower service as a hyper one, for [`serve`], [`serve_connection`] or `serve_tls`.
pub fn tower<S>(service: S) -> hyper_util::service::TowerToHyperService<S> {
    hyper_util::service::TowerToHyperService::new(service)
}

/// Serves one tracked connection with `service` until it closes, following the lifecycle's
/// notices. Resolves when the connection is done (a lingering close may still run; the
/// drain waits for it).
pub fn serve_connection<R, S, B>(
    stream: Stream<R>,
    service: S,
) -> impl Future<Output = ()> + Send + 'static
where
    R: HttpRuntime,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let conn = stream.conn().handle();
    // A TCP connection's socket can go to a successor (handover version 2).
    let socket: io::Socket<R::Io> = |io| match R::stream(io) {
        Stream::Tcp(tcp) => Some(std::os::fd::AsFd::as_fd(tcp)),
        Stream::Unix(_) => None,
    };
    ServeIo::Starting {
        start: start::<R, _, S, B>(R::io(stream), conn, service, Some(socket)),
    }
}

/// Like [`serve_connection`], for I/O of your own making over the connection's
/// [`Tracked`](lameduck_driver::Tracked) stream: `io` must read and write through it (so that a
/// cut fails its I/O) and own it (so that dropping `io` reports it Closed), and the first
/// byte of each request must mark the connection Active — the tracked stream does on a
/// plain connection; a protocol layered over it (a TLS other than rustls, say) turns that
/// off with [`ConnHandle::set_request_start`](lameduck_driver::ConnHandle::set_request_start)
/// and reads through a [`Decrypted`](lameduck_driver::Decrypted). `conn` is its handle
/// (`stream.conn().handle()`). For rustls, `serve_tls_connection` (feature `rustls`) does all this.
pub fn serve_io<R, I, S, B>(
    io: I,
    conn: ConnHandle,
    service: S,
) -> impl Future<Output = ()> + Send + 'static
where
    R: Runtime,
    I: Read + Write + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    ServeIo::Starting {
        start: start::<R, I, S, B>(io, conn, service, None),
    }
}

/// Detects the protocol and makes the connection's driver; `None` when the connection
/// ended first.
async fn start<R, I, S, B>(
    io: I,
    conn: ConnHandle,
    service: S,
    socket: Option<io::Socket<I>>,
) -> Option<Started<impl Future<Output = ()> + Send, impl Future<Output = ()> + Send>>
where
    R: Runtime,
    I: Read + Write + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let notices = conn.notices();
    let state = HttpState::new(conn, socket.is_some());
    let mut io = HttpIo::<R, I>::new(io, state.clone(), socket);
    // HTTP/1 or HTTP/2? Read until the bytes leave the HTTP/2 preface or complete it.
    // The connection is New until its first byte, and the stale-New rule (or the
    // deadline) ends a client that never sends.
    let Some(Ok((replay, http2))) = notices.unless_closed(detect(&mut io)).await else {
        return None;
    };
    io.replay(replay);
    let service = service::TrackedService {
        inner: service,
        state: state.clone(),
    };
    if http2 {
        state.http2.store(true, Ordering::Release);
        // HPACK tables and stream state live in this process: HTTP/2 leaves by GOAWAY.
        state.stays();
        // HTTP/2 reads SETTINGS, PING and WINDOW_UPDATE frames between requests:
        // requests are its streams, counted by the service. The preface itself was no
        // request.
        state.conn.set_request_start(RequestStart::Reported);
        if state.inflight() == 0 {
            let _ = state.conn.request_finished();
        }
        // Under it, the frames h2 mistakes for a connection error after its GOAWAY are
        // dropped (`goaway`).
        let connection = hyper::server::conn::http2::Builder::new(Spawn::<R>(PhantomData))
            .serve_connection(goaway::GoAwayGuard::new(io), service);
        // Boxed: an HTTP/2 connection is ~2.7 KB, and inline it would size every
        // connection's task, HTTP/1 ones included (measured: 3.3 KB → 0.8 KB per task).
        Some(Started::Http2(Box::pin(drive(
            connection,
            &notices,
            state,
            |c| c.graceful_shutdown(),
        ))))
    } else {
        let connection = http1::Http1::serve(io, service, state.clone());
        Some(Started::Http1(drive(connection, &notices, state, |c| {
            c.graceful_shutdown()
        })))
    }
}

/// A connection's driver, by protocol.
enum Started<H1, H2> {
    Http1(H1),
    Http2(Pin<Box<H2>>),
}

pin_project_lite::pin_project! {
    /// The future of [`serve_io`]: detecting the protocol, then driving the connection.
    /// A future of its own rather than an `async fn`, whose arguments and locals would stay
    /// in every connection's task beside the connection they were moved into (measured:
    /// the HTTP/1 task 880 → 744 bytes; `future_size`).
    #[project = ServeIoProj]
    enum ServeIo<Start, H1, H2> {
        Starting { #[pin] start: Start },
        Http1 { #[pin] drive: H1 },
        Http2 { drive: Pin<Box<H2>> },
        Done,
    }
}

impl<Start, H1, H2> Future for ServeIo<Start, H1, H2>
where
    Start: Future<Output = Option<Started<H1, H2>>>,
    H1: Future<Output = ()>,
    H2: Future<Output = ()>,
{
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        loop {
            let done = match self.as_mut().project() {
                ServeIoProj::Http1 { drive } => drive.poll(cx),
                ServeIoProj::Http2 { drive } => drive.as_mut().poll(cx),
                ServeIoProj::Starting { start } => {
                    let next = match ready!(start.poll(cx)) {
                        Some(Started::Http1(drive)) => ServeIo::Http1 { drive },
                        Some(Started::Http2(drive)) => ServeIo::Http2 { drive },
                        None => ServeIo::Done,
                    };
                    self.set(next);
                    continue;
                }
                ServeIoProj::Done => return Poll::Ready(()),
            };
            ready!(done);
            // Ends the connection now, not when the future is dropped: the caller may
            // keep it.
            self.set(ServeIo::Done);
            return Poll::Ready(());
        }
    }
}

/// Reads the first bytes: `(bytes read, is HTTP/2)`.
async fn detect<I: Read + Unpin>(io: &mut I) -> std::io::Result<(Bytes, bool)> {
    let mut seen = Vec::with_capacity(PREFACE.len());
    let mut buf = [0u8; PREFACE.len()];
    loop {
        let want = PREFACE.len() - seen.len();
        let n = read(io, &mut buf[..want]).await?;
        if n == 0 {
            return Ok((Bytes::from(seen), false));
        }
        seen.extend_from_slice(&buf[..n]);
        if !PREFACE.starts_with(&seen) {
            return Ok((Bytes::from(seen), false));
        }
        if seen.len() == PREFACE.len() {
            return Ok((Bytes::from(seen), true));
        }
    }
}

pin_project_lite::pin_project! {
    /// Runs a hyper connection, acting on the lifecycle's notices. A future of its own,
    /// not an `async fn`: an `async fn` keeps both its argument and its pinned copy of the
    /// connection (measured: the HTTP/1 connection task 1,624 → 880 bytes, of which
    /// hyper's connection is 616), and adds a state machine to every poll.
    struct Drive<C, F> {
        #[pin]
        connection: C,
        watch: NoticeWatch,
        state: Arc<HttpState>,
        graceful_shutdown: F,
        // Told to finish (then only a close matters).
        told: bool,
        // HTTP/2 told to finish before its first request: GOAWAY waits for that request.
        goaway_owed: bool,
    }
}

fn drive<C, F>(
    connection: C,
    notices: &Notices,
    state: Arc<HttpState>,
    graceful_shutdown: F,
) -> Drive<C, F>
where
    C: Future,
    F: Fn(Pin<&mut C>),
{
    Drive {
        connection,
        watch: notices.watch(),
        state,
        graceful_shutdown,
        told: false,
        goaway_owed: false,
    }
}

impl<C, F> Future for Drive<C, F>
where
    C: Future,
    F: Fn(Pin<&mut C>),
{
    type Output = ();

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        let mut this = self.project();
        loop {
            if this.connection.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            // The service counts requests while the connection is polled, on this task: a
            // request that started in the poll just above is seen here, no wake-up needed.
            if *this.goaway_owed && this.state.has_seen_request() {
                *this.goaway_owed = false;
                (this.graceful_shutdown)(this.connection.as_mut());
                continue; // the connection sends the GOAWAY when polled
            }
            let at_least = if *this.told {
                Notice::Close
            } else {
                Notice::FinishThenClose
            };
            match this.watch.poll_notice(cx, at_least) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Notice::Close) => return Poll::Ready(()),
                Poll::Ready(_) => {
                    // HTTP/2: GOAWAY (hyper's double GOAWAY: streams the client sent before
                    // it saw it still run), then the client retries the rest on a new
                    // connection. But not before the connection's first request: a
                    // connection accepted in the lame-duck window, told at once, would
                    // otherwise serve nothing — and a client that opens one per call (a
                    // health probe) would only ever see GOAWAY. One request each, as HTTP/1
                    // gets one response with `Connection: close`. HTTP/1: never hyper's
                    // `graceful_shutdown`, which closes a connection whose request is still
                    // arriving, and closes after a response that already promised
                    // keep-alive — into the client's next request. The service marks the
                    // next response `Connection: close` instead, and hyper closes after it.
                    if this.state.is_http2() {
                        if this.state.has_seen_request() {
                            (this.graceful_shutdown)(this.connection.as_mut());
                        } else {
                            *this.goaway_owed = true;
                        }
                    }
                    *this.told = true; // then poll the connection again
                }
            }
        }
    }
}
