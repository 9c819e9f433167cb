//! Listeners, timers and signals on `async-io`: everything the smol and async-std adapters
//! share (both runtimes drive the `async-io` reactor).

use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::task::{ready, Context, Poll};
use std::time::Instant as StdInstant;

use async_io::{Async, Timer};
use futures_lite::AsyncReadExt;

use crate::{AnyListener, AnyStream, Sleep, TrackedListener};

// What a runtime crate on `async-io` re-exports whole (`pub use lameduck_std::async_io::*`).
pub use crate::core::{Config, ConnState, Counts, DrainReport, IdlePolicy, Phase};
pub use crate::env::{ConfigFromEnv, EnvError};
pub use crate::inherit::{self, InheritError};
pub use crate::signal::Signal;
pub use crate::{
    accept, Conn, ConnHandle, Notice, NoticeWatch, Notices, Runtime, Shutdown, Tracked,
};

/// A tracked TCP listener.
pub type TcpTracked = TrackedListener<Async<TcpListener>, Async<TcpStream>>;
/// A tracked Unix listener.
pub type UnixTracked = TrackedListener<Async<UnixListener>, Async<UnixStream>>;
/// A tracked TCP or Unix listener.
pub type Listener = AnyListener<TcpTracked, UnixTracked>;
/// A tracked TCP listener (the name the runtime crates export).
pub type TrackedTcpListener = TcpTracked;
/// A tracked Unix listener (the name the runtime crates export).
pub type TrackedUnixListener = UnixTracked;
/// What a [`Listener`] accepts.
pub type Stream = AnyStream<Tracked<Async<TcpStream>>, Tracked<Async<UnixStream>>>;

/// `async-io`'s timer, for [`Runtime::sleep_until`](crate::Runtime::sleep_until).
pub fn sleep_until(at: StdInstant) -> Sleep {
    Box::pin(async move {
        Timer::at(at).await;
    })
}

/// Accepts with `async-io`: a non-blocking `accept`, and readiness when there is nothing.
fn poll_accept<L, S>(
    listener: &Async<L>,
    cx: &mut Context<'_>,
    accept: fn(&L) -> io::Result<S>,
) -> Poll<io::Result<Async<S>>>
where
    S: std::os::fd::AsFd,
{
    loop {
        match accept(listener.get_ref()) {
            Ok(stream) => return Poll::Ready(Async::new(stream)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                ready!(listener.poll_readable(cx))?;
            }
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
}

/// Tracks a TCP listener.
pub fn track_tcp(shutdown: &Shutdown, listener: Async<TcpListener>) -> TcpTracked {
    TcpTracked::new(shutdown, listener, |l, cx| {
        poll_accept(l, cx, |l| l.accept().map(|(s, _)| s))
    })
}

/// Tracks a Unix listener.
pub fn track_unix(shutdown: &Shutdown, listener: Async<UnixListener>) -> UnixTracked {
    UnixTracked::new(shutdown, listener, |l, cx| {
        poll_accept(l, cx, |l| l.accept().map(|(s, _)| s))
    })
}

/// Tracks an adopted inherited (or freshly bound) std listener.
pub fn track_std(shutdown: &Shutdown, listener: inherit::Listener) -> io::Result<Listener> {
    Ok(match listener {
        inherit::Listener::Tcp(l) => Listener::Tcp(track_tcp(shutdown, Async::new(l)?)),
        inherit::Listener::Unix(l) => Listener::Unix(track_unix(shutdown, Async::new(l)?)),
    })
}

/// The listeners a supervisor passed, or a TCP listener bound to `addr`; see
/// [`listeners_with`](crate::bind::listeners_with).
pub fn listeners(shutdown: &Shutdown, addr: &str) -> io::Result<Vec<Listener>> {
    crate::bind::listeners_with(shutdown, addr, track_std)
}

/// The single inherited listener, or `addr`; see [`listeners`].
pub fn bind_or_inherit(shutdown: &Shutdown, addr: &str) -> io::Result<Listener> {
    crate::bind::bind_or_inherit_with(shutdown, addr, track_std)
}

/// SIGTERM, SIGINT and SIGHUP begin the drain; SIGINT while draining cuts every connection. A
/// repeated SIGTERM does not cut (supervisors repeat it; the deadline bounds the drain).
/// SIGHUP drains rather than killing the process mid-request (its default action): lameduck
/// has no reload, a server is restarted by starting a new one beside it. The
/// handlers are installed before this returns, and a signal that arrives while they are
/// being installed is not lost (see [`signal`](crate::signal)); the returned future
/// handles the signals (spawn it).
pub fn drain_on_signals(
    shutdown: &Shutdown,
) -> io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    drain_on(
        shutdown,
        [Signal::TERM, Signal::INT, Signal::HUP],
        [Signal::INT],
    )
}

/// Each of `drain` begins the drain; one of `force` received while draining cuts every
/// connection. (A signal in `force` should also be in `drain`.)
pub fn drain_on(
    shutdown: &Shutdown,
    drain: impl IntoIterator<Item = Signal>,
    force: impl IntoIterator<Item = Signal>,
) -> io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    let drain: Vec<Signal> = drain.into_iter().collect();
    let force: Vec<Signal> = force.into_iter().collect();
    let (socket, subscription) = crate::signal::subscribe(&drain)?;
    let mut socket = Async::new(socket)?;
    let shutdown = shutdown.clone();
    Ok(async move {
        let _subscription = subscription;
        let mut received = [0u8; 64];
        // The write end lives in `subscription`: the read ends only with an error.
        while let Ok(n @ 1..) = socket.read(&mut received).await {
            crate::signal::deliver(&shutdown, &received[..n], &force);
        }
    })
}
