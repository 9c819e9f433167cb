//! Signals as bytes on a socket, installed so that none is lost — not even one that arrives
//! while the handler is being installed.
//!
//! The driver reads its shutdown signals from a [`subscribe`]d socket: each arrival of a
//! subscribed signal writes one byte, the signal's number, which its task reads and acts on
//! (`lameduck_process::signals::drain_on_signals`).
//!
//! # Why not `tokio::signal`, `async-signal` or `signal-hook`
//!
//! All three install their handler through `signal-hook-registry`, which calls `sigaction`
//! *before* it publishes the table its handler reads. A signal arriving in between reaches a
//! handler with nothing registered for it, which runs neither an action nor the default
//! disposition: the signal vanishes. A supervisor's SIGTERM sent an instant after it started a
//! worker (Server::Starter does exactly that when it is stopped during a restart) can fall in
//! that gap: a worker that never drains, and a supervisor waiting for it forever. The
//! `signal_race` test aims signals at the install and loses a few in every 600 through the
//! registry, none through this module. The registry's bug, with that reproduction
//! (`LAMEDUCK_SIGNAL_RACE_VIA=registry cargo test -p lameduck-os --test signal_race`):
//! `docs/upstream/signal-hook-registry-install-race.md`. This module's own install can give
//! way to the registry's once it publishes its table before `sigaction`.
//!
//! Here the socket is published first and the handler installed second, so a signal is
//! either handled by the disposition it found (the default: the process ends, as it would
//! have without lameduck) or written to every subscriber. When the signal already has a
//! handler that is not lameduck's (a library installed one), lameduck adds itself through
//! `signal-hook-registry`, which chains to it, rather than replacing it.
//!
//! ```
//! use std::io::Read;
//! use lameduck_os::signal::{self, Signal};
//!
//! let (mut socket, _subscription) = signal::subscribe(&[Signal::USR2])?;
//! std::process::Command::new("kill")
//!     .args(["-USR2", &std::process::id().to_string()])
//!     .status()?;
//! socket.set_nonblocking(false)?;
//! let mut byte = [0u8];
//! socket.read_exact(&mut byte)?;
//! assert_eq!(Signal::from_raw(byte[0].into()), Signal::USR2);
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::raw::c_int;
use std::os::unix::net::UnixStream;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, AtomicU8, AtomicUsize, Ordering::SeqCst};

/// A signal number (`SIGTERM`, …), as [`subscribe`] takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Signal(c_int);

impl Signal {
    /// `SIGTERM`: a supervisor or service manager asks the process to stop.
    pub const TERM: Signal = Signal(libc::SIGTERM);
    /// `SIGINT`: Ctrl-C.
    pub const INT: Signal = Signal(libc::SIGINT);
    /// `SIGHUP`: the terminal closed, or an operator asks for a reload.
    pub const HUP: Signal = Signal(libc::SIGHUP);
    /// `SIGQUIT`.
    pub const QUIT: Signal = Signal(libc::SIGQUIT);
    /// `SIGUSR1`.
    pub const USR1: Signal = Signal(libc::SIGUSR1);
    /// `SIGUSR2`.
    pub const USR2: Signal = Signal(libc::SIGUSR2);

    /// The signal numbered `number` (checked by [`subscribe`]).
    pub const fn from_raw(number: c_int) -> Signal {
        Signal(number)
    }

    /// The signal's number.
    pub const fn as_raw(self) -> c_int {
        self.0
    }
}

/// Signal numbers this module handles: 1 to 64 (Linux's real-time signals end at 64).
const SIGNALS: usize = 65;
/// Subscribers per signal at once (one per `drain_on_signals` call still running).
const SUBSCRIBERS: usize = 8;

/// The write end of each subscriber's socket, per signal; -1 for a free place. What the
/// handler reads, so it is published before the handler is installed.
static SOCKETS: [[AtomicI32; SUBSCRIBERS]; SIGNALS] =
    [const { [const { AtomicI32::new(-1) }; SUBSCRIBERS] }; SIGNALS];

/// How many handlers are running: a socket taken out of [`SOCKETS`] is closed only once
/// this is back to zero, so a handler never writes to a closed (or reused) descriptor.
static IN_HANDLER: AtomicUsize = AtomicUsize::new(0);

