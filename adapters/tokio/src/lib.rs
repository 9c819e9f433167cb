//! lameduck on tokio.
//!
//! ```no_run
//! use lameduck_tokio::{self as lameduck, Config};
//! use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
//!
//! # async fn run() -> std::io::Result<()> {
//! let shutdown = lameduck::shutdown(Config::default());
//! lameduck::drain_on_signals(&shutdown)?; // SIGTERM/SIGINT/SIGHUP drain; Ctrl-C again cuts
//! let mut listener = lameduck::bind_or_inherit(&shutdown, "127.0.0.1:8080")?;
//!
//! // Until shutdown: accept, then drain the backlog, then None.
//! while let Some(stream) = listener.accept().await {
//!     let Ok(stream) = stream else { continue };
//!     tokio::spawn(async move {
//!         // A line-based echo: each line is one request.
//!         let notices = stream.conn().notices();
//!         let mut stream = BufReader::new(stream);
//!         let serve = async move {
//!             let mut line = String::new();
//!             while matches!(stream.read_line(&mut line).await, Ok(n) if n > 0) {
//!                 if stream.write_all(line.as_bytes()).await.is_err() { return }
//!                 line.clear();
//!                 let conn = stream.get_mut().conn_mut();
//!                 let _ = conn.request_finished();          // Active → Idle
//!                 if conn.should_close_after_response() { return }
//!             }
//!         };
//!         // Stale, idle-grace and deadline closes cut the loop wherever it is.
//!         notices.unless_closed(serve).await;
//!     }); // dropping the stream reports it Closed
//! }
//! let report = shutdown.drained().await;
//! println!("drained: {report:?}");
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

use std::io;
use std::time::Instant as StdInstant;

pub use lameduck_std::core::{Config, ConnState, Counts, DrainReport, IdlePolicy, Phase};
pub use lameduck_std::env::{ConfigFromEnv, EnvError};
pub use lameduck_std::inherit::{self, InheritError};
pub use lameduck_std::{
    accept, Conn, ConnHandle, Notice, NoticeWatch, Notices, Runtime, Shutdown, Tracked,
};
use tokio::signal::unix::SignalKind;
use tokio::task::JoinHandle;

/// tokio's clock (which `tokio::time::pause` controls), timer and spawner.
pub const RUNTIME: Runtime = Runtime {
    now: || tokio::time::Instant::now().into_std(),
    sleep_until: |t: StdInstant| Box::pin(tokio::time::sleep_until(t.into())),
    spawn: |task| match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn(task);
            true
        }
        Err(_) => false,
    },
};

/// A tracked TCP listener.
pub type TcpListener =
    lameduck_std::TrackedListener<tokio::net::TcpListener, tokio::net::TcpStream>;
/// A tracked Unix listener.
pub type UnixListener =
    lameduck_std::TrackedListener<tokio::net::UnixListener, tokio::net::UnixStream>;
/// A tracked TCP or Unix listener.
pub type Listener = lameduck_std::AnyListener<TcpListener, UnixListener>;
/// What a [`Listener`] accepts.
pub type Stream =
    lameduck_std::AnyStream<Tracked<tokio::net::TcpStream>, Tracked<tokio::net::UnixStream>>;

/// A shutdown handle on tokio's clock and timer.
pub fn shutdown(config: Config) -> Shutdown {
    Shutdown::new(config, RUNTIME)
}

/// Tracks a TCP listener.
pub fn track_tcp(shutdown: &Shutdown, listener: tokio::net::TcpListener) -> TcpListener {
    TcpListener::new(shutdown, listener, |l, cx| {
        l.poll_accept(cx).map_ok(|(s, _)| s)
    })
}

/// Tracks a Unix listener.
pub fn track_unix(shutdown: &Shutdown, listener: tokio::net::UnixListener) -> UnixListener {
    UnixListener::new(shutdown, listener, |l, cx| {
        l.poll_accept(cx).map_ok(|(s, _)| s)
    })
}

