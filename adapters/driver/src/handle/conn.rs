//! One tracked connection: its events (the lock-free serving path included), its notices,
//! its close.

use crate::sync::{Arc, Ordering};
use std::os::fd::OwnedFd;

use lameduck_core::{ConnId, ConnState, Error, Instant, Machine};

use super::mailbox::{Mailbox, Notice, SERVING_OVER, Shared, state_from_u8, state_to_u8};
use super::notices::Notices;
use super::{DrainHold, Shutdown};

/// How often a handover is tried while the transfer socket's buffer is full, a
/// millisecond apart.
const SEND_ATTEMPTS: usize = 100;

/// Which bytes read on a connection are a request's first, and so move it from New or Idle
/// to Active ([`ConnHandle::set_request_start`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RequestStart {
    /// The first byte read from the socket: plain HTTP/1.1, a line protocol. The default.
    #[default]
    FirstByte = 0,
    /// The first *decrypted* byte (TLS): the socket's own bytes — records, the handshake
    /// first — are no request; reads through a [`Decrypted`](crate::Decrypted) stream are.
    FirstDecryptedByte = 1,
    /// No read: the protocol reports each request itself
    /// ([`ConnHandle::request_started`]) — HTTP/2, which reads SETTINGS, PING and
    /// WINDOW_UPDATE frames between requests.
    Reported = 2,
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
    shared: Arc<Shared>,
}

/// Brings the lifecycle's state of connection `id` up to date with the state the
/// connection reported on its own while Serving. Idempotent.
pub(super) fn sync(lc: &mut dyn Machine, id: ConnId, mailbox: &Mailbox) {
    sync_to(lc, id, mailbox.state());
}

/// Brings the lifecycle's state of `id` to `reported` — the core's serving fast path,
/// [`Lifecycle::catch_up`](lameduck_core::Lifecycle::catch_up), which defines (and, in a fuzz
/// build, checks) the moves. A connection the lifecycle already closed, or one that has not
/// moved, is left alone.
pub(super) fn sync_to(lc: &mut dyn Machine, id: ConnId, reported: ConnState) {
    let result = lc.catch_up(id, reported);
    // A refused move would be this handle's bug: its connections move on their own only
    // while Serving, and only between New, Idle and Active.
    debug_assert!(
        !matches!(
            result,
            Err(Error::InvalidTransition { .. } | Error::CatchUpAfterServing(_))
        ),
        "{result:?}"
    );
}

impl Conn {
    pub(super) fn new(shared: Arc<Shared>) -> Conn {
        Conn {
            handle: ConnHandle { shared },
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
    #[inline]
    pub fn state(&self) -> ConnState {
        self.shared.state()
    }

    /// Bytes were read from the connection's socket: New or Idle → Active when requests
    /// start at the first byte ([`RequestStart::FirstByte`], the default). Cheap when
    /// already Active (no lock). [`Tracked`](crate::Tracked) streams call it on every read.
    #[inline]
    pub fn data_received(&self) {
        self.read_arrived(RequestStart::FirstByte);
    }

    /// Decrypted bytes were read (a [`Decrypted`](crate::Decrypted) stream calls it): New or
    /// Idle → Active when requests start at the first decrypted byte
    /// ([`RequestStart::FirstDecryptedByte`]).
    #[inline]
    pub fn decrypted_received(&self) {
        self.read_arrived(RequestStart::FirstDecryptedByte);
    }

    #[inline]
    fn read_arrived(&self, kind: RequestStart) {
        if matches!(self.state(), ConnState::New | ConnState::Idle)
            && self.shared.request_start.load(Ordering::Acquire) == kind as u8
            && !self.moved_on_its_own(&[ConnState::New, ConnState::Idle], ConnState::Active)
        {
            let _ = self.request_started_locked();
        }
    }

    /// [`request_started`](ConnHandle::request_started) through the lifecycle (shutdown
    /// has begun): out of line, so that the read path it sits on stays small enough to
    /// inline (here only: inlined into the service call, a call of its own measured ~12
    /// instructions a request more).
    #[cold]
    #[inline(never)]
    fn request_started_locked(&self) -> Result<(), Error> {
        self.transition(ConnState::Active, |lc, id, now| lc.request_started(id, now))
    }

    /// Which bytes start a request on this connection — the one switch a protocol layer
    /// turns: [`RequestStart::FirstByte`] by default, [`FirstDecryptedByte`] under TLS,
    /// [`Reported`] for a protocol that reads between requests and reports each one itself.
    ///
    /// [`FirstDecryptedByte`]: RequestStart::FirstDecryptedByte
    /// [`Reported`]: RequestStart::Reported
    pub fn set_request_start(&self, start: RequestStart) {
        self.shared
            .request_start
            .store(start as u8, Ordering::Release);
    }

    /// A request began (its first byte arrived): New or Idle → Active.
    ///
    /// While Serving this is a compare-and-swap on the connection's own state, no lock:
    /// nothing reads the Idle/Active distinction before shutdown begins, which brings the
    /// lifecycle up to date first. Once shutdown has begun, it takes the lock and feeds the
    /// lifecycle directly.
    #[inline]
    pub fn request_started(&self) -> Result<(), Error> {
        if self.moved_on_its_own(&[ConnState::New, ConnState::Idle], ConnState::Active) {
            return Ok(());
        }
        self.transition(ConnState::Active, |lc, id, now| lc.request_started(id, now))
    }

    /// The response was completely written and the connection stays open: Active → Idle.
    /// Lock-free while Serving, like [`request_started`](ConnHandle::request_started).
    #[inline]
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
    #[inline]
    fn moved_on_its_own(&self, from: &[ConnState], to: ConnState) -> bool {
        let state = &self.shared.state;
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
            sync(lc, shared.id, shared);
            f(lc, shared.id, now)?;
            shared.set_state(to);
            Ok(())
        })
    }

