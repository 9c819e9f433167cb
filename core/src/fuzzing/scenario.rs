//! An operation language for runs of the lifecycle, and a reference driver that plays it.

use core::time::Duration;
use std::vec::Vec;

use arbitrary::Arbitrary;

use super::Checked;
use crate::{Action, Config, ConnId, ConnState, DrainReport, Error, IdlePolicy, Instant, Phase};

/// One step of a [`Scenario`]. Connection operands index the connections accepted so far
/// (modulo their number), closed ones included, so stale ids are exercised as often as live
/// ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Arbitrary)]
pub enum Op {
    /// A client connects and the driver accepts.
    Accept,
    /// The first byte of a request arrives on a connection.
    RequestStarted(u8),
    /// A response is completely written on a connection.
    RequestFinished(u8),
    /// A connection is upgraded (WebSocket).
    Upgrade(u8),
    /// The client closes a connection (or it breaks), and the driver reports it.
    PeerClose(u8),
    /// An event for an id the lifecycle never issued.
    ForgedId {
        /// Slot of the forged id.
        slot: u32,
        /// Generation of the forged id.
        generation: u32,
    },
    /// The driver's clock moves forward by this many milliseconds; it calls `handle_timeout`.
    Advance(u16),
    /// The driver's clock moves forward by this many milliseconds without a `handle_timeout`
    /// (the next input carries the later time, as when a driver is busy or wakes late).
    Elapse(u16),
    /// The driver sleeps until `poll_timeout` and calls `handle_timeout`.
    SleepUntilTimeout,
    /// The driver wakes one nanosecond before `poll_timeout` and calls `handle_timeout`:
    /// nothing may fire early.
    WakeEarly,
    /// The driver's clock steps back by this many milliseconds (later inputs carry it).
    ClockBack(u16),
    /// SIGTERM: `begin_shutdown`.
    BeginShutdown,
    /// Cut everything now (a second Ctrl-C; a repeated SIGTERM does not cut): `force_close`.
    ForceClose,
    /// The driver's listeners go away on their own (a listener that failed for good, or one
    /// closed early): `listener_closed` for each one open.
    ListenersGone,
    /// The driver pulls every action but has not acted on them yet.
    Poll,
    /// The driver pulls every action and carries out those it owes: closes what it was told
    /// to close, stops accepting when told.
    Obey,
    /// The driver closes a connection with a lingering close: `closed_lingering`.
    LingerClose(u8),
    /// A lingering close is done (the peer closed, or the driver's linger timer ran out):
    /// `linger_ended`.
    LingerEnd,
    /// The serving fast path: the driver catches a connection up to the state it reports
    /// (`catch_up`), as a driver whose connections move on their own while Serving does.
    /// The state operand picks New, Active, Idle, Upgraded or Closed (modulo 5), so that
    /// refused moves are exercised too.
    CatchUp(u8, u8),
    /// The driver opens a listener and registers it: `listener_opened`.
    ListenerOpen,
    /// The driver closes a listener (one of its own, or — with none open — a bogus close
    /// the lifecycle must refuse): `listener_closed`.
    ListenerClose,
    /// The driver offers a connection's socket to a successor (`transfer_started`):
    /// refused unless it is Idle, not told to close and not in transfer already.
    HandOver(u8),
    /// The driver adopts a connection a predecessor handed over (`adopt`): Idle.
    Adopt,
    /// The successor acknowledged a connection in transfer (`handed_over`): refused for
    /// one that is not in transfer.
    Acknowledged(u8),
    /// The successor did not take a connection in transfer — it lost the socket, died, or
    /// fell silent (`taken_back`): refused for one that is not in transfer.
    TakeBack(u8),
}

/// A [`Config`] in milliseconds, small enough for the timers to matter in short runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Arbitrary)]
pub struct ScenarioConfig {
    /// [`Config::stale_new`] in ms.
    pub stale_new_ms: u16,
    /// `Some(grace)` for [`IdlePolicy::AwaitNextRequest`], `None` for `CloseImmediately`.
    pub idle_grace_ms: Option<u16>,
    /// [`Config::lame_duck`] in ms.
    pub lame_duck_ms: u16,
    /// [`Config::deadline`] in ms.
    pub deadline_ms: Option<u16>,
    /// [`Config::spread`] in ms.
    pub spread_ms: u16,
}

impl ScenarioConfig {
    /// The lifecycle configuration this describes.
    pub fn config(&self) -> Config {
        let ms = |n: u16| Duration::from_millis(u64::from(n));
        Config::default()
            .with_stale_new(ms(self.stale_new_ms))
            .with_idle_policy(match self.idle_grace_ms {
                Some(grace) => IdlePolicy::AwaitNextRequest { grace: ms(grace) },
                None => IdlePolicy::CloseImmediately,
            })
            .with_lame_duck(ms(self.lame_duck_ms))
            .with_deadline(self.deadline_ms.map(ms))
            .with_spread(ms(self.spread_ms))
    }
}

