//! Go's `net/http` shutdown behaviour, restated as lifecycle scenarios. Each test names the
//! Go test it follows.

use core::time::Duration;

use lameduck_core::{
    Action, CloseReason, Config, ConnId, ConnState, IdlePolicy, Instant, Lifecycle, Phase,
};

const NS: Duration = Duration::from_nanos(1);

fn at(d: Duration) -> Instant {
    Instant::from_duration(d)
}

fn drain_actions(lc: &mut Lifecycle) -> Vec<Action> {
    core::iter::from_fn(|| lc.poll_action()).collect()
}

/// Go's behaviour: idle connections are closed at once when shutdown begins.
fn go_config() -> Config {
    Config::default()
        .with_idle_policy(IdlePolicy::CloseImmediately)
        .with_deadline(None)
}

/// Records the state after every event, like a `Server.ConnState` hook.
struct Recorder {
    lc: Lifecycle,
    t: Instant,
    seen: Vec<(ConnId, ConnState)>,
}

impl Recorder {
    fn new() -> Self {
        Recorder {
            lc: Lifecycle::new(go_config()),
            t: Instant::ZERO,
            seen: Vec::new(),
        }
    }
    fn tick(&mut self) -> Instant {
        self.t = self.t + Duration::from_millis(1);
        self.t
    }
    fn record(&mut self, id: ConnId) {
        let state = self.lc.state(id).unwrap();
        self.seen.push((id, state));
    }
    fn accept(&mut self) -> ConnId {
        let now = self.tick();
        let id = self.lc.accept(now).unwrap();
        self.record(id);
        id
    }
    fn start(&mut self, id: ConnId) {
        let now = self.tick();
        self.lc.request_started(id, now).unwrap();
        self.record(id);
    }
    fn finish(&mut self, id: ConnId) {
        let now = self.tick();
        self.lc.request_finished(id, now).unwrap();
        self.record(id);
    }
    fn upgrade(&mut self, id: ConnId) {
        let now = self.tick();
        self.lc.upgraded(id, now).unwrap();
        self.record(id);
    }
    fn close(&mut self, id: ConnId) {
        let now = self.tick();
        self.lc.closed(id, now).unwrap();
        self.record(id);
    }
    fn states_of(&self, id: ConnId) -> Vec<ConnState> {
        self.seen
            .iter()
            .filter(|(i, _)| *i == id)
            .map(|(_, s)| *s)
            .collect()
    }
}

/// TestServerConnState: the exact state sequences of Go's test, with Hijacked read as
/// Upgraded (which stays tracked until it closes).
#[test]
fn server_conn_state_sequences() {
    use ConnState::*;
    let mut r = Recorder::new();

    // Two keep-alive requests, then the client closes.
    let keep_alive = r.accept();
    r.start(keep_alive);
    r.finish(keep_alive);
    r.start(keep_alive);
    r.close(keep_alive);

    // The handler hijacks the connection.
    let hijacked = r.accept();
    r.start(hijacked);
    r.upgrade(hijacked);
    r.close(hijacked);

    // The client connects and closes without sending.
    let silent = r.accept();
    r.close(silent);

    // The handler panics: the connection closes mid-request.
    let panicked = r.accept();
    r.start(panicked);
    r.close(panicked);

    // One request, then the idle connection is closed.
    let idle_closed = r.accept();
    r.start(idle_closed);
    r.finish(idle_closed);
    r.close(idle_closed);

    assert_eq!(r.states_of(keep_alive), [New, Active, Idle, Active, Closed]);
    assert_eq!(r.states_of(hijacked), [New, Active, Upgraded, Closed]);
    assert_eq!(r.states_of(silent), [New, Closed]);
    assert_eq!(r.states_of(panicked), [New, Active, Closed]);
    assert_eq!(r.states_of(idle_closed), [New, Active, Idle, Closed]);
    assert_eq!(r.lc.counts().total(), 0);
    // No shutdown happened: the lifecycle never asked for anything.
    assert_eq!(drain_actions(&mut r.lc), []);
}

