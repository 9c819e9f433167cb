//! The connection lifecycle and graceful-shutdown protocol of [lameduck], as a pure state
//! machine.
//!
//! A server in *lame-duck mode* still serves what it already has, takes nothing new, and
//! leaves when it is done. This crate decides, for every connection, what that means at each
//! instant — and nothing else: it has no clock, does no I/O, spawns nothing and never blocks,
//! so any event loop can embed it (the `lameduck` adapters drive it on tokio, smol and
//! async-std). It is `#![no_std]` (with `alloc`) and `#![forbid(unsafe_code)]`.
//!
//! ```
//! use core::time::Duration;
//! use lameduck_core::{Action, Config, ConnState, Instant, Lifecycle, Phase};
//!
//! let ms = |n: u64| Instant::from_nanos(n * 1_000_000);
//! let mut lc = Lifecycle::new(Config::default());
//! lc.listener_opened()?;                              // the server listens
//!
//! // A client connects, sends a request, gets its response, and keeps the connection.
//! let conn = lc.accept(ms(0))?;                       // New
//! lc.request_started(conn, ms(1))?;                   // Active: the first byte arrived
//! lc.request_finished(conn, ms(2))?;                  // Idle: keep-alive
//! // It sends a second request, and SIGTERM arrives while it is being served.
//! lc.request_started(conn, ms(10))?;
//! lc.begin_shutdown(ms(11))?;
//!
//! // Stop accepting, and tell the connection to answer with `Connection: close`.
//! assert_eq!(lc.poll_action(), Some(Action::StopAccepting));
//! lc.listener_closed(ms(11))?;                        // backlog drained, listener closed
//! assert_eq!(lc.poll_action(), Some(Action::FinishThenClose(conn)));
//! assert_eq!(lc.poll_action(), None);                 // nothing is cut while Active
//!
//! // The response goes out with `Connection: close`, and the server closes the connection.
//! lc.request_finished(conn, ms(15))?;
//! lc.closed(conn, ms(15))?;
//! assert_eq!(lc.state(conn)?, ConnState::Closed);
//!
//! // Drained the moment the last connection closed, not at some later poll.
//! assert_eq!(lc.poll_action(), Some(Action::Drained));
//! assert_eq!(lc.phase(), Phase::Drained);
//! let report = lc.report().unwrap();
//! assert_eq!((report.at_begin.active, report.finished, report.cut.total()), (1, 1, 0));
//! assert_eq!(report.drained_at, Some(ms(15)));
//! # Ok::<(), lameduck_core::Error>(())
//! ```
//!
//! # Connection states
//!
//! After Go's `net/http`: [`New`](ConnState::New) (accepted, no request byte yet) →
//! [`Active`](ConnState::Active) (from the *first byte* of a request to the end of its
//! response) → [`Idle`](ConnState::Idle) (keep-alive) → Active → … →
//! [`Closed`](ConnState::Closed), with [`Upgraded`](ConnState::Upgraded) for connections
//! taken over by WebSocket, SSE or CONNECT, which stay tracked.
//!
//! | event | from | to |
//! |---|---|---|
//! | [`accept`](Lifecycle::accept) | — | New |
//! | [`request_started`](Lifecycle::request_started) | New, Idle | Active |
//! | [`request_finished`](Lifecycle::request_finished) | Active | Idle |
//! | [`upgraded`](Lifecycle::upgraded) | Active | Upgraded |
//! | [`closed`](Lifecycle::closed) | any live state | Closed |
//!
//! Anything else is an [`Error`] that changes nothing.
//!
//! **The serving fast path.** No rule reads New, Idle or Active before the shutdown begins,
//! so a driver may let its connections keep those three states to themselves while Serving
//! (an atomic per connection, no call per request) and bring the lifecycle up to date with
//! [`catch_up`](Lifecycle::catch_up) before it begins the shutdown; `catch_up` defines which
//! moves that may be, and refuses the rest.
//!
//! # The shutdown protocol
//!
//! [`begin_shutdown`](Lifecycle::begin_shutdown) moves the [`Phase`] from Serving to:
//!
//! 1. **Lame duck** (only if [`Config::lame_duck`] is non-zero): still accepting; every
//!    connection, including new ones, gets [`Action::FinishThenClose`] (or
//!    [`Action::AskToLeave`] if upgraded), so a load balancer can move clients away.
//! 2. **Draining**: [`Action::StopAccepting`]. The driver drains each listener's accept
//!    backlog (those connections are tracked and served like any other) and closes it; the
//!    driver registers its listeners ([`listener_opened`](Lifecycle::listener_opened),
//!    [`listener_closed`](Lifecycle::listener_closed)), so accepting ends when the last one
//!    has closed — at once if none is open.
//!    - Active connections are told to finish-then-close and are waited for; never closed
//!      before the deadline. The driver answers with `Connection: close` and closes them.
//!    - Idle connections follow the [`IdlePolicy`]: closed at once, or — the default — left
//!      open for a grace period so a request already on its way is served with
//!      `Connection: close`.
//!    - New connections are waited for until they are [`Config::stale_new`] old (5 s, Go's
//!      rule), then closed ([`CloseReason::Stale`]). One that sends a request first is
//!      served.
//!    - Upgraded connections are told to go away and waited for.
//!
//!    With a [`Config::spread`], the asks of the first two steps (`FinishThenClose`,
//!    `AskToLeave`) are not all issued at the begin: each connection live then gets its own
//!    moment in the window ([`Config::spread_offset`], fixed by its id), always before the
//!    deadline, so that its clients do not all reconnect at once. Connections accepted later
//!    are asked at once, and an Idle connection's grace runs from its ask.
//! 3. **Drained**: the moment the last connection closes with no listener left,
//!    [`Action::Drained`] is queued and the [`DrainReport`] is complete.
//! 4. At the optional [`Config::deadline`] (or on [`force_close`](Lifecycle::force_close))
//!    everything left is closed ([`CloseReason::Deadline`]) and the report counts what was
//!    cut, per state.
//!
//! # Driving it
//!
//! After every input, pull actions with [`poll_action`](Lifecycle::poll_action) until it
//! returns `None`, then sleep until [`poll_timeout`](Lifecycle::poll_timeout) (or the next
//! event) and call [`handle_timeout`](Lifecycle::handle_timeout). Actions are decided when
//! pulled, so they always reflect the latest state.
//!
//! # Guarantees
//!
//! For every sequence of calls (checked by a property-test suite and a fuzz target against a
//! reference model; the checker is public behind the `fuzzing` feature):
//!
//! - a Close is never issued for an Active or Upgraded connection, nor for a New one younger
//!   than `stale_new`, nor at all before shutdown begins — unless the deadline passed or
//!   `force_close` was called, and then the report counts it as cut;
//! - a connection accepted after shutdown began is tracked and served;
//! - no ask goes out before the connection's moment in the spread window, nor after the
//!   deadline, and none is owed once its moment has passed;
//! - every accepted connection is closed exactly once, each action is issued at most once per
//!   connection, and [`counts`](Lifecycle::counts) always matches reality;
//! - `Drained` is issued exactly once, as soon as the last connection closes and never before;
//! - `poll_timeout` is never in the past, and a driver that obeys reaches `Drained`;
//! - no input panics, and in steady state no input allocates: connection slots are reused,
//!   and each tracked connection costs 24 bytes of core state.
//!
//! [lameduck]: https://github.com/lameduck-rs/lameduck
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(feature = "fuzzing")]
extern crate std;

mod action;
mod config;
mod conn;
mod error;
mod lifecycle;
mod machine;
mod report;
mod slab;
mod time;

#[cfg(feature = "fuzzing")]
pub mod fuzzing;

pub use action::{Action, CloseReason};
pub use config::{Config, IdlePolicy};
pub use conn::{ConnId, ConnState, Counts};
pub use error::{Error, Event};
pub use lifecycle::{Lifecycle, Phase};
pub use machine::Machine;
pub use report::DrainReport;
pub use time::Instant;
