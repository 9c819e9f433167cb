//! The lifecycle: every connection's state, and the shutdown protocol over all of them.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::time::Duration;

use crate::action::{Action, CloseReason};
use crate::slab::{Occupant, Queue, Slab, flag};
use crate::{Config, ConnId, ConnState, Counts, DrainReport, Error, Event, IdlePolicy, Instant};

/// Where the server is in its shutdown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Accepting and serving; nothing is being shut down.
    Serving,
    /// Shutdown began with a [`lame_duck`](Config::lame_duck) window: still accepting, but
    /// every connection is told to close after its next response.
    LameDuck,
    /// Not accepting (once the driver has drained its backlog); waiting for the connections
    /// left.
    Draining,
    /// Nothing accepting, nothing open. [`Action::Drained`] has been queued.
    Drained,
}

/// Where the shutdown is, with what each phase needs to know (the public view is [`Phase`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Serving,
    LameDuck {
        /// The end of the window.
        until: Instant,
        /// The hard deadline, if one is configured.
        deadline: Option<Instant>,
    },
    Draining {
        /// When draining began: the idle grace runs from here at the earliest.
        since: Instant,
        deadline: Deadline,
        /// [`Action::StopAccepting`] is still to be issued.
        stop_owed: bool,
    },
    Drained {
        /// [`Action::Drained`] has been issued.
        announced: bool,
    },
}

/// The hard deadline of a drain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Deadline {
    /// None configured: the drain waits as long as it takes.
    None,
    /// Not reached yet.
    At(Instant),
    /// Passed (or `force_close`): everything left is cut, no timer runs any more.
    Passed,
}

impl Deadline {
    fn at(self) -> Option<Instant> {
        match self {
            Deadline::At(t) => Some(t),
            Deadline::None | Deadline::Passed => None,
        }
    }
}

/// The connection lifecycle and shutdown protocol for one server: a pure, deterministic
/// state machine.
///
/// The driver (an adapter, or your own event loop) reports what happens to connections, with
/// the current time, and pulls what to do with [`poll_action`](Lifecycle::poll_action). It
/// wakes the lifecycle at [`poll_timeout`](Lifecycle::poll_timeout) through
/// [`handle_timeout`](Lifecycle::handle_timeout). See the [crate docs](crate) for the protocol
/// and a complete example.
///
/// **Time** only moves forward: an input whose `now` is earlier than one already seen is
/// taken to happen at the later instant (clamped). A wall clock stepping back therefore never
/// makes a connection younger, never re-arms a timer that fired and never panics.
///
/// **Bad calls** — an unknown id, an id whose connection closed, an event impossible in the
/// connection's state — return an [`Error`] and change nothing, not even the clock.
#[derive(Debug)]
pub struct Lifecycle {
    config: Config,
    slab: Slab,
    /// New connections not yet due to close, oldest first: the stale-New timers.
    new_q: Queue,
    /// Idle connections not yet due to close, longest idle first: the idle-grace timers.
    /// Only connections already asked to leave are in it: the grace runs from the ask.
    idle_q: Queue,
    /// The asks still to come in the spread window, latest first (the next one is popped
    /// from the end). Filled once, when the shutdown begins, and only with a spread.
    asks: Vec<(Instant, ConnId)>,
    counts: Counts,
    now: Instant,
    stage: Stage,
    /// The driver may still accept: `StopAccepting` has not been issued with no listener
    /// open, and the last listener has not closed after it.
    accepting: bool,
    /// Listeners registered with `listener_opened` and not yet closed.
    listeners: usize,
    /// Connections closed with [`closed_lingering`](Lifecycle::closed_lingering) whose
    /// sockets still linger: the drain is not over until they are done.
    lingering: usize,
    /// Connections whose needs changed since the driver last looked.
    attention: VecDeque<ConnId>,
    /// A pass over every slot still to be made by `poll_action`, from this index.
    sweep: Option<usize>,
    report: Option<DrainReport>,
}

impl Lifecycle {
    /// A lifecycle in [`Phase::Serving`] with no connection, its clock at [`Instant::ZERO`].
    pub fn new(config: Config) -> Lifecycle {
        Lifecycle::with_capacity(config, 0)
    }

    /// Like [`new`](Lifecycle::new), with room for `connections` live connections before
    /// the first allocation.
    pub fn with_capacity(config: Config, connections: usize) -> Lifecycle {
        let mut slab = Slab::default();
        slab.slots.reserve(connections);
        Lifecycle {
            config,
            slab,
            new_q: Queue::default(),
            idle_q: Queue::default(),
            asks: Vec::new(),
            counts: Counts::default(),
            now: Instant::ZERO,
            stage: Stage::Serving,
            accepting: true,
            listeners: 0,
            lingering: 0,
            attention: VecDeque::new(),
            sweep: None,
            report: None,
        }
    }

