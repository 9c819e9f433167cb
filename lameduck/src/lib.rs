//! Graceful shutdown and restart for Rust servers, without losing a single accepted
//! connection or in-flight request.
//!
//! This is the crate servers depend on. Pick a runtime with a feature; each adapter is a
//! module of the same shape — `shutdown(config)`, `Listener::bind_or_inherit` (inherited
//! sockets from Server::Starter, systemd or a predecessor, else a bound address), tracked
//! listeners that drain their backlog, tracked streams, `shutdown.drain_on_signals()`,
//! `restart` (self-restart), `metrics` (feature `metrics`), and `shutdown.drained()`:
//!
//! | feature | module | streams |
//! |---|---|---|
//! | `tokio` | [`lameduck::tokio`](crate::tokio) | tokio's `AsyncRead`/`AsyncWrite` |
//! | `hyper` | [`lameduck::hyper`](crate::hyper) (with a runtime) | any hyper or tower `Service` (an axum `Router`, tonic's routes), HTTP/1.1 and HTTP/2 |
//! | `rustls` | [`lameduck::hyper::serve_tls`](crate::hyper) | HTTPS with rustls: handshakes raced against the lifecycle, ALPN, `close_notify` |
//! | `smol` | [`lameduck::smol`](crate::smol) | `futures-io` |
//! | `async-std` | [`lameduck::async_std`](crate::async_std) (discontinued upstream: prefer smol) | `futures-io` |
//!
//! Each item has one path: a server on one runtime imports everything from
//! `lameduck::<runtime>` (and `lameduck::hyper`), with no type parameter to name; code
//! generic over the runtime uses [`lameduck::driver`](crate::driver) (`Listener::<R>`,
//! `Timers::of::<R>()`); an event loop of your own drives the sans-IO lifecycle,
//! [`lameduck::core`](crate::core), which is all there is without a feature:
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

/// The sans-IO core, for drivers that embed the lifecycle in their own event loop.
pub use lameduck_core as core;

/// The driver every runtime shares, generic over [`Runtime`](driver::Runtime): for code
/// that runs on more than one runtime (feature `tokio`, `smol` or `async-std`). Each runtime
/// module below is this API on one runtime.
#[cfg(any(feature = "tokio", feature = "smol", feature = "async-std"))]
pub use lameduck_driver as driver;

/// lameduck on tokio (feature `tokio`).
#[cfg(feature = "tokio")]
pub use lameduck_tokio as tokio;

/// hyper servers that restart without a failed request (feature `hyper`, on every runtime
/// that is on).
#[cfg(feature = "hyper")]
pub use lameduck_hyper as hyper;

/// lameduck on smol (feature `smol`).
#[cfg(feature = "smol")]
pub use lameduck_smol as smol;

/// lameduck on async-std (feature `async-std`). async-std is discontinued upstream; new code
/// should pick `smol`.
#[cfg(feature = "async-std")]
pub use lameduck_async_std as async_std;
