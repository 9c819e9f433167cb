//! A socket that another thread may shut down while its owner still holds it.
//!
//! A deadline must end a connection even when the task that owns its stream never polls it
//! again (a handler stuck in a computation, one that ignores every notice): the only way to
//! reach such a connection from outside is `shutdown(2)` on its fd, from whichever thread
//! fires the deadline. That needs the fd's number to stay the owner's socket for as long as
//! a cut may use it — which is what this module guarantees, so that its users need no
//! `unsafe`:
//!
//! - a [`Cuttable`] is the shared half (it wraps whatever the connection shares anyway, so
//!   it costs no allocation of its own): [`Cuttable::cut`] shuts down the armed socket;
//! - an [`Armed`] is the owning half: it owns the stream, arms the cell with the stream's fd
//!   when it is made, and disarms it — waiting out a cut in progress — before the stream can
//!   be dropped or handed out.
//!
//! ```
//! use std::net::{TcpListener, TcpStream};
//! use std::io::Read;
//! use std::sync::Arc;
//! use lameduck_os::cut::{Armed, Cuttable};
//!
//! let listener = TcpListener::bind("127.0.0.1:0")?;
//! let mut client = TcpStream::connect(listener.local_addr()?)?;
//! let (server_side, _) = listener.accept()?;
//! let cell = Arc::new(Cuttable::new("conn 1"));
//! let armed = Armed::new(server_side, cell.clone());
//! assert!(cell.cut());                         // from any thread
//! assert_eq!(client.read(&mut [0u8; 1])?, 0);  // the client sees the end at once
//! drop(armed);                                 // the owner still closes its fd
//! # Ok::<(), std::io::Error>(())
//! ```

use std::fmt;
use std::ops::Deref;
use std::os::fd::{AsFd, AsRawFd};

// loom's under `--cfg loom`, so that the driver's loom tests (which share these cells with
// their mailboxes) explore the real code.
#[cfg(loom)]
use loom::{
    sync::Arc,
    sync::atomic::{AtomicI32, Ordering},
    thread::yield_now,
};
#[cfg(not(loom))]
use std::{
    sync::Arc,
    sync::atomic::{AtomicI32, Ordering},
    thread::yield_now,
};

/// No socket is armed.
const EMPTY: i32 = -1;
/// A cut is shutting the armed socket down: its owner must wait before closing it.
const CUTTING: i32 = -2;
/// The socket was cut; sockets armed later are left alone (the connection is over).
const CUT: i32 = -3;
/// The socket went to another process ([`Cuttable::while_uncut`]): no cut may touch it.
const LEFT: i32 = -4;

/// A value shared by a connection's owner and the threads that may cut it, plus the socket
/// they may cut. Dereferences to the value.
pub struct Cuttable<T> {
    /// The armed fd (≥ 0), or [`EMPTY`], [`CUTTING`], [`CUT`].
    socket: AtomicI32,
    value: T,
}

impl<T> Cuttable<T> {
    /// `value`, with no socket armed.
    pub fn new(value: T) -> Cuttable<T> {
        Cuttable {
            socket: AtomicI32::new(EMPTY),
            value,
        }
    }

    /// Shuts down both directions of the armed socket (the peer reads the end, its writes
    /// fail; the owner's reads and writes fail too), and leaves it armed no more. True when a
    /// socket was armed; false when none was, or one was already cut. The fd itself is not
    /// closed: its owner still does that.
    pub fn cut(&self) -> bool {
        let mut current = self.socket.load(Ordering::Acquire);
        loop {
            if current < 0 {
                return false;
            }
            match self.socket.compare_exchange_weak(
                current,
                CUTTING,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(fd) => {
                    // SAFETY: `fd` was armed by an `Armed` that owns the socket, and an
                    // `Armed` closes nothing while the cell says CUTTING (`disarm` waits for
                    // this store to be replaced), so the number is still its socket.
                    // shutdown(2) touches no memory of ours.
                    unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
                    self.socket.store(CUT, Ordering::Release);
                    return true;
                }
                Err(now) => current = now,
            }
        }
    }