    /// The cell a [`Tracked`](crate::Tracked) stream arms with its socket.
    pub(crate) fn cell(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// The strongest notice the lifecycle has given this connection, if any.
    #[inline]
    pub fn notice(&self) -> Option<Notice> {
        self.shared.read()
    }

    /// Whether the lifecycle closed the connection ([`Notice::Close`]): from then on its
    /// tracked I/O fails. One atomic load, for every read and write.
    #[inline]
    pub fn is_cut(&self) -> bool {
        self.shared.is_closed()
    }

    /// Whether the response being written should close the connection
    /// (`Connection: close`): shutdown asked this connection to finish.
    #[inline]
    pub fn should_close_after_response(&self) -> bool {
        self.notice().is_some()
    }

    /// This connection's notices, to wait for: an owned watcher, so that a task can wait
    /// for them while it holds the stream mutably (in a `select!` beside a read, say). The
    /// one place to wait; [`notice`](ConnHandle::notice) reads the current one.
    pub fn notices(&self) -> Notices {
        Notices {
            mailbox: self.shared.clone(),
        }
    }

    /// The shutdown handle this connection belongs to.
    pub fn shutdown(&self) -> &Shutdown {
        &self.shared.shutdown
    }

    /// Ends the connection for the lifecycle while its socket stays open to linger: it is
    /// Closed and counted from now on (no cut reaches its fd, data read no longer makes it
    /// Active, the `Conn`'s drop changes nothing more), and the lifecycle is not drained
    /// until the returned hold is dropped ([`Lifecycle::closed_lingering`]) — a lingering
    /// close reads what the peer still sends after the last response so that closing does
    /// not reset it, and exiting earlier would. Bound the linger with a timer of your own.
    ///
    /// [`Lifecycle::closed_lingering`]: lameduck_core::Lifecycle::closed_lingering
    pub fn linger(&self) -> DrainHold {
        let lingers = self.report_closed(true);
        DrainHold {
            shutdown: lingers.then(|| self.shared.shutdown.clone()),
        }
    }

    /// Whether this connection's socket may be offered to a successor now
    /// ([`hand_over`](ConnHandle::hand_over)): this process hands over to one that takes
    /// connections (handover version 2), and the transfer still works.
    #[inline]
    pub fn can_hand_over(&self) -> bool {
        self.shared.shutdown.outbox().is_some()
    }

    /// Offers the connection to the successor: `fd` is a duplicate of its socket. Call it
    /// only while the connection is Idle with no byte of a next request read (the protocol
    /// layer knows: hyper's read buffer is empty), and stop reading from the socket before.
    /// Resolves to true when the connection is the successor's — the lifecycle then counts
    /// it handed over; drop the stream without `shutdown(2)` or a lingering close (closing
    /// the own descriptor does not touch the connection) — or false when it is not (no
    /// successor takes connections, it had no room, it lost the socket or did not answer
    /// within [`ANSWER_TIMEOUT`](crate::transfer::ANSWER_TIMEOUT)): serve on as before;
    /// whatever the client sent meanwhile is still in the socket, unread.
    pub fn hand_over(
        &self,
        fd: OwnedFd,
    ) -> impl std::future::Future<Output = bool> + Send + 'static {
        let handle = self.clone();
        async move {
            // Only Idle, not closed by the lifecycle: anything else stays (and the core
            // would refuse it anyway).
            if handle.state() != ConnState::Idle || handle.is_cut() {
                return false;
            }
            let shutdown = handle.shared.shutdown.clone();
            let Some(acks) = shutdown.outbox().map(|o| o.acks().cloned()) else {
                return false;
            };
            match acks {
                Some(acks) => handle.transfer_acknowledged(&fd, &acks).await,
                None => handle.transfer_unacknowledged(&fd).await,
            }
        }
    }

