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

mod connection;
mod goaway;
mod grpc;
mod http1;
mod io;
mod runtime;
mod service;
#[cfg(feature = "rustls")]
mod tls;

use std::future::Future;

use hyper::Response;
use hyper::rt::{Read, Write};
#[cfg(feature = "rustls")]
use lameduck_driver::RequestStart;
use lameduck_driver::{ConnHandle, Listener, Stream};

use crate::connection::{Spawn, SpawnBoxed};
pub use crate::grpc::{EndStreamsWhenAsked, EndWhenAskedBody};
pub use crate::runtime::{HttpRuntime, HyperIo};
pub use crate::service::{HyperService, TrackedBody, TrackedFuture};
#[cfg(feature = "rustls")]
pub use crate::tls::{Handshake, HyperTls, Tls, TlsError, TlsRuntime};

/// Accepts from `listener` until shutdown stops it (after its backlog is drained) and serves
/// every connection with `service` on its own task, spawned on the listener's runtime.
pub async fn serve<R, S>(mut listener: Listener<R>, service: S)
where
    R: HttpRuntime,
    S: HyperService + Clone,
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
pub async fn serve_tls<R, S>(mut listener: Listener<R>, tls: Tls, service: S)
where
    R: TlsRuntime,
    S: HyperService + Clone,
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
pub async fn serve_tls_connection<R, S>(stream: Stream<R>, tls: Tls, service: S)
where
    R: TlsRuntime,
    S: HyperService,
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
    connection::serve(io, conn, service, None, Spawn::<R>::new()).await;
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
pub async fn serve_tower<R, S>(listener: Listener<R>, service: S)
where
    R: HttpRuntime,
    hyper_util::service::TowerToHyperService<S>: HyperService + Clone,
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
pub fn serve_connection<R, S>(
    stream: Stream<R>,
    service: S,
) -> impl Future<Output = ()> + Send + 'static
where
    R: HttpRuntime,
    S: HyperService,
{
    let conn = stream.conn().handle();
    // A TCP connection's socket can go to a successor (handover version 2).
    let socket: io::Socket<R::Io> = |io| match R::stream(io) {
        Stream::Tcp(tcp) => Some(std::os::fd::AsFd::as_fd(tcp)),
        Stream::Unix(_) => None,
    };
    let exec = Spawn::<R>::new();
    connection::serve(R::io(stream), conn, service, Some(socket), exec)
}

/// Like [`serve_connection`], for I/O of your own making over the connection's
/// [`Tracked`](lameduck_driver::Tracked) stream: `io` must read and write through it (so that a
/// cut fails its I/O) and own it (so that dropping `io` reports it Closed), and the first
/// byte of each request must mark the connection Active — the tracked stream does on a
/// plain connection; a protocol layered over it (a TLS other than rustls, say) turns that
/// off with [`ConnHandle::set_request_start`](lameduck_driver::ConnHandle::set_request_start)
/// and reads through a [`Decrypted`](lameduck_driver::Decrypted). `conn` is its handle
/// (`stream.conn().handle()`). For rustls, `serve_tls_connection` (feature `rustls`) does all this.
pub fn serve_io<I, S>(
    io: I,
    conn: ConnHandle,
    service: S,
) -> impl Future<Output = ()> + Send + 'static
where
    I: Read + Write + Unpin + Send + 'static,
    S: HyperService,
{
    // No runtime named: HTTP/2's streams go to the handle's spawner.
    let exec = SpawnBoxed(conn.shutdown().timers().spawn);
    connection::serve(io, conn, service, None, exec)
}
