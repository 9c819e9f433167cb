//! The outcome of a shutdown.

use crate::{Counts, Instant};

/// What happened to every connection from [`begin_shutdown`] to [`Action::Drained`].
///
/// Every connection that was live when shutdown began, or was accepted (or adopted) after,
/// is counted exactly once in `finished`, `handed_over`, `closed_idle`, `closed_stale` or
/// `cut`:
///
/// ```text
/// at_begin.total() + accepted_during
///     == finished + handed_over + closed_idle + closed_stale + cut.total()
/// ```
///
/// [`begin_shutdown`]: crate::Lifecycle::begin_shutdown
/// [`Action::Drained`]: crate::Action::Drained
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct DrainReport {
    /// When [`begin_shutdown`](crate::Lifecycle::begin_shutdown) was called.
    pub began_at: Instant,
    /// When draining began (after the lame-duck window, if any).
    pub draining_at: Option<Instant>,
    /// When the last connection closed with no listener left.
    pub drained_at: Option<Instant>,
    /// Live connections per state when shutdown began.
    pub at_begin: Counts,
    /// Connections accepted after shutdown began (the accept raced the signal, the lame-duck
    /// window, or the listener backlog drained at stop). They are tracked and served.
    pub accepted_during: usize,
    /// Connections that closed on their own or after finishing their last request.
    pub finished: usize,
    /// Idle connections handed over to another process
    /// ([`handed_over`](crate::Lifecycle::handed_over)): they go on there.
    pub handed_over: usize,
    /// Idle connections offered to a successor that did not take them
    /// ([`taken_back`](crate::Lifecycle::taken_back)) and were served here again. Not an
    /// outcome of its own: each is then counted again by how it ended.
    pub taken_back: usize,
    /// Idle connections the lifecycle closed (idle policy).
    pub closed_idle: usize,
    /// New connections the lifecycle closed because they stayed silent past `stale_new`.
    pub closed_stale: usize,
    /// Connections cut at the deadline (or by `force_close`), per state at the cut.
    pub cut: Counts,
    /// When the last ask to leave ([`FinishThenClose`](crate::Action::FinishThenClose) or
    /// [`AskToLeave`](crate::Action::AskToLeave)) was issued: with a
    /// [`spread`](crate::Config::spread), how far into the window the asks went.
    pub last_ask_at: Option<Instant>,
    /// Whether the deadline passed (or `force_close` was called) before the drain completed.
    pub deadline_hit: bool,
}

impl DrainReport {
    /// Connections this shutdown accounted for.
    pub const fn total(&self) -> usize {
        self.at_begin.total() + self.accepted_during
    }

    /// Connections whose outcome is known so far; equals [`total`](DrainReport::total) once
    /// drained.
    pub const fn accounted(&self) -> usize {
        self.finished + self.handed_over + self.closed_idle + self.closed_stale + self.cut.total()
    }

    /// True when nothing was cut: every connection finished, was handed over, or was closed
    /// while Idle or stale New, which loses no request.
    pub const fn is_clean(&self) -> bool {
        self.cut.total() == 0
    }
}