/// TestServerShutdownStateNew: a connection that never sends holds shutdown open for
/// `stale_new` (5 s) and no longer. At 5 s − 1 ns it is neither closed nor counted as idle.
#[test]
fn shutdown_closes_a_silent_new_connection_after_five_seconds() {
    let mut lc = Lifecycle::new(go_config());
    lc.listener_opened().unwrap();
    let accepted = Duration::from_millis(250);
    let silent = lc.accept(at(accepted)).unwrap();
    lc.begin_shutdown(at(Duration::from_secs(1))).unwrap();
    assert_eq!(
        drain_actions(&mut lc),
        [Action::StopAccepting, Action::FinishThenClose(silent)]
    );
    lc.listener_closed(at(Duration::from_secs(1))).unwrap();

    let stale_at = accepted + Duration::from_secs(5);
    assert_eq!(lc.poll_timeout(), Some(at(stale_at)));

    lc.handle_timeout(at(stale_at - NS));
    assert_eq!(drain_actions(&mut lc), []);
    assert_eq!(lc.state(silent), Ok(ConnState::New));
    assert_eq!((lc.counts().new, lc.counts().idle), (1, 0));
    assert_eq!(lc.phase(), Phase::Draining);

    lc.handle_timeout(at(stale_at));
    assert_eq!(
        drain_actions(&mut lc),
        [Action::Close(silent, CloseReason::Stale)]
    );
    lc.closed(silent, at(stale_at)).unwrap();
    assert_eq!(drain_actions(&mut lc), [Action::Drained]);
    let report = lc.report().unwrap();
    assert_eq!(report.closed_stale, 1);
    assert!(report.is_clean());
}

/// The other half of golang/go#22682: a New connection whose request arrives before it goes
/// stale is served, not closed.
#[test]
fn a_new_connection_that_sends_before_going_stale_is_served() {
    let mut lc = Lifecycle::new(go_config());
    lc.listener_opened().unwrap();
    let slow = lc.accept(Instant::ZERO).unwrap();
    lc.begin_shutdown(Instant::ZERO).unwrap();
    lc.listener_closed(Instant::ZERO).unwrap();
    drain_actions(&mut lc);
    let first_byte = at(Duration::from_secs(5) - NS);
    lc.request_started(slow, first_byte).unwrap();
    lc.handle_timeout(at(Duration::from_secs(60)));
    assert_eq!(
        drain_actions(&mut lc),
        [],
        "an Active connection is never cut"
    );
    // Answered with `Connection: close`, then closed by the server.
    lc.request_finished(slow, at(Duration::from_secs(61)))
        .unwrap();
    lc.closed(slow, at(Duration::from_secs(61))).unwrap();
    assert_eq!(drain_actions(&mut lc), [Action::Drained]);
}

/// TestServerShutdown: shutdown with one request in flight waits for it, then completes —
/// and completes at the instant the connection closes, with no polling interval.
#[test]
fn shutdown_waits_for_the_in_flight_request() {
    let mut lc = Lifecycle::new(go_config());
    lc.listener_opened().unwrap();
    let conn = lc.accept(Instant::ZERO).unwrap();
    lc.request_started(conn, Instant::ZERO).unwrap();
    lc.begin_shutdown(at(Duration::from_millis(10))).unwrap();
    assert_eq!(
        drain_actions(&mut lc),
        [Action::StopAccepting, Action::FinishThenClose(conn)]
    );
    lc.listener_closed(at(Duration::from_millis(10))).unwrap();
    assert_eq!(
        lc.poll_timeout(),
        None,
        "nothing to wake for: only the request ends this"
    );

    lc.request_finished(conn, at(Duration::from_millis(500)))
        .unwrap();
    assert_eq!(lc.phase(), Phase::Draining);
    let closed_at = at(Duration::from_millis(501));
    lc.closed(conn, closed_at).unwrap();
    assert_eq!(lc.phase(), Phase::Drained);
    assert_eq!(drain_actions(&mut lc), [Action::Drained]);
    assert_eq!(lc.report().unwrap().drained_at, Some(closed_at));
}

/// Shutdown with nothing open completes at once.
#[test]
fn shutdown_with_nothing_open_completes_at_once() {
    let mut lc = Lifecycle::new(go_config());
    lc.listener_opened().unwrap();
    lc.begin_shutdown(Instant::ZERO).unwrap();
    assert_eq!(drain_actions(&mut lc), [Action::StopAccepting]);
    lc.listener_closed(Instant::ZERO).unwrap();
    assert_eq!(drain_actions(&mut lc), [Action::Drained]);
    assert_eq!(lc.report().unwrap().drained_at, Some(Instant::ZERO));
}

/// Go closes idle connections when Shutdown begins (closeIdleConns); so does
/// `IdlePolicy::CloseImmediately`, without first telling them to finish.
#[test]
fn shutdown_closes_idle_connections_at_once_under_close_immediately() {
    let mut lc = Lifecycle::new(go_config());
    let idle = lc.accept(Instant::ZERO).unwrap();
    lc.request_started(idle, Instant::ZERO).unwrap();
    lc.request_finished(idle, Instant::ZERO).unwrap();
    lc.begin_shutdown(Instant::ZERO).unwrap();
    assert_eq!(
        drain_actions(&mut lc),
        [
            Action::StopAccepting,
            Action::Close(idle, CloseReason::Idle)
        ]
    );
}
