//! The thread-safe handle around the lifecycle that every runtime adapter shares.

use crate::sync::{Arc, AtomicBool, AtomicI32, AtomicU8, Mutex, MutexGuard, Ordering};
use std::future::Future;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant as StdInstant};

use crate::Timers;
use event_listener::{Event, EventListener};
use futures_lite::future;
use lameduck_core::{
    Action, Config, ConnId, ConnState, Counts, DrainReport, Error, Instant, Lifecycle, Machine,
    Phase,
};

/// A boxed future, as a runtime's timer returns it and its spawner takes it.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

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
    fn from_level(level: u8) -> Option<Notice> {
        match level {
            1 => Some(Notice::FinishThenClose),
            2 => Some(Notice::AskToLeave),
            3 => Some(Notice::Close),
            _ => None,
        }
    }

    fn level(self) -> u8 {
        match self {
            Notice::FinishThenClose => 1,
            Notice::AskToLeave => 2,
            Notice::Close => 3,
        }
    }
}

/// Per-connection mailbox: the strongest notice so far, and an event to wake its task.
#[derive(Debug)]
struct Mailbox {
    level: AtomicU8,
    event: Event,
    /// The connection's state as it reported it, plus [`SERVING_OVER`]. While Serving,
    /// New/Idle ↔ Active moves only this (see [`ConnHandle::request_started`]); the
    /// lifecycle is made to match, under the lock, whenever it is about to read it
    /// ([`sync`]).
    state: AtomicU8,
    /// The connection's socket, shut down when the lifecycle cuts the connection (see
    /// [`ConnHandle::cut_at_socket`]); -1 when there is none to cut. Read and changed only
    /// under the handle's lock, so a cut never meets an fd its owner has closed.
    fd: AtomicI32,
}

impl Mailbox {
    fn new() -> Mailbox {
        Mailbox {
            level: AtomicU8::new(0),
            event: Event::new(),
            state: AtomicU8::new(state_to_u8(ConnState::New)),
            fd: AtomicI32::new(-1),
        }
    }

    fn state(&self) -> ConnState {
        state_from_u8(self.state.load(Ordering::Acquire) & !SERVING_OVER)
    }

    /// Sets the state, keeping [`SERVING_OVER`] as it is (it changes only under the lock,
    /// which the caller holds).
    fn set_state(&self, state: ConnState) {
        let over = self.state.load(Ordering::Acquire) & SERVING_OVER;
        self.state
            .store(state_to_u8(state) | over, Ordering::Release);
    }

    fn post(&self, notice: Notice) {
        if self.level.fetch_max(notice.level(), Ordering::AcqRel) < notice.level() {
            self.event.notify(usize::MAX);
        }
    }

    fn read(&self) -> Option<Notice> {
        Notice::from_level(self.level.load(Ordering::Acquire))
    }
}

#[derive(Debug)]
struct State {
    /// The lifecycle: a [`Lifecycle`], or (in a fuzz build) a checked one.
    lc: Box<dyn Machine + Send>,
    /// Mailboxes by connection slot.
    mailboxes: Vec<Option<(ConnId, Arc<Mailbox>)>>,
    /// Listeners still open.
    listeners: usize,
    stop_accepting: bool,
    drained: bool,
    /// Closed connections whose sockets still linger (see [`Shutdown::hold_drain`]).
    lingering: usize,
    /// A task drives the lifecycle's timers.
    timers_driven: bool,
    /// The timeout drain waiters last armed their timer for: an event wakes them only when
    /// the lifecycle's next timeout becomes earlier than this, not on every event (with
    /// 10,000 connections closing, waking them 10,000 times cost a third of the drain).
    armed: Option<Instant>,
    /// True until shutdown begins: until then connections move between New, Idle and Active
    /// on their own (see [`ConnHandle::request_started`]).
    serving: bool,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    origin: StdInstant,
    runtime: Timers,
    /// Wakes whoever waits on shutdown-level changes: listeners (stop accepting), drain
    /// waiters (drained, or a timer to re-arm).
    changed: Event,
}

