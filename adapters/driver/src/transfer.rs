//! The connection transfer (version 2 of the handover, see [`restart`](crate::restart)):
//! a process that hands over to its successor sends its idle keep-alive connections to it
//! instead of closing them, and the successor serves them as its own.
//!
//! Two halves, one per process, each a thread of its own that does the blocking
//! `sendmsg`/`recvmsg` of `lameduck_os::transfer` (the socket is nothing the runtime seam
//! registers):
//!
//! - the **outbox** of the old process: a connection's task offers its socket
//!   ([`ConnHandle::hand_over`](crate::ConnHandle::hand_over)) once it is Idle with nothing
//!   read; the thread sends whatever is queued in one message (at most
//!   [`MAX_FDS`](lameduck_os::transfer::MAX_FDS) a message), and answers each offer: sent
//!   (the lifecycle counts the connection handed over) or not (the connection stays and
//!   is served here, as if there were no successor);
//! - the **inbox** of the successor: the thread receives the sockets and files each under
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
use std::sync::{Arc, Mutex, mpsc};

use event_listener::Event;
use lameduck_os::{log, transfer};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One offered connection: a duplicate of its socket, and where the answer goes.
struct Offer {
    fd: OwnedFd,
    answer: Arc<Answer>,
}

/// The answer to an offer: `Some(true)` sent, `Some(false)` not.
#[derive(Debug, Default)]
pub(crate) struct Answer {
    sent: Mutex<Option<bool>>,
    event: Event,
}

impl Answer {
    fn set(&self, sent: bool) {
        *lock(&self.sent) = Some(sent);
        self.event.notify(usize::MAX);
    }

    /// Waits for the answer.
    pub(crate) async fn wait(&self) -> bool {
        loop {
            let listener = self.event.listen();
            if let Some(sent) = *lock(&self.sent) {
                return sent;
            }
            listener.await;
        }
    }
}

/// The old process's half: offers go to the thread that sends them.
#[derive(Debug)]
pub(crate) struct Outbox {
    offers: Mutex<mpsc::Sender<Offer>>,
    /// False once a send failed (the successor is gone): no more offers are taken.
    open: Arc<AtomicBool>,
}

impl Outbox {
    /// Starts the sending thread on the parent's end of the transfer socket.
    pub(crate) fn start(sock: OwnedFd) -> io::Result<Outbox> {
        let (tx, rx) = mpsc::channel::<Offer>();
        let open = Arc::new(AtomicBool::new(true));
        let still_open = open.clone();
        let sock = UnixStream::from(sock);
        std::thread::Builder::new()
            .name("lameduck-transfer".into())
            .spawn(move || send_offers(&sock, &rx, &still_open))?;
        Ok(Outbox {
            offers: Mutex::new(tx),
            open,
        })
    }

    /// Whether offers are taken.
    #[inline]
    pub(crate) fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// Offers a duplicate of a connection's socket; `None` when the outbox is closed.
    pub(crate) fn offer(&self, fd: OwnedFd) -> Option<Arc<Answer>> {
        if !self.is_open() {
            return None;
        }
        let answer = Arc::new(Answer::default());
        lock(&self.offers)
            .send(Offer {
                fd,
                answer: answer.clone(),
            })
            .ok()?;
        Some(answer)
    }
}

/// The sending thread: every offer queued when it wakes goes in one message.
fn send_offers(sock: &UnixStream, offers: &mpsc::Receiver<Offer>, open: &AtomicBool) {
    let mut batch = Vec::new();
    while let Ok(first) = offers.recv() {
        batch.push(first);
        while batch.len() < transfer::MAX_FDS {
            match offers.try_recv() {
                Ok(offer) => batch.push(offer),
                Err(_) => break,
            }
        }
        let sent = open.load(Ordering::Acquire)
            && {
                let fds: Vec<_> = batch.iter().map(|o| o.fd.as_fd()).collect();
                match transfer::send(sock.as_fd(), b"c", &fds) {
                    Ok(()) => true,
                    Err(e) => {
                        log(format_args!(
                            "transfer: cannot send {} connections to the successor ({e}); serving them here",
                            fds.len()
                        ));
                        open.store(false, Ordering::Release);
                        false
                    }
                }
            };
        // Our duplicates close here: the connections live on in the successor, or in the
        // tasks that still hold their own descriptors.
        for offer in batch.drain(..) {
            offer.answer.set(sent);
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
}

#[derive(Debug, Default)]
struct InboxState {
    /// The local addresses of open tracked listeners, with how many listen on each.
    claims: Vec<(SocketAddr, usize)>,
    sockets: VecDeque<(SocketAddr, OwnedFd)>,
}

impl Inbox {
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
                state.sockets.retain(|(a, _)| *a != addr);
            }
        }
    }

    /// The next socket adopted for `addr`.
    pub(crate) fn take(&self, addr: SocketAddr) -> Option<OwnedFd> {
        let mut state = lock(&self.state);
        let i = state.sockets.iter().position(|(a, _)| *a == addr)?;
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
                Some(addr) if state.claims.iter().any(|(a, _)| *a == addr) => {
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