    /// The configuration this lifecycle was built with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The latest instant seen (inputs never move it backwards).
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The shutdown phase.
    pub fn phase(&self) -> Phase {
        match self.stage {
            Stage::Serving => Phase::Serving,
            Stage::LameDuck { .. } => Phase::LameDuck,
            Stage::Draining { .. } => Phase::Draining,
            Stage::Drained { .. } => Phase::Drained,
        }
    }

    /// Whether the deadline has passed (or `force_close` cut): nothing waits any more.
    fn deadline_passed(&self) -> bool {
        matches!(
            self.stage,
            Stage::Draining {
                deadline: Deadline::Passed,
                ..
            }
        )
    }

    /// Live connections per state, in O(1).
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Whether the driver may still accept: [`Action::StopAccepting`] has not been issued
    /// with no listener open, nor has the last listener closed after it.
    pub fn is_accepting(&self) -> bool {
        self.accepting
    }

    /// One connection's state; [`ConnState::Closed`] for a connection that was closed.
    pub fn state(&self, id: ConnId) -> Result<ConnState, Error> {
        self.slab.state(id)
    }

    /// The drain report: `None` before [`begin_shutdown`](Lifecycle::begin_shutdown), then
    /// filled in as shutdown proceeds, complete once [`Phase::Drained`].
    pub fn report(&self) -> Option<&DrainReport> {
        self.report.as_ref()
    }

    /// A connection was accepted: track it as [`ConnState::New`].
    ///
    /// Accepting stays possible after shutdown begins, until the driver closes its last
    /// listener ([`listener_closed`](Lifecycle::listener_closed)) after
    /// [`Action::StopAccepting`] (or that action finds none open): an accept that raced the
    /// signal, or one drained from a listener's backlog after `StopAccepting`, is tracked and
    /// served (and told to finish-then-close), never lost.
    pub fn accept(&mut self, now: Instant) -> Result<ConnId, Error> {
        if !self.accepting {
            return Err(Error::NotAccepting);
        }
        let id = self.slab.insert(now.max(self.now))?;
        self.tick(now);
        self.counts.new += 1;
        self.enqueue(id.slot as usize);
        if let Some(report) = self.report.as_mut() {
            report.accepted_during += 1;
            // Accepted during the shutdown: asked at once, never spread (see
            // `Config::spread`).
            self.slab.slots[id.slot as usize].flags |= flag::ASK_DUE;
            self.attention.push_back(id);
        }
        Ok(id)
    }

    /// A connection that has served before, taken over from another process (a predecessor
    /// handed it over between two requests): tracked as [`ConnState::Idle`], not New — it is
    /// no silent newcomer, so the stale-New rule does not apply to it; the idle policy does.
    /// Counted like an accept (refused with [`Error::NotAccepting`] once accepting has
    /// ended; during a shutdown, in the report's `accepted_during`, and asked at once).
    ///
    /// ```
    /// use lameduck_core::{Config, ConnState, Instant, Lifecycle};
    ///
    /// let mut lc = Lifecycle::new(Config::default());
    /// let id = lc.adopt(Instant::ZERO)?;
    /// assert_eq!(lc.state(id)?, ConnState::Idle);
    /// lc.request_started(id, Instant::ZERO)?; // its next request, served here
    /// # Ok::<(), lameduck_core::Error>(())
    /// ```
    pub fn adopt(&mut self, now: Instant) -> Result<ConnId, Error> {
        let id = self.accept(now)?;
        let index = id.slot as usize;
        self.unqueue(index);
        self.set_state(index, ConnState::Idle);
        if self.slab.slots[index].has(flag::ASK_DUE) {
            // During a shutdown: asked at once, the idle policy from now.
            self.ask_due(index);
        } else {
            self.enqueue(index);
        }
        Ok(id)
    }

    /// The connection's socket is offered to a successor (the first half of a handover):
    /// Idle, with no byte of a next request read, and not once its
    /// [`Close`](Action::Close) was issued. It stays Idle and counted, but until the
    /// successor answers it is **in transfer**: no timer, ask or close reaches it — not even
    /// the deadline's cut, as `shutdown(2)` would end the connection in the successor too —
    /// and a request on it is refused (the driver must not read a socket in flight). It ends
    /// with [`handed_over`](Lifecycle::handed_over) (the successor holds it) or
    /// [`taken_back`](Lifecycle::taken_back) (it does not: served here again).
    ///
    /// ```
    /// use lameduck_core::{Config, ConnState, Instant, Lifecycle};
    ///
    /// let mut lc = Lifecycle::new(Config::default());
    /// let id = lc.accept(Instant::ZERO)?;
    /// lc.request_started(id, Instant::ZERO)?;
    /// assert!(lc.transfer_started(id, Instant::ZERO).is_err()); // Active: never
    /// lc.request_finished(id, Instant::ZERO)?;
    /// lc.begin_shutdown(Instant::ZERO)?;
    /// lc.transfer_started(id, Instant::ZERO)?; // Idle: offered
    /// assert!(lc.request_started(id, Instant::ZERO).is_err()); // not read while in flight
    /// lc.handed_over(id, Instant::ZERO)?; // the successor holds it: it goes on there
    /// assert_eq!(lc.state(id)?, ConnState::Closed);
    /// assert_eq!(lc.report().unwrap().handed_over, 1);
    /// # Ok::<(), lameduck_core::Error>(())
    /// ```
    pub fn transfer_started(&mut self, id: ConnId, now: Instant) -> Result<(), Error> {
        let index = self.expect(id, Event::TransferStarted, |s| s == ConnState::Idle)?;
        if self.slab.slots[index].has(flag::CLOSE_SENT | flag::IN_TRANSFER) {
            return Err(Error::InvalidTransition {
                id,
                from: ConnState::Idle,
                event: Event::TransferStarted,
            });
        }
        self.tick(now);
        self.unqueue(index);
        // An idle close decided but not issued is superseded: the connection leaves anyway.
        let slot = &mut self.slab.slots[index];
        slot.flags = (slot.flags & !(flag::CLOSE_DUE | flag::REASON_MASK)) | flag::IN_TRANSFER;
        Ok(())
    }

