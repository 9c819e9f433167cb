//! A lifecycle with a reference model beside it, checking the invariant on every call.

use std::collections::BTreeMap;
use std::vec::Vec;

use crate::{
    Action, CloseReason, Config, ConnId, ConnState, Counts, DrainReport, Error, Event, IdlePolicy,
    Instant, Lifecycle, Phase,
};

/// What the model knows of one connection, independently of the lifecycle.
#[derive(Clone, Copy, Debug)]
struct Conn {
    state: ConnState,
    accepted_at: Instant,
    /// When it last entered its state.
    since: Instant,
    told_finish: bool,
    told_go_away: bool,
    told_close: bool,
    /// `handle_timeout` ran since it entered its state, so its timers have had their chance.
    timers_seen: bool,
    /// When its moment in the spread window came (timers fired at or after
    /// `began + spread_offset`), or it was accepted during the shutdown: from then on its
    /// asks may go out, and its idle grace runs.
    asked_at: Option<Instant>,
    /// Offered to a successor that has not answered (`transfer_started`): nothing may reach
    /// it, and nothing is owed to it, until `handed_over` or `taken_back`.
    in_transfer: bool,
}

/// The reference model: the plain rules of the protocol, written without the lifecycle's
/// data structures.
#[derive(Debug)]
struct Model {
    config: Config,
    now: Instant,
    conns: BTreeMap<ConnId, Conn>,
    accepting: bool,
    /// Listeners registered (`listener_opened`) and not closed.
    listeners: usize,
    shutdown_at: Option<Instant>,
    draining_at: Option<Instant>,
    deadline_hit: bool,
    drained: bool,
    /// Lingering closes under way (`closed_lingering` minus `linger_ended`).
    lingering: usize,
    drained_at: Option<Instant>,
    /// When the lifecycle last fired its timers.
    fired_at: Instant,
    told_stop: bool,
    told_drained: bool,
    at_begin: Counts,
    accepted_during: usize,
    /// When the last `FinishThenClose` or `AskToLeave` was issued.
    last_ask_at: Option<Instant>,
    /// Connections handed over since the shutdown began (the report's count).
    handed_over: usize,
    /// Connections taken back since the shutdown began (the report's count).
    taken_back: usize,
}

impl Model {
    fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for conn in self.conns.values() {
            c.inc(conn.state);
        }
        c
    }

    fn phase(&self) -> Phase {
        match (self.shutdown_at, self.draining_at) {
            (None, _) => Phase::Serving,
            _ if self.drained => Phase::Drained,
            (Some(_), None) => Phase::LameDuck,
            (Some(_), Some(_)) => Phase::Draining,
        }
    }

    fn tick(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    fn enter_draining(&mut self) {
        if self.draining_at.is_none() {
            self.draining_at = Some(self.now);
        }
    }

    /// The timers of the protocol, as the model sees them.
    fn fire_timers(&mut self) {
        self.fired_at = self.now;
        for conn in self.conns.values_mut() {
            conn.timers_seen = true;
        }
        let Some(began) = self.shutdown_at else {
            return;
        };
        if self.drained {
            return;
        }
        if self.now >= began + self.config.lame_duck {
            self.enter_draining();
            self.update_drained();
        }
        // Each connection's moment in the spread window (the window capped by the deadline).
        let now = self.now;
        for (id, conn) in self.conns.iter_mut() {
            if conn.asked_at.is_none() && now >= began + self.config.spread_offset(*id) {
                conn.asked_at = Some(now);
            }
        }
        if let Some(d) = self.config.deadline {
            if self.now >= began + d && !self.drained {
                self.enter_draining();
                self.update_drained();
                // A drain that completes the instant draining begins cuts nothing.
                self.deadline_hit = !self.drained;
            }
        }
    }

    fn update_drained(&mut self) {
        if !self.drained
            && self.draining_at.is_some()
            && !self.accepting
            && self.conns.is_empty()
            && self.lingering == 0
        {
            self.drained = true;
            self.drained_at = Some(self.now);
        }
    }

    fn stale_at(&self, conn: &Conn) -> Instant {
        conn.accepted_at + self.config.stale_new
    }

    /// The idle grace runs from the latest of: going Idle, draining, the connection's ask.
    fn grace_ends_at(&self, conn: &Conn) -> Option<Instant> {
        match (self.config.idle_policy, self.draining_at, conn.asked_at) {
            (IdlePolicy::AwaitNextRequest { grace }, Some(d), Some(a)) => {
                Some(conn.since.max(d).max(a) + grace)
            }
            _ => None,
        }
    }

    /// The moment connection `id` is asked, once the shutdown has begun.
    fn ask_at(&self, id: ConnId) -> Option<Instant> {
        self.shutdown_at
            .map(|began| began + self.config.spread_offset(id))
    }
}