/// The shared shutdown handle: one lifecycle behind a mutex, with the wake-ups around it.
///
/// Cheap to clone; every clone is the same server. Every call locks once, feeds the
/// lifecycle, delivers the actions it produced (to connection mailboxes, listeners and drain
/// waiters) and unlocks; nothing blocks while the lock is held. The exception is the
/// per-request hot path: while Serving, a connection moving between New, Idle and Active
/// only swaps its own state atomically, and the lifecycle is brought up to date under the
/// lock when something reads it ([`counts`](Shutdown::counts), a close) or shutdown begins.
#[derive(Clone, Debug)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

impl Shutdown {
    /// A handle in the Serving phase, on a runtime's clock, timer and spawner
    /// ([`Timers::of`]).
    pub fn new(config: Config, runtime: Timers) -> Shutdown {
        Shutdown::with_machine(Lifecycle::new(config), runtime)
    }

    /// Like [`new`](Shutdown::new), driving `machine` instead of a fresh [`Lifecycle`]: a
    /// fuzz build passes the checked lifecycle (`lameduck_core::fuzzing::Checked`), so that
    /// every call this handle makes, on its lock-free path too, is checked against the
    /// reference model.
    pub fn with_machine(machine: impl Machine + Send + 'static, runtime: Timers) -> Shutdown {
        Shutdown {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    lc: Box::new(machine),
                    mailboxes: Vec::new(),
                    listeners: 0,
                    stop_accepting: false,
                    drained: false,
                    lingering: 0,
                    timers_driven: false,
                    armed: None,
                    serving: true,
                }),
                origin: (runtime.now)(),
                runtime,
                changed: Event::new(),
            }),
        }
    }

    /// The lifecycle's time for the runtime's `now`.
    fn now(&self) -> Instant {
        self.instant_of((self.inner.runtime.now)())
    }

    fn instant_of(&self, t: StdInstant) -> Instant {
        Instant::from_duration(t.saturating_duration_since(self.inner.origin))
    }

    fn std_instant_of(&self, t: Instant) -> StdInstant {
        self.inner
            .origin
            .checked_add(t.as_duration())
            .unwrap_or_else(|| self.inner.origin + Duration::from_secs(86_400 * 365 * 100))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while the lock is held (the lifecycle never panics), but if a
        // panic ever poisoned it the state is still consistent: every update is one call.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on the lifecycle at the current time, then delivers every action.
    fn with<R>(&self, f: impl FnOnce(&mut dyn Machine, Instant) -> R) -> R {
        let now = self.now();
        let state = self.lock();
        self.apply(state, now, f)
    }

    /// Like [`with`](Self::with), for what ends Serving (beginning the shutdown, or cutting
    /// everything): connections stop moving on their own first, then the lifecycle is
    /// brought up to date with where they are, then `f` runs — all under one lock hold.
    fn with_serving_over<R>(&self, f: impl FnOnce(&mut dyn Machine, Instant) -> R) -> R {
        let now = self.now();
        let mut state = self.lock();
        if state.serving {
            state.serving = false;
            let State { lc, mailboxes, .. } = &mut *state;
            for (id, mailbox) in mailboxes.iter().flatten() {
                // Atomically: the state as of now, and no more moves on its own.
                let reported = mailbox.state.fetch_or(SERVING_OVER, Ordering::AcqRel);
                sync_to(&mut **lc, *id, state_from_u8(reported & !SERVING_OVER));
            }
        }
        self.apply(state, now, f)
    }

    fn apply<R>(
        &self,
        mut state: MutexGuard<'_, State>,
        now: Instant,
        f: impl FnOnce(&mut dyn Machine, Instant) -> R,
    ) -> R {
        let result = f(&mut *state.lc, now);
        if self.deliver(&mut state, now) {
            drop(state);
            self.inner.changed.notify(usize::MAX);
        }
        result
    }

    /// Delivers pending actions; returns whether shutdown-level waiters must wake: listeners
    /// must stop, the drain completed, or a timer is due earlier than the waiters know.
    fn deliver(&self, state: &mut State, now: Instant) -> bool {
        let mut changed = false;
        while let Some(action) = state.lc.poll_action() {
            // Borrowed, not cloned: a sweep posts to every connection.
            fn mailbox(state: &State, id: ConnId) -> Option<&Mailbox> {
                let (_, mailbox) = state.mailboxes.get(id.slot() as usize)?.as_ref()?;
                Some(mailbox)
            }
            match action {
                Action::StopAccepting => {
                    trace(format_args!(
                        "lameduck: stop accepting ({} listeners)",
                        state.listeners
                    ));
                    state.stop_accepting = true;
                    if state.listeners == 0 {
                        state.lc.stopped_accepting(now);
                    }
                    changed = true;
                }
                Action::FinishThenClose(id) => {
                    if let Some(m) = mailbox(state, id) {
                        m.post(Notice::FinishThenClose);
                    }
                }
                Action::AskToLeave(id) => {
                    if let Some(m) = mailbox(state, id) {
                        m.post(Notice::AskToLeave);
                    }
                }
                Action::Close(id, reason) => {
                    let Some(m) = mailbox(state, id) else {
                        continue;
                    };
                    m.post(Notice::Close);
                    if reason == lameduck_core::CloseReason::Deadline {
                        trace(format_args!("lameduck: deadline: cutting {id}"));
                        if cut_socket(m) {
                            // The client saw the connection end: it is closed, whatever
                            // its handler still holds (its `Conn`'s drop then changes
                            // nothing). Without this a handler that never lets go would
                            // hold the drain open forever past the deadline.
                            let _ = state.lc.closed(id, now);
                            state.mailboxes[id.slot() as usize] = None;
                        }
                    }
                }
                Action::Drained => {
                    trace(format_args!("lameduck: drained: {:?}", state.lc.report()));
                    state.drained = true;
                    changed = true;
                }
            }
        }
        // Every action is delivered: nothing is owed (a checked lifecycle checks so).
        state.lc.settled();
        if state.lc.phase() != Phase::Serving {
            if let Some(next) = state.lc.poll_timeout() {
                if state.armed.is_none_or(|armed| next < armed) {
                    state.armed = Some(next);
                    changed = true;
                }
            }
        }
        changed
    }

    /// Tracks a newly accepted connection. Fails only with [`Error::NotAccepting`] once every
    /// listener has closed (the caller then closes the connection; a tracked listener never
    /// hits this).
    pub fn accept(&self) -> Result<Conn, Error> {
        let mailbox = Arc::new(Mailbox::new());
        let now = self.now();
        let mut state = self.lock();
        if !state.serving {
            mailbox.state.fetch_or(SERVING_OVER, Ordering::AcqRel);
        }
        let id = state.lc.accept(now)?;
        let slot = id.slot() as usize;
        if state.mailboxes.len() <= slot {
            state.mailboxes.resize(slot + 1, None);
        }
        // Registered before delivering, so a notice for an accept during shutdown lands.
        state.mailboxes[slot] = Some((id, mailbox.clone()));
        if self.deliver(&mut state, now) {
            drop(state);
            self.inner.changed.notify(usize::MAX);
        }
        Ok(Conn::new(self.clone(), id, mailbox))
    }

    /// Begins the graceful shutdown (SIGTERM). Returns false if it had already begun.
    ///
    /// From here on a background task fires the lifecycle's timers (stale New connections,
    /// the idle grace, the deadline), so nothing has to be awaited for them to act.
    pub fn begin(&self) -> bool {
        let began = self
            .with_serving_over(|lc, now| lc.begin_shutdown(now))
            .is_ok();
        if began {
            trace(format_args!(
                "lameduck: shutdown began: {:?}",
                self.counts()
            ));
        }
        self.drive_timers();
        began
    }

    /// Cuts every connection now (a second Ctrl-C); begins the shutdown if needed.
    pub fn force_close(&self) {
        trace(format_args!("lameduck: force close: {:?}", self.counts()));
        self.with_serving_over(|lc, now| lc.force_close(now));
        self.drive_timers();
    }

    /// Spawns the timer task, once.
    fn drive_timers(&self) {
        let mut state = self.lock();
        if state.timers_driven || state.drained {
            return;
        }
        let this = self.clone();
        let task: Sleep = Box::pin(async move {
            this.drained().await;
        });
        state.timers_driven = (self.inner.runtime.spawn)(task);
    }

    /// The shutdown phase.
    pub fn phase(&self) -> Phase {
        self.lock().lc.phase()
    }

    /// Live connections per state. While Serving it first folds each connection's own
    /// state into the lifecycle (connections start and end requests without the lock), so
    /// it takes time in proportion to the live connections: for tests and dashboards, not
    /// for every request.
    pub fn counts(&self) -> Counts {
        let mut state = self.lock();
        if state.serving {
            // Connections may have moved without the lock since the lifecycle last looked.
            let State { lc, mailboxes, .. } = &mut *state;
            for (id, mailbox) in mailboxes.iter().flatten() {
                sync(&mut **lc, *id, mailbox);
            }
        }
        state.lc.counts()
    }

    /// The drain report so far (`None` before shutdown began).
    pub fn report(&self) -> Option<DrainReport> {
        self.lock().lc.report().copied()
    }

    /// The lifecycle's configuration.
    pub fn config(&self) -> Config {
        *self.lock().lc.config()
    }

    /// Whether listeners must stop accepting (after draining their backlog).
    pub fn is_stopping_accepts(&self) -> bool {
        self.lock().stop_accepting
    }

    /// Registers a listener. The lifecycle reaches Drained only once every registered
    /// listener has dropped its guard, so a listener must drop it only after it has drained
    /// its accept backlog.
    pub fn register_listener(&self) -> ListenerGuard {
        self.lock().listeners += 1;
        ListenerGuard {
            shutdown: self.clone(),
        }
    }

    /// Resolves when listeners must stop accepting.
    pub async fn stop_accepting(&self) {
        loop {
            let listener = self.inner.changed.listen();
            if self.is_stopping_accepts() {
                return;
            }
            listener.await;
        }
    }

    /// Keeps [`drained`](Shutdown::drained) from returning while the guard lives: for a
    /// connection that is closed as far as the lifecycle goes (its `Conn` dropped, counted in
    /// the report) but whose socket still lingers — reading what the peer sends after the
    /// last response, so that the close does not reset it. Exiting before the linger ends
    /// would reset exactly those sockets.
    pub fn hold_drain(&self) -> DrainHold {
        self.lock().lingering += 1;
        DrainHold {
            shutdown: self.clone(),
        }
    }

    /// Sleeps for `duration` on the runtime's timer.
    pub fn sleep(&self, duration: Duration) -> Sleep {
        (self.inner.runtime.sleep_until)((self.inner.runtime.now)() + duration)
    }

    /// Waits for the shutdown to end and returns the report: until the last connection
    /// closes and every listener is gone, firing the lifecycle's timers (stale New
    /// connections, the idle grace, the deadline) on the runtime's timer meanwhile.
    /// Event-driven: it wakes when something changes, never on a polling interval.
    ///
    /// Does not begin the shutdown ([`begin`](Shutdown::begin) does); any number of tasks
    /// may wait at once. The timers fire while someone waits here: [`begin`](Shutdown::begin)
    /// spawns a task on the runtime that does, so they fire whether or not the server awaits
    /// this; without a runtime to spawn on, only a waiter here fires them.
    pub async fn drained(&self) -> DrainReport {
        // The timer, kept across wake-ups while its instant stays the lifecycle's next.
        let mut timer: Option<(Instant, Sleep)> = None;
        loop {
            let listener: EventListener = self.inner.changed.listen();
            let (drained, next) = {
                let mut state = self.lock();
                let next = state.lc.poll_timeout();
                // Waiters sleep until `next`: events wake them only for an earlier one.
                state.armed = next;
                (state.drained && state.lingering == 0, next)
            };
            if drained {
                return self.report().unwrap_or_default();
            }
            match next {
                None => listener.await,
                Some(t) => {
                    if timer.as_ref().is_none_or(|(at, _)| *at != t) {
                        let sleep = (self.inner.runtime.sleep_until)(self.std_instant_of(t));
                        timer = Some((t, sleep));
                    }
                    let Some((_, sleep)) = timer.as_mut() else {
                        continue;
                    };
                    let fired = future::or(
                        async {
                            listener.await;
                            false
                        },
                        async {
                            sleep.await;
                            true
                        },
                    )
                    .await;
                    if fired {
                        timer = None;
                        self.with(|lc, now| lc.handle_timeout(now));
                    }
                }
            }
        }
    }
}

