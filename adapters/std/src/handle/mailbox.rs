//! A connection's mailbox: the notices the lifecycle gave it, the state it reported on its
//! own while Serving, and the socket a cut shuts down.

use crate::sync::{AtomicI32, AtomicU8, Ordering};

use event_listener::Event;
use lameduck_core::ConnState;

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

/// Per-connection mailbox: the strongest notice so far, and an event to wake its task.
#[derive(Debug)]
pub(super) struct Mailbox {
    pub(super) level: AtomicU8,
    pub(super) event: Event,
    /// The connection's state as it reported it, plus [`SERVING_OVER`]. While Serving,
    /// New/Idle ↔ Active moves only this (see [`ConnHandle::request_started`]); the
    /// lifecycle is made to match, under the lock, whenever it is about to read it
    /// ([`sync`]).
    pub(super) state: AtomicU8,
    /// The connection's socket, shut down when the lifecycle cuts the connection (see
    /// [`ConnHandle::cut_at_socket`]); -1 when there is none to cut. Read and changed only
    /// under the handle's lock, so a cut never meets an fd its owner has closed.
    pub(super) fd: AtomicI32,
}

impl Mailbox {
    pub(super) fn new() -> Mailbox {
        Mailbox {
            level: AtomicU8::new(0),
            event: Event::new(),
            state: AtomicU8::new(state_to_u8(ConnState::New)),
            fd: AtomicI32::new(-1),
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

/// In a connection's own state: shutdown has begun, the connection no longer moves on its
/// own (every transition goes through the lifecycle).
pub(super) const SERVING_OVER: u8 = 0x80;

/// Shuts down the socket armed in `mailbox` (both directions: the peer reads EOF, its writes
/// fail) and disarms it; false when none was armed. Called under the handle's lock.
pub(super) fn cut_socket(mailbox: &Mailbox) -> bool {
    let fd = mailbox.fd.swap(-1, Ordering::AcqRel);
    if fd < 0 {
        return false;
    }
    // SAFETY: `fd` was armed by `ConnHandle::cut_at_socket`, whose contract keeps it an open
    // socket of this connection until the `Conn` is dropped or `disarm_cut` runs; both take
    // the handle's lock, which our caller holds, so the fd is still that socket. shutdown(2)
    // neither closes nor frees the fd: its owner still closes it.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
    true
}

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