    /// The successor acknowledged that it holds the connection's socket (the second half
    /// of a handover): in transfer → gone, its id dead; counted in the report's
    /// `handed_over`. The driver must then neither read from the socket nor shut it down
    /// (`shutdown(2)` acts on the connection, not the descriptor): closing its own
    /// descriptor is all. Refused for a connection not in transfer: a socket merely sent
    /// may still be lost on the way (a successor that dies or runs out of descriptors).
    pub fn handed_over(&mut self, id: ConnId, now: Instant) -> Result<(), Error> {
        let index = self.in_transfer(id, Event::HandedOver)?;
        self.tick(now);
        self.counts.dec(ConnState::Idle);
        if let Some(report) = self.report.as_mut() {
            report.handed_over += 1;
        }
        self.slab.remove(index);
        self.prune_asks();
        self.check_drained();
        Ok(())
    }

    /// The successor does not hold the connection (it lost the socket, died, or did not
    /// answer in time): in transfer → Idle, served here again from `now`. What the shutdown
    /// owes it applies at once — its ask, the idle policy from now (under
    /// `CloseImmediately`, a close), or past the deadline, the cut. Counted in the report's
    /// `taken_back` (and then by how it ends).
    ///
    /// ```
    /// use lameduck_core::{Action, Config, Instant, Lifecycle};
    ///
    /// let mut lc = Lifecycle::new(Config::default());
    /// let id = lc.accept(Instant::ZERO)?;
    /// lc.catch_up(id, lameduck_core::ConnState::Idle)?;
    /// lc.begin_shutdown(Instant::ZERO)?;
    /// while lc.poll_action().is_some() {}
    /// lc.transfer_started(id, Instant::ZERO)?;
    /// lc.taken_back(id, Instant::ZERO)?; // the successor never answered
    /// lc.request_started(id, Instant::ZERO)?; // its next request, served here
    /// assert_eq!(lc.report().unwrap().taken_back, 1);
    /// # Ok::<(), lameduck_core::Error>(())
    /// ```
    pub fn taken_back(&mut self, id: ConnId, now: Instant) -> Result<(), Error> {
        let index = self.in_transfer(id, Event::TakenBack)?;
        self.tick(now);
        let slot = &mut self.slab.slots[index];
        slot.flags &= !flag::IN_TRANSFER;
        slot.since = self.now;
        if let Some(report) = self.report.as_mut() {
            report.taken_back += 1;
        }
        if self.slab.slots[index].has(flag::ASK_DUE) {
            if self.phase() == Phase::Draining
                && self.config.idle_policy == IdlePolicy::CloseImmediately
            {
                self.mark_close(index, CloseReason::Idle);
            } else {
                self.enqueue(index);
            }
        }
        self.notice(id);
        Ok(())
    }

    /// The slot of `id` if it is in transfer; `event` is refused otherwise.
    fn in_transfer(&self, id: ConnId, event: Event) -> Result<usize, Error> {
        let index = self.slab.live(id)?;
        let slot = &self.slab.slots[index];
        if !slot.has(flag::IN_TRANSFER) {
            return Err(Error::InvalidTransition {
                id,
                from: slot.state(),
                event,
            });
        }
        Ok(index)
    }

    /// The first byte of a request arrived: New or Idle → Active.
    pub fn request_started(&mut self, id: ConnId, now: Instant) -> Result<(), Error> {
        let index = self.expect(id, Event::RequestStarted, |s| {
            matches!(s, ConnState::New | ConnState::Idle)
        })?;
        if self.slab.slots[index].has(flag::IN_TRANSFER) {
            return Err(Error::InvalidTransition {
                id,
                from: ConnState::Idle,
                event: Event::RequestStarted,
            });
        }
        self.tick(now);
        self.unqueue(index);
        self.set_state(index, ConnState::Active);
        // The client got in before the close was issued: it is Active now, and Active
        // connections are never closed before the deadline.
        let slot = &mut self.slab.slots[index];
        if !slot.has(flag::CLOSE_SENT) {
            slot.flags &= !(flag::CLOSE_DUE | flag::REASON_MASK);
        }
        self.notice(id);
        Ok(())
    }