/// Holds the drain open; see [`Shutdown::hold_drain`].
#[derive(Debug)]
pub struct DrainHold {
    shutdown: Shutdown,
}

impl Drop for DrainHold {
    fn drop(&mut self) {
        let mut state = self.shutdown.lock();
        state.lingering -= 1;
        let last = state.lingering == 0;
        drop(state);
        if last {
            self.shutdown.inner.changed.notify(usize::MAX);
        }
    }
}

/// Keeps the lifecycle accepting-aware while a listener is open; see
/// [`Shutdown::register_listener`].
#[derive(Debug)]
pub struct ListenerGuard {
    shutdown: Shutdown,
}

impl Drop for ListenerGuard {
    fn drop(&mut self) {
        let shutdown = &self.shutdown;
        let now = shutdown.now();
        let mut state = shutdown.lock();
        state.listeners = state.listeners.saturating_sub(1);
        if state.listeners == 0 && state.stop_accepting {
            state.lc.stopped_accepting(now);
            shutdown.deliver(&mut state, now);
            drop(state);
            shutdown.inner.changed.notify(usize::MAX);
        }
    }
}

/// One tracked connection: its id in the lifecycle, its state, its mailbox. Dropping it
/// reports the connection Closed, exactly once — on a normal end, on a panic that unwinds
/// through its task, or when the task is cancelled.
///
/// It dereferences to a [`ConnHandle`], which has the event and notice methods; clone a
/// handle with [`Conn::handle`] for code that must report events while something else owns
/// the connection (a protocol's service, say).
#[derive(Debug)]
pub struct Conn {
    handle: ConnHandle,
}