/// A [`Lifecycle`] checked against a reference model on every call.
///
/// Same methods as `Lifecycle`; each panics, with the rule it broke, if the lifecycle's
/// answer or an action it issues contradicts the protocol. Errors the lifecycle should
/// return are checked too (and returned, so a driver sees them as it would in production).
#[derive(Debug)]
pub struct Checked {
    lc: Lifecycle,
    model: Model,
}

macro_rules! violation {
    ($($arg:tt)*) => {
        panic!("lameduck invariant violated: {}", format_args!($($arg)*))
    };
}

impl Checked {
    /// A checked lifecycle with this configuration.
    pub fn new(config: Config) -> Checked {
        Checked {
            lc: Lifecycle::new(config),
            model: Model {
                config,
                now: Instant::ZERO,
                conns: BTreeMap::new(),
                accepting: true,
                listeners: 0,
                shutdown_at: None,
                draining_at: None,
                deadline_hit: false,
                drained: false,
                lingering: 0,
                drained_at: None,
                fired_at: Instant::ZERO,
                told_stop: false,
                told_drained: false,
                at_begin: Counts::default(),
                accepted_during: 0,
                last_ask_at: None,
                handed_over: 0,
                taken_back: 0,
            },
        }
    }

    /// The lifecycle under check, for queries.
    pub fn lifecycle(&self) -> &Lifecycle {
        &self.lc
    }

    /// Ids of the connections the model holds live, in id order.
    pub fn live(&self) -> Vec<(ConnId, ConnState)> {
        self.model
            .conns
            .iter()
            .map(|(id, c)| (*id, c.state))
            .collect()
    }

    /// [`Lifecycle::accept`], checked.
    pub fn accept(&mut self, now: Instant) -> Result<ConnId, Error> {
        let result = self.lc.accept(now);
        self.admitted("accept", result, now, ConnState::New)
    }

    /// [`Lifecycle::adopt`], checked: like an accept, but the connection is Idle.
    pub fn adopt(&mut self, now: Instant) -> Result<ConnId, Error> {
        let result = self.lc.adopt(now);
        self.admitted("adopt", result, now, ConnState::Idle)
    }

    /// Checks an accept or an adoption (`what`) that answered `result`, and models the new
    /// connection in `state`: refused only once accepting has ended; during a shutdown it
    /// is counted and asked at once, never spread.
    fn admitted(
        &mut self,
        what: &str,
        result: Result<ConnId, Error>,
        now: Instant,
        state: ConnState,
    ) -> Result<ConnId, Error> {
        match result {
            Err(Error::NotAccepting) if !self.model.accepting => {}
            Err(e) => violation!("{what} failed with {e:?} while accepting"),
            Ok(id) => {
                if !self.model.accepting {
                    violation!("{what} succeeded once accepting had ended");
                }
                if self.model.conns.contains_key(&id) {
                    violation!("{what} returned {id:?}, which is live");
                }
                self.model.tick(now);
                let now = self.model.now;
                let during = self.model.shutdown_at.is_some();
                self.model.conns.insert(
                    id,
                    Conn {
                        state,
                        accepted_at: now,
                        since: now,
                        told_finish: false,
                        told_go_away: false,
                        told_close: false,
                        timers_seen: false,
                        asked_at: during.then_some(now),
                        in_transfer: false,
                    },
                );
                if during {
                    self.model.accepted_during += 1;
                }
            }
        }
        self.check_state();
        result
    }

    /// [`Lifecycle::transfer_started`], checked: only an Idle connection whose Close was
    /// not issued, and not already in transfer, is offered to a successor.
    pub fn transfer_started(&mut self, id: ConnId, now: Instant) -> Result<(), Error> {
        let result = self.lc.transfer_started(id, now);
        let known = self
            .model
            .conns
            .get(&id)
            .map(|c| (c.state, c.told_close || c.in_transfer));
        match (known, result) {
            (Some((ConnState::Idle, false)), Ok(())) => {
                self.model.tick(now);
                if let Some(c) = self.model.conns.get_mut(&id) {
                    c.in_transfer = true;
                }
            }
            (Some((s, refused)), Err(Error::InvalidTransition { id: eid, from, .. }))
                if (s != ConnState::Idle || refused) && eid == id && from == s => {}
            (None, Err(Error::Closed(_) | Error::UnknownConnection(_))) => {}
            (s, r) => violation!(
                "lifecycle: {id:?} (state, closed or in transfer) {s:?} answered {r:?} to transfer_started"
            ),
        }
        self.check_state();
        result
    }

