//! The connection transfer (version 2 of the handover, see [`restart`](crate::restart)):
//! a process that hands over to its successor sends its idle keep-alive connections to it
//! instead of closing them, and the successor serves them as its own.
//!
//! Two halves, one per process, over `lameduck_os::transfer`'s `sendmsg`/`recvmsg`:
//!
//! - the **outbox** of the old process: a connection's task sends its socket
//!   ([`ConnHandle::hand_over`](crate::ConnHandle::hand_over)) once it is Idle with nothing
//!   read, with a non-blocking `sendmsg` of its own: sent (the lifecycle counts the
//!   connection handed over), or not (the connection stays and is served here, as if there
//!   were no successor);
//! - the **inbox** of the successor: a thread of its own (the socket is nothing the
//!   runtime seam registers) receives the sockets and files each under
//!   its local address; the tracked listener bound to that address yields it from
//!   `accept` as an adopted connection ([`Lifecycle::adopt`](lameduck_core::Lifecycle::adopt):
//!   Idle, never stale-New). A socket no listener of this process claims is closed (its
//!   client sees an idle keep-alive connection end, and reconnects).

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use event_listener::Event;
use lameduck_os::{log, transfer};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What an attempt to send a connection came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// In the successor's receive queue.
    Sent,
    /// The socket's buffer is full (the successor is behind): try again shortly.
    Busy,
    /// The transfer is over (the successor is gone): the connection stays.
    Closed,
}

/// The old process's half: the parent's end of the transfer socket, non-blocking. Each
/// connection's task sends its own socket, one `sendmsg` each — no thread, no hand-off,
/// no wake-up to wait for: measured, a sending thread that batched the offers spent more
/// on waking and being woken than the batches saved (10,000 idle connections: 120 ms).
#[derive(Debug)]
pub(crate) struct Outbox {
    sock: UnixStream,
    /// False once a send failed for good: no more attempts.
    open: AtomicBool,
}

impl Outbox {
    /// The outbox on the parent's end of the transfer socket.
    pub(crate) fn new(sock: OwnedFd) -> io::Result<Outbox> {
        let sock = UnixStream::from(sock);
        sock.set_nonblocking(true)?;
        Ok(Outbox {
            sock,
            open: AtomicBool::new(true),
        })
    }

    /// Whether sends are still tried.
    #[inline]
    pub(crate) fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// Sends one connection's socket (the receiver gets its own descriptor of it).
    pub(crate) fn try_send(&self, fd: std::os::fd::BorrowedFd<'_>) -> Attempt {
        if !self.is_open() {
            return Attempt::Closed;
        }
        match transfer::send(self.sock.as_fd(), b"c", &[fd]) {
            Ok(()) => Attempt::Sent,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Attempt::Busy,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Attempt::Busy,
            Err(e) => {
                if self.open.swap(false, Ordering::AcqRel) {
                    log(format_args!(
                        "transfer: cannot send connections to the successor ({e}); serving them here"
                    ));
                }
                Attempt::Closed
            }
        }
    }
}

/// The successor's half: adopted sockets by local address, until a listener takes them.
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    state: Mutex<InboxState>,
    /// Wakes the listeners when sockets arrive.
    pub(crate) arrived: Event,
    /// A receiving thread runs (the predecessor may still hand over): listeners watch the
    /// inbox, and stay open for the lifecycle until it ends.
    pub(crate) active: AtomicBool,
    /// A receiving thread was ever started: otherwise listeners need not look.
    started: AtomicBool,
}

#[derive(Debug, Default)]
struct InboxState {
    /// The local addresses of open tracked listeners, with how many listen on each.
    claims: Vec<(SocketAddr, usize)>,
    sockets: VecDeque<(SocketAddr, OwnedFd)>,
}

/// Whether a listener bound to `listener` accepts connections whose local address is
/// `local`: the same address, or the same port when the listener is bound to the
/// unspecified address (`0.0.0.0:8080` accepts on `10.0.0.5:8080`; a dual-stack `[::]:8080`
/// on `[::ffff:10.0.0.5]:8080` too).
fn serves(listener: SocketAddr, local: SocketAddr) -> bool {
    listener == local || (listener.ip().is_unspecified() && listener.port() == local.port())
}

