//! The connection transfer (versions 2 and 3 of the handover, see
//! `lameduck_process::restart`): a process that hands over to its successor sends its idle
//! keep-alive connections to it instead of closing them, and the successor serves them as
//! its own.
//!
//! Two halves, one per process, over `lameduck_os::transfer`'s `sendmsg`/`recvmsg`:
//!
//! - the **outbox** of the old process: a connection's task offers its socket
//!   ([`ConnHandle::hand_over`](crate::ConnHandle::hand_over)) once it is Idle with nothing
//!   read, with a non-blocking `sendmsg` of its own.
//!   - Version 3 (acknowledged): only within the successor's credit, and the connection
//!     leaves only once the successor says it holds the socket (`Held`); this process then
//!     says `Commit`, and only then does the successor read it. Until the answer it keeps
//!     its own descriptor, unread; a socket the successor lost (`Lost`: no room for the
//!     descriptor), or that got no answer within [`ANSWER_TIMEOUT`] (the successor stopped,
//!     hung or died), is taken back and served here (a late `Held` is answered `Abort`).
//!   - Version 2 (a successor that acknowledges nothing): the socket leaves once sent.
//! - the **inbox** of the successor: a thread of its own (the socket is nothing the
//!   runtime seam registers) receives the sockets and files each, once committed, under
//!   its local address; the tracked listener bound to that address yields it from
//!   `accept` as an adopted connection ([`Lifecycle::adopt`](lameduck_core::Lifecycle::adopt):
//!   Idle, never stale-New). A socket no listener of this process claims is closed (its
//!   client sees an idle keep-alive connection end, and reconnects). It grants credit from
//!   its free descriptors: its soft `RLIMIT_NOFILE`, less those open, less [`RESERVE`] for
//!   its own accepts.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use event_listener::Event;
use lameduck_os::transfer::{Incoming, Record, RecordReader};
use lameduck_os::{log, transfer};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How long the old process waits for the successor's credit, and then for its answer
/// to a socket sent, before it takes the connection back.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(1);

/// Descriptors a successor keeps free for its own accepts: it grants credit only beyond
/// them.
pub const RESERVE: u64 = 64;

/// What an attempt to send a connection came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// In the successor's receive queue (version 3: as socket number `.0`).
    Sent(u64),
    /// The socket's buffer is full (the successor is behind), or (version 3) no credit is
    /// left: try again shortly.
    Busy,
    /// The transfer is over (the successor is gone): the connection stays.
    Closed,
}

/// The successor's answer about one socket sent (version 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// None yet.
    Waiting,
    /// It holds the socket, and `Commit` is queued: the connection is its.
    Held,
    /// It does not hold it (lost on the way, or the transfer ended first): served here.
    Lost,
}

/// The old process's half: the parent's end of the transfer socket, non-blocking. Each
/// connection's task sends its own socket, one `sendmsg` each — no thread, no hand-off,
/// no wake-up to wait for: measured, a sending thread that batched the offers spent more
/// on waking and being woken than the batches saved (10,000 idle connections: 120 ms).
/// Version 3 adds a thread that reads the successor's records and writes the `Commit`s
/// and `Abort`s, and wakes the tasks waiting for an answer or for credit.
#[derive(Debug)]
pub(crate) struct Outbox {
    sock: Arc<UnixStream>,
    /// False once a send failed for good: no more attempts.
    open: Arc<AtomicBool>,
    /// Version 3's bookkeeping; `None` for a version-2 successor.
    acks: Option<Arc<Acks>>,
}

/// Version 3's shared state between the connection tasks and the answer thread.
#[derive(Debug, Default)]
pub(crate) struct Acks {
    state: Mutex<AckState>,
    /// Wakes the tasks waiting for credit (and all of them when the transfer ends).
    pub(crate) changed: Event,
}

/// Where one socket sent stands (version 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pending {
    /// No answer yet.
    Waiting,
    /// The successor holds it; the `Commit` is queued, not yet written.
    Committing,
    /// The `Commit` is written: the successor's.
    Held,
    /// Not the successor's: served here.
    Lost,
}