/// A whole run: a configuration, the operations, and how the clients behave once shutdown
/// is under way at the end.
#[derive(Clone, Debug, PartialEq, Eq, Arbitrary)]
pub struct Scenario {
    /// The lifecycle's configuration.
    pub config: ScenarioConfig,
    /// What happens, in order.
    pub ops: Vec<Op>,
    /// At the end, do clients finish their requests and leave when told? If not, only the
    /// deadline (or a `force_close` when there is none) ends the drain.
    pub cooperative: bool,
    /// Does the driver close a connection after a response it sent with `Connection: close`
    /// (one that finishes a request after being told to finish-then-close)? A driver that
    /// does not leaves the connection Idle, to the idle policy.
    pub closes_after_notice: bool,
}

/// The reference driver: the calls a well-behaved adapter makes, on a [`Checked`] lifecycle.
struct Driver {
    lc: Checked,
    clock: Instant,
    ids: Vec<ConnId>,
    /// Actions pulled but not yet carried out.
    owed: Vec<Action>,
    /// Connections told to finish-then-close.
    told_finish: Vec<ConnId>,
    closes_after_notice: bool,
    /// Listeners the driver registered and has not closed.
    listeners: usize,
}

impl Driver {
    fn pick(&self, i: u8) -> Option<ConnId> {
        (!self.ids.is_empty()).then(|| self.ids[usize::from(i) % self.ids.len()])
    }

    fn pull(&mut self) {
        while let Some(action) = self.lc.poll_action() {
            if let Action::FinishThenClose(id) = action {
                self.told_finish.push(id);
            }
            self.owed.push(action);
        }
    }

    /// A response is complete; one that said `Connection: close` ends the connection.
    fn finish_request(&mut self, id: ConnId) {
        if self.lc.request_finished(id, self.clock).is_ok()
            && self.closes_after_notice
            && self.told_finish.contains(&id)
        {
            let _ = self.lc.closed(id, self.clock);
        }
    }

    /// Closes every listener the driver has open.
    fn close_listeners(&mut self, now: Instant) {
        while self.listeners > 0 {
            let _ = self.lc.listener_closed(now);
            self.listeners -= 1;
        }
    }

    /// Pulls and carries out actions until there are none, then checks nothing is owed.
    fn obey(&mut self) {
        loop {
            self.pull();
            if self.owed.is_empty() {
                break;
            }
            for action in core::mem::take(&mut self.owed) {
                match action {
                    // Its listeners' backlogs are drained (an `Accept` op may have been
                    // one): it closes them. With none open, accepting ended with the action.
                    Action::StopAccepting => self.close_listeners(self.clock),
                    // The lifecycle may have seen the connection close already (the client
                    // raced us); the checker verifies whichever answer it gives.
                    Action::Close(id, _) => drop(self.lc.closed(id, self.clock)),
                    Action::FinishThenClose(_) | Action::AskToLeave(_) | Action::Drained => {}
                }
            }
        }
        self.lc.check_quiescent();
    }

    fn step(&mut self, op: Op) {
        let now = self.clock;
        // Results are checked by `Checked`; the driver just carries on, as a real one would.
        match op {
            Op::Accept => {
                if let Ok(id) = self.lc.accept(now) {
                    self.ids.push(id);
                }
            }
            Op::Adopt => {
                if let Ok(id) = self.lc.adopt(now) {
                    self.ids.push(id);
                }
            }
            Op::HandOver(i) => self.on_conn(i, Checked::transfer_started),
            Op::Acknowledged(i) => self.on_conn(i, Checked::handed_over),
            Op::TakeBack(i) => self.on_conn(i, Checked::taken_back),
            Op::RequestStarted(i) => self.on_conn(i, Checked::request_started),
            Op::RequestFinished(i) => {
                if let Some(id) = self.pick(i) {
                    self.finish_request(id);
                }
            }
            Op::Upgrade(i) => self.on_conn(i, Checked::upgraded),
            Op::PeerClose(i) => self.on_conn(i, Checked::closed),
            Op::LingerClose(i) => self.on_conn(i, Checked::closed_lingering),
            Op::CatchUp(i, state) => {
                let reported = [
                    ConnState::New,
                    ConnState::Active,
                    ConnState::Idle,
                    ConnState::Upgraded,
                    ConnState::Closed,
                ][usize::from(state) % 5];
                self.on_conn(i, |lc, id, _| lc.catch_up(id, reported));
            }
            Op::ForgedId { slot, generation } => {
                let _ = self
                    .lc
                    .request_started(ConnId::from_parts(slot, generation), now);
            }
            Op::Advance(_)
            | Op::Elapse(_)
            | Op::WakeEarly
            | Op::SleepUntilTimeout
            | Op::ClockBack(_) => self.step_clock(op),
            Op::BeginShutdown => {
                let _ = self.lc.begin_shutdown(now);
            }
            Op::ForceClose => self.lc.force_close(now),
            Op::Poll => {
                self.pull();
                self.lc.check_quiescent();
            }
            Op::Obey => self.obey(),
            Op::LingerEnd => {
                let _ = self.lc.linger_ended(now);
            }
            Op::ListenersGone | Op::ListenerOpen | Op::ListenerClose => self.step_listeners(op),
        }
    }