/// Per signal: how lameduck receives it.
static HOW: [AtomicU8; SIGNALS] = [const { AtomicU8::new(NOT_YET) }; SIGNALS];
const NOT_YET: u8 = 0;
/// lameduck's handler replaced the default disposition, restored once the last subscriber
/// is gone.
const OWN_OVER_DEFAULT: u8 = 1;
/// lameduck's handler replaced `SIG_IGN`, restored once the last subscriber is gone.
const OWN_OVER_IGNORE: u8 = 2;
/// Through `signal-hook-registry`, beside a handler someone else installed; kept for the
/// life of the process.
const REGISTRY: u8 = 3;

/// Serializes [`subscribe`] and unsubscribing.
static CHANGES: Mutex<()> = Mutex::new(());

/// Keeps the signals of one [`subscribe`] call flowing to its socket; dropping it stops
/// them (and, once no one subscribes to a signal, gives it back its default disposition).
#[derive(Debug)]
pub struct Subscription {
    places: Vec<(usize, usize)>,
    write: Option<OwnedFd>,
}

/// Subscribes to `signals`: from the moment this returns, each arrival of one of them
/// writes one byte, its number, to the returned (non-blocking) socket. A signal that
/// arrives while this runs either is handled that way too or takes the disposition it
/// found (by default, ends the process) — it is never lost.
///
/// Fails with [`io::ErrorKind::InvalidInput`] for a signal outside 1–64 or one that cannot
/// be caught (`SIGKILL`, `SIGSTOP`), and with [`io::ErrorKind::Other`] when more than 8
/// subscriptions to one signal are alive at once.
pub fn subscribe(signals: &[Signal]) -> io::Result<(UnixStream, Subscription)> {
    for &Signal(number) in signals {
        if !(1..SIGNALS as c_int).contains(&number)
            || number == libc::SIGKILL
            || number == libc::SIGSTOP
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("signal {number} cannot be caught"),
            ));
        }
    }
    let (read, write) = UnixStream::pair()?;
    read.set_nonblocking(true)?;
    let write = OwnedFd::from(write);
    let mut subscription = Subscription {
        places: Vec::with_capacity(signals.len()),
        write: None,
    };
    let _changes = CHANGES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for &Signal(number) in signals {
        let signal = number as usize;
        if subscription.places.iter().any(|&(s, _)| s == signal) {
            continue; // listed twice: one byte per arrival all the same
        }
        let Some(place) = SOCKETS[signal]
            .iter()
            .position(|slot| slot.load(SeqCst) == -1)
        else {
            subscription.unsubscribe();
            return Err(io::Error::other(format!(
                "more than {SUBSCRIBERS} subscriptions to signal {number} at once"
            )));
        };
        // Published before any handler can run for it.
        SOCKETS[signal][place].store(write.as_raw_fd(), SeqCst);
        subscription.places.push((signal, place));
        if HOW[signal].load(SeqCst) == NOT_YET {
            if let Err(e) = install(number) {
                subscription.unsubscribe();
                return Err(e);
            }
        }
    }
    subscription.write = Some(write);
    Ok((read, subscription))
}