    /// [`Lifecycle::handed_over`], checked: only a connection in transfer leaves by
    /// handover (the successor said it holds it); it is counted as handed over.
    pub fn handed_over(&mut self, id: ConnId, now: Instant) -> Result<(), Error> {
        let result = self.lc.handed_over(id, now);
        let known = self.model.conns.get(&id).map(|c| (c.state, c.in_transfer));
        match (known, result) {
            (Some((_, true)), Ok(())) => {
                self.model.tick(now);
                self.model.conns.remove(&id);
                // The report counts what left after the shutdown began.
                if self.model.shutdown_at.is_some() {
                    self.model.handed_over += 1;
                }
                self.model.update_drained();
            }
            (
                Some((s, false)),
                Err(Error::InvalidTransition {
                    id: eid,
                    from,
                    event: Event::HandedOver,
                }),
            ) if eid == id && from == s => {}
            (None, Err(Error::Closed(_) | Error::UnknownConnection(_))) => {}
            (s, r) => {
                violation!(
                    "lifecycle: {id:?} (state, in transfer) {s:?} answered {r:?} to handed_over"
                )
            }
        }
        self.check_state();
        result
    }

    /// [`Lifecycle::taken_back`], checked: a connection in transfer is Idle and served here
    /// again, its idle grace from now; what the shutdown owes it is owed at once.
    pub fn taken_back(&mut self, id: ConnId, now: Instant) -> Result<(), Error> {
        let result = self.lc.taken_back(id, now);
        let known = self.model.conns.get(&id).map(|c| (c.state, c.in_transfer));
        match (known, result) {
            (Some((_, true)), Ok(())) => {
                self.model.tick(now);
                let (now, began) = (self.model.now, self.model.shutdown_at.is_some());
                if let Some(c) = self.model.conns.get_mut(&id) {
                    c.in_transfer = false;
                    c.since = now;
                    c.timers_seen = false;
                }
                self.model.taken_back += usize::from(began);
            }
            (
                Some((s, false)),
                Err(Error::InvalidTransition {
                    id: eid,
                    from,
                    event: Event::TakenBack,
                }),
            ) if eid == id && from == s => {}
            (None, Err(Error::Closed(_) | Error::UnknownConnection(_))) => {}
            (s, r) => {
                violation!(
                    "lifecycle: {id:?} (state, in transfer) {s:?} answered {r:?} to taken_back"
                )
            }
        }
        self.check_state();
        result
    }

    /// [`Lifecycle::request_started`], checked.
    pub fn request_started(&mut self, id: ConnId, now: Instant) -> Result<(), Error> {
        let result = self.lc.request_started(id, now);
        if self.model.conns.get(&id).is_some_and(|c| c.in_transfer) {
            if !matches!(result, Err(Error::InvalidTransition { id: eid, from: ConnState::Idle, event: Event::RequestStarted }) if eid == id)
            {
                violation!(
                    "lifecycle: {id:?} is in transfer, yet request_started answered {result:?}"
                );
            }
            return result;
        }
        self.transition(
            id,
            now,
            result,
            &[ConnState::New, ConnState::Idle],
            ConnState::Active,
        );
        result
    }

    /// [`Lifecycle::request_finished`], checked.
    pub fn request_finished(&mut self, id: ConnId, now: Instant) -> Result<(), Error> {
        let result = self.lc.request_finished(id, now);
        self.transition(id, now, result, &[ConnState::Active], ConnState::Idle);
        result
    }

    /// [`Lifecycle::catch_up`], checked against the model's own reading of the fast path:
    /// while Serving a connection may be brought from New or Idle to Active, from Active to
    /// Idle, or from New to Idle (a whole request between two catch-ups); the same state is
    /// always a no-op; nothing else, and no move once Serving is over.
    pub fn catch_up(&mut self, id: ConnId, reported: ConnState) -> Result<(), Error> {
        let result = self.lc.catch_up(id, reported);
        let known = self.model.conns.get(&id).map(|c| c.state);
        let in_transfer = self.model.conns.get(&id).is_some_and(|c| c.in_transfer);
        let serving = self.model.shutdown_at.is_none();
        let legal = |from: ConnState| {
            !in_transfer
                && matches!(
                    (from, reported),
                    (ConnState::New | ConnState::Idle, ConnState::Active)
                        | (ConnState::Active | ConnState::New, ConnState::Idle)
                )
        };
        match (known, result) {
            (None, Err(Error::Closed(_) | Error::UnknownConnection(_))) => {}
            (Some(s), Ok(())) if s == reported => {}
            (Some(s), Ok(())) if legal(s) && serving => {
                // At the model's latest time, which the lifecycle's `now` must equal.
                let now = self.model.now;
                if let Some(c) = self.model.conns.get_mut(&id) {
                    c.state = reported;
                    c.since = now;
                    c.timers_seen = false;
                }
            }
            (Some(s), Err(Error::CatchUpAfterServing(eid)))
                if legal(s) && !serving && eid == id => {}
            (
                Some(s),
                Err(Error::InvalidTransition {
                    id: eid,
                    from,
                    event: Event::CatchUp(to),
                }),
            ) if s != reported && !legal(s) && eid == id && from == s && to == reported => {}
            (s, r) => violation!("{id:?} in state {s:?} answered {r:?} to catch_up({reported})"),
        }
        self.check_state();
        result
    }

