//! The lifecycle's face as a trait, so that one driver runs on the [`Lifecycle`] in
//! production and on the checked lifecycle ([`fuzzing::Checked`](crate::fuzzing)) in its
//! fuzz build, unchanged.

use crate::{
    Action, Config, ConnId, ConnState, Counts, DrainReport, Error, Instant, Lifecycle, Phase,
};

/// Everything a driver calls on the lifecycle: its events, its timers, its actions and its
/// queries, with exactly [`Lifecycle`]'s meaning (see each method there).
///
/// Write a driver against `M: Machine` (or `dyn Machine`) and it runs on [`Lifecycle`] and,
/// with the `fuzzing` feature, on `fuzzing::Checked`, which checks every answer and every
/// action against a reference model. `lameduck-driver`'s shared handle is such a driver.
///
/// ```
/// use lameduck_core::{Action, Config, Instant, Lifecycle, Machine};
///
/// /// A toy driver: one connection, served and closed across a shutdown.
/// fn serve_one(lc: &mut impl Machine) -> Result<(), lameduck_core::Error> {
///     let t = Instant::from_nanos;
///     lc.listener_opened()?;
///     let id = lc.accept(t(0))?;
///     lc.request_started(id, t(1))?;
///     lc.begin_shutdown(t(2))?;
///     while let Some(action) = lc.poll_action() {
///         if action == Action::StopAccepting {
///             lc.listener_closed(t(2))?;
///         }
///     }
///     lc.settled();
///     lc.request_finished(id, t(3))?;
///     lc.closed(id, t(3))?;
///     assert_eq!(lc.poll_action(), Some(Action::Drained));
///     Ok(())
/// }
///
/// serve_one(&mut Lifecycle::new(Config::default()))?;
/// # Ok::<(), lameduck_core::Error>(())
/// ```
pub trait Machine: core::fmt::Debug {
    /// [`Lifecycle::config`].
    fn config(&self) -> &Config;
    /// [`Lifecycle::now`].
    fn now(&self) -> Instant;
    /// [`Lifecycle::phase`].
    fn phase(&self) -> Phase;
    /// [`Lifecycle::counts`].
    fn counts(&self) -> Counts;
    /// [`Lifecycle::is_accepting`].
    fn is_accepting(&self) -> bool;
    /// [`Lifecycle::state`].
    fn state(&self, id: ConnId) -> Result<ConnState, Error>;
    /// [`Lifecycle::report`].
    fn report(&self) -> Option<&DrainReport>;
    /// [`Lifecycle::accept`].
    fn accept(&mut self, now: Instant) -> Result<ConnId, Error>;
    /// [`Lifecycle::request_started`].
    fn request_started(&mut self, id: ConnId, now: Instant) -> Result<(), Error>;
    /// [`Lifecycle::request_finished`].
    fn request_finished(&mut self, id: ConnId, now: Instant) -> Result<(), Error>;
    /// [`Lifecycle::catch_up`].
    fn catch_up(&mut self, id: ConnId, reported: ConnState) -> Result<(), Error>;
    /// [`Lifecycle::upgraded`].
    fn upgraded(&mut self, id: ConnId, now: Instant) -> Result<(), Error>;
    /// [`Lifecycle::closed`].
    fn closed(&mut self, id: ConnId, now: Instant) -> Result<(), Error>;
    /// [`Lifecycle::adopt`].
    fn adopt(&mut self, now: Instant) -> Result<ConnId, Error>;
    /// [`Lifecycle::transfer_started`].
    fn transfer_started(&mut self, id: ConnId, now: Instant) -> Result<(), Error>;
    /// [`Lifecycle::handed_over`].
    fn handed_over(&mut self, id: ConnId, now: Instant) -> Result<(), Error>;
    /// [`Lifecycle::taken_back`].
    fn taken_back(&mut self, id: ConnId, now: Instant) -> Result<(), Error>;
    /// [`Lifecycle::closed_lingering`].
    fn closed_lingering(&mut self, id: ConnId, now: Instant) -> Result<(), Error>;
    /// [`Lifecycle::linger_ended`].
    fn linger_ended(&mut self, now: Instant) -> Result<(), Error>;
    /// [`Lifecycle::lingering`].
    fn lingering(&self) -> usize;
    /// [`Lifecycle::begin_shutdown`].
    fn begin_shutdown(&mut self, now: Instant) -> Result<(), Error>;
    /// [`Lifecycle::force_close`].
    fn force_close(&mut self, now: Instant);
    /// [`Lifecycle::listener_opened`].
    fn listener_opened(&mut self) -> Result<(), Error>;
    /// [`Lifecycle::listener_closed`].
    fn listener_closed(&mut self, now: Instant) -> Result<(), Error>;
    /// [`Lifecycle::listeners`].
    fn listeners(&self) -> usize;
    /// [`Lifecycle::handle_timeout`].
    fn handle_timeout(&mut self, now: Instant);
    /// [`Lifecycle::poll_timeout`].
    #[must_use = "a driver that ignores the next timeout never fires the stale-New, idle-grace and deadline timers"]
    fn poll_timeout(&self) -> Option<Instant>;
    /// [`Lifecycle::poll_action`].
    #[must_use = "an action pulled and dropped is lost: the lifecycle issues each one once"]
    fn poll_action(&mut self) -> Option<Action>;
    /// The driver has drained [`poll_action`](Machine::poll_action) (it returned `None`)
    /// and delivered what it got: nothing is owed now. Does nothing on a [`Lifecycle`]; the
    /// checked lifecycle checks that every rule that should have acted has, and that a timer
    /// is armed for every rule still to fire.
    fn settled(&self) {}
}

