//! The std layer under every lameduck runtime adapter.
//!
//! What the tokio, smol and async-std adapters would each otherwise write lives here once:
//!
//! - [`Shutdown`] and [`Conn`]: the thread-safe handle around the
//!   [`Lifecycle`](lameduck_core::Lifecycle) — one mutex (no lock at all for a request's
//!   start and end while Serving), per-connection mailboxes woken with `event-listener`,
//!   drain waiters that fire the lifecycle's timers with whatever timer the runtime provides;
//! - [`inherit`]: listening sockets passed by Server::Starter or systemd, parsed and checked;
//! - [`accept`]: what an accept loop does with each kind of error, and its backoff;
//! - [`signal`]: shutdown signals as bytes on a socket, none lost at start-up;
//! - [`restart`]: in-place upgrade without a supervisor — socket handover, a readiness
//!   handshake, rollback, a PID file and systemd notifications.
//!
//! Applications use it through the `lameduck` crate and a runtime feature.
#![warn(missing_docs)]

pub mod accept;
mod any;
mod api;
#[cfg(feature = "async-io")]
pub mod async_io;
pub mod bind;
pub mod env;
mod handle;
pub mod inherit;
mod listener;
#[cfg(feature = "metrics")]
pub mod metrics;
pub mod restart;
pub mod runtime;
pub mod signal;
mod stream;
mod sync;

pub use any::{Listener, PlainStream, Stream, TcpListener, UnixListener};
pub use bind::{bind_or_inherit, listeners, track, track_tcp, track_unix};
pub use handle::{
    Conn, ConnHandle, DrainHold, EndOnBegin, ListenerGuard, Notice, NoticeWatch, Notices, Shutdown,
    Sleep,
};
pub use runtime::{Runtime, Timers};
pub use signal::{drain_on, drain_on_signals};

/// A shutdown handle in the Serving phase on runtime `R`'s clock, timer and spawner.
pub fn shutdown<R: Runtime>(config: core::Config) -> Shutdown {
    Shutdown::new(config, Timers::of::<R>())
}
pub use lameduck_core as core;
pub use listener::{PollAccept, TrackedListener};
pub use stream::{Decrypted, Tracked};
