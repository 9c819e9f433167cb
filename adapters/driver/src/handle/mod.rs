//! The thread-safe handle around the lifecycle that every runtime adapter shares.

use crate::sync::{Arc, Mutex, MutexGuard, Ordering};
use std::future::Future;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::time::{Duration, Instant as StdInstant};

use crate::Timers;
use event_listener::{Event, EventListener};
use futures_lite::future;
use lameduck_core::{
    Action, Config, ConnId, Counts, DrainReport, Error, Instant, Lifecycle, Machine, Phase,
};

/// A boxed future, as a runtime's timer returns it and its spawner takes it.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

mod asked;
mod begun;
mod conn;
mod mailbox;
mod notices;

pub use asked::EndWhenAsked;
pub use conn::{Conn, ConnHandle, RequestStart};
use conn::{sync, sync_to};
pub(crate) use mailbox::Mailbox;
pub use mailbox::Notice;
pub(crate) use mailbox::Shared;
use mailbox::{SERVING_OVER, state_from_u8};
pub use notices::{NoticeWatch, Notices};

#[derive(Debug)]
struct State {
    /// The lifecycle: a [`Lifecycle`], or (in a fuzz build) a checked one.
    lc: Box<dyn Machine + Send>,
    /// Live connections by slot (each mailbox knows its id).
    mailboxes: Vec<Option<Arc<Shared>>>,
    /// [`Action::StopAccepting`] was delivered: listeners must stop (the lifecycle counts
    /// them, and ends accepting when the last one has closed).
    stop_accepting: bool,
    drained: bool,
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
    /// The lifecycle's configuration, which never changes: read without the lock (a
    /// connection's linger, a TLS handshake's timeout).
    config: Config,
    state: Mutex<State>,
    origin: StdInstant,
    runtime: Timers,
    /// Wakes whoever waits on shutdown-level changes: listeners (stop accepting), drain
    /// waiters (drained, or a timer to re-arm).
    changed: Event,
    /// The connection transfer's sending half, once this process hands over to a successor
    /// that takes connections.
    outbox: std::sync::OnceLock<crate::transfer::Outbox>,
    /// The connection transfer's receiving half: what a predecessor sent, for the listeners.
    inbox: std::sync::Arc<crate::transfer::Inbox>,
    /// Connections tracked since start, by how they came (for [`Shutdown::totals`]).
    accepted: std::sync::atomic::AtomicU64,
    adopted: std::sync::atomic::AtomicU64,
}

