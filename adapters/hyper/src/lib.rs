//! lameduck for hyper: serve any hyper `Service` — an axum `Router` included — over HTTP/1.1
//! and HTTP/2 (detected; h2c with prior knowledge), and shut down or restart without a
//! failed request.
//!
//! ```no_run
//! use std::convert::Infallible;
//!
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use hyper::{Request, Response};
//! use lameduck_hyper::serve;
//! use lameduck_tokio::{self as lameduck, Config};
//!
//! #[tokio::main]
//! async fn main() -> std::io::Result<()> {
//!     let shutdown = lameduck::shutdown(Config::default());
//!     lameduck::drain_on_signals(&shutdown)?;
//!     let listener = lameduck::bind_or_inherit(&shutdown, "127.0.0.1:8080")?;
//!     let hello = hyper::service::service_fn(|_req: Request<hyper::body::Incoming>| async {
//!         Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("hello\n"))))
//!     });
//!     serve(listener, hello).await;                 // until shutdown stops the listener
//!     println!("{:?}", shutdown.drained().await);   // every request answered
//!     Ok(())
//! }
//! ```
//!
//! What each connection gets, after Go's `ConnState` and beyond it:
//!
//! - **New** on accept; **Active** from the first byte of a request (not after its header is
//!   parsed, so a half-received request is never mistaken for an idle connection); **Idle**
//!   once the response is flushed; **Upgraded** on `101 Switching Protocols` — still tracked,
//!   its handler finds the [`ConnHandle`] in the request's extensions (requests that ask
//!   for an upgrade carry it) and watches its notices. A streaming handler (SSE) that wants
//!   to end its stream when the drain asks builds its service per connection with
//!   [`serve_connection`], capturing `stream.conn().handle()`.
//! - While draining, every HTTP/1.1 response carries `Connection: close` and the connection
//!   closes after it (an HTTP/1.0 keep-alive client is not promised `keep-alive`); HTTP/2
//!   gets the graceful double GOAWAY. HTTP/1 never uses hyper's `graceful_shutdown`: it would
//!   close a connection whose request is still arriving (hyperium/hyper#3792) and close
//!   after a response that already promised keep-alive, into the client's next request. A
//!   response already under way when the drain begins keeps its promise; the connection is
//!   then Idle and its next request gets the `Connection: close`.
//! - Idle keep-alive connections follow the lifecycle's idle policy: by default a request
//!   that arrives within the grace is served with `Connection: close`.
//! - Closing lingers (RFC 9112 §9.6): the write side is shut, then what the client still
//!   sends is read and discarded for up to a second, so unread pipelined bytes never turn
//!   into a reset that destroys the last response.
//! - A connection still detecting HTTP/1 vs HTTP/2 at shutdown is New: it is neither cut
//!   with its preface lost nor waited for without bound.
#![warn(missing_docs)]

mod io;
mod service;

use std::future::Future;
use std::os::fd::RawFd;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http_body::Body;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
pub use lameduck_tokio::{Config, Conn, ConnHandle, IdlePolicy, Notice};
use std::task::Poll;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use crate::io::{HttpIo, HttpState};
pub use crate::service::{TrackedBody, TrackedFuture};

/// The HTTP/2 client preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Accepts from `listener` until shutdown stops it (after its backlog is drained) and serves
/// every connection with `service` on its own task.
pub async fn serve<S, B>(mut listener: lameduck_tokio::Listener, service: S)
where
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
        tokio::spawn(serve_connection(stream, service.clone()));
    }
}

/// Serves one tracked connection with `service` until it closes, following the lifecycle's
/// notices. Resolves when the connection is done (a lingering close may still run; the
/// drain waits for it).
pub fn serve_connection<S, B>(
    stream: lameduck_tokio::Stream,
    service: S,
) -> impl Future<Output = ()> + Send + 'static
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
    let (io, conn) = stream.into_parts();
    serve_tracked_io(io, conn, Some(fd), service)
}

