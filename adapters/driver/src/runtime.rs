//! The seam between the driver every runtime shares and one runtime: what lameduck needs
//! from tokio, smol or async-std, and nothing more.
//!
//! In the manner of quinn's `Runtime` trait: a clock and a timer, a spawner, and the wrapping
//! of std sockets (listeners inherited from a supervisor or freshly bound, and the signal
//! socket). Everything above it — tracked listeners that drain their backlog, inherited
//! sockets, the signal policy, the accept-error policy, the handle itself — is written once
//! and works on any implementation. A runtime crate implements this (about a hundred lines),
//! names the driver's generic types on itself (`type Listener = Listener<Tokio>`) and
//! re-exports the rest.
//!
//! Every method is an associated function (no `self`): the handle keeps them as plain
//! function pointers ([`Timers::of`]), so nothing on a request's path is generic or boxed.

use std::fmt::Debug;
use std::future::Future;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::task::{Context, Poll};
use std::time::Instant;

use lameduck_os::signal::Signal;

use crate::Sleep;

/// A runtime lameduck can drive: its clock, timer and spawner, and its sockets.
pub trait Runtime: Debug + Send + Sync + Sized + 'static {
    /// The runtime's name, as servers print it (`"tokio"`).
    const NAME: &'static str;

    /// Which async I/O traits its streams implement: [`TokioTraits`] or [`FuturesTraits`].
    /// A protocol layer adapts each family once (`lameduck-hyper`: hyper-util's `TokioIo`,
    /// smol-hyper's `FuturesIo`), so a new runtime needs nothing of it.
    type IoTraits: IoFamily;

    /// The runtime's TCP listener.
    type TcpListener: AsFd + Debug + Send + Sync + 'static;
    /// What it accepts.
    type TcpStream: AsFd + AsRawFd + Debug + Send + Sync + Unpin + 'static;
    /// The runtime's Unix-domain listener.
    type UnixListener: AsFd + Debug + Send + Sync + 'static;
    /// What it accepts; also the signal socket's type.
    type UnixStream: AsFd + AsRawFd + Debug + Send + Sync + Unpin + 'static;

    /// The runtime's monotonic clock (tokio's can be paused in tests).
    fn now() -> Instant;

    /// A future that completes at `at` on the runtime's timer.
    fn sleep_until(at: Instant) -> Sleep;

    /// Spawns a background task, detached; false when it cannot (no runtime on this
    /// thread). Generic, so that a connection's task is not boxed twice.
    fn spawn<F: Future<Output = ()> + Send + 'static>(task: F) -> bool;

    /// Registers a non-blocking std TCP listener with the runtime's reactor.
    fn tcp_listener(listener: std::net::TcpListener) -> io::Result<Self::TcpListener>;

    /// Registers a non-blocking std TCP stream with the runtime's reactor: a connection a
    /// predecessor handed over.
    fn tcp_stream(stream: std::net::TcpStream) -> io::Result<Self::TcpStream>;

    /// Registers a non-blocking std Unix listener with the runtime's reactor.
    fn unix_listener(listener: std::os::unix::net::UnixListener) -> io::Result<Self::UnixListener>;

    /// Registers a non-blocking std Unix stream (the signal socket) with the reactor.
    fn unix_stream(stream: StdUnixStream) -> io::Result<Self::UnixStream>;

    /// Accepts a TCP connection, or registers `cx`'s waker when none is pending.
    fn poll_accept_tcp(
        listener: &Self::TcpListener,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<Self::TcpStream>>;

    /// Accepts a Unix connection, or registers `cx`'s waker when none is pending.
    fn poll_accept_unix(
        listener: &Self::UnixListener,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<Self::UnixStream>>;

    /// Reads what is there from a Unix stream, or registers `cx`'s waker when nothing is.
    fn poll_read_unix(
        stream: &Self::UnixStream,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>>;
}

/// A family of async I/O traits a runtime's streams implement (see [`Runtime::IoTraits`]).
pub trait IoFamily: Debug + Send + Sync + 'static {}

/// tokio's `AsyncRead`/`AsyncWrite` (the driver's feature `tokio`).
#[derive(Debug)]
pub enum TokioTraits {}
impl IoFamily for TokioTraits {}

/// `futures-io`'s `AsyncRead`/`AsyncWrite` (the driver's feature `futures-io`): smol,
/// async-std.
#[derive(Debug)]
pub enum FuturesTraits {}
impl IoFamily for FuturesTraits {}

/// What the shared handle keeps of a runtime: its clock, timer and spawner, and its signal
/// task, as function pointers — so that [`Shutdown`](crate::Shutdown) carries its runtime
/// without a type parameter. [`Timers::of`] takes them from a [`Runtime`]; a test can build
/// its own (a clock it controls, a spawner that refuses).
#[derive(Clone, Copy, Debug)]
pub struct Timers {
    /// The runtime's `Instant::now`.
    pub now: fn() -> Instant,
    /// A future that completes at the given instant.
    pub sleep_until: fn(Instant) -> Sleep,
    /// Spawns a background task; returns false when it cannot (no runtime on this thread),
    /// in which case the timers are driven by whoever awaits
    /// [`Shutdown::drained`](crate::Shutdown::drained).
    pub spawn: fn(Sleep) -> bool,
    /// Subscribes to signals (none lost from the moment this returns, see
    /// `lameduck_os::signal::subscribe`) and spawns the task that hands each arrival to the
    /// handler, until the handler returns false: what
    /// the signal policy (`lameduck_process::signals`) and
    /// the self-restart (`lameduck_process::restart`) listen with.
    pub watch_signals: fn(&[Signal], SignalHandler) -> io::Result<()>,
}

/// What a signal task calls for each signal that arrives; it returns false to stop (the task
/// ends, and the signals' dispositions are given back once no one else subscribes).
pub type SignalHandler = Box<dyn FnMut(Signal) -> bool + Send>;

impl Timers {
    /// `R`'s clock, timer and spawner.
    pub fn of<R: Runtime>() -> Timers {
        Timers {
            now: R::now,
            sleep_until: R::sleep_until,
            spawn: R::spawn::<Sleep>,
            watch_signals: watch_signals::<R>,
        }
    }
}

/// A non-blocking operation on a reactor's readiness: tries `attempt`, and while it would
/// block, waits with `ready` (which registers `cx`'s waker) and tries again. What every
/// runtime's accept and signal-socket read come down to.
pub fn poll_nonblocking<T>(
    cx: &mut Context<'_>,
    mut attempt: impl FnMut() -> io::Result<T>,
    mut ready: impl FnMut(&mut Context<'_>) -> Poll<io::Result<()>>,
) -> Poll<io::Result<T>> {
    loop {
        match attempt() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if let Err(e) = std::task::ready!(ready(cx)) {
                    return Poll::Ready(Err(e));
                }
            }
            result => return Poll::Ready(result),
        }
    }
}

/// Spawns `task` on `R`, or fails naming the runtime when there is none on this thread.
pub(crate) fn spawn<R: Runtime>(task: impl Future<Output = ()> + Send + 'static) -> io::Result<()> {
    if R::spawn(task) {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "no {} runtime on this thread to spawn on",
            R::NAME
        )))
    }
}

/// [`Timers::watch_signals`](crate::Timers::watch_signals) on runtime `R`: subscribes, then
/// spawns the task that reads the signal socket.
pub(crate) fn watch_signals<R: Runtime>(
    signals: &[Signal],
    mut handler: SignalHandler,
) -> io::Result<()> {
    let (socket, subscription) = lameduck_os::signal::subscribe(signals)?;
    let socket = R::unix_stream(socket)?;
    spawn::<R>(Box::pin(async move {
        let _subscription = subscription;
        let mut received = [0u8; 64];
        // The write end lives in `subscription`: the socket ends only with an error.
        while let Ok(n @ 1..) =
            futures_lite::future::poll_fn(|cx| R::poll_read_unix(&socket, cx, &mut received)).await
        {
            for &byte in &received[..n] {
                if !handler(Signal::from_raw(byte.into())) {
                    return;
                }
            }
        }
    }))
}
