//! Restart without a supervisor: on SIGHUP (or [`Restarter::upgrade`]) the serving process
//! starts its successor — the binary at the path it was started from, with the same
//! arguments — hands it every listening socket, keeps accepting until the successor says it
//! serves, and only then drains. A successor that exits, crashes or is not ready within the
//! upgrade timeout is killed, and the old process goes on serving as if nothing happened.
//!
//! ```no_run
//! # async fn serve<R: lameduck_driver::Runtime>() -> std::io::Result<()> {
//! use lameduck_process::restart::{Options, Restarter};
//! use lameduck_process::signals::{self, Signal};
//!
//! let shutdown = lameduck_driver::Shutdown::new(Default::default(), lameduck_driver::Timers::of::<R>());
//! let listener = lameduck_driver::Listener::<R>::bind_or_inherit(&shutdown, "127.0.0.1:8080")?;
//! // HUP upgrades, so only TERM and INT drain.
//! signals::drain_on(&shutdown, &[Signal::TERM, Signal::INT], &[Signal::INT])?;
//! let restarter = Restarter::start(&shutdown, &[listener.as_fd()?], Options::default())?;
//! // ... spawn the accept loop on `listener`, then:
//! restarter.serving()?;
//! let report = shutdown.drained().await;
//! # drop(report); Ok(()) }
//! ```
//!
//! # The handover, versioned
//!
//! The successor is an ordinary inheritor of systemd's socket-activation convention, so
//! [`inherit::from_env`](lameduck_driver::inherit::from_env) (and `bind_or_inherit`) adopts the
//! sockets with no code of its own. Version 1 of the handover sets, in the successor only:
//!
//! | variable | value |
//! |---|---|
//! | `LAMEDUCK_HANDOVER` | `1`, this protocol's version |
//! | `LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES` | the listeners from fd 3 on, in the order given to [`Restarter::start`], named as given (`unknown` otherwise); each keyed by its bound address through `local_addr` |
//! | `LAMEDUCK_READY_FD` | the write end of a pipe only the two processes hold (fd `3 + LISTEN_FDS`): the successor writes `READY=1\n` to it from [`Restarter::serving`] |
//! | `LAMEDUCK_DRAINING` | `,`-separated pids of the generations still draining, for the bound on them |
//!
//! `SERVER_STARTER_PORT` and any inherited `LISTEN_*` are removed; everything else,
//! `NOTIFY_SOCKET` included, is inherited. Close-on-exec is cleared only in the child,
//! between `fork` and `execve`.
//!
//! # Version 2: the connection transfer
//!
//! The parent also places the successor's end of a Unix socket pair right after the ready
//! pipe (no variable: a version-1 successor refuses `LAMEDUCK_*` settings it does not
//! know; see `lameduck_os::handover::take_transfer_fd`). A successor that takes it says
//! `VERSION=2\n` before `READY=1\n` and adopts what arrives on it
//! ([`Shutdown::adopt_from`]); the parent, once the successor has served through its
//! [`PROBATION`] — still serving everything itself meanwhile — begins its drain with the
//! transfer on ([`Shutdown::hand_over_to`]): idle keep-alive HTTP/1.1 connections go to the
//! successor instead of being asked to close. A successor that dies within the probation
//! takes nothing ([`UpgradeError::DiedOnProbation`]); one that does not speak version 2
//! gets version 1's drain. Every outcome is in `docs/self-restart.md`.
//!
//! # systemd
//!
//! With `Type=notify-reload` (or `notify`) and `NotifyAccess=all`, the serving process sends
//! `READY=1` when it serves; an upgrade sends `RELOADING=1` with `MONOTONIC_USEC`, then
//! `MAINPID=<successor>` and `READY=1` once the successor serves (or `READY=1` alone after a
//! rollback: the main pid stays); a final shutdown sends `STOPPING=1` and
//! `EXTEND_TIMEOUT_USEC` of `Config::longest_drain` (the lame-duck window, the deadline and
//! the linger). An abstract
//! `@`-socket in `NOTIFY_SOCKET` works. A unit file is in `docs/self-restart.md`.