    /// Version 3: credit, the send, the successor's answer, each bounded by
    /// [`ANSWER_TIMEOUT`](crate::transfer::ANSWER_TIMEOUT).
    async fn transfer_acknowledged(&self, fd: &OwnedFd, acks: &crate::transfer::Acks) -> bool {
        use crate::transfer::{ANSWER_TIMEOUT, Answer, Attempt};
        let shutdown = &self.shared.shutdown;
        // In transfer from here on, the credit wait included: the socket is not read
        // meanwhile, so a request the client sends waits in it, and no idle close may
        // reach it before it is sent or taken back.
        if !self.report_transfer(|lc, id, now| lc.transfer_started(id, now)) {
            return false;
        }
        let until = std::time::Instant::now() + ANSWER_TIMEOUT;
        if !wait_for(shutdown, &acks.changed, until, || acks.has_credit()).await {
            // The successor has no room: served here, as without a successor.
            return self.take_back();
        }
        let n = loop {
            let Some(outbox) = shutdown.outbox() else {
                return self.take_back();
            };
            match outbox.try_send(std::os::fd::AsFd::as_fd(fd)) {
                Attempt::Sent(n) => break n,
                Attempt::Busy if std::time::Instant::now() < until => {
                    shutdown.sleep(std::time::Duration::from_millis(1)).await;
                }
                Attempt::Busy | Attempt::Closed => return self.take_back(),
            }
        };
        // Its answer, or the timeout: whichever comes first.
        futures_lite::future::or(
            std::future::poll_fn(|cx| acks.poll_settled(n, cx)),
            shutdown.sleep(ANSWER_TIMEOUT),
        )
        .await;
        let answer = match acks.answer(n) {
            Answer::Waiting => acks.take_back(n),
            settled => settled,
        };
        if answer == Answer::Held {
            // The successor's now: no cut may reach the socket (`shutdown(2)` would end it
            // there too). Nothing issued one: the lifecycle leaves a connection in transfer
            // alone.
            let _ = self.shared.while_uncut(|| true);
            self.leave(|lc, id, now| {
                let _ = lc.handed_over(id, now);
                true
            });
            true
        } else {
            self.take_back()
        }
    }

    /// The connection stays here after all (`taken_back`): false, for `hand_over`.
    fn take_back(&self) -> bool {
        self.report_transfer(|lc, id, now| lc.taken_back(id, now));
        false
    }