#[derive(Debug, Default)]
struct AckState {
    /// The next socket's number.
    next: u64,
    /// Sockets the successor can take in all (its cumulative credit).
    credit: u64,
    /// Sockets sent and not yet settled, by number.
    pending: HashMap<u64, Pending>,
    /// The task waiting for each socket's answer: woken alone, not with every other.
    wakers: HashMap<u64, Waker>,
    /// Records to write (`Commit`, `Abort`).
    outgoing: Vec<Record>,
    /// The transfer ended (the successor hung up, or a write failed).
    ended: bool,
}

impl Outbox {
    /// The outbox on the parent's end of the transfer socket; `acknowledged` for a
    /// successor that speaks version 3 (then a thread reads its answers).
    pub(crate) fn new(sock: OwnedFd, acknowledged: bool) -> io::Result<Outbox> {
        let sock = Arc::new(UnixStream::from(sock));
        sock.set_nonblocking(true)?;
        let open = Arc::new(AtomicBool::new(true));
        let acks = if acknowledged {
            let acks = Arc::new(Acks::default());
            // The first record says which version this process speaks. A successor gone
            // already takes nothing: every connection stays, as without one.
            match transfer::send_records(sock.as_fd(), &[Record::Hello(3)]) {
                Ok(1) => {
                    let (thread_sock, thread_acks, thread_open) =
                        (sock.clone(), acks.clone(), open.clone());
                    std::thread::Builder::new()
                        .name("lameduck-answers".into())
                        .spawn(move || read_answers(&thread_sock, &thread_acks, &thread_open))?;
                }
                outcome => {
                    log(format_args!(
                        "transfer: the successor cannot be told ({outcome:?}); serving every connection here"
                    ));
                    open.store(false, Ordering::Release);
                    acks.end();
                }
            }
            Some(acks)
        } else {
            None
        };
        Ok(Outbox { sock, open, acks })
    }

    /// Whether sends are still tried.
    #[inline]
    pub(crate) fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// Version 3's bookkeeping, if the successor speaks it.
    pub(crate) fn acks(&self) -> Option<&Arc<Acks>> {
        self.acks.as_ref()
    }

    /// Sends one connection's socket (the receiver gets its own descriptor of it): within
    /// the successor's credit, numbered, in version 3.
    pub(crate) fn try_send(&self, fd: std::os::fd::BorrowedFd<'_>) -> Attempt {
        if !self.is_open() {
            return Attempt::Closed;
        }
        let Some(acks) = &self.acks else {
            return self.attempt(transfer::send(self.sock.as_fd(), b"c", &[fd]), 0);
        };
        // Numbered and sent under one lock: the successor sees the numbers in order.
        let mut state = lock(&acks.state);
        if state.ended {
            return Attempt::Closed;
        }
        if state.next >= state.credit {
            return Attempt::Busy;
        }
        let n = state.next;
        let record = Record::Connection(n).encode();
        let attempt = self.attempt(transfer::send(self.sock.as_fd(), &record, &[fd]), n);
        if let Attempt::Sent(n) = attempt {
            state.next += 1;
            state.pending.insert(n, Pending::Waiting);
        }
        attempt
    }