    /// [`Lifecycle::upgraded`], checked.
    pub fn upgraded(&mut self, id: ConnId, now: Instant) -> Result<(), Error> {
        let result = self.lc.upgraded(id, now);
        self.transition(id, now, result, &[ConnState::Active], ConnState::Upgraded);
        result
    }

    /// [`Lifecycle::closed`], checked.
    pub fn closed(&mut self, id: ConnId, now: Instant) -> Result<(), Error> {
        let result = self.lc.closed(id, now);
        let live = ConnState::New;
        let all = [
            live,
            ConnState::Active,
            ConnState::Idle,
            ConnState::Upgraded,
        ];
        self.transition(id, now, result, &all, ConnState::Closed);
        result
    }

    /// [`Lifecycle::closed_lingering`], checked: a close, and the drain waits for its linger.
    pub fn closed_lingering(&mut self, id: ConnId, now: Instant) -> Result<(), Error> {
        let result = self.lc.closed_lingering(id, now);
        if result.is_ok() {
            // Before the transition, which may find the drain complete.
            self.model.lingering += 1;
        }
        let all = [
            ConnState::New,
            ConnState::Active,
            ConnState::Idle,
            ConnState::Upgraded,
        ];
        self.transition(id, now, result, &all, ConnState::Closed);
        if self.lc.lingering() != self.model.lingering {
            violation!(
                "{} lingering closes, the model has {}",
                self.lc.lingering(),
                self.model.lingering
            );
        }
        result
    }

    /// [`Lifecycle::linger_ended`], checked.
    pub fn linger_ended(&mut self, now: Instant) -> Result<(), Error> {
        let result = self.lc.linger_ended(now);
        match (self.model.lingering, result) {
            (0, Err(Error::NoLingeringClose)) => {}
            (0, other) => violation!("linger_ended with nothing lingering returned {other:?}"),
            (_, Ok(())) => {
                self.model.tick(now);
                self.model.lingering -= 1;
                self.model.update_drained();
                if self.model.drained && self.lc.phase() != Phase::Drained {
                    violation!("the last linger ended but the lifecycle is not drained");
                }
            }
            (n, Err(e)) => violation!("linger_ended with {n} lingering refused: {e:?}"),
        }
        result
    }

    /// [`Lifecycle::begin_shutdown`], checked.
    pub fn begin_shutdown(&mut self, now: Instant) -> Result<(), Error> {
        let result = self.lc.begin_shutdown(now);
        match (result, self.model.shutdown_at) {
            (Err(Error::ShutdownAlreadyBegun), Some(_)) => {}
            (Ok(()), None) => {
                self.model.tick(now);
                self.model.shutdown_at = Some(self.model.now);
                self.model.at_begin = self.model.counts();
                self.model.fire_timers();
            }
            (r, began) => {
                violation!("begin_shutdown returned {r:?} with shutdown begun at {began:?}")
            }
        }
        self.check_state();
        result
    }

    /// [`Lifecycle::force_close`], checked.
    pub fn force_close(&mut self, now: Instant) {
        self.lc.force_close(now);
        self.model.tick(now);
        if self.model.shutdown_at.is_none() {
            self.model.shutdown_at = Some(self.model.now);
            self.model.at_begin = self.model.counts();
        }
        // A shutdown that drains the instant it begins cuts nothing.
        self.model.enter_draining();
        self.model.update_drained();
        if !self.model.drained {
            self.model.deadline_hit = true;
        }
        self.check_state();
    }