    /// Version 2: the connection leaves once its socket is sent.
    async fn transfer_unacknowledged(&self, fd: &OwnedFd) -> bool {
        use crate::transfer::Attempt;
        let shutdown = &self.shared.shutdown;
        // A full socket buffer (the successor is behind) is waited out for a while,
        // then the connection stays.
        for _ in 0..SEND_ATTEMPTS {
            let Some(outbox) = shutdown.outbox() else {
                return false;
            };
            // No deadline's cut may reach the socket while it is in flight, nor after:
            // shutdown(2) would end the connection in the successor too.
            let mut attempt = Attempt::Closed;
            let sent = self.shared.while_uncut(|| {
                attempt = outbox.try_send(std::os::fd::AsFd::as_fd(fd));
                matches!(attempt, Attempt::Sent(_))
            });
            if sent.is_none() {
                // Cut by the deadline already: it is over here, and goes nowhere.
                return false;
            }
            match attempt {
                Attempt::Sent(_) => {
                    self.report_handed_over();
                    return true;
                }
                Attempt::Closed => return false,
                Attempt::Busy => {
                    shutdown.sleep(std::time::Duration::from_millis(1)).await;
                }
            }
        }
        false
    }

    /// The socket went to a version-2 successor: the lifecycle counts it handed over (or,
    /// if it closed the connection meanwhile — its idle grace, the deadline — as closed).
    fn report_handed_over(&self) {
        self.leave(|lc, id, now| {
            let left = lc
                .transfer_started(id, now)
                .and_then(|()| lc.handed_over(id, now));
            if left.is_err() {
                // Closed by the lifecycle while the socket was in flight: counted as closed.
                let _ = lc.closed(id, now);
            }
            true
        });
    }

    /// Reports a move of the transfer (`transfer_started`, `taken_back`) to the lifecycle,
    /// then delivers what it issued (a take-back past the deadline is cut at once): whether
    /// the lifecycle took it.
    fn report_transfer(
        &self,
        f: impl FnOnce(&mut dyn Machine, ConnId, Instant) -> Result<(), Error>,
    ) -> bool {
        self.in_lifecycle(|state, id, now| f(&mut *state.lc, id, now).is_ok())
    }

    /// Reports the connection Closed (lingering, or not), once: later calls change nothing
    /// (the lifecycle refuses a second close of the same id, and its slot is only freed by
    /// the first). Whether this call closed it.
    fn report_closed(&self, lingers: bool) -> bool {
        self.leave(|lc, id, now| {
            if lingers {
                lc.closed_lingering(id, now)
            } else {
                lc.closed(id, now)
            }
            .is_ok()
        })
    }

    /// The connection leaves the lifecycle by `f` (a close, a handover) under one lock hold:
    /// the lifecycle counts it out of the state it knows (the current one), and it leaves
    /// the table — closed now or before (a cut): the table's reference is what keeps the
    /// handle and this connection alive for each other.
    fn leave(&self, f: impl FnOnce(&mut dyn Machine, ConnId, Instant) -> bool) -> bool {
        self.in_lifecycle(|state, id, now| {
            let result = f(&mut *state.lc, id, now);
            if let Some(slot) = state.mailboxes.get_mut(id.slot() as usize) {
                if slot.as_ref().is_some_and(|m| Arc::ptr_eq(m, &self.shared)) {
                    *slot = None;
                }
            }
            self.shared.set_state(ConnState::Closed);
            result
        })
    }

    /// `f` on the lifecycle under one lock hold, this connection's state caught up first;
    /// then what the lifecycle issued is delivered (and waiters woken if anything changed).
    fn in_lifecycle<T>(&self, f: impl FnOnce(&mut super::State, ConnId, Instant) -> T) -> T {
        let mailbox: &Mailbox = &self.shared;
        let Mailbox { shutdown, id, .. } = mailbox;
        let now = shutdown.now();
        let mut lifecycle = shutdown.lock();
        sync(&mut *lifecycle.lc, *id, mailbox);
        let result = f(&mut lifecycle, *id, now);
        if shutdown.deliver(&mut lifecycle, now) {
            drop(lifecycle);
            shutdown.inner.changed.notify(usize::MAX);
        }
        result
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.handle.report_closed(false);
    }
}

/// Waits until `ready()` holds (checked at each `changed` notification) or `until` passes;
/// whether it holds.
async fn wait_for(
    shutdown: &Shutdown,
    changed: &event_listener::Event,
    until: std::time::Instant,
    ready: impl Fn() -> bool,
) -> bool {
    loop {
        if ready() {
            return true;
        }
        let listener = changed.listen();
        if ready() {
            return true;
        }
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return false;
        }
        futures_lite::future::or(
            async {
                listener.await;
            },
            async {
                shutdown.sleep(left).await;
            },
        )
        .await;
    }
}