    fn attempt(&self, sent: io::Result<()>, n: u64) -> Attempt {
        match sent {
            Ok(()) => Attempt::Sent(n),
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

/// Wakes the task waiting for socket `n`'s answer (waking only schedules it).
fn wake(state: &mut AckState, n: u64) {
    if let Some(waker) = state.wakers.remove(&n) {
        waker.wake();
    }
}

impl Acks {
    /// Ready once socket `n` is answered (held, with its `Commit` written; or lost); until
    /// then this task alone is woken when it is.
    pub(crate) fn poll_settled(&self, n: u64, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = lock(&self.state);
        if matches!(
            state.pending.get(&n),
            Some(Pending::Waiting | Pending::Committing)
        ) {
            state.wakers.insert(n, cx.waker().clone());
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }

    /// The answer about socket `n` so far; a settled one is forgotten.
    pub(crate) fn answer(&self, n: u64) -> Answer {
        let mut state = lock(&self.state);
        state.wakers.remove(&n);
        match state.pending.get(&n).copied() {
            Some(Pending::Waiting | Pending::Committing) => Answer::Waiting,
            Some(Pending::Held) => {
                state.pending.remove(&n);
                Answer::Held
            }
            Some(Pending::Lost) | None => {
                state.pending.remove(&n);
                Answer::Lost
            }
        }
    }

    /// No answer in time: socket `n` is taken back — a `Commit` not yet written becomes an
    /// `Abort`, and a `Held` that comes later is answered `Abort` — unless the `Commit` is
    /// written already: then it is the successor's.
    pub(crate) fn take_back(&self, n: u64) -> Answer {
        let mut state = lock(&self.state);
        state.wakers.remove(&n);
        match state.pending.remove(&n) {
            Some(Pending::Held) => Answer::Held,
            Some(Pending::Committing) => {
                for record in state.outgoing.iter_mut() {
                    if *record == Record::Commit(n) {
                        *record = Record::Abort(n);
                    }
                }
                Answer::Lost
            }
            _ => Answer::Lost,
        }
    }

    /// Whether credit is left for one more socket (or the transfer ended: no use waiting).
    pub(crate) fn has_credit(&self) -> bool {
        let state = lock(&self.state);
        state.ended || state.next < state.credit
    }

    /// One record from the successor.
    fn on_record(&self, record: Record) {
        let mut state = lock(&self.state);
        match record {
            Record::Credit(total) => state.credit = state.credit.max(total),
            Record::Held(n) => match state.pending.get_mut(&n) {
                Some(pending @ Pending::Waiting) => {
                    *pending = Pending::Committing;
                    state.outgoing.push(Record::Commit(n));
                }
                // Taken back already (no answer in time): the successor closes its copy.
                None => state.outgoing.push(Record::Abort(n)),
                Some(_) => {}
            },
            Record::Lost(n) => {
                if let Some(pending @ Pending::Waiting) = state.pending.get_mut(&n) {
                    *pending = Pending::Lost;
                    wake(&mut state, n);
                }
            }
            _ => {}
        }
    }

    /// The transfer ended: every socket whose `Commit` was not written is not the
    /// successor's (it reads none before its `Commit`), so each is served here.
    fn end(&self) {
        let mut state = lock(&self.state);
        state.ended = true;
        state.outgoing.clear();
        for pending in state.pending.values_mut() {
            if matches!(*pending, Pending::Waiting | Pending::Committing) {
                *pending = Pending::Lost;
            }
        }
        for (_, waker) in state.wakers.drain() {
            waker.wake();
        }
    }
}

/// The answer thread of the old process (version 3): reads the successor's records, queues
/// and writes `Commit`/`Abort`, until the successor hangs up.
fn read_answers(sock: &UnixStream, acks: &Acks, open: &AtomicBool) {
    let mut reader = RecordReader::default();
    loop {
        let flushed = flush(sock, acks);
        let wait = if flushed {
            Duration::from_secs(1)
        } else {
            Duration::from_millis(1)
        };
        match transfer::wait_readable(sock.as_fd(), wait) {
            Ok(false) => continue,
            Ok(true) => {}
            Err(_) => break,
        }
        let mut credit = false;
        let alive = read_records(sock, &mut reader, |record| {
            credit |= matches!(record, Record::Credit(_));
            acks.on_record(record);
        });
        if credit {
            // Tasks waiting for credit: all of them may go now.
            acks.changed.notify(usize::MAX);
        }
        if !alive {
            break;
        }
    }
    open.store(false, Ordering::Release);
    acks.end();
    acks.changed.notify(usize::MAX);
}

/// Writes the queued records; false when some are still queued (the buffer is full).
/// A `Commit` is settled as `Held` only once written: until then the socket stays here.
fn flush(sock: &UnixStream, acks: &Acks) -> bool {
    let mut state = lock(&acks.state);
    let mut all = true;
    while !state.outgoing.is_empty() {
        match transfer::send_records(sock.as_fd(), &state.outgoing) {
            Ok(0) => {
                all = false;
                break;
            }
            Ok(n) => {
                for i in 0..n {
                    if let Record::Commit(k) = state.outgoing[i] {
                        if let Some(pending) = state.pending.get_mut(&k) {
                            *pending = Pending::Held;
                            wake(&mut state, k);
                        }
                    }
                }
                state.outgoing.drain(..n);
            }
            // The reader sees the hang-up and ends the transfer.
            Err(_) => break,
        }
    }
    all
}

/// Reads the records that are there (non-blocking; the successor sends no descriptor),
/// in bulk, until none is left; false when the peer hung up or the socket broke.
fn read_records(
    sock: &UnixStream,
    reader: &mut RecordReader,
    mut each: impl FnMut(Record),
) -> bool {
    let mut incoming = Vec::new();
    loop {
        let open = match reader.read_once(sock.as_fd(), &mut incoming) {
            Ok(open) => open,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log(format_args!("transfer: {e}; the transfer ends"));
                false
            }
        };
        let read_any = !incoming.is_empty();
        for Incoming { record, .. } in incoming.drain(..) {
            each(record);
        }
        if !open {
            return false;
        }
        if !read_any {
            return true;
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
        sock.set_nonblocking(true)?;
        self.active.store(true, Ordering::Release);
        self.started.store(true, Ordering::Release);
        let inbox = self.clone();
        std::thread::Builder::new()
            .name("lameduck-adopt".into())
            .spawn(move || {
                Receiver::default().run(&inbox, &sock);
                // The predecessor is done (its drain ended, or it died): listeners that
                // stopped may close now.
                inbox.active.store(false, Ordering::Release);
                inbox.arrived.notify(usize::MAX);
            })?;
        Ok(())
    }

    /// Files adopted sockets for the listeners, and logs those no listener claims.
    fn file_all(&self, fds: Vec<OwnedFd>) {
        if fds.is_empty() {
            return;
        }
        let unclaimed = self.file(fds);
        if unclaimed > 0 {
            log(format_args!(
                "transfer: {unclaimed} connections for an address no listener of this process serves; closed"
            ));
        }
    }
}

/// Which transfer the predecessor speaks, known from its first message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Speaks {
    #[default]
    Unknown,
    /// Version 2: sockets alone, nothing acknowledged.
    Unacknowledged,
    /// Version 3: numbered sockets, each held until its `Commit`.
    Acknowledged,
}

/// Version 2: one socket per message, with a one-byte payload; each is served at once.
fn read_unacknowledged(sock: &UnixStream, committed: &mut Vec<OwnedFd>) -> io::Result<bool> {
    let mut payload = [0u8; 1];
    let received = transfer::recv_lossy(sock.as_fd(), &mut payload, committed)?;
    if received.descriptors_lost {
        log(format_args!(
            "transfer: a connection did not fit (no descriptor free); its client reconnects"
        ));
    }
    Ok(received.len > 0)
}

/// The successor's receiving thread.
#[derive(Debug, Default)]
struct Receiver {
    speaks: Speaks,
    reader: RecordReader,
    /// Sockets held, unread, until their `Commit` (or `Abort`).
    held: HashMap<u64, OwnedFd>,
    /// Records to write: `Credit`, `Held`, `Lost`.
    outgoing: Vec<Record>,
    /// Sockets offered so far (each took credit, arrived or not).
    received: u64,
    /// Credit granted so far, and when the free descriptors were last counted.
    granted: u64,
    counted_at: Option<Instant>,
    /// The last grant found nothing free: said once in the log.
    starved: bool,
}

impl Receiver {
    fn run(&mut self, inbox: &Inbox, sock: &UnixStream) {
        self.grant(true);
        loop {
            self.flush(sock);
            let wait = if self.outgoing.is_empty() {
                Duration::from_millis(100)
            } else {
                Duration::from_millis(1)
            };
            match transfer::wait_readable(sock.as_fd(), wait) {
                Ok(true) => {}
                Ok(false) => {
                    // Descriptors may have been freed (or a limit raised): more credit.
                    self.grant(false);
                    continue;
                }
                Err(_) => break,
            }
            let mut committed = Vec::new();
            let alive = self.read(sock, &mut committed);
            inbox.file_all(committed);
            if !alive {
                break;
            }
            self.grant(false);
        }
        // Sockets never committed stay the predecessor's: closing our copies, unread,
        // leaves them to it.
        self.held.clear();
    }

    /// Reads what is there; committed sockets go to `committed`. False at the end.
    fn read(&mut self, sock: &UnixStream, committed: &mut Vec<OwnedFd>) -> bool {
        loop {
            let outcome = match self.speaks {
                Speaks::Unknown => self.read_first(sock, committed),
                Speaks::Unacknowledged => read_unacknowledged(sock, committed),
                Speaks::Acknowledged => self.read_acknowledged(sock, committed),
            };
            match outcome {
                Ok(true) => {}
                Ok(false) => return false,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log(format_args!("transfer: {e}; no more connections taken"));
                    return false;
                }
            }
        }
    }

    /// The predecessor's first message says which version it speaks: `Hello(3)` alone, or
    /// (version 2) a socket with a one-byte payload.
    fn read_first(&mut self, sock: &UnixStream, committed: &mut Vec<OwnedFd>) -> io::Result<bool> {
        let mut bytes = [0u8; Record::LEN];
        let mut fds = Vec::new();
        let received = transfer::recv_lossy(sock.as_fd(), &mut bytes, &mut fds)?;
        self.speaks = match Record::decode(&bytes) {
            _ if received.len == 0 => return Ok(false),
            Some(Record::Hello(3)) if received.len == Record::LEN => Speaks::Acknowledged,
            _ if bytes[0] == b'c' && received.len == 1 => {
                committed.append(&mut fds);
                Speaks::Unacknowledged
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the predecessor speaks no transfer version this process knows",
                ));
            }
        };
        Ok(true)
    }

