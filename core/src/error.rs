//! Errors: a bad call is refused and changes nothing.

use core::fmt;

use crate::{ConnId, ConnState};

/// A connection event the driver reports, named in [`Error::InvalidTransition`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    /// [`Lifecycle::request_started`](crate::Lifecycle::request_started).
    RequestStarted,
    /// [`Lifecycle::request_finished`](crate::Lifecycle::request_finished).
    RequestFinished,
    /// [`Lifecycle::upgraded`](crate::Lifecycle::upgraded).
    Upgraded,
    /// [`Lifecycle::catch_up`](crate::Lifecycle::catch_up) to this state.
    CatchUp(ConnState),
    /// [`Lifecycle::handed_over`](crate::Lifecycle::handed_over).
    HandedOver,
    /// [`Lifecycle::transfer_started`](crate::Lifecycle::transfer_started).
    TransferStarted,
    /// [`Lifecycle::taken_back`](crate::Lifecycle::taken_back).
    TakenBack,
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Event::RequestStarted => "request started",
            Event::RequestFinished => "request finished",
            Event::Upgraded => "upgraded",
            Event::HandedOver => "handed over",
            Event::TransferStarted => "transfer started",
            Event::TakenBack => "taken back",
            Event::CatchUp(ConnState::New) => "catch up to new",
            Event::CatchUp(ConnState::Active) => "catch up to active",
            Event::CatchUp(ConnState::Idle) => "catch up to idle",
            Event::CatchUp(ConnState::Upgraded) => "catch up to upgraded",
            Event::CatchUp(ConnState::Closed) => "catch up to closed",
        })
    }
}

/// Why the lifecycle refused a call. A refused call never changes any state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Error {
    /// The id was never handed out by this lifecycle.
    UnknownConnection(ConnId),
    /// The connection was already closed (its slot may now belong to another connection).
    Closed(ConnId),
    /// The event is impossible in the connection's current state, e.g. a request finishing on
    /// a connection that never started one.
    InvalidTransition {
        /// The connection.
        id: ConnId,
        /// Its state, unchanged.
        from: ConnState,
        /// The event that was refused.
        event: Event,
    },
    /// [`begin_shutdown`](crate::Lifecycle::begin_shutdown) was called a second time. To cut
    /// connections now, call [`force_close`](crate::Lifecycle::force_close).
    ShutdownAlreadyBegun,
    /// An accept (or [`listener_opened`](crate::Lifecycle::listener_opened)) once accepting
    /// has ended — every listener closed after
    /// [`StopAccepting`](crate::Action::StopAccepting) — so this is a driver bug. The
    /// connection is not tracked; close it.
    NotAccepting,
    /// Every one of the 2³² − 1 connection slots is in use or retired.
    TooManyConnections,
    /// [`linger_ended`](crate::Lifecycle::linger_ended) with no lingering close under way.
    NoLingeringClose,
    /// [`catch_up`](crate::Lifecycle::catch_up) would move a connection after Serving ended:
    /// from the shutdown's begin on, every move must be reported as its event (the driver
    /// should have stopped its connections moving on their own, and caught each one up, before
    /// [`begin_shutdown`](crate::Lifecycle::begin_shutdown)).
    CatchUpAfterServing(ConnId),
    /// [`listener_closed`](crate::Lifecycle::listener_closed) with no registered listener
    /// open.
    NoOpenListener,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::UnknownConnection(id) => write!(f, "connection {id} was never accepted here"),
            Error::Closed(id) => write!(f, "connection {id} is already closed"),
            Error::InvalidTransition { id, from, event } => {
                write!(f, "connection {id} cannot take `{event}` while {from}")
            }
            Error::ShutdownAlreadyBegun => f.write_str(
                "shutdown has already begun (call force_close to cut the remaining connections)",
            ),
            Error::NotAccepting => f.write_str(
                "accept after accepting ended: every listener had closed after StopAccepting",
            ),
            Error::TooManyConnections => f.write_str("no connection slot left"),
            Error::NoLingeringClose => f.write_str("linger_ended with no lingering close"),
            Error::NoOpenListener => f.write_str("listener_closed with no listener open"),
            Error::CatchUpAfterServing(id) => write!(
                f,
                "catch_up would move connection {id} after serving ended (report each move as its event)"
            ),
        }
    }
}

impl core::error::Error for Error {}