    /// The response was completely written and the connection stays open: Active → Idle.
    pub fn request_finished(&mut self, id: ConnId, now: Instant) -> Result<(), Error> {
        let index = self.expect(id, Event::RequestFinished, |s| s == ConnState::Active)?;
        self.tick(now);
        self.set_state(index, ConnState::Idle);
        self.enqueue(index);
        if self.phase() != Phase::Serving {
            // A driver that applied a finish-then-close notice to this response closes the
            // connection itself. One that could not (the response was already on its way
            // when the notice came, so it promised keep-alive) now has an Idle connection
            // like any other: the idle policy decides, and its next request is answered with
            // `Connection: close`. Closing it here instead would race that next request.
            if self.phase() == Phase::Draining
                && self.config.idle_policy == IdlePolicy::CloseImmediately
                && self.slab.slots[index].has(flag::ASK_DUE)
            {
                self.mark_close(index, CloseReason::Idle);
            }
            self.notice(id);
        }
        Ok(())
    }

    /// The serving fast path: brings connection `id` to the state its driver `reported`, for
    /// a driver that lets its connections move between New, Idle and Active on their own
    /// while Serving (a lock-free atomic per connection, say) instead of reporting each
    /// request.
    ///
    /// That is sound because no rule reads those three states before the shutdown begins:
    /// the stale-New rule counts from the accept, the idle grace from the drain's start, and
    /// nothing is closed while Serving. So the driver may keep them to itself, provided the
    /// lifecycle is caught up before anything reads them: before
    /// [`begin_shutdown`](Lifecycle::begin_shutdown) (after the connections have stopped
    /// moving on their own), and before [`closed`](Lifecycle::closed) or
    /// [`counts`](Lifecycle::counts) if those must be exact. From the shutdown's begin on,
    /// every move is its event.
    ///
    /// The moves, at the lifecycle's latest time (no timer depends on their times):
    ///
    /// | known | reported | as if |
    /// |---|---|---|
    /// | any | the same | nothing: no change, in any phase |
    /// | New or Idle | Active | [`request_started`](Lifecycle::request_started) |
    /// | Active | Idle | [`request_finished`](Lifecycle::request_finished) |
    /// | New | Idle | both: a whole request came and went between two catch-ups |
    ///
    /// Anything else is refused with [`Error::InvalidTransition`] (event
    /// [`CatchUp`](crate::Event::CatchUp)): Upgraded and Closed are only reached through
    /// their events, and nothing goes back to New. A move once Serving is over is refused
    /// with [`Error::CatchUpAfterServing`]. A refused call changes nothing.
    ///
    /// ```
    /// use lameduck_core::{Config, ConnState, Instant, Lifecycle};
    ///
    /// let mut lc = Lifecycle::new(Config::default());
    /// let id = lc.accept(Instant::ZERO)?;
    /// // The connection served a request on its own and is waiting for the next one.
    /// lc.catch_up(id, ConnState::Idle)?;
    /// assert_eq!(lc.state(id)?, ConnState::Idle);
    /// lc.begin_shutdown(Instant::from_nanos(10_000_000))?;
    /// assert_eq!(lc.report().unwrap().at_begin.idle, 1);
    /// # Ok::<(), lameduck_core::Error>(())
    /// ```
    pub fn catch_up(&mut self, id: ConnId, reported: ConnState) -> Result<(), Error> {
        let index = self.slab.live(id)?;
        let known = self.slab.slots[index].state();
        if known == reported {
            return Ok(());
        }
        let allowed = !self.slab.slots[index].has(flag::IN_TRANSFER)
            && matches!(
                (known, reported),
                (ConnState::New | ConnState::Idle, ConnState::Active)
                    | (ConnState::Active | ConnState::New, ConnState::Idle)
            );
        if !allowed {
            return Err(Error::InvalidTransition {
                id,
                from: known,
                event: Event::CatchUp(reported),
            });
        }
        if self.phase() != Phase::Serving {
            return Err(Error::CatchUpAfterServing(id));
        }
        // While Serving nothing is queued but stale-New and idle-grace timers, which only
        // start counting at the shutdown's begin; the moves keep their bookkeeping right.
        let now = self.now;
        if known != ConnState::Active {
            self.request_started(id, now)?;
        }
        if reported == ConnState::Idle {
            self.request_finished(id, now)?;
        }
        Ok(())
    }

    /// The connection was taken over by a long-lived protocol: Active → Upgraded.
    pub fn upgraded(&mut self, id: ConnId, now: Instant) -> Result<(), Error> {
        let index = self.expect(id, Event::Upgraded, |s| s == ConnState::Active)?;
        self.tick(now);
        self.set_state(index, ConnState::Upgraded);
        self.notice(id);
        Ok(())
    }

    /// The connection is gone, whoever closed it: any live state → Closed. Its id is dead
    /// from now on.
    pub fn closed(&mut self, id: ConnId, now: Instant) -> Result<(), Error> {
        self.close(id, now, false)
    }