use std::ffi::OsString;
use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use lameduck_os::handover::Ended;
use lameduck_os::handover::{
    self, Child, ReadyOutcome, Spawn, TransferVersion, alive, wait_ready, write_pid_file,
};
use lameduck_os::log;
use lameduck_os::signal::Signal;
use lameduck_os::systemd::{NotifyState, notify};

use lameduck_driver::Shutdown;

pub use lameduck_os::handover::{
    HANDOVER_VERSION, LAMEDUCK_DRAINING, LAMEDUCK_HANDOVER, LAMEDUCK_READY_FD,
};

/// How the restarter behaves.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Options {
    /// The signal that upgrades (default SIGHUP); `None` for [`Restarter::upgrade`] only.
    pub signal: Option<Signal>,
    /// How long the successor has to say it serves before it is killed (default 30 s:
    /// enough for a server that loads its state first; no fixed sleep is involved either
    /// way — a successor ready in 5 ms is taken in 5 ms).
    pub upgrade_timeout: Duration,
    /// Where the serving process's pid is written (atomically: temp file and rename).
    pub pid_file: Option<PathBuf>,
    /// At most this many older generations may still drain when an upgrade starts (default
    /// 8): each holds its connections' memory until its drain ends, so upgrades faster than
    /// drains end must not pile processes up without bound.
    pub max_draining: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            signal: Some(Signal::HUP),
            upgrade_timeout: Duration::from_secs(30),
            pid_file: None,
            max_draining: 8,
        }
    }
}

impl Options {
    /// Options with the PID file at `path`.
    pub fn pid_file(mut self, path: impl Into<PathBuf>) -> Options {
        self.pid_file = Some(path.into());
        self
    }

    /// Options with this upgrade timeout.
    pub fn upgrade_timeout(mut self, timeout: Duration) -> Options {
        self.upgrade_timeout = timeout;
        self
    }

    /// Options upgrading on `signal` (`None`: only through [`Restarter::upgrade`]).
    pub fn signal(mut self, signal: Option<Signal>) -> Options {
        self.signal = signal;
        self
    }

    /// Options allowing at most `n` draining older generations at an upgrade.
    pub fn max_draining(mut self, n: usize) -> Options {
        self.max_draining = n;
        self
    }
}

/// Why an upgrade did not happen. In every case this process goes on serving.
#[derive(Debug)]
#[non_exhaustive]
pub enum UpgradeError {
    /// Another upgrade is under way.
    InProgress,
    /// This process already handed over to its successor, which serves now.
    HandedOver {
        /// The successor's pid.
        successor: u32,
    },
    /// The shutdown has begun: a stopping server is not upgraded.
    ShuttingDown,
    /// Too many older generations still drain.
    TooManyDraining {
        /// Their pids.
        draining: Vec<u32>,
    },
    /// The successor could not be started.
    Spawn(io::Error),
    /// The successor ended before it said it serves.
    Exited {
        /// Its pid.
        successor: u32,
        /// How it ended (prints as `exit status 1`, `signal 11`).
        status: Ended,
    },
    /// The successor said it serves and takes connections (handover version 2), then ended
    /// within its [`PROBATION`], before any connection went to it.
    DiedOnProbation {
        /// Its pid.
        successor: u32,
        /// How it ended.
        status: Ended,
    },
    /// The successor did not say it serves within the upgrade timeout; it was killed.
    Timeout {
        /// Its pid.
        successor: u32,
        /// The timeout.
        after: Duration,
    },
}

