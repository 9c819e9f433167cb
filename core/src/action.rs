//! What the lifecycle asks the driver to do.

use crate::ConnId;

/// An instruction for the driver, pulled with [`Lifecycle::poll_action`].
///
/// Actions about a connection are decided when they are pulled, from its state at that
/// moment, so a driver is never handed a stale decision: a `Close` for a connection that has
/// meanwhile started a request is simply not issued.
///
/// [`Lifecycle::poll_action`]: crate::Lifecycle::poll_action
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Stop accepting: drain each listener's accept backlog (accepting until `WouldBlock`, so
    /// that handshakes the kernel completed are served rather than reset), then close it and
    /// report [`Lifecycle::listener_closed`](crate::Lifecycle::listener_closed); accepting
    /// ends with the last one (at once if none is open). Issued once, when draining begins.
    StopAccepting,
    /// Let the connection finish what it is doing — the request in progress, or the one
    /// already on its way if it is New or Idle — answer it with `Connection: close` (HTTP/1.1)
    /// or GOAWAY (HTTP/2), then close it (the driver closes it: report
    /// [`closed`](crate::Lifecycle::closed)). A response already under way that can no longer
    /// say `close` keeps the connection open; it is then Idle like any other, and the notice
    /// applies to its next request. Issued at most once per connection.
    FinishThenClose(ConnId),
    /// The connection was upgraded to a long-lived protocol (WebSocket, SSE, CONNECT): ask
    /// its peer to leave in that protocol's own words (a WebSocket close frame, the end of an
    /// event stream) and let it close. (HTTP/2's GOAWAY belongs to
    /// [`FinishThenClose`](Action::FinishThenClose).) Issued at most once per connection.
    AskToLeave(ConnId),
    /// Close the connection now, then report [`Lifecycle::closed`](crate::Lifecycle::closed).
    /// Issued at most once per connection.
    Close(ConnId, CloseReason),
    /// The drain is complete: no listener is accepting and every connection is closed. The
    /// report is in [`Lifecycle::report`](crate::Lifecycle::report). Issued once, after
    /// every other action.
    Drained,
}

/// Why the lifecycle asked for a [`Action::Close`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// Idle while draining: at once under
    /// [`CloseImmediately`](crate::IdlePolicy::CloseImmediately), after the grace under
    /// [`AwaitNextRequest`](crate::IdlePolicy::AwaitNextRequest).
    Idle,
    /// Still New after [`stale_new`](crate::Config::stale_new) while draining.
    Stale,
    /// The shutdown deadline passed, or [`force_close`](crate::Lifecycle::force_close) was
    /// called, with the connection still open.
    Deadline,
}