    /// Like [`closed`](Lifecycle::closed) — the connection is Closed and counted, its id
    /// dead — for a close that *lingers*: its write side is shut and the driver reads and
    /// discards what the peer still sends for a while, so that unread bytes never make the
    /// kernel reset the connection and destroy the last response (RFC 9112 §9.6). The drain
    /// is not over until every such close is done ([`linger_ended`](Lifecycle::linger_ended)):
    /// exiting earlier would reset exactly these sockets, so [`Action::Drained`] (and the
    /// report's `drained_at`) waits for them. The driver bounds each linger with its own
    /// timer; the lifecycle has none for it.
    pub fn closed_lingering(&mut self, id: ConnId, now: Instant) -> Result<(), Error> {
        self.close(id, now, true)
    }

    /// One lingering close ([`closed_lingering`](Lifecycle::closed_lingering)) is done. Fails
    /// with [`Error::NoLingeringClose`] when none is under way.
    pub fn linger_ended(&mut self, now: Instant) -> Result<(), Error> {
        if self.lingering == 0 {
            return Err(Error::NoLingeringClose);
        }
        self.tick(now);
        self.lingering -= 1;
        self.check_drained();
        Ok(())
    }

    /// Lingering closes under way.
    pub fn lingering(&self) -> usize {
        self.lingering
    }

    fn close(&mut self, id: ConnId, now: Instant, lingers: bool) -> Result<(), Error> {
        let index = self.slab.live(id)?;
        self.tick(now);
        self.unqueue(index);
        let slot = self.slab.slots[index];
        self.counts.dec(slot.state());
        if let Some(report) = self.report.as_mut() {
            if !slot.has(flag::CLOSE_SENT) {
                report.finished += 1;
            }
        }
        self.slab.remove(index);
        self.lingering += usize::from(lingers);
        self.prune_asks();
        self.check_drained();
        Ok(())
    }

    /// Begins shutdown: the lame-duck window if one is configured, else draining at once.
    ///
    /// Every live connection is told to finish-then-close (or to go away, if upgraded) — at
    /// once, or with a [`spread`](Config::spread) at its own moment in the window;
    /// draining issues [`Action::StopAccepting`] and applies the idle policy and the stale-New
    /// rule. With nothing open and no listener, [`Action::Drained`] follows at once.
    ///
    /// A second call returns [`Error::ShutdownAlreadyBegun`]; use
    /// [`force_close`](Lifecycle::force_close) to cut what is left.
    pub fn begin_shutdown(&mut self, now: Instant) -> Result<(), Error> {
        if self.phase() != Phase::Serving {
            return Err(Error::ShutdownAlreadyBegun);
        }
        self.tick(now);
        self.report = Some(DrainReport {
            began_at: self.now,
            at_begin: self.counts,
            ..DrainReport::default()
        });
        let deadline = self.config.deadline.map(|d| self.now + d);
        self.schedule_asks();
        self.sweep = Some(0);
        if self.config.lame_duck > Duration::ZERO {
            self.stage = Stage::LameDuck {
                until: self.now + self.config.lame_duck,
                deadline,
            };
        } else {
            self.enter_draining(deadline);
        }
        self.fire_timers();
        Ok(())
    }

    /// Cuts every connection now, as if the deadline had passed: each gets
    /// [`Action::Close`] with [`CloseReason::Deadline`] and the report counts it as cut.
    /// Begins shutdown first if it has not begun. Does nothing once drained.
    ///
    /// This is what an operator's second Ctrl-C usually means.
    pub fn force_close(&mut self, now: Instant) {
        if self.phase() == Phase::Serving {
            // Cannot fail: the phase is Serving.
            let _ = self.begin_shutdown(now);
        }
        self.tick(now);
        if let Stage::LameDuck { deadline, .. } = self.stage {
            self.enter_draining(deadline);
        }
        // Entering draining may have drained already; then there is nothing to cut.
        if self.phase() == Phase::Draining {
            self.cut();
        }
    }

    /// The driver opened a listener: the lifecycle keeps accepting after
    /// [`Action::StopAccepting`] until every listener registered this way has closed
    /// ([`listener_closed`](Lifecycle::listener_closed)), so that a driver can drain each
    /// one's backlog first. Fails with [`Error::NotAccepting`] once accepting has ended.
    ///
    /// ```
    /// use lameduck_core::{Action, Config, Instant, Lifecycle};
    ///
    /// let mut lc = Lifecycle::new(Config::default());
    /// lc.listener_opened()?;
    /// lc.begin_shutdown(Instant::ZERO)?;
    /// assert_eq!(lc.poll_action(), Some(Action::StopAccepting));
    /// // The driver drains its backlog: an accept is still tracked.
    /// let late = lc.accept(Instant::ZERO)?;
    /// lc.closed(late, Instant::ZERO)?;
    /// lc.listener_closed(Instant::ZERO)?;
    /// assert!(!lc.is_accepting());
    /// assert_eq!(lc.poll_action(), Some(Action::Drained));
    /// # Ok::<(), lameduck_core::Error>(())
    /// ```
    pub fn listener_opened(&mut self) -> Result<(), Error> {
        if !self.accepting {
            return Err(Error::NotAccepting);
        }
        self.listeners += 1;
        Ok(())
    }