    /// Runs `send` — the socket's handover to another process — while no cut can touch the
    /// armed socket (a cut meanwhile finds nothing to do, as after a cut), then arms it
    /// again, or, when `send` returned true, leaves it for good: the connection goes on in
    /// the other process, and `shutdown(2)` acts on the connection, not on this process's
    /// descriptor. `None`, without running `send`, once the socket was cut.
    pub fn while_uncut(&self, send: impl FnOnce() -> bool) -> Option<bool> {
        let mut current = self.socket.load(Ordering::Acquire);
        let fd = loop {
            match current {
                CUT | LEFT => return None,
                CUTTING => {
                    yield_now();
                    current = self.socket.load(Ordering::Acquire);
                }
                // Nothing armed: nothing can cut it.
                EMPTY => return Some(send()),
                fd => match self.socket.compare_exchange_weak(
                    fd,
                    CUTTING,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(fd) => break fd,
                    Err(now) => current = now,
                },
            }
        };
        let sent = send();
        self.socket
            .store(if sent { LEFT } else { fd }, Ordering::Release);
        Some(sent)
    }

    /// Whether a socket is armed (and not cut).
    pub fn is_armed(&self) -> bool {
        self.socket.load(Ordering::Acquire) >= 0
    }

    /// Whether a cut reached this cell's socket.
    pub fn is_cut(&self) -> bool {
        self.socket.load(Ordering::Acquire) == CUT
    }

    fn arm(&self, fd: i32) {
        let mut current = self.socket.load(Ordering::Acquire);
        loop {
            match current {
                CUT => return,
                CUTTING => {
                    yield_now();
                    current = self.socket.load(Ordering::Acquire);
                }
                _ => match self.socket.compare_exchange_weak(
                    current,
                    fd,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => return,
                    Err(now) => current = now,
                },
            }
        }
    }

    /// Once this returns, no cut touches `fd` (a cut in progress on it has finished).
    fn disarm(&self, fd: i32) {
        let mut current = self.socket.load(Ordering::Acquire);
        loop {
            match current {
                // A cut is using the number right now: it is one syscall long.
                CUTTING => {
                    yield_now();
                    current = self.socket.load(Ordering::Acquire);
                }
                // Someone else's socket, or none: nothing of ours to take out.
                armed if armed != fd => return,
                _ => match self.socket.compare_exchange_weak(
                    current,
                    EMPTY,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => return,
                    Err(now) => current = now,
                },
            }
        }
    }
}

impl<T> Deref for Cuttable<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: fmt::Debug> fmt::Debug for Cuttable<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cuttable")
            .field("armed", &self.is_armed())
            .field("cut", &self.is_cut())
            .field("value", &self.value)
            .finish()
    }
}

/// A stream that owns its socket and, when made by [`Armed::new`], lets its [`Cuttable`]
/// shut the socket down from another thread until the stream is dropped or taken out.
///
/// Replacing the stream through [`get_mut`](Armed::get_mut) (`mem::replace`, `mem::swap`)
/// leaves the *old* fd number armed while the old stream may be closed: take the stream out
/// with [`into_inner`](Armed::into_inner) instead.
pub struct Armed<S, T> {
    // Declared first, so dropped first: disarmed before the stream closes its fd.
    guard: Guard<T>,
    io: S,
}

/// The cell and the fd armed in it; dropping it disarms.
struct Guard<T>(Option<(Arc<Cuttable<T>>, i32)>);

impl<T> Drop for Guard<T> {
    fn drop(&mut self) {
        if let Some((cell, fd)) = self.0.take() {
            cell.disarm(fd);
        }
    }
}