    /// An event on the connection `i` picks, if any is live; its result is `Checked`'s.
    fn on_conn(
        &mut self,
        i: u8,
        event: impl FnOnce(&mut Checked, ConnId, Instant) -> Result<(), Error>,
    ) {
        if let Some(id) = self.pick(i) {
            let _ = event(&mut self.lc, id, self.clock);
        }
    }

    /// The driver's clock: forward (with or without a wake-up), to the next timeout or
    /// just before it, or back.
    fn step_clock(&mut self, op: Op) {
        let now = self.clock;
        match op {
            Op::Advance(ms) => {
                self.clock = now + Duration::from_millis(u64::from(ms));
                self.lc.handle_timeout(self.clock);
            }
            Op::Elapse(ms) => self.clock = now + Duration::from_millis(u64::from(ms)),
            Op::WakeEarly => {
                if let Some(t) = self.lc.poll_timeout() {
                    let early = Instant::from_nanos(t.as_nanos().saturating_sub(1));
                    self.clock = self.clock.max(early);
                    self.lc.handle_timeout(self.clock);
                }
            }
            Op::SleepUntilTimeout => {
                if let Some(t) = self.lc.poll_timeout() {
                    self.clock = self.clock.max(t);
                    self.lc.handle_timeout(self.clock);
                }
            }
            Op::ClockBack(ms) => {
                let back = u64::from(ms) * 1_000_000;
                self.clock = Instant::from_nanos(now.as_nanos().saturating_sub(back));
            }
            _ => {}
        }
    }

    /// The driver's listeners: opened, closed, or gone all at once.
    fn step_listeners(&mut self, op: Op) {
        let now = self.clock;
        match op {
            Op::ListenersGone => self.close_listeners(now),
            Op::ListenerOpen => {
                let opened = self.lc.listener_opened().is_ok();
                self.listeners += usize::from(opened);
            }
            Op::ListenerClose => {
                let _ = self.lc.listener_closed(now);
                self.listeners = self.listeners.saturating_sub(1);
            }
            _ => {}
        }
    }

    /// Shuts down and drives the lifecycle to `Drained`, failing if it takes more steps than
    /// the connections and timers can justify (a livelock, or a rule that never fires).
    fn finish(&mut self, cooperative: bool) -> DrainReport {
        if self.lc.lifecycle().phase() == Phase::Serving {
            let _ = self.lc.begin_shutdown(self.clock);
        }
        // Every transfer ends, within the driver's bound on the successor's answer: held
        // with cooperative peers, taken back otherwise (refused, and checked, for the
        // connections not in transfer).
        for (id, _) in self.lc.live() {
            let _ = if cooperative {
                self.lc.handed_over(id, self.clock)
            } else {
                self.lc.taken_back(id, self.clock)
            };
        }
        // Each round either moves a connection forward (cooperative clients) or fires at
        // least one timer; there are at most four timers per connection (its moment in the
        // spread window, stale-New, the idle grace, the linger) plus the lame-duck end, the deadline and a force_close. A timer for a
        // connection that is gone would be a wasted round: the lifecycle must not ask for one.
        // A lingering close ends by the driver's own timer: one per round.
        let bound = 4 * self.lc.live().len() + self.lc.lifecycle().lingering() + 8;
        for _ in 0..bound {
            self.obey();
            if self.lc.lifecycle().phase() == Phase::Drained {
                return *self
                    .lc
                    .lifecycle()
                    .report()
                    .expect("drained without a report");
            }
            let mut progressed = false;
            if cooperative {
                for (id, state) in self.lc.live() {
                    match state {
                        ConnState::Active => self.finish_request(id),
                        ConnState::Upgraded => drop(self.lc.closed(id, self.clock)),
                        _ => continue,
                    }
                    progressed = true;
                }
            }
            if !progressed && self.lc.lifecycle().lingering() > 0 {
                let _ = self.lc.linger_ended(self.clock);
                progressed = true;
            }
            if !progressed {
                match self.lc.poll_timeout() {
                    Some(t) => {
                        self.clock = self.clock.max(t);
                        self.lc.handle_timeout(self.clock);
                    }
                    None if !cooperative => self.lc.force_close(self.clock),
                    None => panic!(
                        "lameduck invariant violated: stuck in {:?} with {:?} live and no timer",
                        self.lc.lifecycle().phase(),
                        self.lc.live()
                    ),
                }
            }
        }
        panic!(
            "lameduck invariant violated: not drained after {bound} rounds, {:?} live",
            self.lc.live()
        );
    }
}

/// Plays `scenario` through the reference driver on a [`Checked`] lifecycle, then shuts down
/// and drives to `Drained`. Panics on any violation of the invariant; returns the report.
pub fn run(scenario: &Scenario) -> DrainReport {
    let mut driver = Driver {
        lc: Checked::new(scenario.config.config()),
        clock: Instant::ZERO,
        ids: Vec::new(),
        owed: Vec::new(),
        told_finish: Vec::new(),
        closes_after_notice: scenario.closes_after_notice,
        listeners: 0,
    };
    for &op in &scenario.ops {
        driver.step(op);
    }
    driver.finish(scenario.cooperative)
}