    /// A listener registered with [`listener_opened`](Lifecycle::listener_opened) closed
    /// (its backlog drained, if it closed after [`Action::StopAccepting`]). If it was the
    /// last one open and `StopAccepting` has been issued, accepting ends here:
    /// [`Action::Drained`] waits for this, so that no connection still in a backlog is
    /// forgotten. Fails with [`Error::NoOpenListener`] when none is open.
    pub fn listener_closed(&mut self, now: Instant) -> Result<(), Error> {
        let open @ 1.. = self.listeners else {
            return Err(Error::NoOpenListener);
        };
        self.tick(now);
        self.listeners = open - 1;
        if open == 1 && self.stop_issued() {
            self.end_accepting();
        }
        Ok(())
    }

    /// Registered listeners still open.
    pub fn listeners(&self) -> usize {
        self.listeners
    }

    /// Whether [`Action::StopAccepting`] has been issued (and accepting has not ended).
    fn stop_issued(&self) -> bool {
        matches!(
            self.stage,
            Stage::Draining {
                stop_owed: false,
                ..
            }
        ) && self.accepting
    }

    /// Accepting is over: every listener has closed after `StopAccepting`.
    fn end_accepting(&mut self) {
        self.accepting = false;
        self.check_drained();
    }

    /// Fires every timer due at `now`: the end of the lame-duck window, stale New
    /// connections, the idle grace, the deadline. Call it at (or after)
    /// [`poll_timeout`](Lifecycle::poll_timeout); calling it at other times is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tick(now);
        self.fire_timers();
    }

    /// The next instant worth a [`handle_timeout`](Lifecycle::handle_timeout), or `None` if
    /// no timer is armed. Never earlier than [`now`](Lifecycle::now), so a driver that sleeps
    /// until it cannot spin. No timer is ever armed while [`Phase::Serving`].
    #[must_use = "a driver that ignores the next timeout never fires the stale-New, idle-grace and deadline timers"]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let next = match self.stage {
            Stage::Serving | Stage::Drained { .. } => None,
            Stage::LameDuck { until, deadline } => {
                let end = deadline.map_or(until, |d| d.min(until));
                Some(self.next_ask().map_or(end, |ask| ask.min(end)))
            }
            Stage::Draining {
                deadline: Deadline::Passed,
                ..
            } => None,
            Stage::Draining { deadline, .. } => {
                let stale = self.new_q.front().map(|i| self.stale_at(i));
                let idle = self.idle_q.front().and_then(|i| self.grace_ends_at(i));
                [deadline.at(), stale, idle, self.next_ask()]
                    .into_iter()
                    .flatten()
                    .min()
            }
        };
        next.map(|t| t.max(self.now))
    }

    /// The next thing to do, or `None` when there is nothing to do until the next input.
    ///
    /// Drain it completely after every input. Connection actions are decided when pulled,
    /// from the connection's state at that moment, and each is issued at most once per
    /// connection; [`Action::Drained`] comes last and once. While [`Phase::Serving`] there is
    /// never one: every action follows [`begin_shutdown`](Lifecycle::begin_shutdown) (a
    /// driver may skip polling until then).
    #[must_use = "an action pulled and dropped is lost: the lifecycle issues each one once"]
    pub fn poll_action(&mut self) -> Option<Action> {
        if let Stage::Draining {
            stop_owed: stop_owed @ true,
            ..
        } = &mut self.stage
        {
            *stop_owed = false;
            // No listener is open: no backlog is left to drain.
            if self.listeners == 0 {
                self.end_accepting();
            }
            return Some(Action::StopAccepting);
        }
        while let Some(id) = self.attention.pop_front() {
            if let Ok(index) = self.slab.live(id) {
                if let Some(action) = self.attend(index) {
                    return Some(action);
                }
            }
        }
        while let Some(index) = self.sweep {
            if index >= self.slab.slots.len() {
                self.sweep = None;
                break;
            }
            self.sweep = Some(index + 1);
            if let Some(action) = self.attend(index) {
                return Some(action);
            }
        }
        if let Stage::Drained {
            announced: announced @ false,
        } = &mut self.stage
        {
            *announced = true;
            return Some(Action::Drained);
        }
        None
    }

    // ---- internals -------------------------------------------------------------------------

    fn tick(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    /// The slot of `id` if it is live and in a state `allowed` accepts.
    fn expect(
        &self,
        id: ConnId,
        event: Event,
        allowed: impl Fn(ConnState) -> bool,
    ) -> Result<usize, Error> {
        let index = self.slab.live(id)?;
        let from = self.slab.slots[index].state();
        if allowed(from) {
            Ok(index)
        } else {
            Err(Error::InvalidTransition { id, from, event })
        }
    }

    fn set_state(&mut self, index: usize, to: ConnState) {
        let slot = &mut self.slab.slots[index];
        self.counts.dec(slot.state());
        self.counts.inc(to);
        slot.occupant = Occupant::Live(to);
        slot.since = self.now;
    }

    /// Arms the stale-New or idle-grace timer of a connection that just entered New or Idle.
    fn enqueue(&mut self, index: usize) {
        let slot = &self.slab.slots[index];
        if self.deadline_passed() || slot.has(flag::CLOSE_SENT | flag::CLOSE_DUE) {
            return;
        }
        match slot.state() {
            ConnState::New => self.new_q.push_back(&mut self.slab.slots, index),
            // The idle grace runs from the ask: one not yet asked waits for its moment.
            ConnState::Idle if slot.has(flag::ASK_DUE) => {
                self.idle_q.push_back(&mut self.slab.slots, index)
            }
            _ => {}
        }
    }

    /// When the shutdown begins: every live connection's moment in the spread window. Those
    /// at the window's start (all of them, without a spread) are asked now, the rest queued
    /// latest first. The one allocation of a spread drain, made once.
    fn schedule_asks(&mut self) {
        let began = self.now;
        for index in 0..self.slab.slots.len() {
            let Some(id) = self.slab.id_at(index) else {
                continue;
            };
            let offset = self.config.spread_offset(id);
            if offset.is_zero() {
                // The begin's sweep issues it.
                self.ask_due(index);
            } else {
                self.asks.push((began + offset, id));
            }
        }
        self.asks
            .sort_unstable_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)));
    }

    /// Drops the asks of connections that closed before their moment from the front of
    /// the queue, so that [`poll_timeout`](Lifecycle::poll_timeout) never asks for a wake-up
    /// that would do nothing: called on every close and after the due asks are popped, it
    /// keeps the front live. Each entry is dropped once: amortised O(1).
    fn prune_asks(&mut self) {
        while let Some(&(_, id)) = self.asks.last() {
            if self.slab.live(id).is_ok() {
                break;
            }
            self.asks.pop();
        }
    }

    /// The next moment in the spread window, if any is still to come.
    fn next_ask(&self) -> Option<Instant> {
        self.asks.last().map(|(at, _)| *at)
    }

    /// Connection `index`'s moment has come: the asks its state calls for may go out, and
    /// an Idle one starts its grace (or, under `CloseImmediately` while draining, closes).
    fn ask_due(&mut self, index: usize) {
        let slot = &mut self.slab.slots[index];
        slot.flags |= flag::ASK_DUE;
        // In transfer: its ask waits for `taken_back`.
        if slot.state() != ConnState::Idle || slot.has(flag::IN_TRANSFER) {
            return;
        }
        self.unqueue(index);
        self.slab.slots[index].since = self.now;
        if self.phase() == Phase::Draining
            && self.config.idle_policy == IdlePolicy::CloseImmediately
        {
            self.mark_close(index, CloseReason::Idle);
        } else {
            self.enqueue(index);
        }
    }

    fn unqueue(&mut self, index: usize) {
        let slot = &self.slab.slots[index];
        if !slot.has(flag::QUEUED) {
            return;
        }
        match slot.state() {
            ConnState::New => self.new_q.unlink(&mut self.slab.slots, index),
            ConnState::Idle => self.idle_q.unlink(&mut self.slab.slots, index),
            _ => {}
        }
    }

    /// Decides to close a connection; the `Close` is issued when the driver next polls.
    fn mark_close(&mut self, index: usize, reason: CloseReason) {
        self.unqueue(index);
        let slot = &mut self.slab.slots[index];
        if slot.has(flag::CLOSE_SENT) {
            return;
        }
        slot.flags = (slot.flags & !flag::REASON_MASK)
            | flag::CLOSE_DUE
            | (reason_bits(reason) << flag::REASON_SHIFT);
    }

    /// Remembers that `id` may need an action, if shutdown has begun.
    fn notice(&mut self, id: ConnId) {
        if self.phase() != Phase::Serving {
            self.attention.push_back(id);
        }
    }

    fn stale_at(&self, index: usize) -> Instant {
        self.slab.slots[index].since + self.config.stale_new
    }

    fn grace_ends_at(&self, index: usize) -> Option<Instant> {
        let IdlePolicy::AwaitNextRequest { grace } = self.config.idle_policy else {
            return None;
        };
        let Stage::Draining { since, .. } = self.stage else {
            return None;
        };
        Some(self.slab.slots[index].since.max(since) + grace)
    }

    /// From Serving or the lame-duck window, with the deadline computed at begin.
    fn enter_draining(&mut self, deadline: Option<Instant>) {
        self.stage = Stage::Draining {
            since: self.now,
            deadline: deadline.map_or(Deadline::None, Deadline::At),
            stop_owed: self.accepting,
        };
        if let Some(report) = self.report.as_mut() {
            report.draining_at = Some(self.now);
        }
        if self.config.idle_policy == IdlePolicy::CloseImmediately {
            while let Some(index) = self.idle_q.front() {
                self.mark_close(index, CloseReason::Idle);
            }
        }
        // One pass over every connection issues what draining changed.
        self.sweep = Some(0);
        self.check_drained();
    }

    /// Called while Draining.
    fn cut(&mut self) {
        if let Stage::Draining { deadline, .. } = &mut self.stage {
            *deadline = Deadline::Passed;
        }
        if let Some(report) = self.report.as_mut() {
            report.deadline_hit = true;
        }
        self.new_q.clear(&mut self.slab.slots);
        self.idle_q.clear(&mut self.slab.slots);
        self.asks.clear();
        self.sweep = Some(0);
    }

    fn fire_timers(&mut self) {
        let now = self.now;
        if let Stage::LameDuck { until, deadline } = self.stage {
            if now >= until || deadline.is_some_and(|d| now >= d) {
                self.enter_draining(deadline);
            }
        }
        if let Stage::Draining {
            deadline: Deadline::At(d),
            ..
        } = self.stage
        {
            if now >= d {
                self.cut();
            }
        }
        if self.deadline_passed() || self.phase() == Phase::Drained {
            return;
        }
        while let Some(&(at, id)) = self.asks.last() {
            if at > now {
                break;
            }
            self.asks.pop();
            // A connection that closed meanwhile (its slot maybe reused) is skipped.
            if let Ok(index) = self.slab.live(id) {
                self.ask_due(index);
                self.attention.push_back(id);
            }
        }
        // The next ask may be one whose connection closed while it was not at the front.
        self.prune_asks();
        if self.phase() != Phase::Draining {
            return;
        }
        while let Some(index) = self.new_q.front() {
            if self.stale_at(index) > now {
                break;
            }
            self.mark_close(index, CloseReason::Stale);
            self.attention.extend(self.slab.id_at(index));
        }
        while let Some(index) = self.idle_q.front() {
            if self.grace_ends_at(index).is_none_or(|t| t > now) {
                break;
            }
            self.mark_close(index, CloseReason::Idle);
            self.attention.extend(self.slab.id_at(index));
        }
    }

    fn check_drained(&mut self) {
        if self.phase() == Phase::Draining
            && self.counts.total() == 0
            && self.lingering == 0
            && !self.accepting
        {
            self.stage = Stage::Drained { announced: false };
            self.attention.clear();
            self.asks.clear();
            self.sweep = None;
            if let Some(report) = self.report.as_mut() {
                report.drained_at = Some(self.now);
            }
        }
    }

    /// What the connection in slot `index` needs now, if anything; marks it issued.
    fn attend(&mut self, index: usize) -> Option<Action> {
        let id = self.slab.id_at(index)?;
        let phase = self.phase();
        let deadline_passed = self.deadline_passed();
        let slot = &mut self.slab.slots[index];
        // In transfer: nothing reaches it until the successor answers (`taken_back` asks
        // again for attention).
        if slot.has(flag::CLOSE_SENT | flag::IN_TRANSFER) {
            return None;
        }
        if slot.has(flag::CLOSE_DUE) || deadline_passed {
            let reason = if slot.has(flag::CLOSE_DUE) {
                reason_from_bits(slot.flags >> flag::REASON_SHIFT)
            } else {
                CloseReason::Deadline
            };
            slot.flags = (slot.flags & !(flag::CLOSE_DUE | flag::REASON_MASK))
                | flag::CLOSE_SENT
                | (reason_bits(reason) << flag::REASON_SHIFT);
            let state = slot.state();
            if let Some(report) = self.report.as_mut() {
                match reason {
                    CloseReason::Idle => report.closed_idle += 1,
                    CloseReason::Stale => report.closed_stale += 1,
                    CloseReason::Deadline => report.cut.inc(state),
                }
            }
            return Some(Action::Close(id, reason));
        }
        if phase == Phase::Serving || !slot.has(flag::ASK_DUE) {
            return None;
        }
        let ask = match slot.state() {
            ConnState::Upgraded if !slot.has(flag::GOAWAY_SENT) => {
                slot.flags |= flag::GOAWAY_SENT;
                Action::AskToLeave(id)
            }
            ConnState::New | ConnState::Active | ConnState::Idle
                if !slot.has(flag::FINISH_SENT) =>
            {
                slot.flags |= flag::FINISH_SENT;
                Action::FinishThenClose(id)
            }
            _ => return None,
        };
        if let Some(report) = self.report.as_mut() {
            report.last_ask_at = Some(self.now);
        }
        Some(ask)
    }
}

fn reason_bits(reason: CloseReason) -> u16 {
    match reason {
        CloseReason::Idle => 0,
        CloseReason::Stale => 1,
        CloseReason::Deadline => 3,
    }
}

fn reason_from_bits(bits: u16) -> CloseReason {
    match bits & 0b11 {
        0 => CloseReason::Idle,
        1 => CloseReason::Stale,
        _ => CloseReason::Deadline,
    }
}
