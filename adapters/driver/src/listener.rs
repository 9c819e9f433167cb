//! A listener that tracks what it accepts and drains its backlog before it closes.

use std::io;
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
    listener: Option<L>,
    guard: Option<ListenerGuard>,
    poll_accept: PollAccept<L, S>,
    shutdown: Shutdown,
    backoff: Backoff,
    draining_backlog: bool,
}

impl<L, S: std::os::fd::AsFd> TrackedListener<L, S> {
    /// Tracks `listener`, which accepts with `poll_accept`.
    pub fn new(shutdown: &Shutdown, listener: L, poll_accept: PollAccept<L, S>) -> Self {
        TrackedListener {
            listener: Some(listener),
            guard: Some(shutdown.register_listener()),
            poll_accept,
            shutdown: shutdown.clone(),
            backoff: Backoff::default(),
            draining_backlog: false,
        }
    }

    /// The listener, until it is closed.
    pub fn get_ref(&self) -> Option<&L> {
        self.listener.as_ref()
    }

    /// The listening socket, to hand to a successor
    /// ([`Restarter::start`](crate::restart::Restarter::start)); an error once the listener
    /// has stopped and closed.
    pub fn as_fd(&self) -> io::Result<std::os::fd::BorrowedFd<'_>>
    where
        L: std::os::fd::AsFd,
    {
        self.listener
            .as_ref()
            .map(|l| l.as_fd())
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "the listener is closed"))
    }

    /// The shutdown handle this listener reports to.
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// The next tracked connection; `None` once the listener has stopped and closed.
    pub async fn accept(&mut self) -> Option<io::Result<Tracked<S>>> {
        loop {
            let listener = self.listener.as_ref()?;
            let poll_accept = self.poll_accept;
            let accept = future::poll_fn(|cx| poll_accept(listener, cx));
            let result = if self.draining_backlog {
                // Only what is already there: never wait.
                match future::poll_once(accept).await {
                    Some(result) => result,
                    None => {
                        self.close();
                        return None;
                    }
                }
            } else {
                let stop = self.shutdown.stop_accepting();
                match future::or(async { Some(accept.await) }, async {
                    stop.await;
                    None
                })
                .await
                {
                    Some(result) => result,
                    None => {
                        self.draining_backlog = true;
                        continue;
                    }
                }
            };
            match result {
                Ok(io) => {
                    self.backoff.reset();
                    return Some(match self.shutdown.accept() {
                        Ok(conn) => Ok(Tracked::with_socket(io, conn)),
                        Err(e) => Err(io::Error::other(e)),
                    });
                }
                Err(e) => match AcceptError::classify(&e) {
                    AcceptError::Skip => {}
                    AcceptError::Backoff if self.draining_backlog => {
                        // Out of fds with the backlog half drained: what is left would wait
                        // for fds we cannot promise. Close; the supervisor's next worker
                        // (sharing the socket) or the client's retry takes it.
                        self.close();
                        return None;
                    }
                    AcceptError::Backoff => {
                        let delay = self.backoff.next_delay();
                        let sleep = self.shutdown.sleep(delay);
                        future::or(sleep, self.shutdown.stop_accepting()).await;
                        // Shutdown began during (or before) the backoff: go straight to the
                        // backlog drain. Looping back to the racing accept would spin —
                        // accept fails at once while out of fds, so the stop branch never
                        // wins, the task never yields, and the drain never ends.
                        if self.shutdown.is_stopping_accepts() {
                            self.draining_backlog = true;
                        }
                    }
                    AcceptError::Fatal => {
                        self.close();
                        return Some(Err(e));
                    }
                },
            }
        }
    }

    /// Closes the listener, then tells the lifecycle this listener is done.
    fn close(&mut self) {
        self.listener = None;
        self.guard = None;
    }
}
