//! Connections: their ids, their states and the live counts per state.

use core::fmt;

/// A tracked connection, as handed out by [`Lifecycle::accept`](crate::Lifecycle::accept).
///
/// Generational: a slot index plus the generation of that slot. When a connection closes its
/// slot's generation moves on, so an id kept past the close can never touch the connection
/// that reuses the slot; it gets [`Error::Closed`](crate::Error::Closed) instead.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId {
    pub(crate) slot: u32,
    pub(crate) generation: u32,
}

impl ConnId {
    /// The slot this id points at (slots are reused after a close).
    pub const fn slot(self) -> u32 {
        self.slot
    }

    /// The generation of the slot this id was issued for.
    pub const fn generation(self) -> u32 {
        self.generation
    }

    /// An id from its parts, for drivers that store ids compactly (and for tests that forge
    /// unknown ones). The lifecycle validates every id it is given.
    pub const fn from_parts(slot: u32, generation: u32) -> ConnId {
        ConnId { slot, generation }
    }
}

impl fmt::Debug for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}v{}", self.slot, self.generation)
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Where a connection is in its life, after Go's `net/http.ConnState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConnState {
    /// Accepted; no byte of a request has arrived yet.
    New,
    /// At least one byte of a request has arrived, or a response is in progress. Active
    /// begins at the first byte, not after the header is parsed, so a half-received request
    /// is never mistaken for an idle connection (golang/go#65802, hyperium/hyper#3792).
    Active,
    /// Keep-alive, between requests.
    Idle,
    /// Taken over by a long-lived protocol (WebSocket, SSE, CONNECT). Unlike Go's Hijacked it
    /// stays tracked: it is told to go away at shutdown and waited for until the deadline.
    Upgraded,
    /// Gone. Every accepted connection reaches this state exactly once.
    Closed,
}

impl fmt::Display for ConnState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            ConnState::New => "New",
            ConnState::Active => "Active",
            ConnState::Idle => "Idle",
            ConnState::Upgraded => "Upgraded",
            ConnState::Closed => "Closed",
        })
    }
}

/// How many connections are in each live state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Counts {
    /// Connections in [`ConnState::New`].
    pub new: usize,
    /// Connections in [`ConnState::Active`].
    pub active: usize,
    /// Connections in [`ConnState::Idle`].
    pub idle: usize,
    /// Connections in [`ConnState::Upgraded`].
    pub upgraded: usize,
}

impl Counts {
    /// All live connections.
    pub const fn total(&self) -> usize {
        self.new + self.active + self.idle + self.upgraded
    }

    /// The count for one state (`Closed` is not counted: it is always zero here).
    pub const fn get(&self, state: ConnState) -> usize {
        match state {
            ConnState::New => self.new,
            ConnState::Active => self.active,
            ConnState::Idle => self.idle,
            ConnState::Upgraded => self.upgraded,
            ConnState::Closed => 0,
        }
    }

    pub(crate) fn slot_mut(&mut self, state: ConnState) -> Option<&mut usize> {
        match state {
            ConnState::New => Some(&mut self.new),
            ConnState::Active => Some(&mut self.active),
            ConnState::Idle => Some(&mut self.idle),
            ConnState::Upgraded => Some(&mut self.upgraded),
            ConnState::Closed => None,
        }
    }

    pub(crate) fn inc(&mut self, state: ConnState) {
        if let Some(n) = self.slot_mut(state) {
            *n += 1;
        }
    }

    pub(crate) fn dec(&mut self, state: ConnState) {
        if let Some(n) = self.slot_mut(state) {
            *n = n.saturating_sub(1);
        }
    }
}