impl Inbox {
    /// Whether a predecessor ever handed connections to this process.
    #[inline]
    pub(crate) fn in_use(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    /// A listener on `addr` takes adopted sockets from now on.
    pub(crate) fn claim(&self, addr: SocketAddr) {
        let mut state = lock(&self.state);
        match state.claims.iter_mut().find(|(a, _)| *a == addr) {
            Some((_, n)) => *n += 1,
            None => state.claims.push((addr, 1)),
        }
    }

    /// The listener on `addr` closed; sockets for an address nobody claims any more are
    /// closed.
    pub(crate) fn unclaim(&self, addr: SocketAddr) {
        let mut state = lock(&self.state);
        if let Some(i) = state.claims.iter().position(|(a, _)| *a == addr) {
            state.claims[i].1 -= 1;
            if state.claims[i].1 == 0 {
                state.claims.swap_remove(i);
                let InboxState { claims, sockets } = &mut *state;
                sockets.retain(|(local, _)| claims.iter().any(|(l, _)| serves(*l, *local)));
            }
        }
    }

    /// The next adopted socket a listener on `addr` serves.
    pub(crate) fn take(&self, addr: SocketAddr) -> Option<OwnedFd> {
        let mut state = lock(&self.state);
        let i = state
            .sockets
            .iter()
            .position(|(local, _)| serves(addr, *local))?;
        state.sockets.remove(i).map(|(_, fd)| fd)
    }

    /// Files sockets that arrived; returns how many no listener claims (they are closed).
    fn file(&self, fds: Vec<OwnedFd>) -> usize {
        let mut unclaimed = 0;
        let mut state = lock(&self.state);
        for fd in fds {
            let addr = socket2::SockRef::from(&fd)
                .local_addr()
                .ok()
                .and_then(|a| a.as_socket());
            match addr {
                Some(addr) if state.claims.iter().any(|(l, _)| serves(*l, addr)) => {
                    state.sockets.push_back((addr, fd));
                }
                _ => unclaimed += 1,
            }
        }
        drop(state);
        self.arrived.notify(usize::MAX);
        unclaimed
    }

    /// Starts the receiving thread on the successor's end of the transfer socket; it ends
    /// when the parent closes its end.
    pub(crate) fn receive(self: &Arc<Self>, sock: UnixStream) -> io::Result<()> {
        self.active.store(true, Ordering::Release);
        self.started.store(true, Ordering::Release);
        let inbox = self.clone();
        std::thread::Builder::new()
            .name("lameduck-adopt".into())
            .spawn(move || {
                loop {
                    let mut payload = [0u8; 1];
                    let mut fds = Vec::new();
                    match transfer::recv(sock.as_fd(), &mut payload, &mut fds) {
                        Ok(0) => break,
                        Ok(_) => {
                            let unclaimed = inbox.file(fds);
                            if unclaimed > 0 {
                                log(format_args!(
                                    "transfer: {unclaimed} connections for an address no listener of this process serves; closed"
                                ));
                            }
                        }
                        Err(e) => {
                            log(format_args!("transfer: {e}; no more connections taken"));
                            break;
                        }
                    }
                }
                // The predecessor is done (its drain ended, or it died): listeners that
                // stopped may close now.
                inbox.active.store(false, Ordering::Release);
                inbox.arrived.notify(usize::MAX);
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_on_the_unspecified_address_serves_every_local_address_of_its_port() {
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(serves(at("127.0.0.1:8080"), at("127.0.0.1:8080")));
        assert!(!serves(at("127.0.0.1:8080"), at("127.0.0.2:8080")));
        assert!(!serves(at("127.0.0.1:8080"), at("127.0.0.1:8081")));
        assert!(serves(at("0.0.0.0:8080"), at("10.0.0.5:8080")));
        assert!(!serves(at("0.0.0.0:8080"), at("10.0.0.5:8081")));
        assert!(serves(at("[::]:8080"), at("[::ffff:10.0.0.5]:8080")));
        assert!(serves(at("[::]:8080"), at("[2001:db8::1]:8080")));
    }
}