impl Subscription {
    /// Takes this subscription's sockets out of the table; once no handler still runs, its
    /// write end may be closed. Called with [`CHANGES`] held.
    fn unsubscribe(&mut self) {
        for (signal, place) in self.places.drain(..) {
            SOCKETS[signal][place].store(-1, SeqCst);
            let unused = SOCKETS[signal].iter().all(|slot| slot.load(SeqCst) == -1);
            let previous = match HOW[signal].load(SeqCst) {
                OWN_OVER_DEFAULT => libc::SIG_DFL,
                OWN_OVER_IGNORE => libc::SIG_IGN,
                _ => continue,
            };
            if unused {
                restore(signal as c_int, previous);
                HOW[signal].store(NOT_YET, SeqCst);
            }
        }
        // A handler that read a place before it was cleared has announced itself in
        // IN_HANDLER first (both SeqCst): wait for it to finish its write.
        while IN_HANDLER.load(SeqCst) != 0 {
            std::thread::yield_now();
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let _changes = CHANGES
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.unsubscribe();
        drop(self.write.take());
    }
}

/// Writes one byte, the signal's number, to each of its subscribers' sockets. Only
/// async-signal-safe calls: atomics and `send(2)`.
fn dispatch(signal: c_int) {
    IN_HANDLER.fetch_add(1, SeqCst);
    if let Some(places) = usize::try_from(signal).ok().and_then(|s| SOCKETS.get(s)) {
        let byte = signal as u8;
        for place in places {
            let fd = place.load(SeqCst);
            if fd >= 0 {
                // SAFETY: send(2) is async-signal-safe; `fd` is open — it is closed only
                // after it left SOCKETS and IN_HANDLER fell back to zero — and `byte` is a
                // live one-byte buffer. A full socket (EAGAIN) drops the byte: the bytes
                // pending are enough for the reader to act, and the reader may be gone
                // (EPIPE: no SIGPIPE, thanks to MSG_NOSIGNAL).
                unsafe {
                    libc::send(
                        fd,
                        (&byte as *const u8).cast(),
                        1,
                        libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                    );
                }
            }
        }
    }
    IN_HANDLER.fetch_sub(1, SeqCst);
}

/// lameduck's own handler, installed where the disposition was the default or ignore.
extern "C" fn handler(signal: c_int) {
    let errno = errno::save();
    dispatch(signal);
    errno::restore(errno);
}

/// Makes `signal` reach [`dispatch`]: lameduck's handler in place of the default or ignore
/// disposition, or else a `signal-hook-registry` action beside the handler already there.
fn install(signal: c_int) -> io::Result<()> {
    let current = disposition(signal)?;
    if current == libc::SIG_DFL || current == libc::SIG_IGN {
        // SAFETY: a zeroed sigaction is valid (empty mask, no flags); `handler` only makes
        // async-signal-safe calls; the old action is not needed (it is one of the two
        // constants just read, put back by `restore`).
        let installed = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = handler as extern "C" fn(c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut())
        };
        if installed != 0 {
            return Err(io::Error::last_os_error());
        }
        let how = if current == libc::SIG_IGN {
            OWN_OVER_IGNORE
        } else {
            OWN_OVER_DEFAULT
        };
        HOW[signal as usize].store(how, SeqCst);
    } else {
        // Someone else's handler (often signal-hook-registry's own, then nothing can be
        // lost): the registry chains to it. If it is not the registry's, the registry's
        // first install has the gap described above, for this process's first such signal.
        // SAFETY: the action only makes async-signal-safe calls (atomics, send(2)).
        unsafe { signal_hook_registry::register(signal, move || dispatch(signal)) }?;
        HOW[signal as usize].store(REGISTRY, SeqCst);
    }
    Ok(())
}

/// The handler currently installed for `signal` (`SIG_DFL`, `SIG_IGN` or a function).
fn disposition(signal: c_int) -> io::Result<libc::sighandler_t> {
    // SAFETY: sigaction(2) with a null new action only reads the current one into `old`, a
    // valid, writable sigaction.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(signal, std::ptr::null(), &mut old) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(old.sa_sigaction)
    }
}

/// Gives `signal` back the disposition lameduck found (`SIG_DFL` or `SIG_IGN`), once no one
/// subscribes to it.
fn restore(signal: c_int, disposition: libc::sighandler_t) {
    // SAFETY: SIG_DFL and SIG_IGN are valid dispositions for every catchable signal.
    unsafe { libc::signal(signal, disposition) };
}

/// errno is the interrupted code's: a handler that changes it (a failed `send`) must put it
/// back.
mod errno {
    #[cfg(any(target_os = "openbsd", target_os = "netbsd"))]
    use libc::__errno as location;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    use libc::__errno_location as location;
    #[cfg(any(
        target_vendor = "apple",
        target_os = "freebsd",
        target_os = "dragonfly"
    ))]
    use libc::__error as location;

    pub(super) fn save() -> i32 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    pub(super) fn restore(value: i32) {
        // SAFETY: the location of the calling thread's errno, valid for the thread's life.
        unsafe { *location() = value };
    }
}
