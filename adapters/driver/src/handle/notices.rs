//! Watching one connection's notices, as a future or from a hand-written poll loop.

use crate::sync::{Arc, Ordering};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use event_listener::EventListener;
use futures_lite::future;

use super::mailbox::{Mailbox, Notice, Shared};

/// Watches one connection's notices; see [`ConnHandle::notices`](super::ConnHandle::notices). Cheap to clone.
#[derive(Clone, Debug)]
pub struct Notices {
    pub(super) mailbox: Arc<Shared>,
}

impl Notices {
    /// The strongest notice so far, if any.
    pub fn notice(&self) -> Option<Notice> {
        self.mailbox.read()
    }

    /// Resolves with the first notice (or the current one, if any).
    pub async fn wait_notice(&self) -> Notice {
        wait_for(&self.mailbox, Notice::FinishThenClose).await
    }

    /// Resolves when the lifecycle asks to close the connection now.
    pub async fn wait_close(&self) {
        wait_for(&self.mailbox, Notice::Close).await;
    }

    /// Runs `work` unless the lifecycle asks to close the connection first, in which case
    /// `work` is dropped (cancelled) and the result is `None`. Wrap a connection's whole
    /// serving loop in it, so that a stale-New close or the deadline cuts it even in the
    /// middle of a handler.
    pub async fn unless_closed<F: Future>(&self, work: F) -> Option<F::Output> {
        future::or(async { Some(work.await) }, async {
            self.wait_close().await;
            None
        })
        .await
    }
}

impl Notices {
    /// A poll-based watcher, for a hand-written future that polls its connection's notices
    /// on every wake-up (a protocol driver's event loop).
    pub fn watch(&self) -> NoticeWatch {
        NoticeWatch {
            mailbox: self.mailbox.clone(),
            listener: None,
            listened_at: 0,
            waker: None,
        }
    }
}

/// Polls one connection's notices; see [`Notices::watch`]. Once registered with a task's
/// waker, a poll costs one atomic load: the registration is renewed only when the waker
/// changes, not on every wake-up as awaiting [`Notices::wait_notice`] inside a `select!`
/// would (measured: ~200 instructions per HTTP request).
#[derive(Debug)]
pub struct NoticeWatch {
    mailbox: Arc<Shared>,
    listener: Option<EventListener>,
    /// The notice level when `listener` was made.
    listened_at: u8,
    waker: Option<Waker>,
}

impl NoticeWatch {
    /// `Ready` with the strongest notice once it is at least `at_least`; otherwise `Pending`,
    /// and the task wakes when a notice arrives.
    #[inline]
    pub fn poll_notice(&mut self, cx: &mut Context<'_>, at_least: Notice) -> Poll<Notice> {
        // The common case, inline: no notice since this task registered.
        let level = self.mailbox.level.load(Ordering::Acquire);
        if level < at_least.level()
            && level == self.listened_at
            && self.listener.is_some()
            && self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker()))
        {
            return Poll::Pending;
        }
        self.poll_notice_slow(cx, at_least)
    }

    #[inline(never)]
    fn poll_notice_slow(&mut self, cx: &mut Context<'_>, at_least: Notice) -> Poll<Notice> {
        loop {
            let level = self.mailbox.level.load(Ordering::Acquire);
            if let Some(n) = Notice::from_level(level).filter(|n| *n >= at_least) {
                return Poll::Ready(n);
            }
            // A notice posted since the listener was made has used it up (a listener fires
            // once): make a new one.
            if self.listened_at != level {
                self.listener = None;
                self.waker = None;
            }
            let Some(listener) = self.listener.as_mut() else {
                // Listen, then check again: a notice posted in between is not missed.
                self.listener = Some(self.mailbox.event.listen());
                self.listened_at = level;
                continue;
            };
            if self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                return Poll::Pending; // the listener already holds this task's waker
            }
            match Pin::new(listener).poll(cx) {
                Poll::Ready(()) => {
                    // Fired: listen again and re-check.
                    self.listener = None;
                    self.waker = None;
                }
                Poll::Pending => {
                    self.waker = Some(cx.waker().clone());
                    return Poll::Pending;
                }
            }
        }
    }
}

pub(super) async fn wait_for(mailbox: &Mailbox, at_least: Notice) -> Notice {
    loop {
        let listener = mailbox.event.listen();
        if let Some(n) = mailbox.read().filter(|n| *n >= at_least) {
            return n;
        }
        listener.await;
    }
}