    /// [`Lifecycle::listener_opened`], checked: refused once accepting has ended.
    pub fn listener_opened(&mut self) -> Result<(), Error> {
        let result = self.lc.listener_opened();
        match (self.model.accepting, result) {
            (true, Ok(())) => self.model.listeners += 1,
            (false, Err(Error::NotAccepting)) => {}
            (accepting, r) => violation!("listener_opened while accepting={accepting}: {r:?}"),
        }
        self.check_state();
        result
    }

    /// [`Lifecycle::listener_closed`], checked: the last one closed after `StopAccepting`
    /// ends accepting.
    pub fn listener_closed(&mut self, now: Instant) -> Result<(), Error> {
        let result = self.lc.listener_closed(now);
        match (self.model.listeners, result) {
            (0, Err(Error::NoOpenListener)) => {}
            (n, Ok(())) if n > 0 => {
                let m = &mut self.model;
                m.tick(now);
                m.listeners = n - 1;
                if n == 1 && m.told_stop && m.accepting {
                    m.accepting = false;
                    m.update_drained();
                }
            }
            (n, r) => violation!("listener_closed with {n} open answered {r:?}"),
        }
        self.check_state();
        result
    }

    /// [`Lifecycle::handle_timeout`], checked.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.lc.handle_timeout(now);
        self.model.tick(now);
        self.model.fire_timers();
        self.check_state();
    }

    /// [`Lifecycle::poll_timeout`], checked: never before `now`.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let t = self.lc.poll_timeout();
        if let Some(t) = t {
            if t < self.model.now {
                violation!("poll_timeout {t:?} is before now {:?}", self.model.now);
            }
        }
        t
    }

    /// [`Lifecycle::poll_action`], checked: each action must be allowed by the protocol.
    pub fn poll_action(&mut self) -> Option<Action> {
        let action = self.lc.poll_action();
        let m = &mut self.model;
        if action.is_some() && m.shutdown_at.is_none() {
            // Drivers rely on it: they skip polling on a connection's own transitions while
            // Serving.
            violation!("{action:?} issued while Serving");
        }
        match action {
            None => {}
            Some(Action::StopAccepting) => Self::check_stop_accepting(m),
            Some(Action::Drained) => {
                Self::check_drained_action(m);
                self.check_report();
            }
            Some(Action::FinishThenClose(id)) => Self::check_finish_then_close(m, id),
            Some(Action::AskToLeave(id)) => Self::check_ask_to_leave(m, id),
            Some(Action::Close(id, reason)) => Self::check_close(m, id, reason),
        }
        action
    }

    /// `StopAccepting`: once, when draining begins, while accepting.
    fn check_stop_accepting(m: &mut Model) {
        if m.told_stop || m.draining_at.is_none() || !m.accepting {
            violation!("StopAccepting issued twice, before draining or after accepting ended");
        }
        m.told_stop = true;
        // No listener open: no backlog to drain; accepting ends now.
        if m.listeners == 0 {
            m.accepting = false;
            m.update_drained();
        }
    }

    /// `Drained`: once, when the model is drained.
    fn check_drained_action(m: &mut Model) {
        if m.told_drained || !m.drained {
            violation!(
                "Drained issued twice or with {} connections live",
                m.conns.len()
            );
        }
        m.told_drained = true;
    }

    /// `FinishThenClose`: once, after the shutdown began and the connection's moment came,
    /// never to an upgraded connection nor after its `Close`.
    fn check_finish_then_close(m: &mut Model, id: ConnId) {
        let began = m.shutdown_at.is_some();
        let deadline_hit = m.deadline_hit;
        let conn = Self::live_conn(m, id, "FinishThenClose");
        Self::check_not_in_transfer(conn, id, "FinishThenClose");
        if !began || conn.told_finish || conn.told_close {
            violation!("FinishThenClose({id:?}) before shutdown, twice, or after Close");
        }
        if conn.state == ConnState::Upgraded {
            violation!("FinishThenClose({id:?}) for an upgraded connection");
        }
        Self::check_ask(conn, id, "FinishThenClose", deadline_hit);
        conn.told_finish = true;
        m.last_ask_at = Some(m.now);
    }

    /// `AskToLeave`: once, to an upgraded connection, after its moment came.
    fn check_ask_to_leave(m: &mut Model, id: ConnId) {
        let began = m.shutdown_at.is_some();
        let deadline_hit = m.deadline_hit;
        let conn = Self::live_conn(m, id, "AskToLeave");
        Self::check_not_in_transfer(conn, id, "AskToLeave");
        if !began || conn.told_go_away || conn.told_close {
            violation!("AskToLeave({id:?}) before shutdown, twice, or after Close");
        }
        if conn.state != ConnState::Upgraded {
            violation!("AskToLeave({id:?}) for a {} connection", conn.state);
        }
        Self::check_ask(conn, id, "AskToLeave", deadline_hit);
        conn.told_go_away = true;
        m.last_ask_at = Some(m.now);
    }

    /// `Close`: once, and only when a rule allows it — the deadline, stale-New, or the
    /// idle policy.
    fn check_close(m: &mut Model, id: ConnId, reason: CloseReason) {
        let now = m.now;
        let stale_at = m.conns.get(&id).map(|c| m.stale_at(c));
        let grace_end = m.conns.get(&id).and_then(|c| m.grace_ends_at(c));
        let policy = m.config.idle_policy;
        let asked = m.conns.get(&id).is_some_and(|c| c.asked_at.is_some());
        let (deadline_hit, draining) = (m.deadline_hit, m.draining_at.is_some());
        let conn = Self::live_conn(m, id, "Close");
        Self::check_not_in_transfer(conn, id, "Close");
        if conn.told_close {
            violation!("Close({id:?}) issued twice");
        }
        let allowed = match (reason, conn.state) {
            (CloseReason::Deadline, _) => deadline_hit,
            _ if deadline_hit => true,
            (CloseReason::Stale, ConnState::New) => draining && stale_at.is_some_and(|t| now >= t),
            (CloseReason::Idle, ConnState::Idle) => {
                draining
                    && asked
                    && match policy {
                        IdlePolicy::CloseImmediately => true,
                        IdlePolicy::AwaitNextRequest { .. } => grace_end.is_some_and(|t| now >= t),
                    }
            }
            _ => false,
        };
        if !allowed {
            violation!(
                "Close({id:?}, {reason:?}) of a {} connection at {now:?} \
                 (accepted {:?}, in state since {:?}, draining {draining}, deadline {deadline_hit})",
                conn.state,
                conn.accepted_at,
                conn.since
            );
        }
        conn.told_close = true;
    }

    /// Checks that nothing is owed: call after [`poll_action`](Checked::poll_action)
    /// returned `None`. Every rule that should have produced an action by now has, and a
    /// timer is armed for every rule still to fire.
    pub fn check_quiescent(&self) {
        let m = &self.model;
        let now = m.now;
        if m.drained && !m.told_drained {
            violation!("drained but Drained was not issued");
        }
        if m.drained {
            return;
        }
        if m.draining_at.is_some() && m.accepting && !m.told_stop {
            violation!("draining but StopAccepting was not issued");
        }
        let mut next_due: Option<Instant> = None;
        if let Some(began) = m.shutdown_at {
            if let Some(d) = m.config.deadline.filter(|_| !m.deadline_hit) {
                next_due = Some(began + d);
            }
            if m.draining_at.is_none() {
                let end = began + m.config.lame_duck;
                next_due = Some(next_due.map_or(end, |t| t.min(end)));
            }
        }
        for (id, c) in &m.conns {
            Self::check_owed(m, *id, c, &mut next_due);
        }
        // A rule already due asks for an immediate wake-up: `now`, never the past.
        if let Some(due) = next_due.map(|t| t.max(now)) {
            match self.lc.poll_timeout() {
                Some(t) if t <= due => {}
                t => violation!("a rule fires at {due:?} but poll_timeout is {t:?}"),
            }
        }
    }

    /// What connection `id` is owed now, if anything (a violation when a rule that should
    /// have acted has not); the instant its next rule fires goes into `next_due`.
    fn check_owed(m: &Model, id: ConnId, c: &Conn, next_due: &mut Option<Instant>) {
        let now = m.now;
        if m.shutdown_at.is_none() || c.told_close || c.in_transfer {
            return;
        }
        if c.asked_at.is_none() && !m.deadline_hit {
            // Its moment is still to come: a timer must be armed for it, and nothing is
            // owed to it but the stale-New rule.
            if let Some(at) = m.ask_at(id) {
                *next_due = Some(next_due.map_or(at, |t| t.min(at)));
            }
            if c.state == ConnState::New && m.draining_at.is_some() {
                let due = m.stale_at(c);
                if c.timers_seen && due <= m.fired_at {
                    violation!("{id:?} (New) should have been closed as stale by {now:?}");
                }
                *next_due = Some(next_due.map_or(due, |t| t.min(due)));
            }
            return;
        }
        let owed_close = |due: bool| {
            if due {
                violation!(
                    "{id:?} ({}) should have been told to close by {now:?}",
                    c.state
                );
            }
        };
        if m.deadline_hit {
            owed_close(true);
        }
        match c.state {
            ConnState::Upgraded if !c.told_go_away => {
                violation!("upgraded {id:?} was not told to go away");
            }
            ConnState::New | ConnState::Active | ConnState::Idle if !c.told_finish => {
                let close_instead = c.state == ConnState::Idle
                    && m.draining_at.is_some()
                    && m.config.idle_policy == IdlePolicy::CloseImmediately;
                if !close_instead {
                    violation!("{id:?} ({}) was not told to finish-then-close", c.state);
                }
            }
            _ => {}
        }
        // Rules that fire on an event are owed at once; timer rules once `handle_timeout`
        // has run at or after their instant (and until then `poll_timeout` must ask for it).
        let (due, on_event) = match c.state {
            _ if m.draining_at.is_none() => (None, false),
            ConnState::New => (Some(m.stale_at(c)), false),
            ConnState::Idle => match m.config.idle_policy {
                IdlePolicy::CloseImmediately => (Some(c.since.min(now)), true),
                IdlePolicy::AwaitNextRequest { .. } => (m.grace_ends_at(c), false),
            },
            _ => (None, false),
        };
        if let Some(due) = due {
            owed_close(if on_event {
                due <= now
            } else {
                c.timers_seen && due <= m.fired_at
            });
            *next_due = Some(next_due.map_or(due, |t| t.min(due)));
        }
    }

    /// An ask goes out only once the connection's moment has come, and never once the
    /// deadline has passed.
    fn check_ask(conn: &Conn, id: ConnId, what: &str, deadline_hit: bool) {
        if conn.asked_at.is_none() {
            violation!("{what}({id:?}) before its moment in the spread window");
        }
        if deadline_hit {
            violation!("{what}({id:?}) after the deadline");
        }
    }

    /// Nothing reaches a connection in transfer: its socket may be the successor's already.
    fn check_not_in_transfer(conn: &Conn, id: ConnId, what: &str) {
        if conn.in_transfer {
            violation!("lifecycle: {what}({id:?}) issued while its socket is in transfer");
        }
    }

    fn live_conn<'m>(m: &'m mut Model, id: ConnId, what: &str) -> &'m mut Conn {
        match m.conns.get_mut(&id) {
            Some(c) => c,
            None => violation!("{what} issued for {id:?}, which is not live"),
        }
    }

    fn transition(
        &mut self,
        id: ConnId,
        now: Instant,
        result: Result<(), Error>,
        from: &[ConnState],
        to: ConnState,
    ) {
        let current = self.model.conns.get(&id).map(|c| c.state);
        match (current, result) {
            (Some(s), Ok(())) if from.contains(&s) => {
                self.model.tick(now);
                let now = self.model.now;
                if to == ConnState::Closed {
                    self.model.conns.remove(&id);
                    self.model.update_drained();
                } else if let Some(c) = self.model.conns.get_mut(&id) {
                    c.state = to;
                    c.since = now;
                    c.timers_seen = false;
                }
            }
            (
                Some(s),
                Err(Error::InvalidTransition {
                    id: eid,
                    from: efrom,
                    ..
                }),
            ) if !from.contains(&s) && eid == id && efrom == s => {}
            (None, Err(Error::Closed(_) | Error::UnknownConnection(_))) => {}
            (s, r) => violation!("{id:?} in state {s:?} answered {r:?} for a move to {to}"),
        }
        self.check_state();
    }

    /// The lifecycle's observable state matches the model's.
    fn check_state(&self) {
        let (lc, m) = (&self.lc, &self.model);
        if lc.counts() != m.counts() {
            violation!("counts {:?}, model {:?}", lc.counts(), m.counts());
        }
        if lc.phase() != m.phase() {
            violation!("phase {:?}, model {:?}", lc.phase(), m.phase());
        }
        if lc.now() != m.now {
            violation!("clock {:?}, model {:?}", lc.now(), m.now);
        }
        if lc.is_accepting() != m.accepting || lc.listeners() != m.listeners {
            violation!(
                "accepting {} with {} listeners, model {} with {:?}",
                lc.is_accepting(),
                lc.listeners(),
                m.accepting,
                m.listeners
            );
        }
        for (id, c) in &m.conns {
            if lc.state(*id) != Ok(c.state) {
                violation!("{id:?} is {:?}, model {}", lc.state(*id), c.state);
            }
        }
        if let Some(t) = lc.poll_timeout() {
            if t < m.now {
                violation!("poll_timeout {t:?} is before now {:?}", m.now);
            }
        }
    }

    fn check_report(&self) {
        let m = &self.model;
        let Some(r): Option<&DrainReport> = self.lc.report() else {
            violation!("Drained without a report");
        };
        if r.at_begin != m.at_begin || r.accepted_during != m.accepted_during {
            violation!(
                "report {r:?} disagrees with model at_begin {:?}, accepted {}",
                m.at_begin,
                m.accepted_during
            );
        }
        if r.total() != r.accounted() {
            violation!(
                "report accounts for {} of {} connections: {r:?}",
                r.accounted(),
                r.total()
            );
        }
        if r.deadline_hit != m.deadline_hit || (!r.deadline_hit && r.cut.total() != 0) {
            violation!(
                "report {r:?} disagrees on the deadline (model: {})",
                m.deadline_hit
            );
        }
        if r.handed_over != m.handed_over {
            violation!(
                "report counts {} handed over, the model {}",
                r.handed_over,
                m.handed_over
            );
        }
        if r.taken_back != m.taken_back {
            violation!(
                "report counts {} taken back, the model {}",
                r.taken_back,
                m.taken_back
            );
        }
        if r.last_ask_at != m.last_ask_at {
            violation!(
                "report says the last ask went out at {:?}, the model {:?}",
                r.last_ask_at,
                m.last_ask_at
            );
        }
        if r.drained_at != m.drained_at || r.began_at != m.shutdown_at.unwrap_or_default() {
            violation!("report times {r:?}, now {:?}", m.now);
        }
    }
}

