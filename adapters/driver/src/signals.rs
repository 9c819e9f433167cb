//! The signal policy: which signals drain, which cut, on any runtime. The signals arrive as
//! bytes on a socket from `lameduck-os` ([`signal::subscribe`]), which loses none, not even
//! one sent while the handler is being installed.

use std::io;

use lameduck_os::signal::{self, Signal};

use crate::runtime::SignalHandler;
use crate::{Runtime, Shutdown};

/// What a signal does, for a signal that `forces` or not: it begins the graceful shutdown;
/// a forcing signal that arrives once shutdown has begun cuts every connection.
///
/// Supervisors repeat SIGTERM: Server::Starter sends it again to every old worker, draining
/// or not, on each restart. So a repeated SIGTERM must not cut — only the deadline bounds a
/// drain it began — while an operator's second Ctrl-C (SIGINT) does.
pub fn on_signal(shutdown: &Shutdown, forces: bool) {
    if !shutdown.begin() && forces {
        shutdown.force_close();
    }
}

impl Shutdown {
    /// SIGTERM, SIGINT and SIGHUP begin the drain; SIGINT while draining (a second Ctrl-C)
    /// cuts every connection at once ([`Shutdown::force_close`]). The handling task is
    /// spawned on this handle's runtime.
    ///
    /// A repeated SIGTERM does not cut: supervisors such as Server::Starter send it again to
    /// draining workers on every restart, and the [deadline](lameduck_core::Config::deadline)
    /// bounds the drain. SIGHUP drains rather than doing nothing or dying: its default action
    /// would kill the process mid-request (a closed terminal, or an operator expecting a
    /// reload), and lameduck has no reload — a server is restarted by starting a new one
    /// beside it (or by [`restart`](crate::restart), which takes SIGHUP for itself: use
    /// [`drain_on`](Shutdown::drain_on) with SIGTERM and SIGINT then).
    ///
    /// Returns once the handlers are installed: every signal from then on is handled, and one
    /// that arrives while they are being installed is never lost (see
    /// [`signal::subscribe`]). Fails when there is no runtime to spawn on.
    pub fn drain_on_signals(&self) -> io::Result<()> {
        self.drain_on(&[Signal::TERM, Signal::INT, Signal::HUP], &[Signal::INT])
    }

    /// Each of `drain` begins the drain; one of `force` received while draining cuts every
    /// connection (a signal in `force` should also be in `drain`). See
    /// [`drain_on_signals`](Shutdown::drain_on_signals).
    pub fn drain_on(&self, drain: &[Signal], force: &[Signal]) -> io::Result<()> {
        let shutdown = self.clone();
        let force = force.to_vec();
        (self.timers().watch_signals)(
            drain,
            Box::new(move |signal| {
                on_signal(&shutdown, force.contains(&signal));
                true
            }),
        )
    }
}

/// [`Timers::watch_signals`](crate::Timers::watch_signals) on runtime `R`: subscribes, then
/// spawns the task that reads the signal socket.
pub(crate) fn watch_signals<R: Runtime>(
    signals: &[Signal],
    mut handler: SignalHandler,
) -> io::Result<()> {
    let (socket, subscription) = signal::subscribe(signals)?;
    let socket = R::unix_stream(socket)?;
    crate::runtime::spawn::<R>(Box::pin(async move {
        let _subscription = subscription;
        let mut received = [0u8; 64];
        // The write end lives in `subscription`: the socket ends only with an error.
        while let Ok(n @ 1..) =
            futures_lite::future::poll_fn(|cx| R::poll_read_unix(&socket, cx, &mut received)).await
        {
            for &byte in &received[..n] {
                if !handler(Signal::from_raw(byte.into())) {
                    return;
                }
            }
        }
    }))
}
