//! A listener that tracks what it accepts and drains its backlog before it closes.

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::task::{Context, Poll};

use futures_lite::future;

use crate::accept::{AcceptError, Backoff};
use crate::{ListenerGuard, Shutdown, Tracked};

/// How a runtime's listener accepts: a non-blocking poll that registers the waker when
/// nothing is pending. Each adapter passes its runtime's (tokio's `poll_accept`, or
/// `async-io`'s readiness plus a non-blocking `accept`).
pub type PollAccept<L, S> = fn(&L, &mut Context<'_>) -> Poll<io::Result<S>>;

/// A listener whose connections are tracked by a [`Shutdown`].
///
/// [`accept`](TrackedListener::accept) yields tracked streams until the lifecycle asks to
/// stop accepting. Then it keeps accepting without waiting — everything already in the
/// kernel's accept backlog, handshakes the kernel completed, which closing the listener
/// would reset — until the backlog is empty, closes the listener, tells the lifecycle, and
/// returns `None` from then on.
///
/// Accept errors follow [`AcceptError`]: connections that died in the backlog are skipped,
/// resource exhaustion (`EMFILE`, …) backs off with a bounded, growing delay (and shutdown
/// still proceeds meanwhile), and an error of the listener itself is returned once, after
/// which the listener is closed.
#[derive(Debug)]
pub struct TrackedListener<L, S> {
    phase: Phase<L>,
    poll_accept: PollAccept<L, S>,
    shutdown: Shutdown,
    backoff: Backoff,
    /// Connections a predecessor handed over for this listener's address, and how they
    /// become streams of the runtime (TCP listeners only).
    adopt: Option<Adopt<S>>,
}

/// Where a tracked listener is. The guard, while there is one, counts the listener open
/// for the lifecycle.
#[derive(Debug)]
enum Phase<L> {
    /// Accepting (and adopting what a predecessor hands over) until asked to stop.
    Serving { listener: L, guard: ListenerGuard },
    /// Asked to stop: takes what the kernel's backlog already holds, never waiting.
    DrainingBacklog { listener: L, guard: ListenerGuard },
    /// The socket is closed; the predecessor may still hand connections over, and the
    /// lifecycle counts the listener open until it is done.
    Adopting { _guard: ListenerGuard },
    /// Done: nothing more, ever.
    Closed,
}

/// What one turn of the accept loop came to.
enum Step<S> {
    /// A connection (or the listener's error), for the caller.
    Yield(io::Result<Tracked<S>>),
    /// Nothing for the caller yet: turn again.
    Again,
    /// Close the listener; `None` for the caller.
    Close,
    /// Close the listener; this error, once, for the caller.
    Fail(io::Error),
}

/// How a listener adopts handed-over connections.
#[derive(Debug)]
struct Adopt<S> {
    addr: SocketAddr,
    wrap: fn(std::net::TcpStream) -> io::Result<S>,
}

/// What the accept loop woke for.
enum Next<T> {
    Accepted(T),
    Adopted(OwnedFd),
    Stop,
}

impl<L, S: std::os::fd::AsFd> TrackedListener<L, S> {
    /// Tracks `listener`, which accepts with `poll_accept`.
    pub fn new(shutdown: &Shutdown, listener: L, poll_accept: PollAccept<L, S>) -> Self {
        TrackedListener {
            phase: Phase::Serving {
                listener,
                guard: shutdown.register_listener(),
            },
            poll_accept,
            shutdown: shutdown.clone(),
            backoff: Backoff::default(),
            adopt: None,
        }
    }

    /// Also yields the connections a predecessor hands over for this listener's address
    /// (handover version 2), made streams with `wrap`.
    pub(crate) fn adopting(mut self, wrap: fn(std::net::TcpStream) -> io::Result<S>) -> Self
    where
        L: std::os::fd::AsFd,
    {
        let addr = self
            .get_ref()
            .and_then(|l| socket2::SockRef::from(l).local_addr().ok())
            .and_then(|a| a.as_socket());
        if let Some(addr) = addr {
            self.shutdown.inbox().claim(addr);
            self.adopt = Some(Adopt { addr, wrap });
        }
        self
    }

    /// The next connection handed over for this listener, once one arrives (never, when
    /// nothing is handed over to this process — at the cost of one atomic load an accept:
    /// no lock, no allocation).
    async fn next_adopted(&self) -> OwnedFd {
        if !self.shutdown.inbox().in_use() {
            return future::pending().await;
        }
        match self.adopted_until_done().await {
            Some(fd) => fd,
            None => future::pending().await,
        }
    }

    /// The next connection handed over for this listener, until the predecessor is done
    /// handing over (`None` then, and at once when nothing is handed over to this process).
    async fn adopted_until_done(&self) -> Option<OwnedFd> {
        let inbox = self.shutdown.inbox();
        let addr = self.adopt.as_ref()?.addr;
        loop {
            let arrived = inbox.arrived.listen();
            if let Some(fd) = inbox.take(addr) {
                return Some(fd);
            }
            if !inbox.active.load(std::sync::atomic::Ordering::Acquire) {
                return None;
            }
            arrived.await;
        }
    }

    /// A handed-over connection as a tracked stream: Idle, adopted by the lifecycle.
    fn adopted(&self, fd: OwnedFd) -> io::Result<Tracked<S>> {
        let Some(adopt) = &self.adopt else {
            return Err(io::Error::other("this listener adopts no connections"));
        };
        let stream = std::net::TcpStream::from(fd);
        stream.set_nonblocking(true)?;
        let io = (adopt.wrap)(stream)?;
        match self.shutdown.adopt() {
            Ok(conn) => Ok(Tracked::with_socket(io, conn)),
            Err(e) => Err(io::Error::other(e)),
        }
    }

    /// The listener, until it is closed.
    pub fn get_ref(&self) -> Option<&L> {
        match &self.phase {
            Phase::Serving { listener, .. } | Phase::DrainingBacklog { listener, .. } => {
                Some(listener)
            }
            Phase::Adopting { .. } | Phase::Closed => None,
        }
    }

    /// The listening socket, to hand to a successor
    /// (`lameduck_process::restart::Restarter::start`); an error once the listener
    /// has stopped and closed.
    pub fn as_fd(&self) -> io::Result<std::os::fd::BorrowedFd<'_>>
    where
        L: std::os::fd::AsFd,
    {
        self.get_ref()
            .map(|l| l.as_fd())
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "the listener is closed"))
    }

    /// The shutdown handle this listener reports to.
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// The next tracked connection; `None` once the listener has stopped and closed.
    ///
    /// In a successor that takes its predecessor's connections (handover version 2), the
    /// listening socket closes as above, but `accept` goes on yielding the connections the
    /// predecessor still hands over — and the lifecycle counts the listener open — until
    /// the predecessor is done: a connection handed over to a process that has stopped
    /// accepting is served there, not dropped.
    pub async fn accept(&mut self) -> Option<io::Result<Tracked<S>>> {
        loop {
            let step = match &self.phase {
                Phase::Serving { .. } => self.serve_one().await,
                Phase::DrainingBacklog { .. } => self.drain_one().await,
                Phase::Adopting { .. } => match self.adopted_until_done().await {
                    Some(fd) => Step::Yield(self.adopted(fd)),
                    None => Step::Close,
                },
                Phase::Closed => return None,
            };
            match step {
                Step::Yield(result) => return Some(result),
                Step::Again => {}
                Step::Close => {
                    self.close();
                    return None;
                }
                Step::Fail(e) => {
                    self.close();
                    return Some(Err(e));
                }
            }
        }
    }

    /// Serving: the next accept, adoption or the ask to stop, whichever comes first.
    async fn serve_one(&mut self) -> Step<S> {
        let Phase::Serving { listener, .. } = &self.phase else {
            return Step::Again;
        };
        let poll_accept = self.poll_accept;
        let accept = future::poll_fn(|cx| poll_accept(listener, cx));
        let stop = self.shutdown.stop_accepting();
        let next = future::or(
            future::or(async { Next::Accepted(accept.await) }, async {
                Next::Adopted(self.next_adopted().await)
            }),
            async {
                stop.await;
                Next::Stop
            },
        )
        .await;
        match next {
            Next::Accepted(result) => self.on_accepted(result).await,
            Next::Adopted(fd) => Step::Yield(self.adopted(fd)),
            Next::Stop => {
                self.drain_backlog();
                Step::Again
            }
        }
    }

    /// Draining the backlog: what is already there, then the socket closes (adoptions may
    /// follow).
    async fn drain_one(&mut self) -> Step<S> {
        // Handed over before the stop: served here, not left behind.
        let inbox = self.shutdown.inbox();
        if let Some(fd) = self
            .adopt
            .as_ref()
            .filter(|_| inbox.in_use())
            .and_then(|a| inbox.take(a.addr))
        {
            return Step::Yield(self.adopted(fd));
        }
        let Phase::DrainingBacklog { listener, .. } = &self.phase else {
            return Step::Again;
        };
        let poll_accept = self.poll_accept;
        // Only what is already there: never wait.
        match future::poll_once(future::poll_fn(|cx| poll_accept(listener, cx))).await {
            Some(result) => self.on_accepted(result).await,
            None => {
                if let Phase::DrainingBacklog { guard, .. } =
                    std::mem::replace(&mut self.phase, Phase::Closed)
                {
                    self.phase = Phase::Adopting { _guard: guard };
                }
                Step::Again
            }
        }
    }

    /// Serving → draining the backlog.
    fn drain_backlog(&mut self) {
        if let Phase::Serving { listener, guard } =
            std::mem::replace(&mut self.phase, Phase::Closed)
        {
            self.phase = Phase::DrainingBacklog { listener, guard };
        }
    }

    /// What an accept returned: a tracked connection, or what its error calls for.
    async fn on_accepted(&mut self, result: io::Result<S>) -> Step<S> {
        let e = match result {
            Ok(io) => {
                self.backoff.reset();
                return Step::Yield(match self.shutdown.accept() {
                    Ok(conn) => Ok(Tracked::with_socket(io, conn)),
                    Err(e) => Err(io::Error::other(e)),
                });
            }
            Err(e) => e,
        };
        match AcceptError::classify(&e) {
            AcceptError::Skip => Step::Again,
            // Out of fds with the backlog half drained: what is left would wait for fds we
            // cannot promise. Close; the supervisor's next worker (sharing the socket) or
            // the client's retry takes it.
            AcceptError::Backoff if matches!(self.phase, Phase::DrainingBacklog { .. }) => {
                Step::Close
            }
            AcceptError::Backoff => {
                let delay = self.backoff.next_delay();
                let sleep = self.shutdown.sleep(delay);
                future::or(sleep, self.shutdown.stop_accepting()).await;
                // Shutdown began during (or before) the backoff: go straight to the
                // backlog drain. Looping back to the racing accept would spin — accept
                // fails at once while out of fds, so the stop branch never wins, the task
                // never yields, and the drain never ends.
                if self.shutdown.is_stopping_accepts() {
                    self.drain_backlog();
                }
                Step::Again
            }
            AcceptError::Fatal => Step::Fail(e),
        }
    }

    /// Closes the listener, then tells the lifecycle this listener is done.
    fn close(&mut self) {
        if let Some(adopt) = self.adopt.take() {
            self.shutdown.inbox().unclaim(adopt.addr);
        }
        self.phase = Phase::Closed;
    }
}

impl<L, S> Drop for TrackedListener<L, S> {
    fn drop(&mut self) {
        if let Some(adopt) = self.adopt.take() {
            self.shutdown.inbox().unclaim(adopt.addr);
        }
    }
}