impl<S: AsFd, T> Armed<S, T> {
    /// Arms `cell` with `io`'s socket: from now until this is dropped or
    /// [`into_inner`](Armed::into_inner) returns, [`Cuttable::cut`] shuts it down. A cell that
    /// was already cut is not armed again.
    pub fn new(io: S, cell: Arc<Cuttable<T>>) -> Armed<S, T> {
        let fd = io.as_fd().as_raw_fd();
        cell.arm(fd);
        Armed {
            guard: Guard(Some((cell, fd))),
            io,
        }
    }
}

impl<S, T> Armed<S, T> {
    /// A stream no cut reaches (not every stream has a socket of its own).
    pub const fn unarmed(io: S) -> Armed<S, T> {
        Armed {
            guard: Guard(None),
            io,
        }
    }

    /// The stream.
    #[inline]
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// The stream, mutably (for its I/O). Do not replace it: see the type's docs.
    #[inline]
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.io
    }

    /// Whether a cut can reach this stream's socket.
    pub fn is_armed(&self) -> bool {
        self.guard
            .0
            .as_ref()
            .is_some_and(|(cell, fd)| cell.socket.load(Ordering::Acquire) == *fd)
    }

    /// Disarms (no cut reaches the socket any more) and returns the stream.
    pub fn into_inner(self) -> S {
        let Armed { guard, io } = self;
        drop(guard);
        io
    }
}

impl<S: fmt::Debug, T> fmt::Debug for Armed<S, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Armed")
            .field("io", &self.io)
            .field("armed", &self.is_armed())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        (client, listener.accept().unwrap().0)
    }

    #[test]
    fn a_cut_ends_the_armed_socket_once() {
        let (mut client, server) = pair();
        let cell = Arc::new(Cuttable::new(()));
        let armed = Armed::new(server, cell.clone());
        assert!(armed.is_armed());
        assert!(cell.cut());
        assert!(!cell.cut(), "a second cut finds nothing armed");
        assert!(cell.is_cut() && !armed.is_armed());
        assert_eq!(client.read(&mut [0u8; 1]).unwrap(), 0);
    }

    #[test]
    fn a_disarmed_socket_is_never_cut() {
        let (client, server) = pair();
        let cell = Arc::new(Cuttable::new(()));
        let server = Armed::new(server, cell.clone()).into_inner();
        assert!(!cell.cut());
        // Still open both ways.
        client.set_nonblocking(true).unwrap();
        let e = (&client).read(&mut [0u8; 1]).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
        drop(server);
        let (client2, server2) = pair();
        let armed = Armed::new(server2, cell.clone());
        // The cell was not cut: it arms again.
        assert!(armed.is_armed());
        drop((armed, client2));
        assert!(!cell.cut(), "dropped: nothing armed");
    }

    #[test]
    fn unarmed_streams_are_unreachable() {
        let (_client, server) = pair();
        let armed: Armed<_, ()> = Armed::unarmed(server);
        assert!(!armed.is_armed());
        let _server: TcpStream = armed.into_inner();
    }

    /// A socket handed over is never cut afterwards (the connection lives on elsewhere); one
    /// whose handover failed is armed again; one cut already is not handed over.
    #[test]
    fn a_socket_handed_over_is_left_alone_and_a_failed_handover_arms_it_again() {
        let (client, server) = pair();
        let cell = Arc::new(Cuttable::new(()));
        let armed = Armed::new(server, cell.clone());
        // A cut while the socket is in flight finds nothing to do.
        assert_eq!(cell.while_uncut(|| !cell.cut()), Some(true));
        assert!(!cell.cut() && !armed.is_armed(), "left for good");
        client.set_nonblocking(true).unwrap();
        let e = (&client).read(&mut [0u8; 1]).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "not shut down");
        drop(armed);

        let (mut client, server) = pair();
        let cell = Arc::new(Cuttable::new(()));
        let armed = Armed::new(server, cell.clone());
        assert_eq!(cell.while_uncut(|| false), Some(false));
        assert!(armed.is_armed(), "armed again");
        assert!(cell.cut());
        assert_eq!(client.read(&mut [0u8; 1]).unwrap(), 0);
        assert_eq!(cell.while_uncut(|| panic!("sent after a cut")), None);
    }
}