impl crate::Machine for Checked {
    fn config(&self) -> &Config {
        self.lc.config()
    }
    fn now(&self) -> Instant {
        self.lc.now()
    }
    fn phase(&self) -> Phase {
        self.lc.phase()
    }
    fn counts(&self) -> Counts {
        self.lc.counts()
    }
    fn is_accepting(&self) -> bool {
        self.lc.is_accepting()
    }
    fn state(&self, id: ConnId) -> Result<ConnState, Error> {
        self.lc.state(id)
    }
    fn report(&self) -> Option<&DrainReport> {
        self.lc.report()
    }
    fn accept(&mut self, now: Instant) -> Result<ConnId, Error> {
        Checked::accept(self, now)
    }
    fn request_started(&mut self, id: ConnId, now: Instant) -> Result<(), Error> {
        Checked::request_started(self, id, now)
    }
    fn request_finished(&mut self, id: ConnId, now: Instant) -> Result<(), Error> {
        Checked::request_finished(self, id, now)
    }
    fn catch_up(&mut self, id: ConnId, reported: ConnState) -> Result<(), Error> {
        Checked::catch_up(self, id, reported)
    }
    fn upgraded(&mut self, id: ConnId, now: Instant) -> Result<(), Error> {
        Checked::upgraded(self, id, now)
    }
    fn closed(&mut self, id: ConnId, now: Instant) -> Result<(), Error> {
        Checked::closed(self, id, now)
    }
    fn closed_lingering(&mut self, id: ConnId, now: Instant) -> Result<(), Error> {
        Checked::closed_lingering(self, id, now)
    }
    fn adopt(&mut self, now: Instant) -> Result<ConnId, Error> {
        Checked::adopt(self, now)
    }
    fn transfer_started(&mut self, id: ConnId, now: Instant) -> Result<(), Error> {
        Checked::transfer_started(self, id, now)
    }
    fn handed_over(&mut self, id: ConnId, now: Instant) -> Result<(), Error> {
        Checked::handed_over(self, id, now)
    }
    fn taken_back(&mut self, id: ConnId, now: Instant) -> Result<(), Error> {
        Checked::taken_back(self, id, now)
    }
    fn linger_ended(&mut self, now: Instant) -> Result<(), Error> {
        Checked::linger_ended(self, now)
    }
    fn lingering(&self) -> usize {
        self.lc.lingering()
    }
    fn begin_shutdown(&mut self, now: Instant) -> Result<(), Error> {
        Checked::begin_shutdown(self, now)
    }
    fn force_close(&mut self, now: Instant) {
        Checked::force_close(self, now)
    }
    fn listener_opened(&mut self) -> Result<(), Error> {
        Checked::listener_opened(self)
    }
    fn listener_closed(&mut self, now: Instant) -> Result<(), Error> {
        Checked::listener_closed(self, now)
    }
    fn listeners(&self) -> usize {
        self.lc.listeners()
    }
    fn handle_timeout(&mut self, now: Instant) {
        Checked::handle_timeout(self, now)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Checked::poll_timeout(self)
    }
    fn poll_action(&mut self) -> Option<Action> {
        Checked::poll_action(self)
    }
    /// [`Checked::check_quiescent`].
    fn settled(&self) {
        self.check_quiescent()
    }
}