/// Like [`serve_connection`], for any I/O: `io` is the plain stream and `conn` its tracking
/// (from [`Tracked::into_parts`](lameduck_tokio::Tracked::into_parts), say).
pub async fn serve_io<I, S, B>(io: I, conn: Conn, service: S)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve_tracked_io(io, conn, None, service).await
}

/// [`serve_io`], with the socket `fd` (if any) shut down by a deadline cut.
async fn serve_tracked_io<I, S, B>(io: I, conn: Conn, fd: Option<RawFd>, service: S)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let handle = conn.handle();
    let notices = handle.notices();
    let state = HttpState::new(handle.clone());
    let mut io = HttpIo::new(io, conn, state.clone());
    if let Some(fd) = fd {
        // SAFETY: `fd` is `io`'s socket (from the same stream), and `HttpIo` drops its `Conn`
        // before its stream (see its `Drop`), so the fd is open while the cut is armed.
        unsafe { handle.cut_at_socket(fd) };
    }
    // HTTP/1 or HTTP/2? Read until the bytes leave the HTTP/2 preface or complete it. The
    // connection is New until its first byte, and the stale-New rule (or the deadline) ends
    // a client that never sends.
    let Some(Ok((replay, http2))) = notices.unless_closed(detect(&mut io)).await else {
        return;
    };
    io.replay(replay);
    let service = service::TrackedService {
        inner: service,
        state: state.clone(),
    };
    let io = TokioIo::new(io);
    if http2 {
        state.http2.store(true, Ordering::Release);
        // HTTP/2 reads SETTINGS, PING and WINDOW_UPDATE frames between requests: requests are
        // its streams, counted by the service. The preface itself was no request.
        handle.set_read_starts_request(false);
        if state.inflight() == 0 {
            let _ = handle.request_finished();
        }
        let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(io, service);
        // Boxed: an HTTP/2 connection is ~2.7 KB, and inline it would size every
        // connection's task, HTTP/1 ones included (measured: 3.3 KB → 0.8 KB per task).
        Box::pin(drive(connection, &notices, &state, |c| {
            c.graceful_shutdown()
        }))
        .await;
    } else {
        let connection = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, service)
            .with_upgrades();
        drive(connection, &notices, &state, |c| c.graceful_shutdown()).await;
    }
}

/// Reads the first bytes: `(bytes read, is HTTP/2)`.
async fn detect<I: AsyncRead + Unpin>(io: &mut I) -> std::io::Result<(Bytes, bool)> {
    let mut seen = Vec::with_capacity(PREFACE.len());
    let mut buf = [0u8; PREFACE.len()];
    loop {
        let want = PREFACE.len() - seen.len();
        let n = io.read(&mut buf[..want]).await?;
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

/// Runs a hyper connection, acting on the lifecycle's notices.
async fn drive<C, F>(
    connection: C,
    notices: &lameduck_tokio::Notices,
    state: &HttpState,
    graceful_shutdown: F,
) where
    C: Future,
    F: Fn(std::pin::Pin<&mut C>),
{
    let mut connection = std::pin::pin!(connection);
    let mut watch = notices.watch();
    let mut told = false;
    std::future::poll_fn(|cx| loop {
        if connection.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        let at_least = if told {
            Notice::Close
        } else {
            Notice::FinishThenClose
        };
        match watch.poll_notice(cx, at_least) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Notice::Close) => return Poll::Ready(()),
            Poll::Ready(_) => {
                // HTTP/2: GOAWAY now; in-flight streams finish, the client retries the rest
                // on a new connection. HTTP/1: never hyper's `graceful_shutdown`, which
                // closes a connection whose request is still arriving, and closes after a
                // response that already promised keep-alive — into the client's next
                // request. The service marks the next response `Connection: close` instead,
                // and hyper closes after it.
                if state.is_http2() {
                    graceful_shutdown(connection.as_mut());
                }
                told = true; // then poll the connection again
            }
        }
    })
    .await
}
