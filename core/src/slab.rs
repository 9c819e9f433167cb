//! Connection storage: a slab of fixed-size slots with generational ids, a free list, and
//! intrusive FIFO queues that order connections by the time they entered their state.
//!
//! Nothing here allocates once the slab has grown to the peak number of live connections:
//! freed slots are reused, and the queues link slots through their own `prev`/`next` fields.

use alloc::vec::Vec;

use crate::{ConnId, ConnState, Error, Instant};

/// "No slot" in a link.
pub(crate) const NIL: u32 = u32::MAX;

/// Per-connection flags.
pub(crate) mod flag {
    /// The slot is linked into a timer queue (New queue or Idle queue, by its state).
    pub const QUEUED: u16 = 1 << 0;
    /// `FinishThenClose` has been issued.
    pub const FINISH_SENT: u16 = 1 << 1;
    /// `AskToLeave` has been issued.
    pub const GOAWAY_SENT: u16 = 1 << 2;
    /// The lifecycle decided to close it; the reason is in the reason bits.
    pub const CLOSE_DUE: u16 = 1 << 3;
    /// `Close` has been issued.
    pub const CLOSE_SENT: u16 = 1 << 4;
    /// The slot's generation is exhausted; it is never reused.
    pub const RETIRED: u16 = 1 << 5;
    /// Two bits of [`CloseReason`](crate::CloseReason), valid with `CLOSE_DUE` or `CLOSE_SENT`.
    pub const REASON_SHIFT: u16 = 6;
    pub const REASON_MASK: u16 = 0b11 << REASON_SHIFT;
    /// Its moment in the spread window has come (or it was accepted after the shutdown
    /// began): the asks its state calls for may be issued.
    pub const ASK_DUE: u16 = 1 << 8;
    /// Idle, its socket offered to a successor that has not yet said whether it holds it:
    /// no timer, no ask and no close reaches it until it is handed over or taken back.
    pub const IN_TRANSFER: u16 = 1 << 9;
}

/// A slot's occupant, one byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Occupant {
    Vacant,
    Live(ConnState),
}

/// One connection's state in the core: 24 bytes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Slot {
    /// When the connection entered its current state (accept time while New, the end of its
    /// last request while Idle).
    pub since: Instant,
    pub generation: u32,
    /// Queue links; `next` doubles as the free-list link of a vacant slot.
    pub prev: u32,
    pub next: u32,
    pub occupant: Occupant,
    pub flags: u16,
}

impl Slot {
    pub fn state(&self) -> ConnState {
        match self.occupant {
            Occupant::Vacant => ConnState::Closed,
            Occupant::Live(s) => s,
        }
    }

    pub fn has(&self, f: u16) -> bool {
        self.flags & f != 0
    }
}

/// The slots and their free list.
#[derive(Debug, Default)]
pub(crate) struct Slab {
    pub slots: Vec<Slot>,
    free_head: u32,
    has_free: bool,
}

impl Slab {
    /// Takes a slot for a new connection in state `New`.
    pub fn insert(&mut self, now: Instant) -> Result<ConnId, Error> {
        if self.has_free {
            let index = self.free_head;
            let slot = &mut self.slots[index as usize];
            self.has_free = slot.next != NIL;
            self.free_head = slot.next;
            slot.occupant = Occupant::Live(ConnState::New);
            slot.since = now;
            slot.flags = 0;
            slot.prev = NIL;
            slot.next = NIL;
            return Ok(ConnId {
                slot: index,
                generation: slot.generation,
            });
        }
        let index = u32::try_from(self.slots.len())
            .ok()
            .filter(|&i| i != NIL)
            .ok_or(Error::TooManyConnections)?;
        self.slots.push(Slot {
            since: now,
            generation: 0,
            prev: NIL,
            next: NIL,
            occupant: Occupant::Live(ConnState::New),
            flags: 0,
        });
        Ok(ConnId {
            slot: index,
            generation: 0,
        })
    }

    /// The slot index of a live connection, or why the id does not name one.
    pub fn live(&self, id: ConnId) -> Result<usize, Error> {
        let index = id.slot as usize;
        let slot = self.slots.get(index).ok_or(Error::UnknownConnection(id))?;
        match slot.occupant {
            Occupant::Live(_) if slot.generation == id.generation => Ok(index),
            _ if id.generation < slot.generation => Err(Error::Closed(id)),
            Occupant::Vacant if slot.has(flag::RETIRED) && id.generation == slot.generation => {
                Err(Error::Closed(id))
            }
            _ => Err(Error::UnknownConnection(id)),
        }
    }

    /// The state of any id: `Closed` for one that was closed.
    pub fn state(&self, id: ConnId) -> Result<ConnState, Error> {
        match self.live(id) {
            Ok(index) => Ok(self.slots[index].state()),
            Err(Error::Closed(_)) => Ok(ConnState::Closed),
            Err(e) => Err(e),
        }
    }

