//! A connection's mailbox: the notices the lifecycle gave it, the state it reported on its
//! own while Serving, and the socket a cut shuts down.

use crate::sync::{AtomicU8, Ordering};

use event_listener::Event;
use lameduck_core::{ConnId, ConnState};

use super::Shutdown;

/// What the lifecycle asked of one connection, strongest last. A connection only ever moves
/// up this list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Notice {
    /// Finish what is in progress (or the request already on its way), answer it with
    /// `Connection: close` / GOAWAY, then close.
    FinishThenClose,
    /// The connection is upgraded: ask the peer to leave in its protocol's own words
    /// (a WebSocket close frame, the end of an event stream).
    AskToLeave,
    /// Close now.
    Close,
}

impl Notice {
    #[inline]
    pub(super) fn from_level(level: u8) -> Option<Notice> {
        match level {
            1 => Some(Notice::FinishThenClose),
            2 => Some(Notice::AskToLeave),
            3 => Some(Notice::Close),
            _ => None,
        }
    }

    #[inline]
    pub(super) const fn level(self) -> u8 {
        match self {
            Notice::FinishThenClose => 1,
            Notice::AskToLeave => 2,
            Notice::Close => 3,
        }
    }
}

/// Everything one connection shares with the handle, in one allocation (it is most of a
/// connection's memory): its id and handle, the strongest notice so far and the event that
/// wakes its task, the state it reported on its own while Serving — and, around it
/// ([`Shared`]), its socket for a cut.
///
/// The handle's table holds one reference to it per live connection, and it holds the
/// handle: a cycle, which the connection's close breaks (its entry is removed), so a
/// dropped `Conn` frees both.
pub(crate) struct Mailbox {
    pub(super) shutdown: Shutdown,
    pub(super) id: ConnId,
    pub(super) level: AtomicU8,
    /// The connection's state as it reported it, plus [`SERVING_OVER`]. While Serving,
    /// New/Idle ↔ Active moves only this (see [`ConnHandle::request_started`]); the
    /// lifecycle is made to match, under the lock, whenever it is about to read it
    /// ([`sync`]).
    ///
    /// [`ConnHandle::request_started`]: super::ConnHandle::request_started
    /// [`sync`]: super::conn::sync
    pub(super) state: AtomicU8,
    /// Which reads move New/Idle → Active: a [`RequestStart`](super::RequestStart) as a
    /// byte (see [`ConnHandle::set_request_start`](super::ConnHandle::set_request_start)).
    pub(super) request_start: AtomicU8,
    pub(super) event: Event,
}

impl std::fmt::Debug for Mailbox {
    // Not the handle: it lists every connection, this one included.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox")
            .field("id", &self.id)
            .field("notice", &self.read())
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl Mailbox {
    /// Connection `id` of `shutdown`; `serving` is false once shutdown has begun (the
    /// connection then never moves on its own).
    pub(super) fn new(shutdown: Shutdown, id: ConnId, serving: bool) -> Mailbox {
        let over = if serving { 0 } else { SERVING_OVER };
        Mailbox {
            shutdown,
            id,
            level: AtomicU8::new(0),
            state: AtomicU8::new(state_to_u8(ConnState::New) | over),
            request_start: AtomicU8::new(0),
            event: Event::new(),
        }
    }

    #[inline]
    pub(super) fn state(&self) -> ConnState {
        state_from_u8(self.state.load(Ordering::Acquire) & !SERVING_OVER)
    }

    /// Sets the state, keeping [`SERVING_OVER`] as it is (it changes only under the lock,
    /// which the caller holds).
    pub(super) fn set_state(&self, state: ConnState) {
        let over = self.state.load(Ordering::Acquire) & SERVING_OVER;
        self.state
            .store(state_to_u8(state) | over, Ordering::Release);
    }

    pub(super) fn post(&self, notice: Notice) {
        if self.level.fetch_max(notice.level(), Ordering::AcqRel) < notice.level() {
            self.event.notify(usize::MAX);
        }
    }

    /// Whether the notice is [`Notice::Close`] (the strongest: a plain comparison).
    #[inline]
    pub(super) fn is_closed(&self) -> bool {
        self.level.load(Ordering::Acquire) >= Notice::Close.level()
    }

    #[inline]
    pub(super) fn read(&self) -> Option<Notice> {
        Notice::from_level(self.level.load(Ordering::Acquire))
    }
}

/// A connection's mailbox and the socket a deadline's cut shuts down (armed by the
/// [`Tracked`](crate::Tracked) stream that owns the socket: `lameduck-os` keeps the fd
/// number valid for as long as a cut may use it).
pub(crate) type Shared = lameduck_os::cut::Cuttable<Mailbox>;

/// In a connection's own state: shutdown has begun, the connection no longer moves on its
/// own (every transition goes through the lifecycle).
pub(super) const SERVING_OVER: u8 = 0x80;

#[inline]
pub(super) fn state_to_u8(state: ConnState) -> u8 {
    match state {
        ConnState::New => 0,
        ConnState::Active => 1,
        ConnState::Idle => 2,
        ConnState::Upgraded => 3,
        ConnState::Closed => 4,
    }
}

#[inline]
pub(super) fn state_from_u8(n: u8) -> ConnState {
    match n {
        0 => ConnState::New,
        1 => ConnState::Active,
        2 => ConnState::Idle,
        3 => ConnState::Upgraded,
        _ => ConnState::Closed,
    }
}
