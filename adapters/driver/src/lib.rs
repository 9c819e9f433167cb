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
//! - [`runtime`]: the seam itself, with the task that reads signals
//!   ([`Timers::watch_signals`]);
//! - [`transfer`]: idle connections handed to a successor, each leaving only once the
//!   successor holds it.
//!
//! What a server decides about its process — which signals drain, self-restart, the
//! timeline from `LAMEDUCK_*` variables — is `lameduck-process`, above this crate. The OS
//! itself — inherited sockets, signal handlers, `fork`/`exec`, `shutdown(2)` — is
//! `lameduck-os`, the only crate with `unsafe`; this one forbids it. Applications use it
//! through the `lameduck` crate and a runtime feature.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod accept;
mod any;
#[cfg(feature = "async-io")]
pub mod async_io;
mod bind;
mod handle;
mod listener;
#[cfg(feature = "metrics")]
pub mod metrics;
pub mod runtime;
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

pub use listener::{PollAccept, TrackedListener};
pub use stream::{Decrypted, Tracked};