    /// The id of the live connection in slot `index`, if any.
    pub fn id_at(&self, index: usize) -> Option<ConnId> {
        let slot = self.slots.get(index)?;
        match slot.occupant {
            Occupant::Live(_) => Some(ConnId {
                slot: index as u32,
                generation: slot.generation,
            }),
            Occupant::Vacant => None,
        }
    }

    /// Frees a live slot (already unlinked from any queue). Its generation moves on so that
    /// old ids read as closed; a slot whose generation is exhausted is retired, never reused,
    /// so that no id can ever alias a later connection.
    pub fn remove(&mut self, index: usize) {
        let slot = &mut self.slots[index];
        slot.occupant = Occupant::Vacant;
        slot.prev = NIL;
        if slot.generation == u32::MAX {
            slot.flags = flag::RETIRED;
            slot.next = NIL;
            return;
        }
        slot.generation += 1;
        slot.flags = 0;
        slot.next = if self.has_free { self.free_head } else { NIL };
        self.free_head = index as u32;
        self.has_free = true;
    }
}

/// A FIFO of slots linked through their own `prev`/`next`. Slots are appended in the order
/// they entered a state, and time never goes backwards in the core, so the front is always
/// the one whose timer expires first.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Queue {
    head: u32,
    tail: u32,
}

impl Default for Queue {
    fn default() -> Self {
        Queue {
            head: NIL,
            tail: NIL,
        }
    }
}

impl Queue {
    pub fn front(&self) -> Option<usize> {
        (self.head != NIL).then_some(self.head as usize)
    }

    pub fn push_back(&mut self, slots: &mut [Slot], index: usize) {
        let i = index as u32;
        slots[index].prev = self.tail;
        slots[index].next = NIL;
        slots[index].flags |= flag::QUEUED;
        if self.tail == NIL {
            self.head = i;
        } else {
            slots[self.tail as usize].next = i;
        }
        self.tail = i;
    }

    /// Unlinks `index`, which must be in this queue.
    pub fn unlink(&mut self, slots: &mut [Slot], index: usize) {
        let Slot { prev, next, .. } = slots[index];
        if prev == NIL {
            self.head = next;
        } else {
            slots[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            slots[next as usize].prev = prev;
        }
        let slot = &mut slots[index];
        slot.prev = NIL;
        slot.next = NIL;
        slot.flags &= !flag::QUEUED;
    }

    /// Unlinks everything.
    pub fn clear(&mut self, slots: &mut [Slot]) {
        while let Some(front) = self.front() {
            self.unlink(slots, front);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_is_24_bytes() {
        assert_eq!(core::mem::size_of::<Slot>(), 24);
    }

    #[test]
    fn freed_slots_are_reused_with_a_new_generation() {
        let mut slab = Slab::default();
        let a = slab.insert(Instant::ZERO).unwrap();
        let b = slab.insert(Instant::ZERO).unwrap();
        slab.remove(a.slot as usize);
        let c = slab.insert(Instant::ZERO).unwrap();
        assert_eq!(c.slot, a.slot);
        assert_eq!(c.generation, a.generation + 1);
        assert_eq!(slab.live(a), Err(Error::Closed(a)));
        assert_eq!(slab.live(c), Ok(c.slot as usize));
        assert_eq!(slab.live(b), Ok(b.slot as usize));
        let forged = ConnId::from_parts(c.slot, c.generation + 1);
        assert_eq!(slab.live(forged), Err(Error::UnknownConnection(forged)));
    }

    #[test]
    fn an_exhausted_generation_retires_the_slot() {
        let mut slab = Slab::default();
        let a = slab.insert(Instant::ZERO).unwrap();
        slab.slots[0].generation = u32::MAX;
        let last = ConnId::from_parts(a.slot, u32::MAX);
        slab.remove(0);
        assert_eq!(slab.live(last), Err(Error::Closed(last)));
        let next = slab.insert(Instant::ZERO).unwrap();
        assert_ne!(next.slot, a.slot, "a retired slot is never reused");
    }

    #[test]
    fn queue_unlinks_from_anywhere() {
        let mut slab = Slab::default();
        for _ in 0..4 {
            slab.insert(Instant::ZERO).unwrap();
        }
        let mut q = Queue::default();
        for i in 0..4 {
            q.push_back(&mut slab.slots, i);
        }
        q.unlink(&mut slab.slots, 0);
        q.unlink(&mut slab.slots, 2);
        q.unlink(&mut slab.slots, 3);
        assert_eq!(q.front(), Some(1));
        q.unlink(&mut slab.slots, 1);
        assert_eq!(q.front(), None);
        q.push_back(&mut slab.slots, 3);
        assert_eq!(q.front(), Some(3));
        q.clear(&mut slab.slots);
        assert_eq!(q.front(), None);
        assert!(!slab.slots[3].has(flag::QUEUED));
    }
}
