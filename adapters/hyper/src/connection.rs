//! One connection's driver: the protocol detected from its first bytes, then hyper's
//! HTTP/1 or HTTP/2 connection driven by the lifecycle's notices.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Poll, ready};

use bytes::Bytes;
use hyper::rt::{Read, Write};
use lameduck_driver::{ConnHandle, Notice, NoticeWatch, Notices, RequestStart, Runtime, Sleep};

use crate::HyperService;
use crate::goaway;
use crate::http1::Http1;
use crate::io::{HttpIo, HttpState, Socket, read};
use crate::service::{TrackedBody, TrackedFuture, TrackedService};

/// The HTTP/2 client preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serves `io` until the connection is done: detects the protocol, then drives it. `exec`
/// runs HTTP/2's streams.
pub(crate) fn serve<E, I, S>(
    io: I,
    conn: ConnHandle,
    service: S,
    socket: Option<Socket<I>>,
    exec: E,
) -> impl Future<Output = ()> + Send + 'static
where
    E: Http2Exec<S>,
    I: Read + Write + Unpin + Send + 'static,
    S: HyperService,
{
    ServeIo::Starting {
        start: start(io, conn, service, socket, exec),
    }
}

/// What hyper's HTTP/2 connection spawns its streams with, for service `S`.
pub(crate) trait Http2Exec<S: HyperService>:
    hyper::rt::bounds::Http2ServerConnExec<TrackedFuture<S::Future>, TrackedBody<S::ResBody>>
    + Clone
    + Send
    + 'static
{
}

impl<S: HyperService, E> Http2Exec<S> for E where
    E: hyper::rt::bounds::Http2ServerConnExec<TrackedFuture<S::Future>, TrackedBody<S::ResBody>>
        + Clone
        + Send
        + 'static
{
}

/// hyper's executor for HTTP/2 streams: runtime `R`'s spawner.
pub(crate) struct Spawn<R>(PhantomData<fn() -> R>);

impl<R> Spawn<R> {
    pub(crate) fn new() -> Self {
        Spawn(PhantomData)
    }
}

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

/// hyper's executor for HTTP/2 streams through the handle's spawner, for I/O whose runtime
/// is not named ([`serve_io`](crate::serve_io)): each stream's task is boxed once more.
#[derive(Clone)]
pub(crate) struct SpawnBoxed(pub(crate) fn(Sleep) -> bool);

impl<F> hyper::rt::Executor<F> for SpawnBoxed
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, task: F) {
        (self.0)(Box::pin(async move {
            task.await;
        }));
    }
}

/// Detects the protocol and makes the connection's driver; `None` when the connection
/// ended first.
async fn start<E, I, S>(
    io: I,
    conn: ConnHandle,
    service: S,
    socket: Option<Socket<I>>,
    exec: E,
) -> Option<Started<impl Future<Output = ()> + Send, impl Future<Output = ()> + Send>>
where
    E: Http2Exec<S>,
    I: Read + Write + Unpin + Send + 'static,
    S: HyperService,
{
    let notices = conn.notices();
    let state = HttpState::new(conn, socket.is_some());
    let mut io = HttpIo::new(io, state.clone(), socket);
    // HTTP/1 or HTTP/2? Read until the bytes leave the HTTP/2 preface or complete it.
    // The connection is New until its first byte, and the stale-New rule (or the
    // deadline) ends a client that never sends.
    let Some(Ok((replay, http2))) = notices.unless_closed(detect(&mut io)).await else {
        return None;
    };
    io.replay(replay);
    let service = TrackedService {
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
        let connection = hyper::server::conn::http2::Builder::new(exec)
            .serve_connection(goaway::GoAwayGuard::new(io), service);
        // Boxed: an HTTP/2 connection is ~2.7 KB, and inline it would size every
        // connection's task, HTTP/1 ones included (measured: 3.3 KB → 0.8 KB per task).
        Some(Started::Http2(Box::pin(drive(
            connection,
            &notices,
            state,
            Some(|c| c.graceful_shutdown()),
        ))))
    } else {
        // HTTP/1 never takes hyper's `graceful_shutdown` (see `Drive`).
        let connection = Http1::serve(io, service, state.clone());
        Some(Started::Http1(drive(connection, &notices, state, None)))
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
    struct Drive<C> {
        #[pin]
        connection: C,
        watch: NoticeWatch,
        state: Arc<HttpState>,
        // hyper's GOAWAY, HTTP/2 only.
        graceful_shutdown: Option<fn(Pin<&mut C>)>,
        // Told to finish (then only a close matters).
        told: bool,
        // HTTP/2 told to finish before its first request: GOAWAY waits for that request.
        goaway_owed: bool,
    }
}

fn drive<C: Future>(
    connection: C,
    notices: &Notices,
    state: Arc<HttpState>,
    graceful_shutdown: Option<fn(Pin<&mut C>)>,
) -> Drive<C> {
    Drive {
        connection,
        watch: notices.watch(),
        state,
        graceful_shutdown,
        told: false,
        goaway_owed: false,
    }
}

impl<C: Future> Future for Drive<C> {
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
                if let Some(goaway) = this.graceful_shutdown {
                    goaway(this.connection.as_mut());
                }
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
                    if let Some(goaway) = this.graceful_shutdown {
                        if this.state.has_seen_request() {
                            goaway(this.connection.as_mut());
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