/// Tracks an adopted inherited (or freshly bound) std listener, already non-blocking.
pub fn track_inherited(shutdown: &Shutdown, listener: inherit::Listener) -> io::Result<Listener> {
    Ok(match listener {
        inherit::Listener::Tcp(l) => {
            Listener::Tcp(track_tcp(shutdown, tokio::net::TcpListener::from_std(l)?))
        }
        inherit::Listener::Unix(l) => {
            Listener::Unix(track_unix(shutdown, tokio::net::UnixListener::from_std(l)?))
        }
    })
}

/// The listeners a supervisor passed (`SERVER_STARTER_PORT`, systemd's `LISTEN_FDS`), all
/// tracked; or, when there are none, a TCP listener bound to `addr`.
///
/// A malformed variable or an unusable fd is an error naming the variable, the entry and the
/// reason (kind `InvalidInput`, with the [`InheritError`] as its source); it never silently
/// falls back to binding. Must be called within the tokio runtime.
pub fn listeners(shutdown: &Shutdown, addr: &str) -> io::Result<Vec<Listener>> {
    lameduck_std::bind::listeners_with(shutdown, addr, track_inherited)
}

/// Like [`listeners`], for a server that serves exactly one socket: the single inherited
/// one, or `addr`. More than one inherited socket is an error.
pub fn bind_or_inherit(shutdown: &Shutdown, addr: &str) -> io::Result<Listener> {
    lameduck_std::bind::bind_or_inherit_with(shutdown, addr, track_inherited)
}

/// SIGTERM, SIGINT and SIGHUP begin the drain; SIGINT while draining (a second Ctrl-C) cuts
/// every connection at once ([`Shutdown::force_close`]). A repeated SIGTERM does not cut:
/// supervisors such as Server::Starter send it again to draining workers on every restart,
/// and the [deadline](Config::deadline) bounds the drain.
///
/// SIGHUP drains rather than doing nothing or dying: its default action would kill the
/// process mid-request (a closed terminal, or an operator expecting a reload), and lameduck
/// has no reload — a server is restarted by starting a new one beside it. Pick other signals
/// with [`drain_on`].
///
/// Returns once the handlers are installed: every signal from then on is handled.
pub fn drain_on_signals(shutdown: &Shutdown) -> io::Result<JoinHandle<()>> {
    drain_on(
        shutdown,
        &[
            SignalKind::terminate(),
            SignalKind::interrupt(),
            SignalKind::hangup(),
        ],
        &[SignalKind::interrupt()],
    )
}

/// Each of `drain` begins the drain; one of `force` received while draining cuts every
/// connection. (A signal in `force` should also be in `drain`.) Must be called within the
/// tokio runtime.
///
/// The handlers are installed before this returns, and a signal that arrives while they are
/// being installed — a supervisor's SIGTERM an instant after it started the worker — is
/// never lost: it is either handled or takes its default action (see
/// [`lameduck_std::signal`]; `tokio::signal` can lose it).
pub fn drain_on(
    shutdown: &Shutdown,
    drain: &[SignalKind],
    force: &[SignalKind],
) -> io::Result<JoinHandle<()>> {
    let signal = |kind: &SignalKind| lameduck_std::signal::Signal::from_raw(kind.as_raw_value());
    let force: Vec<_> = force.iter().map(signal).collect();
    let drain: Vec<_> = drain.iter().map(signal).collect();
    let (socket, subscription) = lameduck_std::signal::subscribe(&drain)?;
    let socket = tokio::net::UnixStream::from_std(socket)?;
    let shutdown = shutdown.clone();
    Ok(tokio::spawn(async move {
        let _subscription = subscription;
        let mut received = [0u8; 64];
        // The write end lives in `subscription`: the socket ends only with an error.
        while socket.readable().await.is_ok() {
            match socket.try_read(&mut received) {
                Ok(0) => return,
                Ok(n) => lameduck_std::signal::deliver(&shutdown, &received[..n], &force),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(_) => return,
            }
        }
    }))
}