impl fmt::Display for UpgradeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpgradeError::InProgress => f.write_str("upgrade in progress"),
            UpgradeError::HandedOver { successor } => {
                write!(f, "already handed over to pid {successor}")
            }
            UpgradeError::ShuttingDown => f.write_str("shutting down"),
            UpgradeError::TooManyDraining { draining } => write!(
                f,
                "{} older generations still drain ({draining:?})",
                draining.len()
            ),
            UpgradeError::Spawn(e) => write!(f, "cannot start the successor: {e}"),
            UpgradeError::Exited { successor, status } => {
                write!(f, "successor {successor} ended before it served ({status})")
            }
            UpgradeError::DiedOnProbation { successor, status } => write!(
                f,
                "successor {successor} ended during its probation ({status}); no connection went to it"
            ),
            UpgradeError::Timeout { successor, after } => write!(
                f,
                "successor {successor} did not serve within {}; killed",
                humantime::format_duration(*after)
            ),
        }
    }
}

impl std::error::Error for UpgradeError {}

/// How a started successor failed, before its end is known.
enum Failure {
    /// It ended before it said it serves.
    Exited,
    /// It ended within its probation.
    DiedOnProbation,
    /// It did not say it serves within the upgrade timeout.
    TimedOut(Duration),
    /// Anything else: killed for it.
    Other(UpgradeError),
}

/// Where the upgrade stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Serving,
    Upgrading,
    HandedOver(u32),
}

struct Inner {
    shutdown: Shutdown,
    exe: PathBuf,
    args: Vec<OsString>,
    /// Our own duplicates of the listeners (close-on-exec), so the handover never depends on
    /// the accept loop still holding them.
    listeners: Vec<(OwnedFd, String)>,
    options: Options,
    state: Mutex<State>,
    /// Signalled when a replacement settled.
    settled: std::sync::Condvar,
    /// Whether a replacement for a failed successor is being started.
    replacing: Mutex<bool>,
    /// When this process handed over.
    handed_at: Mutex<Option<Instant>>,
    /// Successor side: the write end of our parent's ready pipe, until `serving`.
    ready: Mutex<Option<File>>,
    /// Successor side: the parent offered the connection transfer, and we take it.
    takes_connections: bool,
    /// Pids of older generations that may still drain.
    draining: Vec<u32>,
}

/// The in-place upgrade of a serving process; see the [module docs](self).
///
/// Dropping it (when the server returns from its drain) removes the PID file if it still
/// names this process.
pub struct Restarter {
    inner: Arc<Inner>,
}