    /// Version 3: records in bulk.
    fn read_acknowledged(
        &mut self,
        sock: &UnixStream,
        committed: &mut Vec<OwnedFd>,
    ) -> io::Result<bool> {
        let mut incoming = Vec::new();
        let open = self.reader.read_once(sock.as_fd(), &mut incoming)?;
        for Incoming { record, fd, lost } in incoming {
            self.on_record(record, fd.filter(|_| !lost), committed);
        }
        Ok(open)
    }

    /// One record of a version-3 predecessor.
    fn on_record(&mut self, record: Record, fd: Option<OwnedFd>, committed: &mut Vec<OwnedFd>) {
        match record {
            Record::Connection(n) => {
                self.received += 1;
                match fd {
                    Some(fd) => {
                        self.held.insert(n, fd);
                        self.outgoing.push(Record::Held(n));
                    }
                    None => self.outgoing.push(Record::Lost(n)),
                }
            }
            Record::Commit(n) => committed.extend(self.held.remove(&n)),
            Record::Abort(n) => drop(self.held.remove(&n)),
            _ => {}
        }
    }

    /// Grants credit from the descriptors free now, less [`RESERVE`]. A count reads
    /// `/proc/self/fd` (a descriptor of its own for a moment), so it is made at the start
    /// (`now`), then only while little credit is left (fewer than [`RESERVE`] sockets) and
    /// at most every 100 ms.
    fn grant(&mut self, now: bool) {
        let left = self.granted.saturating_sub(self.received);
        let recent = self
            .counted_at
            .is_some_and(|t| t.elapsed() < Duration::from_millis(100));
        if !now && (left >= RESERVE || recent) {
            return;
        }
        self.counted_at = Some(Instant::now());
        // Where descriptors cannot be counted, credit is unbounded, as in version 2.
        let free = transfer::free_descriptors().unwrap_or(u64::MAX / 4);
        let total = self.received + free.saturating_sub(RESERVE);
        let starved = total <= self.received;
        if starved && !self.starved {
            log(format_args!(
                "transfer: {free} descriptors free, {RESERVE} kept for accepts: no more connections taken until some are"
            ));
        }
        self.starved = starved;
        if total > self.granted {
            self.granted = total;
            self.outgoing.push(Record::Credit(total));
        }
    }

    /// Writes what is queued, as far as the socket takes it.
    fn flush(&mut self, sock: &UnixStream) {
        while !self.outgoing.is_empty() {
            match transfer::send_records(sock.as_fd(), &self.outgoing) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    self.outgoing.drain(..n);
                }
            }
        }
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