impl Machine for Lifecycle {
    fn config(&self) -> &Config {
        Lifecycle::config(self)
    }
    fn now(&self) -> Instant {
        Lifecycle::now(self)
    }
    fn phase(&self) -> Phase {
        Lifecycle::phase(self)
    }
    fn counts(&self) -> Counts {
        Lifecycle::counts(self)
    }
    fn is_accepting(&self) -> bool {
        Lifecycle::is_accepting(self)
    }
    fn state(&self, id: ConnId) -> Result<ConnState, Error> {
        Lifecycle::state(self, id)
    }
    fn report(&self) -> Option<&DrainReport> {
        Lifecycle::report(self)
    }
    fn accept(&mut self, now: Instant) -> Result<ConnId, Error> {
        Lifecycle::accept(self, now)
    }
    fn request_started(&mut self, id: ConnId, now: Instant) -> Result<(), Error> {
        Lifecycle::request_started(self, id, now)
    }
    fn request_finished(&mut self, id: ConnId, now: Instant) -> Result<(), Error> {
        Lifecycle::request_finished(self, id, now)
    }
    fn catch_up(&mut self, id: ConnId, reported: ConnState) -> Result<(), Error> {
        Lifecycle::catch_up(self, id, reported)
    }
    fn upgraded(&mut self, id: ConnId, now: Instant) -> Result<(), Error> {
        Lifecycle::upgraded(self, id, now)
    }
    fn closed(&mut self, id: ConnId, now: Instant) -> Result<(), Error> {
        Lifecycle::closed(self, id, now)
    }
    fn adopt(&mut self, now: Instant) -> Result<ConnId, Error> {
        Lifecycle::adopt(self, now)
    }
    fn transfer_started(&mut self, id: ConnId, now: Instant) -> Result<(), Error> {
        Lifecycle::transfer_started(self, id, now)
    }
    fn handed_over(&mut self, id: ConnId, now: Instant) -> Result<(), Error> {
        Lifecycle::handed_over(self, id, now)
    }
    fn taken_back(&mut self, id: ConnId, now: Instant) -> Result<(), Error> {
        Lifecycle::taken_back(self, id, now)
    }
    fn closed_lingering(&mut self, id: ConnId, now: Instant) -> Result<(), Error> {
        Lifecycle::closed_lingering(self, id, now)
    }
    fn linger_ended(&mut self, now: Instant) -> Result<(), Error> {
        Lifecycle::linger_ended(self, now)
    }
    fn lingering(&self) -> usize {
        Lifecycle::lingering(self)
    }
    fn begin_shutdown(&mut self, now: Instant) -> Result<(), Error> {
        Lifecycle::begin_shutdown(self, now)
    }
    fn force_close(&mut self, now: Instant) {
        Lifecycle::force_close(self, now)
    }
    fn listener_opened(&mut self) -> Result<(), Error> {
        Lifecycle::listener_opened(self)
    }
    fn listener_closed(&mut self, now: Instant) -> Result<(), Error> {
        Lifecycle::listener_closed(self, now)
    }
    fn listeners(&self) -> usize {
        Lifecycle::listeners(self)
    }
    fn handle_timeout(&mut self, now: Instant) {
        Lifecycle::handle_timeout(self, now)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Lifecycle::poll_timeout(self)
    }
    fn poll_action(&mut self) -> Option<Action> {
        Lifecycle::poll_action(self)
    }
}