impl fmt::Debug for Restarter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Restarter")
            .field("exe", &self.inner.exe)
            .field("state", &*lock(&self.inner.state))
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Restarter {
    /// Takes over the upgrade of this process: remembers the binary's path and arguments,
    /// duplicates `listeners` for the successor, and (with [`Options::signal`]) upgrades on
    /// that signal from now on. Call it at start-up, after the listeners are bound or
    /// inherited and before the accept loop runs; then [`serving`](Restarter::serving) once
    /// it does.
    ///
    /// In a successor it also takes `LAMEDUCK_READY_FD` (and removes the handover variables
    /// from the environment); a malformed one is an `InvalidInput` error naming it.
    pub fn start(
        shutdown: &Shutdown,
        listeners: &[BorrowedFd<'_>],
        options: Options,
    ) -> io::Result<Restarter> {
        Restarter::start_named(
            shutdown,
            &listeners
                .iter()
                .map(|&fd| (fd, "unknown"))
                .collect::<Vec<_>>(),
            options,
        )
    }

    /// [`start`](Restarter::start) with a name for each listener, passed in
    /// `LISTEN_FDNAMES` (ASCII, no `:`, at most 255 bytes).
    pub fn start_named(
        shutdown: &Shutdown,
        listeners: &[(BorrowedFd<'_>, &str)],
        options: Options,
    ) -> io::Result<Restarter> {
        let listeners = named_duplicates(listeners)?;
        let ready = handover::take_ready_fd()?;
        let draining = handover::draining_from_env()?;
        // Receive the connections the parent will hand over, from now on (the listeners
        // claim them by address; the accept loop starts after this).
        let takes_connections = match handover::take_transfer_fd()? {
            Some(sock) if ready.is_some() => {
                shutdown.adopt_from(sock)?;
                true
            }
            _ => false,
        };
        let inner = Arc::new(Inner {
            shutdown: shutdown.clone(),
            // The path, not `/proc/self/exe`: a deploy that replaced the file is picked up.
            exe: std::env::current_exe()?,
            args: std::env::args_os().skip(1).collect(),
            listeners,
            options,
            state: Mutex::new(State::Serving),
            settled: std::sync::Condvar::new(),
            replacing: Mutex::new(false),
            handed_at: Mutex::new(None),
            ready: Mutex::new(ready),
            takes_connections,
            draining,
        });
        // Both on the runtime: the signal task, and the watcher that tells systemd a final
        // stop began. Only an upgrade's own wait (at most the upgrade timeout) and the reaping
        // of a successor run on threads — see `upgrade_on_a_thread` and `hand_over`.
        inner.upgrade_on_signal()?;
        inner.tell_systemd_when_stopping()?;
        Ok(Restarter { inner })
    }

    /// Says that this process serves (its accept loop runs). In a successor, tells the
    /// parent, which then writes the PID file, tells systemd and drains; in the first
    /// generation — or a successor whose parent is gone — writes the PID file and sends
    /// systemd `READY=1` itself.
    pub fn serving(&self) -> io::Result<()> {
        if let Some(mut ready) = lock(&self.inner.ready).take() {
            // One write: the version first, so the parent reads both or neither.
            let mut message = Vec::new();
            if self.inner.takes_connections {
                // Both: a version-2 parent reads only the first, and sends as version 2.
                message.extend_from_slice(handover::VERSION_2);
                message.extend_from_slice(handover::VERSION_3);
            }
            message.extend_from_slice(handover::READY);
            // EPIPE: the parent died (SIGKILL mid-handover, say). We serve alone now.
            let Err(e) = ready.write_all(&message) else {
                return Ok(());
            };
            // The PID file first, then the log line: whoever reads the line finds the file
            // already naming this process.
            self.write_pid_file(std::process::id())?;
            log(format_args!(
                "upgrade: cannot tell the parent we serve ({e}); serving as the main process"
            ));
            notify(&[NotifyState::MainPid(std::process::id()), NotifyState::Ready]);
            return Ok(());
        }
        self.write_pid_file(std::process::id())?;
        notify(&[NotifyState::Ready]);
        Ok(())
    }

    /// Upgrades now, blocking until the successor serves (then this process has begun its
    /// drain, and the successor's pid is returned) or failed (then this process serves on).
    /// Blocking: call it from a thread, or `spawn_blocking`, not from an async task.
    pub fn upgrade(&self) -> Result<u32, UpgradeError> {
        self.inner.upgrade()
    }

    fn write_pid_file(&self, pid: u32) -> io::Result<()> {
        match &self.inner.options.pid_file {
            Some(path) => write_pid_file(path, pid),
            None => Ok(()),
        }
    }
}

/// How long a process that handed over stays, at least, after its successor said it
/// serves: a successor that crashes at once is then replaced by this process, which still
/// holds the listeners (see [`Restarter`]'s drop).
pub const PROBATION: Duration = Duration::from_millis(250);

impl Drop for Restarter {
    /// Removes the PID file if it still names this process. In a process that handed over,
    /// first waits until its successor has served for [`PROBATION`] (or a replacement for it
    /// has settled), so that a successor dying right after it said it serves is replaced,
    /// not left with nobody accepting.
    fn drop(&mut self) {
        let inner = &self.inner;
        let handed_at = *lock(&inner.handed_at);
        if let Some(at) = handed_at {
            let give_up = PROBATION + inner.options.upgrade_timeout * 2;
            let mut replacing = lock(&inner.replacing);
            loop {
                let left = PROBATION.saturating_sub(at.elapsed());
                if (left.is_zero() && !*replacing) || at.elapsed() > give_up {
                    break;
                }
                let wait = if left.is_zero() {
                    give_up.saturating_sub(at.elapsed())
                } else {
                    left
                };
                replacing = inner
                    .settled
                    .wait_timeout(replacing, wait)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        }
        if let Some(path) = &self.inner.options.pid_file {
            let ours = std::fs::read_to_string(path)
                .is_ok_and(|text| text.trim() == std::process::id().to_string());
            if ours {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// Runs one upgrade on a thread of its own: it forks, then waits up to the upgrade timeout
/// for the successor's `READY=1` on a pipe — a blocking `poll(2)`, as a pipe is nothing the
/// runtime seam can register (it wraps sockets) — so it must not hold a runtime worker. One
/// thread per signal, so that a second signal during an upgrade is answered at once
/// ("upgrade in progress") instead of queued behind it.
fn upgrade_on_a_thread(inner: Arc<Inner>) {
    let spawned = std::thread::Builder::new()
        .name("lameduck-upgrade".into())
        .spawn(move || {
            if let Err(e) = inner.upgrade() {
                log(format_args!("upgrade failed: {e}; serving on"));
            }
        });
    if let Err(e) = spawned {
        log(format_args!("upgrade not started: {e}; serving on"));
    }
}

impl Inner {
    /// Upgrades on [`Options::signal`], while the restarter lives.
    fn upgrade_on_signal(self: &Arc<Self>) -> io::Result<()> {
        let Some(signal) = self.options.signal else {
            return Ok(());
        };
        let weak = Arc::downgrade(self);
        (self.shutdown.timers().watch_signals)(
            &[signal],
            Box::new(move |_| match weak.upgrade() {
                Some(inner) => {
                    upgrade_on_a_thread(inner);
                    true
                }
                // The restarter is gone: so is the upgrade on this signal.
                None => false,
            }),
        )
    }

    /// `STOPPING=1` (with `EXTEND_TIMEOUT_USEC`) when a shutdown that is not a handover
    /// begins.
    fn tell_systemd_when_stopping(self: &Arc<Self>) -> io::Result<()> {
        let watcher = self.clone();
        let stopping = async move {
            watcher.shutdown.begun().await;
            if !matches!(*lock(&watcher.state), State::HandedOver(_)) {
                let mut states = vec![NotifyState::Stopping];
                // The longest the drain may take (lame duck, deadline, the last lingering
                // close), from the configuration that owns the timeline.
                if let Some(total) = watcher.shutdown.config().longest_drain() {
                    let usec = u32::try_from(total.as_micros()).unwrap_or(u32::MAX);
                    states.push(NotifyState::ExtendTimeoutUsec(usec));
                }
                notify(&states);
            }
        };
        if !(self.shutdown.timers().spawn)(Box::pin(stopping)) {
            return Err(io::Error::other(
                "no runtime on this thread to spawn the restarter's tasks on",
            ));
        }
        Ok(())
    }

    fn upgrade(self: &Arc<Self>) -> Result<u32, UpgradeError> {
        {
            let mut state = lock(&self.state);
            match *state {
                State::Upgrading => return Err(UpgradeError::InProgress),
                State::HandedOver(successor) => return Err(UpgradeError::HandedOver { successor }),
                State::Serving if !self.shutdown.is_ready() => {
                    return Err(UpgradeError::ShuttingDown);
                }
                State::Serving => {}
            }
            let draining: Vec<u32> = self
                .draining
                .iter()
                .copied()
                .filter(|&p| alive(p))
                .collect();
            if draining.len() >= self.options.max_draining {
                return Err(UpgradeError::TooManyDraining { draining });
            }
            *state = State::Upgrading;
        }
        let mut reloading = vec![NotifyState::Reloading];
        reloading.extend(NotifyState::monotonic_usec_now().ok());
        notify(&reloading);
        let result = self.hand_over(false);
        let mut state = lock(&self.state);
        match result {
            Ok(successor) => {
                *state = State::HandedOver(successor);
                drop(state);
                log(format_args!(
                    "upgrade: handed over to {successor}; draining"
                ));
                self.shutdown.begin();
                Ok(successor)
            }
            Err(e) => {
                *state = State::Serving;
                drop(state);
                // Ends the reload: this process is still the main one.
                notify(&[NotifyState::Ready]);
                Err(e)
            }
        }
    }

    /// Names `pid` the main process: in the PID file and to systemd (`MAINPID`, in one
    /// message with `also`).
    fn main_process(&self, pid: u32, also: &[NotifyState<'_>]) {
        if let Some(path) = &self.options.pid_file {
            if let Err(e) = write_pid_file(path, pid) {
                log(format_args!("upgrade: {e}"));
            }
        }
        let mut states = vec![NotifyState::MainPid(pid)];
        states.extend_from_slice(also);
        notify(&states);
    }

    /// Starts the successor and waits until it serves; on failure it is killed and reaped.
    /// `replacing`: for a successor that failed after it served, while we drain. The steps:
    /// spawn, await its readiness, its probation and the transfer, then reap it.
    fn hand_over(self: &Arc<Self>, replacing: bool) -> Result<u32, UpgradeError> {
        let started = Instant::now();
        let handover::Started {
            child,
            ready,
            transfer,
        } = self.spawn(replacing)?;
        let successor = child.pid();
        log(format_args!("upgrade: started successor {successor}"));
        let version = match self.await_ready(&ready, replacing) {
            Ok(version) => version,
            Err(failure) => return fail(child, failure),
        };
        log(format_args!(
            "upgrade: successor {successor} serves after {:?}",
            started.elapsed()
        ));
        // It serves: it is the main process from now on (and its probation runs from now).
        let ready_at = Instant::now();
        self.main_process(successor, &[NotifyState::Ready]);
        if let Some(sock) = transfer.filter(|_| version != TransferVersion::None) {
            if let Err(failure) = self.probation_then_transfer(sock, version, successor) {
                return fail(child, failure);
            }
        }
        self.reap_on_a_thread(child, replacing);
        if !replacing {
            *lock(&self.handed_at) = Some(ready_at);
        }
        Ok(successor)
    }

    /// Forks and execs the successor.
    fn spawn(&self, replacing: bool) -> Result<handover::Started, UpgradeError> {
        let still_draining: Vec<u32> = self
            .draining
            .iter()
            .copied()
            .filter(|&p| alive(p))
            .chain([std::process::id()])
            .collect();
        Spawn {
            exe: &self.exe,
            args: &self.args,
            listeners: &self.listeners,
            draining: &still_draining,
            // A replacement (while this process drains) gets none: the transfer went, or
            // was to go, to the successor it replaces.
            transfer: !replacing,
        }
        .start()
        .map_err(UpgradeError::Spawn)
    }

    /// Waits for the successor's `READY=1` (at most the upgrade timeout): the transfer it
    /// announced, or why it failed.
    fn await_ready(&self, ready: &OwnedFd, replacing: bool) -> Result<TransferVersion, Failure> {
        match wait_ready(ready, self.options.upgrade_timeout) {
            ReadyOutcome::Ready { transfer } if replacing || self.shutdown.is_ready() => {
                Ok(transfer)
            }
            // A SIGTERM during the upgrade: stopping wins over upgrading.
            ReadyOutcome::Ready { .. } => Err(Failure::Other(UpgradeError::ShuttingDown)),
            ReadyOutcome::Ended => Err(Failure::Exited),
            ReadyOutcome::Timeout => Err(Failure::TimedOut(self.options.upgrade_timeout)),
        }
    }

    /// The successor takes our idle connections — but only once it has served through its
    /// probation, while this process still serves everything it has: a successor that dies
    /// right after it said it serves (a deploy that crashes on its first request) then
    /// takes no connection with it, and this process serves on as if the upgrade had failed.
    fn probation_then_transfer(
        &self,
        sock: OwnedFd,
        version: TransferVersion,
        successor: u32,
    ) -> Result<(), Failure> {
        if !handover::survives(&sock, PROBATION) {
            self.main_process(std::process::id(), &[]);
            return Err(Failure::DiedOnProbation);
        }
        // A SIGTERM during the probation: this process drains as a final stop would, and
        // the transfer socket closes unused (the successor serves on alone).
        if self.shutdown.is_ready() {
            match self.shutdown.hand_over_to_version(sock, version) {
                Ok(()) => log(format_args!(
                    "transfer: successor {successor} takes idle connections"
                )),
                Err(e) => log(format_args!("transfer: none: {e}")),
            }
        }
        Ok(())
    }

    /// Reaps the successor should it end while we still drain: no zombie. A thread,
    /// blocked in waitpid(2) for as long as the successor lives: no runtime offers a way to
    /// await a child's end through the seam (a pidfd would need registering an fd that is
    /// no socket), and polling with WNOHANG would wake the process for nothing. One that
    /// fails (not a clean exit: a crash, a kill) while we are still here is replaced, once:
    /// we hold the listeners, and the connections waiting in their backlog are not lost as
    /// long as someone accepts before the last holder exits.
    fn reap_on_a_thread(self: &Arc<Self>, child: Child, replacing: bool) {
        let this = self.clone();
        let _ = std::thread::Builder::new()
            .name("lameduck-reap".into())
            .spawn(move || {
                let successor = child.pid();
                let status = child.reap();
                log(format_args!("successor {successor} ended ({status})"));
                if !replacing && !status.is_success() {
                    this.replace(successor);
                }
            });
    }

    /// Starts a replacement for `failed`, a successor that failed after it served.
    fn replace(self: &Arc<Self>, failed: u32) {
        *lock(&self.replacing) = true;
        log(format_args!(
            "successor {failed} failed after it served; starting a replacement"
        ));
        let result = self.hand_over(true);
        *lock(&self.replacing) = false;
        self.settled.notify_all();
        match result {
            Ok(replacement) => {
                *lock(&self.state) = State::HandedOver(replacement);
                log(format_args!(
                    "upgrade: successor {replacement} serves (a replacement)"
                ));
            }
            Err(e) => log(format_args!(
                "replacement failed: {e}; nobody accepts once this process has drained"
            )),
        }
    }
}

/// Our own duplicates of the listeners (close-on-exec), with their `LISTEN_FDNAMES` names:
/// 1 to 255 printable ASCII characters, no `:`; any other name is an `InvalidInput` error.
fn named_duplicates(listeners: &[(BorrowedFd<'_>, &str)]) -> io::Result<Vec<(OwnedFd, String)>> {
    let mut dups = Vec::with_capacity(listeners.len());
    for (fd, name) in listeners {
        if name.is_empty()
            || name.len() > 255
            || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "listener name {name:?}: expected 1 to 255 printable ASCII characters, no `:`"
                ),
            ));
        }
        // `try_clone_to_owned` duplicates with close-on-exec set.
        dups.push((fd.try_clone_to_owned()?, (*name).to_owned()));
    }
    Ok(dups)
}

/// Kills the successor (if it still runs) and reaps it; the error says how it ended where
/// that is the news.
fn fail(child: Child, failure: Failure) -> Result<u32, UpgradeError> {
    let successor = child.pid();
    child.kill();
    let status = child.reap();
    Err(match failure {
        Failure::Exited => UpgradeError::Exited { successor, status },
        Failure::DiedOnProbation => UpgradeError::DiedOnProbation { successor, status },
        Failure::TimedOut(after) => UpgradeError::Timeout { successor, after },
        Failure::Other(e) => e,
    })
}