/// How many connections a server has tracked since it started, by how they came
/// ([`Shutdown::totals`]): across a restart with the connection transfer, a client that
/// keeps its connection is accepted once, by the first generation, and adopted by each
/// later one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Totals {
    /// Accepted from a listener.
    pub accepted: u64,
    /// Adopted from a predecessor.
    pub adopted: u64,
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
        // Every listener of this handle registers (`register_listener`), so the lifecycle
        // ends accepting itself; with none, when it says to stop.
        let config = *machine.config();
        Shutdown {
            inner: Arc::new(Inner {
                config,
                state: Mutex::new(State {
                    lc: Box::new(machine),
                    mailboxes: Vec::new(),
                    stop_accepting: false,
                    drained: false,
                    timers_driven: false,
                    armed: None,
                    serving: true,
                }),
                origin: (runtime.now)(),
                runtime,
                changed: Event::new(),
                outbox: std::sync::OnceLock::new(),
                inbox: Default::default(),
                accepted: Default::default(),
                adopted: Default::default(),
            }),
        }
    }

    /// The runtime this handle runs on, as function pointers: its clock, timer, spawner
    /// and signal task (what the signal policy and the self-restart listen with).
    pub fn timers(&self) -> &Timers {
        &self.inner.runtime
    }

    /// The lifecycle's time for the runtime's `now`.
    pub(crate) fn now(&self) -> Instant {
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
            for mailbox in mailboxes.iter().flatten() {
                // Atomically: the state as of now, and no more moves on its own.
                let reported = mailbox.state.fetch_or(SERVING_OVER, Ordering::AcqRel);
                sync_to(
                    &mut **lc,
                    mailbox.id,
                    state_from_u8(reported & !SERVING_OVER),
                );
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
            fn mailbox(state: &State, id: ConnId) -> Option<&Shared> {
                state.mailboxes.get(id.slot() as usize)?.as_deref()
            }
            match action {
                Action::StopAccepting => {
                    trace(format_args!(
                        "lameduck: stop accepting ({} listeners)",
                        state.lc.listeners()
                    ));
                    state.stop_accepting = true;
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
                        if m.cut() {
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
        self.track(false)
    }

    /// Tracks a connection a predecessor handed over
    /// ([`Lifecycle::adopt`](lameduck_core::Lifecycle::adopt)): Idle, between two requests,
    /// never stale-New. Fails as [`accept`](Shutdown::accept) does. A tracked listener
    /// adopts what arrives for its address by itself.
    pub fn adopt(&self) -> Result<Conn, Error> {
        self.track(true)
    }

    fn track(&self, adopted: bool) -> Result<Conn, Error> {
        let now = self.now();
        let mut state = self.lock();
        let (id, total) = if adopted {
            (state.lc.adopt(now)?, &self.inner.adopted)
        } else {
            (state.lc.accept(now)?, &self.inner.accepted)
        };
        total.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mailbox = Arc::new(Shared::new(Mailbox::new(self.clone(), id, state.serving)));
        if adopted {
            mailbox.set_state(lameduck_core::ConnState::Idle);
        }
        let slot = id.slot() as usize;
        if state.mailboxes.len() <= slot {
            state.mailboxes.resize(slot + 1, None);
        }
        // Registered before delivering, so a notice for an accept during shutdown lands.
        state.mailboxes[slot] = Some(mailbox.clone());
        if self.deliver(&mut state, now) {
            drop(state);
            self.inner.changed.notify(usize::MAX);
        }
        Ok(Conn::new(mailbox))
    }

    /// From now on the connections asked to leave are offered, once idle, to the process
    /// on the other end of the Unix stream socket `sock` instead of being closed
    /// ([`ConnHandle::hand_over`]; `lameduck-hyper` offers its idle HTTP/1.1 connections),
    /// each sent with `SCM_RIGHTS` by its own task. The other process takes them with
    /// [`adopt_from`](Shutdown::adopt_from). `lameduck_process::restart::Restarter` does
    /// both for an in-place upgrade; call this for a supervisor of your own. Once only: a
    /// second call is an error.
    ///
    /// The transfer is acknowledged (handover version 3): a connection leaves only once
    /// the other process says it holds the socket, within the credit it grants, and comes
    /// back to be served here when it does not (see [`transfer`](crate::transfer)). For a
    /// version-2 successor, which acknowledges nothing, use
    /// [`hand_over_to_version`](Shutdown::hand_over_to_version).
    pub fn hand_over_to(&self, sock: OwnedFd) -> std::io::Result<()> {
        self.hand_over_to_version(sock, lameduck_os::handover::TransferVersion::Acknowledged)
    }

    /// [`hand_over_to`](Shutdown::hand_over_to) a successor that announced `version`
    /// (`None` is refused: such a successor takes no connections).
    pub fn hand_over_to_version(
        &self,
        sock: OwnedFd,
        version: lameduck_os::handover::TransferVersion,
    ) -> std::io::Result<()> {
        use lameduck_os::handover::TransferVersion;
        let acknowledged = match version {
            TransferVersion::Acknowledged => true,
            TransferVersion::Unacknowledged => false,
            TransferVersion::None => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "the successor takes no connections (it announced no transfer version)",
                ));
            }
        };
        let outbox = crate::transfer::Outbox::new(sock, acknowledged)?;
        self.inner
            .outbox
            .set(outbox)
            .map_err(|_| std::io::Error::other("the connection transfer has begun already"))
    }

    /// Adopts the connections a predecessor sends over the Unix stream socket `sock`
    /// ([`hand_over_to`](Shutdown::hand_over_to) on its side): a thread of its own receives
    /// them, and each tracked TCP listener of this handle yields, from `accept`, those for
    /// its own local address — adopted as Idle, then served like any other connection. Call
    /// it before the accept loops start. A connection for an address no listener has is
    /// closed.
    pub fn adopt_from(&self, sock: std::os::unix::net::UnixStream) -> std::io::Result<()> {
        self.inner.inbox.receive(sock)
    }

    /// The outbox, while it takes offers.
    #[inline]
    pub(crate) fn outbox(&self) -> Option<&crate::transfer::Outbox> {
        self.inner.outbox.get().filter(|o| o.is_open())
    }

    /// The inbox of adopted connections.
    pub(crate) fn inbox(&self) -> &std::sync::Arc<crate::transfer::Inbox> {
        &self.inner.inbox
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
            // Wakes `begun()`: no action need have been delivered (nothing open, say).
            self.inner.changed.notify(usize::MAX);
        }
        self.drive_timers();
        began
    }

    /// Cuts every connection now (a second Ctrl-C); begins the shutdown if needed.
    pub fn force_close(&self) {
        trace(format_args!("lameduck: force close: {:?}", self.counts()));
        self.with_serving_over(|lc, now| lc.force_close(now));
        self.inner.changed.notify(usize::MAX);
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
            for mailbox in mailboxes.iter().flatten() {
                sync(&mut **lc, mailbox.id, mailbox);
            }
        }
        state.lc.counts()
    }

    /// How many connections this handle has tracked since it started, accepted and
    /// adopted.
    pub fn totals(&self) -> Totals {
        let load = |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::Relaxed);
        Totals {
            accepted: load(&self.inner.accepted),
            adopted: load(&self.inner.adopted),
        }
    }

    /// The drain report so far (`None` before shutdown began).
    pub fn report(&self) -> Option<DrainReport> {
        self.lock().lc.report().copied()
    }

    /// The lifecycle's configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Whether listeners must stop accepting (after draining their backlog).
    pub fn is_stopping_accepts(&self) -> bool {
        self.lock().stop_accepting
    }

    /// Registers a listener. The lifecycle reaches Drained only once every registered
    /// listener has dropped its guard, so a listener must drop it only after it has drained
    /// its accept backlog (the lifecycle counts them: accepting ends when the last one is
    /// dropped after [`Action::StopAccepting`], at once if none is open).
    ///
    /// A listener registered once accepting has ended (every listener closed after the
    /// shutdown said to stop) is not counted: it must not accept.
    pub fn register_listener(&self) -> ListenerGuard {
        let registered = self.lock().lc.listener_opened().is_ok();
        ListenerGuard {
            shutdown: registered.then(|| self.clone()),
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
                (state.drained, next)
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

/// A lingering close under way ([`ConnHandle::linger`]): the drain is not over until it is
/// dropped.
#[derive(Debug)]
pub struct DrainHold {
    /// `None` when the connection had closed already: nothing lingers for the lifecycle.
    pub(super) shutdown: Option<Shutdown>,
}

impl Drop for DrainHold {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            shutdown.with(|lc, now| {
                let _ = lc.linger_ended(now);
            });
        }
    }
}

/// Keeps the lifecycle accepting-aware while a listener is open; see
/// [`Shutdown::register_listener`].
#[derive(Debug)]
pub struct ListenerGuard {
    /// `None` when the lifecycle refused the registration.
    shutdown: Option<Shutdown>,
}

impl Drop for ListenerGuard {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            shutdown.with(|lc, now| {
                let _ = lc.listener_closed(now);
            });
        }
    }
}

#[cfg(feature = "tracing")]
fn trace(args: std::fmt::Arguments<'_>) {
    tracing::debug!("{}", args);
}

#[cfg(not(feature = "tracing"))]
fn trace(_: std::fmt::Arguments<'_>) {}