/// A shared handle to a tracked connection: reports its events and reads its notices. Unlike
/// [`Conn`], dropping it does not close anything; once the connection closed, its events
/// return [`Error::Closed`].
#[derive(Clone, Debug)]
pub struct ConnHandle {
    shared: Arc<ConnShared>,
}

#[derive(Debug)]
struct ConnShared {
    shutdown: Shutdown,
    id: ConnId,
    /// Whether data read moves New/Idle → Active (see [`ConnHandle::set_read_starts_request`]).
    read_starts_request: AtomicBool,
    mailbox: Arc<Mailbox>,
}

/// In a connection's own state: shutdown has begun, the connection no longer moves on its
/// own (every transition goes through the lifecycle).
const SERVING_OVER: u8 = 0x80;

/// Brings the lifecycle's state of connection `id` up to date with the state the
/// connection reported on its own while Serving. Idempotent.
fn sync(lc: &mut dyn Machine, id: ConnId, mailbox: &Mailbox) {
    sync_to(lc, id, mailbox.state());
}

/// Brings the lifecycle's state of `id` to `reported` (New, Idle and Active are the only
/// states a connection reaches on its own). The lifecycle's latest time is used: no timer
/// depends on these moves' times before the drain begins.
fn sync_to(lc: &mut dyn Machine, id: ConnId, reported: ConnState) {
    let Ok(known) = lc.state(id) else {
        return;
    };
    let now = lc.now();
    let _ = match (known, reported) {
        (ConnState::New | ConnState::Idle, ConnState::Active) => lc.request_started(id, now),
        (ConnState::Active, ConnState::Idle) => lc.request_finished(id, now),
        (ConnState::New, ConnState::Idle) => lc
            .request_started(id, now)
            .and_then(|()| lc.request_finished(id, now)),
        _ => Ok(()),
    };
}

