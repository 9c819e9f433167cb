//! Graceful shutdown and restart for Rust servers, without losing a single accepted
//! connection or in-flight request.
//!
//! This is the crate servers depend on. Pick a runtime with a feature; each runtime is a
//! module of the same shape that holds only its own names — `Tokio` (the runtime),
//! `shutdown(config)`, `Listener` (`bind_or_inherit`: inherited sockets from Server::Starter,
//! systemd or a predecessor, else a bound address; the backlog drained before it closes) and
//! `Stream`:
//!
//! | feature | module | streams |
//! |---|---|---|
//! | `tokio` | [`lameduck::tokio`](crate::tokio) | tokio's `AsyncRead`/`AsyncWrite` |
//! | `hyper` | [`lameduck::hyper`](crate::hyper) (with a runtime) | any hyper or tower `Service` (an axum `Router`, tonic's routes), HTTP/1.1 and HTTP/2 |
//! | `rustls` | [`lameduck::hyper::serve_tls`](crate::hyper) | HTTPS with rustls: handshakes raced against the lifecycle, ALPN, `close_notify` |
//! | `smol` | [`lameduck::smol`](crate::smol) | `futures-io` |
//! | `async-std` | [`lameduck::async_std`](crate::async_std) (discontinued upstream: prefer smol) | `futures-io` |
//!
//! Each item has one path. With a runtime on, everything that is not the runtime's own sits
//! once at this crate's root: the settings and the report (`Config`, `DrainReport`), the
//! handle and what it tracks (`Shutdown`, `Conn`, `Tracked`), `signals` (which signals
//! drain: `signals::drain_on_signals(&shutdown)`), `restart` (self-restart), `env`
//! (`LAMEDUCK_*` settings), `metrics` (feature `metrics`), and for code generic over the
//! runtime `Runtime`, `Timers` and `Listener::<R>`. An event loop of your own drives the
//! sans-IO lifecycle, [`lameduck::core`](crate::core), which is all there is without a
//! feature:
//!
//! ```
//! use lameduck::core::{Action, Config, Instant, Lifecycle};
//!
//! let mut lc = Lifecycle::new(Config::default());
//! lc.listener_opened()?;
//! lc.begin_shutdown(Instant::ZERO)?;
//! assert_eq!(lc.poll_action(), Some(Action::StopAccepting));
//! lc.listener_closed(Instant::ZERO)?; // its backlog drained
//! assert_eq!(lc.poll_action(), Some(Action::Drained));
//! # Ok::<(), lameduck::core::Error>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

/// The README's examples, compiled and run as doc tests.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// docs/self-restart.md's example, compiled as a doc test.
#[doc = include_str!("../../docs/self-restart.md")]
#[cfg(doctest)]
pub struct SelfRestartDoctests;

/// One path per item: a runtime module holds only its own names, and the crates below the
/// facade are not reachable through it. Each block must fail to compile.
///
/// ```compile_fail
/// use lameduck::tokio::Config;
/// ```
///
/// ```compile_fail
/// use lameduck::tokio::Shutdown;
/// ```
///
/// ```compile_fail
/// use lameduck::smol::restart;
/// ```
///
/// ```compile_fail
/// use lameduck::driver::Shutdown;
/// ```
///
/// ```
/// // ... and each is at the root.
/// use lameduck::{Config, Shutdown, restart, signals, tokio::{Listener, Stream, Tokio, shutdown}};
/// ```
#[cfg(doctest)]
pub struct OnePathPerItem;

/// The sans-IO core, for drivers that embed the lifecycle in their own event loop.
pub use lameduck_core as core;

// The runtime-independent API, once, at the root: the shutdown timeline's settings and
// report (the core's types a server names), the handle and what it tracks, and the seam for
// code generic over the runtime.
#[cfg(any(feature = "tokio", feature = "smol", feature = "async-std"))]
#[doc(inline)]
pub use lameduck_core::{Config, ConnState, Counts, DrainReport, IdlePolicy, Phase};
#[cfg(any(feature = "tokio", feature = "smol", feature = "async-std"))]
pub use lameduck_driver::{
    Conn, ConnHandle, Decrypted, DrainHold, EndWhenAsked, FuturesTraits, IoFamily, Listener,
    ListenerGuard, Notice, NoticeWatch, Notices, PlainStream, PollAccept, RequestStart, Runtime,
    Shutdown, SignalHandler, Sleep, Stream, TcpListener, Timers, TokioTraits, Totals, Tracked,
    TrackedListener, UnixListener, accept, inherit, runtime, transfer,
};
#[cfg(any(feature = "tokio", feature = "smol", feature = "async-std"))]
pub use lameduck_process::{env, restart, signals};

/// The [`Runtime`] on `async-io`, the reactor under smol and async-std (feature `smol` or
/// `async-std`).
#[cfg(any(feature = "smol", feature = "async-std"))]
pub use lameduck_driver::async_io;

#[cfg(feature = "metrics")]
pub use lameduck_driver::metrics;

/// lameduck on tokio (feature `tokio`): [`Tokio`](tokio::Tokio), [`shutdown`](tokio::shutdown),
/// [`Listener`](tokio::Listener), [`Stream`](tokio::Stream).
#[cfg(feature = "tokio")]
pub use lameduck_tokio as tokio;

/// hyper servers that restart without a failed request (feature `hyper`, on every runtime
/// that is on).
#[cfg(feature = "hyper")]
pub use lameduck_hyper as hyper;

/// lameduck on smol (feature `smol`): [`Smol`](smol::Smol), [`shutdown`](smol::shutdown),
/// [`Listener`](smol::Listener), [`Stream`](smol::Stream).
#[cfg(feature = "smol")]
pub use lameduck_smol as smol;

/// lameduck on async-std (feature `async-std`). async-std is discontinued upstream; new code
/// should pick `smol`.
#[cfg(feature = "async-std")]
pub use lameduck_async_std as async_std;
