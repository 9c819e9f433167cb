//! The driver every lameduck runtime shares: what the tokio, smol and async-std crates would
//! each otherwise write, written once over a small [`Runtime`] seam.
//!
//! - [`Shutdown`] and [`Conn`]: the thread-safe handle around the
//!   [`Lifecycle`](lameduck_core::Lifecycle) — one mutex (no lock at all for a request's
//!   start and end while Serving), per-connection mailboxes woken with `event-listener`,
//!   drain waiters that fire the lifecycle's timers with whatever timer the runtime provides;
//! - [`TrackedListener`] and [`Tracked`]: listeners that drain their accept backlog before
//!   they close, streams whose reads and writes move the lifecycle, cut at the socket at the
//!   deadline;
//! - [`accept`]: what an accept loop does with each kind of error, and its backoff;
//! - [`Shutdown::drain_on_signals`]: the signal policy (from `lameduck-os`'s signal sockets);
//! - [`restart`]: in-place upgrade without a supervisor — when to hand over, rollback,
//!   probation (the OS half is `lameduck-os`'s `handover`);
//! - [`env`](mod@env): the shutdown timeline from `LAMEDUCK_*` variables.
//!
//! The OS itself — inherited sockets, signal handlers, `fork`/`exec`, `shutdown(2)` — is
//! `lameduck-os`, the only crate with `unsafe`; this one forbids it. Applications use it
//! through the `lameduck` crate and a runtime feature.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod accept;
mod any;
#[cfg(feature = "async-io")]
pub mod async_io;
mod bind;
// The runtime crates' re-export (`pub use lameduck_driver::common::*`): every item in it has
// its own path in this crate, so the driver's docs list each once.
#[doc(hidden)]
pub mod common;
pub mod env;
mod handle;
mod listener;
#[cfg(feature = "metrics")]
pub mod metrics;
pub mod restart;
pub mod runtime;
mod signals;
mod stream;
mod sync;
pub mod transfer;

pub use any::{Listener, PlainStream, Stream, TcpListener, UnixListener};
pub use handle::{
    Conn, ConnHandle, DrainHold, EndWhenAsked, ListenerGuard, Notice, NoticeWatch, Notices,
    RequestStart, Shutdown, Sleep, Totals,
};
pub use lameduck_os::{inherit, signal};
pub use runtime::{FuturesTraits, IoFamily, Runtime, SignalHandler, Timers, TokioTraits};
pub use signals::on_signal;

pub use listener::{PollAccept, TrackedListener};
pub use stream::{Decrypted, Tracked};
