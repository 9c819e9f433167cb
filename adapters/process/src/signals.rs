//! The signal policy: which signals drain, which cut, on any runtime.
//!
//! ```no_run
//! # fn run(shutdown: &lameduck_driver::Shutdown) -> std::io::Result<()> {
//! // SIGTERM, SIGINT and SIGHUP drain; a second Ctrl-C cuts.
//! lameduck_process::signals::drain_on_signals(shutdown)?;
//! # Ok(()) }
//! ```
//!
//! The signals arrive as bytes on a socket from `lameduck-os` (`signal::subscribe`), which
//! loses none, not even one sent while the handler is being installed; the task that reads
//! them is the runtime seam's ([`Timers::watch_signals`](lameduck_driver::Timers)). What
//! each signal does is decided here.

use std::io;

use lameduck_driver::Shutdown;
pub use lameduck_os::signal::Signal;

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

/// SIGTERM, SIGINT and SIGHUP begin the drain; SIGINT while draining (a second Ctrl-C) cuts
/// every connection at once ([`Shutdown::force_close`]). The handling task is spawned on the
/// handle's runtime.
///
/// A repeated SIGTERM does not cut: supervisors such as Server::Starter send it again to
/// draining workers on every restart, and the [deadline](lameduck_core::Config::deadline)
/// bounds the drain. SIGHUP drains rather than doing nothing or dying: its default action
/// would kill the process mid-request (a closed terminal, or an operator expecting a
/// reload), and lameduck has no reload — a server is restarted by starting a new one beside
/// it (or by [`restart`](crate::restart), which takes SIGHUP for itself: use [`drain_on`]
/// with SIGTERM and SIGINT then).
///
/// Returns once the handlers are installed: every signal from then on is handled, and one
/// that arrives while they are being installed is never lost. Fails when there is no
/// runtime to spawn on.
pub fn drain_on_signals(shutdown: &Shutdown) -> io::Result<()> {
    drain_on(
        shutdown,
        &[Signal::TERM, Signal::INT, Signal::HUP],
        &[Signal::INT],
    )
}

/// Each of `drain` begins the drain; one of `force` received while draining cuts every
/// connection (a signal in `force` should also be in `drain`). See [`drain_on_signals`].
pub fn drain_on(shutdown: &Shutdown, drain: &[Signal], force: &[Signal]) -> io::Result<()> {
    let handle = shutdown.clone();
    let force = force.to_vec();
    (shutdown.timers().watch_signals)(
        drain,
        Box::new(move |signal| {
            on_signal(&handle, force.contains(&signal));
            true
        }),
    )
}