/// Shuts down the socket armed in `mailbox` (both directions: the peer reads EOF, its writes
/// fail) and disarms it; false when none was armed. Called under the handle's lock.
fn cut_socket(mailbox: &Mailbox) -> bool {
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

fn state_to_u8(state: ConnState) -> u8 {
    match state {
        ConnState::New => 0,
        ConnState::Active => 1,
        ConnState::Idle => 2,
        ConnState::Upgraded => 3,
        ConnState::Closed => 4,
    }
}

fn state_from_u8(n: u8) -> ConnState {
    match n {
        0 => ConnState::New,
        1 => ConnState::Active,
        2 => ConnState::Idle,
        3 => ConnState::Upgraded,
        _ => ConnState::Closed,
    }
}

impl Conn {
    fn new(shutdown: Shutdown, id: ConnId, mailbox: Arc<Mailbox>) -> Conn {
        Conn {
            handle: ConnHandle {
                shared: Arc::new(ConnShared {
                    shutdown,
                    id,
                    read_starts_request: AtomicBool::new(true),
                    mailbox,
                }),
            },
        }
    }

    /// A shared handle to this connection.
    pub fn handle(&self) -> ConnHandle {
        self.handle.clone()
    }
}

impl std::ops::Deref for Conn {
    type Target = ConnHandle;

    fn deref(&self) -> &ConnHandle {
        &self.handle
    }
}

impl ConnHandle {
    /// The connection's id in the lifecycle.
    pub fn id(&self) -> ConnId {
        self.shared.id
    }

    /// The connection's state, as last reported.
    pub fn state(&self) -> ConnState {
        self.shared.mailbox.state()
    }

    /// Data arrived: New or Idle → Active, unless turned off with
    /// [`set_read_starts_request`](ConnHandle::set_read_starts_request). Cheap when already
    /// Active (no lock).
    pub fn data_received(&self) {
        if matches!(self.state(), ConnState::New | ConnState::Idle)
            && self.shared.read_starts_request.load(Ordering::Acquire)
        {
            let _ = self.request_started();
        }
    }

    /// Whether data read on the connection marks the start of a request (on by default: the
    /// first byte of a request is the first byte read on a New or Idle connection). A
    /// protocol that reads without a request — HTTP/2's SETTINGS, PING and WINDOW_UPDATE
    /// frames — turns it off and reports requests itself.
    pub fn set_read_starts_request(&self, on: bool) {
        self.shared.read_starts_request.store(on, Ordering::Release);
    }

    /// A request began (its first byte arrived): New or Idle → Active.
    ///
    /// While Serving this is a compare-and-swap on the connection's own state, no lock:
    /// nothing reads the Idle/Active distinction before shutdown begins, which brings the
    /// lifecycle up to date first. Once shutdown has begun, it takes the lock and feeds the
    /// lifecycle directly.
    pub fn request_started(&self) -> Result<(), Error> {
        if self.moved_on_its_own(&[ConnState::New, ConnState::Idle], ConnState::Active) {
            return Ok(());
        }
        self.transition(ConnState::Active, |lc, id, now| lc.request_started(id, now))
    }

    /// The response was completely written and the connection stays open: Active → Idle.
    /// Lock-free while Serving, like [`request_started`](ConnHandle::request_started).
    pub fn request_finished(&self) -> Result<(), Error> {
        if self.moved_on_its_own(&[ConnState::Active], ConnState::Idle) {
            return Ok(());
        }
        self.transition(ConnState::Idle, |lc, id, now| lc.request_finished(id, now))
    }

    /// The connection was taken over by a long-lived protocol: Active → Upgraded.
    pub fn upgraded(&self) -> Result<(), Error> {
        self.transition(ConnState::Upgraded, |lc, id, now| lc.upgraded(id, now))
    }

    /// While Serving, moves the connection's own state from one of `from` to `to`, without
    /// the lock; false when it cannot (shutdown began, or the transition is not one of
    /// these: the lifecycle then decides, and reports an error if it is illegal).
    ///
    /// The race with shutdown beginning on another thread is settled on this one atomic:
    /// `begin` sets [`SERVING_OVER`] in it with a read-modify-write, which returns the state
    /// it brings the lifecycle to. A swap here that comes first is in that state; one that
    /// comes after fails (the bit is not in what it expects), and the lifecycle decides.
    fn moved_on_its_own(&self, from: &[ConnState], to: ConnState) -> bool {
        let state = &self.shared.mailbox.state;
        let current = state.load(Ordering::Acquire);
        current & SERVING_OVER == 0
            && from.contains(&state_from_u8(current))
            && state
                .compare_exchange(
                    current,
                    state_to_u8(to),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
    }

    /// Feeds a transition to the lifecycle under the lock, after bringing it up to date
    /// with this connection's own state; the own state then follows the lifecycle's.
    fn transition(
        &self,
        to: ConnState,
        f: impl FnOnce(&mut dyn Machine, ConnId, Instant) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let shared = &self.shared;
        let shutdown = &shared.shutdown;
        let now = shutdown.now();
        let state = shutdown.lock();
        shutdown.apply(state, now, |lc, now| {
            sync(lc, shared.id, &shared.mailbox);
            f(lc, shared.id, now)?;
            shared.mailbox.set_state(to);
            Ok(())
        })
    }

    /// The strongest notice the lifecycle has given this connection, if any.
    pub fn notice(&self) -> Option<Notice> {
        self.shared.mailbox.read()
    }

    /// Makes a deadline cut (or [`Shutdown::force_close`]) end the connection at the socket:
    /// the moment the lifecycle cuts it, `shutdown(2)` ends both directions of `fd`, so the
    /// client sees the connection end even if the handler holding the stream never polls it
    /// again, and the connection counts as closed at once, so that the drain completes.
    /// [`Tracked`](crate::Tracked) streams from a tracked listener are armed this way.
    ///
    /// # Safety
    ///
    /// `fd` must be this connection's open socket, and stay open until the [`Conn`] is
    /// dropped or [`disarm_cut`](ConnHandle::disarm_cut) has returned (whichever is first):
    /// close the socket only after that. The cut only shuts the socket down; it never closes
    /// the fd.
    pub unsafe fn cut_at_socket(&self, fd: RawFd) {
        let shutdown = &self.shared.shutdown;
        let _state = shutdown.lock();
        if self.shared.mailbox.read() != Some(Notice::Close) {
            self.shared.mailbox.fd.store(fd, Ordering::Release);
        }
    }

    /// Undoes [`cut_at_socket`](ConnHandle::cut_at_socket): once this returns, no cut touches
    /// the fd. Cheap when nothing is armed.
    pub fn disarm_cut(&self) {
        if self.shared.mailbox.fd.load(Ordering::Acquire) < 0 {
            return;
        }
        let _state = self.shared.shutdown.lock();
        self.shared.mailbox.fd.store(-1, Ordering::Release);
    }

    /// Whether the response being written should close the connection
    /// (`Connection: close`): shutdown asked this connection to finish.
    pub fn should_close_after_response(&self) -> bool {
        self.notice().is_some()
    }

    /// Resolves with the first notice (or the current one, if any).
    pub async fn wait_notice(&self) -> Notice {
        wait_for(&self.shared.mailbox, Notice::FinishThenClose).await
    }

    /// Resolves when the lifecycle asks to close this connection now.
    pub async fn wait_close(&self) {
        wait_for(&self.shared.mailbox, Notice::Close).await;
    }

    /// An owned watcher of this connection's notices, for a task that must wait for them
    /// while it holds the stream mutably (in a `select!` beside a read, say).
    pub fn notices(&self) -> Notices {
        Notices {
            mailbox: self.shared.mailbox.clone(),
        }
    }

    /// The shutdown handle this connection belongs to.
    pub fn shutdown(&self) -> &Shutdown {
        &self.shared.shutdown
    }

    /// Ends the connection for the lifecycle while its socket stays open to linger: it is
    /// Closed and counted from now on (no cut reaches its fd, data read no longer makes it
    /// Active, the `Conn`'s drop changes nothing more), and the drain waits for the
    /// returned hold — a lingering close reads what the peer still sends after the last
    /// response so that closing does not reset it, and exiting earlier would.
    pub fn linger(&self) -> DrainHold {
        let hold = self.shared.shutdown.hold_drain();
        self.report_closed();
        hold
    }

    /// Reports the connection Closed, once: later calls change nothing (the lifecycle
    /// refuses a second close of the same id, and its slot is only freed by the first).
    fn report_closed(&self) {
        let ConnShared {
            shutdown,
            id,
            mailbox,
            ..
        } = &*self.shared;
        let now = shutdown.now();
        let mut lifecycle = shutdown.lock();
        // No cut may reach the socket once its owner may close it.
        mailbox.fd.store(-1, Ordering::Release);
        // The lifecycle counts the connection out of the state it knows: the current one.
        sync(&mut *lifecycle.lc, *id, mailbox);
        if lifecycle.lc.closed(*id, now).is_ok() {
            if let Some(slot) = lifecycle.mailboxes.get_mut(id.slot() as usize) {
                *slot = None;
            }
        }
        mailbox.set_state(ConnState::Closed);
        if shutdown.deliver(&mut lifecycle, now) {
            drop(lifecycle);
            shutdown.inner.changed.notify(usize::MAX);
        }
    }
}

/// Watches one connection's notices; see [`ConnHandle::notices`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Notices {
    mailbox: Arc<Mailbox>,
}

impl Notices {
    /// The strongest notice so far, if any.
    pub fn notice(&self) -> Option<Notice> {
        self.mailbox.read()
    }

    /// Resolves with the first notice (or the current one, if any).
    pub async fn wait_notice(&self) -> Notice {
        wait_for(&self.mailbox, Notice::FinishThenClose).await
    }

    /// Resolves when the lifecycle asks to close the connection now.
    pub async fn wait_close(&self) {
        wait_for(&self.mailbox, Notice::Close).await;
    }

    /// Runs `work` unless the lifecycle asks to close the connection first, in which case
    /// `work` is dropped (cancelled) and the result is `None`. Wrap a connection's whole
    /// serving loop in it, so that a stale-New close or the deadline cuts it even in the
    /// middle of a handler.
    pub async fn unless_closed<F: Future>(&self, work: F) -> Option<F::Output> {
        future::or(async { Some(work.await) }, async {
            self.wait_close().await;
            None
        })
        .await
    }
}

impl Notices {
    /// A poll-based watcher, for a hand-written future that polls its connection's notices
    /// on every wake-up (a protocol driver's event loop).
    pub fn watch(&self) -> NoticeWatch {
        NoticeWatch {
            mailbox: self.mailbox.clone(),
            listener: None,
            listened_at: 0,
            waker: None,
        }
    }
}

/// Polls one connection's notices; see [`Notices::watch`]. Once registered with a task's
/// waker, a poll costs one atomic load: the registration is renewed only when the waker
/// changes, not on every wake-up as awaiting [`Notices::wait_notice`] inside a `select!`
/// would (measured: ~200 instructions per HTTP request).
#[derive(Debug)]
pub struct NoticeWatch {
    mailbox: Arc<Mailbox>,
    listener: Option<EventListener>,
    /// The notice level when `listener` was made.
    listened_at: u8,
    waker: Option<Waker>,
}

impl NoticeWatch {
    /// `Ready` with the strongest notice once it is at least `at_least`; otherwise `Pending`,
    /// and the task wakes when a notice arrives.
    pub fn poll_notice(&mut self, cx: &mut Context<'_>, at_least: Notice) -> Poll<Notice> {
        loop {
            let level = self.mailbox.level.load(Ordering::Acquire);
            if let Some(n) = Notice::from_level(level).filter(|n| *n >= at_least) {
                return Poll::Ready(n);
            }
            // A notice posted since the listener was made has used it up (a listener fires
            // once): make a new one.
            if self.listened_at != level {
                self.listener = None;
                self.waker = None;
            }
            let Some(listener) = self.listener.as_mut() else {
                // Listen, then check again: a notice posted in between is not missed.
                self.listener = Some(self.mailbox.event.listen());
                self.listened_at = level;
                continue;
            };
            if self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                return Poll::Pending; // the listener already holds this task's waker
            }
            match Pin::new(listener).poll(cx) {
                Poll::Ready(()) => {
                    // Fired: listen again and re-check.
                    self.listener = None;
                    self.waker = None;
                }
                Poll::Pending => {
                    self.waker = Some(cx.waker().clone());
                    return Poll::Pending;
                }
            }
        }
    }
}

async fn wait_for(mailbox: &Mailbox, at_least: Notice) -> Notice {
    loop {
        let listener = mailbox.event.listen();
        if let Some(n) = mailbox.read().filter(|n| *n >= at_least) {
            return n;
        }
        listener.await;
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.handle.report_closed();
    }
}

#[cfg(feature = "tracing")]
fn trace(args: std::fmt::Arguments<'_>) {
    tracing::debug!("{}", args);
}

#[cfg(not(feature = "tracing"))]
fn trace(_: std::fmt::Arguments<'_>) {}
