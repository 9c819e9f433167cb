//! Every legal and illegal transition, errors that change nothing, and the shutdown phases
//! one rule at a time.

use core::time::Duration;

use lameduck_core::{
    Action, CloseReason, Config, ConnId, ConnState, Counts, Error, Event, IdlePolicy, Instant,
    Lifecycle, Phase,
};

fn ms(n: u64) -> Instant {
    Instant::from_nanos(n * 1_000_000)
}

fn drain_actions(lc: &mut Lifecycle) -> Vec<Action> {
    core::iter::from_fn(|| lc.poll_action()).collect()
}

fn config() -> Config {
    Config::default()
        .with_stale_new(Duration::from_millis(100))
        .with_idle_policy(IdlePolicy::AwaitNextRequest {
            grace: Duration::from_millis(50),
        })
        .with_deadline(Some(Duration::from_secs(1)))
}

/// A connection brought to `state` at time zero.
fn conn_in(lc: &mut Lifecycle, state: ConnState) -> ConnId {
    let id = lc.accept(ms(0)).unwrap();
    match state {
        ConnState::New => {}
        ConnState::Active => lc.request_started(id, ms(0)).unwrap(),
        ConnState::Idle => {
            lc.request_started(id, ms(0)).unwrap();
            lc.request_finished(id, ms(0)).unwrap();
        }
        ConnState::Upgraded => {
            lc.request_started(id, ms(0)).unwrap();
            lc.upgraded(id, ms(0)).unwrap();
        }
        ConnState::Closed => lc.closed(id, ms(0)).unwrap(),
    }
    id
}

const LIVE: [ConnState; 4] = [
    ConnState::New,
    ConnState::Active,
    ConnState::Idle,
    ConnState::Upgraded,
];

#[test]
fn the_transition_table() {
    use ConnState::*;
    // (event, states it is legal from, state it leads to)
    let table = [
        (Event::RequestStarted, &[New, Idle][..], Active),
        (Event::RequestFinished, &[Active][..], Idle),
        (Event::Upgraded, &[Active][..], Upgraded),
        // Its socket is offered to a successor: still Idle here, in transfer.
        (Event::TransferStarted, &[Idle][..], Idle),
        // Only a connection in transfer is held by a successor or taken back.
        (Event::HandedOver, &[][..], Closed),
        (Event::TakenBack, &[][..], Idle),
    ];
    for (event, legal_from, to) in table {
        for from in LIVE {
            let mut lc = Lifecycle::new(config());
            let id = conn_in(&mut lc, from);
            let before = lc.counts();
            let result = match event {
                Event::RequestStarted => lc.request_started(id, ms(5)),
                Event::RequestFinished => lc.request_finished(id, ms(5)),
                Event::Upgraded => lc.upgraded(id, ms(5)),
                Event::CatchUp(to) => lc.catch_up(id, to),
                Event::HandedOver => lc.handed_over(id, ms(5)),
                Event::TransferStarted => lc.transfer_started(id, ms(5)),
                Event::TakenBack => lc.taken_back(id, ms(5)),
            };
            if legal_from.contains(&from) {
                assert_eq!(result, Ok(()), "{event} from {from}");
                assert_eq!(lc.state(id), Ok(to));
                let live = usize::from(to != Closed);
                assert_eq!(lc.counts().get(to), live);
                assert_eq!(lc.counts().total(), live);
                assert_eq!(lc.now(), ms(5));
            } else {
                assert_eq!(
                    result,
                    Err(Error::InvalidTransition { id, from, event }),
                    "{event} from {from}"
                );
                assert_eq!(lc.state(id), Ok(from), "a refused event changes nothing");
                assert_eq!(lc.counts(), before);
                assert_eq!(lc.now(), ms(0), "not even the clock");
            }
        }
    }
}

/// The serving fast path's moves: every (known, reported) pair while Serving, and every
/// move refused once the shutdown has begun.
#[test]
fn the_catch_up_table() {
    use ConnState::*;
    let legal = [(New, Active), (Idle, Active), (Active, Idle), (New, Idle)];
    for from in LIVE {
        for reported in [New, Active, Idle, Upgraded, Closed] {
            let mut lc = Lifecycle::new(config());
            let id = conn_in(&mut lc, from);
            lc.handle_timeout(ms(7));
            let before = lc.counts();
            let result = lc.catch_up(id, reported);
            if from == reported {
                assert_eq!(result, Ok(()), "{from} to itself");
                assert_eq!(lc.counts(), before);
            } else if legal.contains(&(from, reported)) {
                assert_eq!(result, Ok(()), "{from} to {reported}");
                assert_eq!(lc.state(id), Ok(reported));
                assert_eq!(lc.counts().get(reported), 1);
                assert_eq!(lc.counts().total(), 1);
                assert_eq!(lc.now(), ms(7), "at the lifecycle's latest time");
            } else {
                assert_eq!(
                    result,
                    Err(Error::InvalidTransition {
                        id,
                        from,
                        event: Event::CatchUp(reported)
                    }),
                    "{from} to {reported}"
                );
                assert_eq!(lc.state(id), Ok(from), "a refused catch-up changes nothing");
                assert_eq!(lc.counts(), before);
            }

            // Once Serving is over, a move is an event, never a catch-up.
            let mut lc = Lifecycle::new(config());
            let id = conn_in(&mut lc, from);
            lc.begin_shutdown(ms(1)).unwrap();
            let before = lc.counts();
            let result = lc.catch_up(id, reported);
            if from == reported {
                assert_eq!(result, Ok(()));
            } else if legal.contains(&(from, reported)) {
                assert_eq!(
                    result,
                    Err(Error::CatchUpAfterServing(id)),
                    "{from} to {reported}"
                );
            } else {
                assert!(
                    matches!(result, Err(Error::InvalidTransition { .. })),
                    "{from} to {reported}: {result:?}"
                );
            }
            assert_eq!(lc.counts(), before, "{from} to {reported} after begin");
        }
    }
    // A closed or forged id is refused like any event.
    let mut lc = Lifecycle::new(config());
    let id = conn_in(&mut lc, Closed);
    assert_eq!(lc.catch_up(id, Active), Err(Error::Closed(id)));
    let forged = ConnId::from_parts(9, 0);
    assert_eq!(
        lc.catch_up(forged, Active),
        Err(Error::UnknownConnection(forged))
    );
}

#[test]
fn close_is_legal_from_every_live_state_and_only_once() {
    for from in LIVE {
        let mut lc = Lifecycle::new(config());
        let id = conn_in(&mut lc, from);
        assert_eq!(lc.closed(id, ms(1)), Ok(()));
        assert_eq!(lc.state(id), Ok(ConnState::Closed));
        assert_eq!(lc.counts(), Counts::default());
        assert_eq!(lc.closed(id, ms(2)), Err(Error::Closed(id)));
        assert_eq!(lc.request_started(id, ms(2)), Err(Error::Closed(id)));
        assert_eq!(lc.request_finished(id, ms(2)), Err(Error::Closed(id)));
        assert_eq!(lc.upgraded(id, ms(2)), Err(Error::Closed(id)));
        assert_eq!(lc.now(), ms(1));
    }
}

#[test]
fn a_stale_id_never_touches_the_connection_that_reuses_its_slot() {
    let mut lc = Lifecycle::new(config());
    let old = lc.accept(ms(0)).unwrap();
    lc.closed(old, ms(0)).unwrap();
    let new = lc.accept(ms(1)).unwrap();
    assert_eq!(new.slot(), old.slot(), "the slot is reused");
    assert_ne!(new, old);
    assert_eq!(lc.request_started(old, ms(2)), Err(Error::Closed(old)));
    assert_eq!(lc.closed(old, ms(2)), Err(Error::Closed(old)));
    assert_eq!(lc.state(new), Ok(ConnState::New));
    assert_eq!(lc.counts().new, 1);
}

#[test]
fn unknown_ids_are_refused() {
    let mut lc = Lifecycle::new(config());
    let real = lc.accept(ms(0)).unwrap();
    for forged in [
        ConnId::from_parts(7, 0),
        ConnId::from_parts(real.slot(), real.generation() + 1),
        ConnId::from_parts(u32::MAX, u32::MAX),
    ] {
        assert_eq!(lc.state(forged), Err(Error::UnknownConnection(forged)));
        assert_eq!(
            lc.request_started(forged, ms(1)),
            Err(Error::UnknownConnection(forged))
        );
        assert_eq!(
            lc.closed(forged, ms(1)),
            Err(Error::UnknownConnection(forged))
        );
    }
    assert_eq!(lc.counts().new, 1);
    assert_eq!(lc.now(), ms(0));
}

#[test]
fn errors_explain_themselves() {
    let id = ConnId::from_parts(3, 1);
    let msg = Error::InvalidTransition {
        id,
        from: ConnState::New,
        event: Event::RequestFinished,
    }
    .to_string();
    assert_eq!(
        msg,
        "connection #3v1 cannot take `request finished` while New"
    );
    assert!(
        Error::ShutdownAlreadyBegun
            .to_string()
            .contains("force_close")
    );
}

#[test]
fn time_going_backwards_is_clamped() {
    let mut lc = Lifecycle::new(config());
    lc.listener_opened().unwrap();
    let a = lc.accept(ms(100)).unwrap();
    lc.begin_shutdown(ms(100)).unwrap();
    drain_actions(&mut lc);
    // The clock steps back 90 ms: the lifecycle keeps the later time; nothing gets younger,
    // nothing fires early, nothing panics.
    let b = lc.accept(ms(10)).unwrap();
    assert_eq!(lc.now(), ms(100));
    lc.handle_timeout(ms(0));
    assert_eq!(
        lc.poll_timeout(),
        Some(ms(200)),
        "both went stale 100 ms after 100 ms"
    );
    lc.handle_timeout(ms(199));
    assert_eq!(drain_actions(&mut lc), [Action::FinishThenClose(b)]);
    lc.handle_timeout(ms(200));
    assert_eq!(
        drain_actions(&mut lc),
        [
            Action::Close(a, CloseReason::Stale),
            Action::Close(b, CloseReason::Stale)
        ]
    );
}

#[test]
fn a_second_begin_shutdown_is_refused_and_changes_nothing() {
    let mut lc = Lifecycle::new(config());
    lc.accept(ms(0)).unwrap();
    lc.begin_shutdown(ms(1)).unwrap();
    let report = *lc.report().unwrap();
    assert_eq!(lc.begin_shutdown(ms(2)), Err(Error::ShutdownAlreadyBegun));
    assert_eq!(*lc.report().unwrap(), report);
    assert_eq!(lc.now(), ms(1));
}

#[test]
fn nothing_is_asked_and_no_timer_is_armed_while_serving() {
    let mut lc = Lifecycle::new(config());
    for state in LIVE {
        conn_in(&mut lc, state);
    }
    lc.handle_timeout(ms(1_000_000));
    assert_eq!(lc.poll_timeout(), None);
    assert_eq!(drain_actions(&mut lc), []);
    assert_eq!(lc.phase(), Phase::Serving);
    assert!(lc.report().is_none());
}

#[test]
fn draining_tells_each_connection_what_to_do() {
    let mut lc = Lifecycle::new(config());
    let new = conn_in(&mut lc, ConnState::New);
    let active = conn_in(&mut lc, ConnState::Active);
    let idle = conn_in(&mut lc, ConnState::Idle);
    let upgraded = conn_in(&mut lc, ConnState::Upgraded);
    lc.begin_shutdown(ms(10)).unwrap();
    assert_eq!(
        drain_actions(&mut lc),
        [
            Action::StopAccepting,
            Action::FinishThenClose(new),
            Action::FinishThenClose(active),
            Action::FinishThenClose(idle),
            Action::AskToLeave(upgraded),
        ]
    );
    assert_eq!(
        lc.report().unwrap().at_begin,
        Counts {
            new: 1,
            active: 1,
            idle: 1,
            upgraded: 1
        }
    );
    // Idle grace ends 50 ms after draining began, stale-New 100 ms after accept.
    assert_eq!(lc.poll_timeout(), Some(ms(60)));
}

#[test]
fn await_next_request_serves_a_request_that_arrives_during_the_grace() {
    let mut lc = Lifecycle::new(config());
    let idle = conn_in(&mut lc, ConnState::Idle);
    lc.begin_shutdown(ms(10)).unwrap();
    assert_eq!(
        drain_actions(&mut lc),
        [Action::StopAccepting, Action::FinishThenClose(idle)]
    );
    // The client's next request was already on its way.
    lc.request_started(idle, ms(59)).unwrap();
    lc.handle_timeout(ms(60));
    assert_eq!(
        drain_actions(&mut lc),
        [],
        "Active, so not closed at the grace"
    );
    // Answered with `Connection: close`; the server closes it.
    lc.request_finished(idle, ms(70)).unwrap();
    lc.closed(idle, ms(70)).unwrap();
    assert_eq!(drain_actions(&mut lc), [Action::Drained]);
    let r = lc.report().unwrap();
    assert_eq!((r.finished, r.closed_idle), (1, 0));
}

/// The notice came after the response had promised keep-alive: the connection is Idle, not
/// closed under the client's next request; the grace applies and the next request is the
/// one answered with `Connection: close`.
#[test]
fn a_response_that_could_not_say_close_leaves_the_connection_idle() {
    let mut lc = Lifecycle::new(config());
    let conn = conn_in(&mut lc, ConnState::Active);
    lc.begin_shutdown(ms(10)).unwrap();
    assert_eq!(
        drain_actions(&mut lc),
        [Action::StopAccepting, Action::FinishThenClose(conn)]
    );
    lc.request_finished(conn, ms(20)).unwrap();
    assert_eq!(
        drain_actions(&mut lc),
        [],
        "no close racing the next request"
    );
    lc.handle_timeout(ms(69));
    assert_eq!(drain_actions(&mut lc), []);
    lc.handle_timeout(ms(70));
    assert_eq!(
        drain_actions(&mut lc),
        [Action::Close(conn, CloseReason::Idle)],
        "the grace counts from when it went Idle"
    );
}

#[test]
fn await_next_request_closes_a_silent_idle_connection_after_the_grace() {
    let mut lc = Lifecycle::new(config());
    let idle = conn_in(&mut lc, ConnState::Idle);
    lc.begin_shutdown(ms(10)).unwrap();
    drain_actions(&mut lc);
    lc.handle_timeout(ms(59));
    assert_eq!(drain_actions(&mut lc), []);
    lc.handle_timeout(ms(60));
    assert_eq!(
        drain_actions(&mut lc),
        [Action::Close(idle, CloseReason::Idle)]
    );
}

#[test]
fn a_close_decided_but_not_yet_pulled_yields_to_a_request() {
    let mut lc = Lifecycle::new(config().with_idle_policy(IdlePolicy::CloseImmediately));
    let idle = conn_in(&mut lc, ConnState::Idle);
    lc.begin_shutdown(ms(10)).unwrap();
    assert_eq!(lc.poll_action(), Some(Action::StopAccepting));
    // The close of the idle connection is decided; before the driver pulls it, the
    // client's request arrives. The driver is then told to finish, not to close.
    lc.request_started(idle, ms(11)).unwrap();
    assert_eq!(drain_actions(&mut lc), [Action::FinishThenClose(idle)]);
}

#[test]
fn an_accept_that_races_shutdown_is_tracked_and_served() {
    let mut lc = Lifecycle::new(config());
    lc.listener_opened().unwrap();
    lc.begin_shutdown(ms(0)).unwrap();
    assert_eq!(lc.poll_action(), Some(Action::StopAccepting));
    // The driver drains its backlog before closing the listener.
    let late = lc.accept(ms(1)).unwrap();
    lc.listener_closed(ms(1)).unwrap();
    assert_eq!(drain_actions(&mut lc), [Action::FinishThenClose(late)]);
    assert_eq!(
        lc.phase(),
        Phase::Draining,
        "not drained while a connection is open"
    );
    lc.request_started(late, ms(2)).unwrap();
    lc.request_finished(late, ms(3)).unwrap();
    // The driver closed it on its own after the `Connection: close` response, before
    // pulling the Close: no Close is issued for a closed connection.
    lc.closed(late, ms(3)).unwrap();
    assert_eq!(drain_actions(&mut lc), [Action::Drained]);
    let r = lc.report().unwrap();
    assert_eq!((r.accepted_during, r.finished), (1, 1));
}

#[test]
fn drained_waits_for_the_listener_to_stop() {
    let mut lc = Lifecycle::new(config());
    lc.listener_opened().unwrap();
    lc.begin_shutdown(ms(0)).unwrap();
    assert_eq!(drain_actions(&mut lc), [Action::StopAccepting]);
    assert_eq!(
        lc.phase(),
        Phase::Draining,
        "the backlog may still hold connections"
    );
    lc.listener_closed(ms(1)).unwrap();
    assert_eq!(drain_actions(&mut lc), [Action::Drained]);
    assert_eq!(lc.accept(ms(2)), Err(Error::NotAccepting));
    assert_eq!(drain_actions(&mut lc), []);
}

#[test]
fn the_lame_duck_window_keeps_accepting_and_asks_everyone_to_leave() {
    let mut lc = Lifecycle::new(config().with_lame_duck(Duration::from_millis(30)));
    let idle = conn_in(&mut lc, ConnState::Idle);
    lc.begin_shutdown(ms(0)).unwrap();
    assert_eq!(lc.phase(), Phase::LameDuck);
    assert_eq!(drain_actions(&mut lc), [Action::FinishThenClose(idle)]);
    let fresh = lc.accept(ms(10)).unwrap();
    assert_eq!(drain_actions(&mut lc), [Action::FinishThenClose(fresh)]);
    assert_eq!(lc.poll_timeout(), Some(ms(30)));
    lc.handle_timeout(ms(30));
    assert_eq!(lc.phase(), Phase::Draining);
    assert_eq!(drain_actions(&mut lc), [Action::StopAccepting]);
    assert_eq!(lc.report().unwrap().draining_at, Some(ms(30)));
    // The idle grace counts from draining, not from the lame-duck start.
    assert_eq!(lc.poll_timeout(), Some(ms(80)));
}

#[test]
fn the_deadline_cuts_what_is_left_and_the_report_says_so() {
    let mut lc = Lifecycle::new(config());
    lc.listener_opened().unwrap();
    let active = conn_in(&mut lc, ConnState::Active);
    let upgraded = conn_in(&mut lc, ConnState::Upgraded);
    lc.begin_shutdown(ms(0)).unwrap();
    lc.listener_closed(ms(0)).unwrap();
    drain_actions(&mut lc);
    assert_eq!(lc.poll_timeout(), Some(ms(1000)));
    lc.handle_timeout(ms(999));
    assert_eq!(drain_actions(&mut lc), []);
    lc.handle_timeout(ms(1000));
    assert_eq!(
        drain_actions(&mut lc),
        [
            Action::Close(active, CloseReason::Deadline),
            Action::Close(upgraded, CloseReason::Deadline)
        ]
    );
    lc.closed(active, ms(1001)).unwrap();
    lc.closed(upgraded, ms(1001)).unwrap();
    assert_eq!(drain_actions(&mut lc), [Action::Drained]);
    let r = lc.report().unwrap();
    assert!(r.deadline_hit);
    assert!(!r.is_clean());
    assert_eq!(
        r.cut,
        Counts {
            active: 1,
            upgraded: 1,
            ..Counts::default()
        }
    );
    assert_eq!(r.total(), r.accounted());
}

#[test]
fn force_close_cuts_everything_now() {
    let mut lc = Lifecycle::new(config().with_deadline(None));
    let active = conn_in(&mut lc, ConnState::Active);
    lc.force_close(ms(5));
    assert_eq!(
        drain_actions(&mut lc),
        [
            Action::StopAccepting,
            Action::Close(active, CloseReason::Deadline)
        ]
    );
    assert!(lc.report().unwrap().deadline_hit);
}

#[test]
fn every_accepted_connection_reaches_closed_once_across_slot_reuse() {
    let mut lc = Lifecycle::with_capacity(config(), 4);
    let mut closed = 0;
    for round in 0..1000u64 {
        let a = lc.accept(ms(round)).unwrap();
        let b = lc.accept(ms(round)).unwrap();
        lc.request_started(a, ms(round)).unwrap();
        lc.closed(b, ms(round)).unwrap();
        lc.closed(a, ms(round)).unwrap();
        closed += 2;
        assert_eq!(lc.closed(a, ms(round)), Err(Error::Closed(a)));
    }
    assert_eq!(closed, 2000);
    assert_eq!(lc.counts(), Counts::default());
}

#[test]
fn a_lingering_close_holds_the_drain_until_it_ends() {
    let mut lc = Lifecycle::new(config());
    lc.listener_opened().unwrap();
    let a = conn_in(&mut lc, ConnState::Active);
    lc.begin_shutdown(ms(1)).unwrap();
    assert_eq!(
        drain_actions(&mut lc),
        [Action::StopAccepting, Action::FinishThenClose(a)]
    );
    lc.listener_closed(ms(1)).unwrap();
    lc.request_finished(a, ms(2)).unwrap();
    // The response went out with `Connection: close`; the socket lingers.
    lc.closed_lingering(a, ms(2)).unwrap();
    assert_eq!(lc.state(a), Ok(ConnState::Closed));
    assert_eq!((lc.counts().total(), lc.lingering()), (0, 1));
    assert_eq!(drain_actions(&mut lc), []);
    assert_eq!(
        lc.phase(),
        Phase::Draining,
        "not drained while a close lingers"
    );
    assert_eq!(lc.report().unwrap().drained_at, None);
    // The peer closed (or the driver's linger timer ran out).
    lc.linger_ended(ms(7)).unwrap();
    assert_eq!(drain_actions(&mut lc), [Action::Drained]);
    let report = lc.report().unwrap();
    assert_eq!((report.finished, report.drained_at), (1, Some(ms(7))));
    // Nothing more lingers: refused, and nothing changes.
    assert_eq!(lc.linger_ended(ms(8)), Err(Error::NoLingeringClose));
    assert_eq!(lc.now(), ms(7));
}

#[test]
fn a_lingering_close_is_a_close_once() {
    let mut lc = Lifecycle::new(config());
    let a = conn_in(&mut lc, ConnState::Idle);
    lc.closed_lingering(a, ms(1)).unwrap();
    assert_eq!(lc.closed(a, ms(2)), Err(Error::Closed(a)));
    assert_eq!(lc.closed_lingering(a, ms(2)), Err(Error::Closed(a)));
    assert_eq!(lc.lingering(), 1);
    lc.linger_ended(ms(3)).unwrap();
    assert_eq!(lc.lingering(), 0);
}

/// Listener accounting: accepting outlives `StopAccepting` until the last registered
/// listener has closed (each may drain its backlog first); with none open it ends when
/// `StopAccepting` is issued. There is no other way for accepting to end.
#[test]
fn registered_listeners_keep_accepting_until_the_last_one_closes() {
    let mut lc = Lifecycle::new(config());
    lc.listener_opened().unwrap();
    lc.listener_opened().unwrap();
    assert_eq!(lc.listeners(), 2);
    lc.begin_shutdown(ms(0)).unwrap();
    assert_eq!(drain_actions(&mut lc), [Action::StopAccepting]);
    assert!(lc.is_accepting(), "two backlogs still to drain");
    lc.listener_closed(ms(1)).unwrap();
    let late = lc.accept(ms(2)).unwrap();
    assert!(lc.is_accepting());
    lc.closed(late, ms(3)).unwrap();
    assert_eq!(lc.phase(), Phase::Draining, "a listener is still open");
    lc.listener_closed(ms(4)).unwrap();
    assert!(!lc.is_accepting());
    assert_eq!(lc.accept(ms(5)), Err(Error::NotAccepting));
    assert_eq!(lc.listener_opened(), Err(Error::NotAccepting));
    assert_eq!(lc.listener_closed(ms(5)), Err(Error::NoOpenListener));
    assert_eq!(drain_actions(&mut lc), [Action::Drained]);
    assert_eq!(lc.report().unwrap().drained_at, Some(ms(4)));

    // A listener closed while Serving does not end accepting; none open at the issue does.
    let mut lc = Lifecycle::new(config());
    lc.listener_opened().unwrap();
    lc.listener_closed(ms(1)).unwrap();
    assert!(lc.is_accepting());
    lc.begin_shutdown(ms(2)).unwrap();
    assert_eq!(
        drain_actions(&mut lc),
        [Action::StopAccepting, Action::Drained]
    );

    // None ever opened (a driver that accepts by other means): the same.
    let mut lc = Lifecycle::new(config());
    lc.begin_shutdown(ms(0)).unwrap();
    assert_eq!(
        drain_actions(&mut lc),
        [Action::StopAccepting, Action::Drained]
    );
    assert_eq!(lc.listener_closed(ms(1)), Err(Error::NoOpenListener));
}

/// With a spread, each connection live at the shutdown's begin is asked at its own moment
/// (`Config::spread_offset`), the timer asks for the next one, and the report says when the
/// last went out; one accepted during the window is asked at once.
#[test]
fn spread_asks_each_connection_at_its_own_moment() {
    let config = config()
        .with_spread(Duration::from_millis(400))
        .with_stale_new(Duration::from_secs(10));
    let mut lc = Lifecycle::new(config);
    let ws = (0..8)
        .map(|_| conn_in(&mut lc, ConnState::Upgraded))
        .collect::<Vec<_>>();
    // A listener still draining its backlog: accepting goes on during the window.
    lc.listener_opened().unwrap();
    lc.begin_shutdown(ms(0)).unwrap();
    let mut asked = vec![];
    for a in drain_actions(&mut lc) {
        if let Action::AskToLeave(id) = a {
            asked.push((id, Duration::ZERO));
        }
    }
    // Slot 0 sits at the window's start; the rest follow, one timer at a time.
    assert_eq!(asked.len(), 1, "{asked:?}");
    let late = lc.accept(ms(1)).unwrap();
    let now = drain_actions(&mut lc);
    assert!(now.contains(&Action::FinishThenClose(late)), "{now:?}");
    while let Some(t) = lc.poll_timeout() {
        if t >= ms(1000) {
            break;
        }
        lc.handle_timeout(t);
        for a in drain_actions(&mut lc) {
            if let Action::AskToLeave(id) = a {
                asked.push((id, t.saturating_duration_since(ms(0))));
            }
        }
    }
    assert_eq!(asked.len(), ws.len());
    let mut moments = vec![];
    for (id, at) in &asked {
        assert_eq!(*at, config.spread_offset(*id), "{id:?}");
        assert!(*at < Duration::from_millis(400));
        moments.push(*at);
    }
    moments.sort();
    moments.dedup();
    assert_eq!(
        moments.len(),
        ws.len(),
        "eight distinct moments: {moments:?}"
    );
    let last = *moments.last().unwrap();
    assert_eq!(lc.report().unwrap().last_ask_at, Some(Instant::ZERO + last));
}

/// Spread composes with the idle grace: an Idle connection is not closed before its ask
/// plus the grace, and the window is capped by the deadline (no ask at or after it).
#[test]
fn spread_idle_grace_runs_from_the_ask_and_the_window_ends_before_the_deadline() {
    let config = config()
        .with_spread(Duration::from_secs(5)) // longer than the 1 s deadline
        .with_stale_new(Duration::from_secs(10));
    let mut lc = Lifecycle::new(config);
    let ids: Vec<ConnId> = (0..4).map(|_| conn_in(&mut lc, ConnState::Idle)).collect();
    lc.begin_shutdown(ms(0)).unwrap();
    let mut closed_at = vec![];
    let mut asked_at = vec![];
    let mut now = ms(0);
    loop {
        for a in drain_actions(&mut lc) {
            match a {
                Action::FinishThenClose(id) => asked_at.push((id, now)),
                Action::Close(id, reason) => {
                    assert_eq!(reason, CloseReason::Idle);
                    closed_at.push((id, now));
                    lc.closed(id, now).unwrap();
                }
                _ => {}
            }
        }
        let Some(t) = lc.poll_timeout() else { break };
        now = t;
        lc.handle_timeout(t);
    }
    assert_eq!(asked_at.len(), ids.len());
    for (id, at) in &asked_at {
        assert!(*at < ms(1000), "asked at the deadline or after: {at:?}");
        let closed = closed_at.iter().find(|(c, _)| c == id).unwrap().1;
        assert_eq!(closed, *at + Duration::from_millis(50), "{id:?}");
    }
    assert!(lc.report().unwrap().is_clean());
}

/// A connection that closes before its moment in the spread window leaves no timer behind:
/// `poll_timeout` asks for the next live connection's moment, never a wake-up that does
/// nothing (the fuzz target found a run that spent its rounds on such wake-ups).
#[test]
fn spread_asks_of_closed_connections_ask_for_no_wake_up() {
    let config = Config::default()
        .with_spread(Duration::from_secs(10))
        .with_deadline(None)
        .with_stale_new(Duration::from_secs(60));
    let mut lc = Lifecycle::new(config);
    let ids: Vec<ConnId> = (0..10)
        .map(|_| conn_in(&mut lc, ConnState::Active))
        .collect();
    lc.begin_shutdown(ms(0)).unwrap();
    drain_actions(&mut lc);
    // Every connection but the one with the latest moment closes.
    let last = *ids
        .iter()
        .max_by_key(|id| config.spread_offset(**id))
        .unwrap();
    for id in ids.iter().filter(|id| **id != last) {
        lc.closed(*id, ms(1)).unwrap();
    }
    assert_eq!(
        lc.poll_timeout(),
        Some(Instant::ZERO + config.spread_offset(last))
    );
}

/// An adopted connection (handed over by a predecessor) is Idle, never stale-New: the idle
/// policy ends it, after its ask. One told to close cannot be handed over, and one handed
/// over during a shutdown is counted as such; the report still adds up.
#[test]
fn adopted_connections_are_idle_and_handed_over_ones_are_counted() {
    let mut lc = Lifecycle::new(config());
    lc.listener_opened().unwrap();
    let adopted = lc.adopt(ms(0)).unwrap();
    assert_eq!(lc.state(adopted), Ok(ConnState::Idle));
    let idle = conn_in(&mut lc, ConnState::Idle);
    let told = conn_in(&mut lc, ConnState::Idle);
    lc.begin_shutdown(ms(10)).unwrap();
    drain_actions(&mut lc);
    lc.transfer_started(idle, ms(11)).unwrap();
    lc.handed_over(idle, ms(11)).unwrap();
    // The grace (50 ms) runs out for the two left: each is told to close.
    lc.handle_timeout(ms(60));
    let closes = drain_actions(&mut lc);
    assert!(
        closes.contains(&Action::Close(told, CloseReason::Idle)),
        "{closes:?}"
    );
    assert!(
        closes.contains(&Action::Close(adopted, CloseReason::Idle)),
        "{closes:?}"
    );
    assert_eq!(
        lc.transfer_started(told, ms(60)),
        Err(Error::InvalidTransition {
            id: told,
            from: ConnState::Idle,
            event: Event::TransferStarted
        })
    );
    lc.closed(told, ms(60)).unwrap();
    lc.closed(adopted, ms(60)).unwrap();
    lc.listener_closed(ms(60)).unwrap();
    assert_eq!(lc.phase(), Phase::Drained);
    let report = lc.report().unwrap();
    assert_eq!(
        (report.handed_over, report.closed_idle, report.closed_stale),
        (1, 2, 0)
    );
    assert_eq!(report.total(), report.accounted());
}

/// The same when the closed connection's moment is not the next one when it closes: once
/// the asks before it have gone out, `poll_timeout` skips it (the fuzz target found a run
/// that spent its rounds on such a wake-up).
#[test]
fn spread_asks_of_connections_closed_behind_the_front_ask_for_no_wake_up() {
    let config = Config::default()
        .with_spread(Duration::from_secs(10))
        .with_deadline(None)
        .with_stale_new(Duration::from_secs(60));
    let mut lc = Lifecycle::new(config);
    let ids: Vec<ConnId> = (0..10)
        .map(|_| conn_in(&mut lc, ConnState::Active))
        .collect();
    let mut by_moment = ids.clone();
    by_moment.sort_by_key(|id| config.spread_offset(*id));
    lc.begin_shutdown(ms(0)).unwrap();
    drain_actions(&mut lc);
    // The second and third to be asked close while the first's ask is still to come.
    let (first, second, third, fourth) = (by_moment[1], by_moment[2], by_moment[3], by_moment[4]);
    let at = |id: ConnId| Instant::ZERO + config.spread_offset(id);
    let before = Instant::ZERO + (config.spread_offset(first) - Duration::from_nanos(1));
    lc.closed(second, before).unwrap();
    lc.closed(third, before).unwrap();
    assert_eq!(lc.poll_timeout(), Some(at(first)));
    lc.handle_timeout(at(first));
    assert!(drain_actions(&mut lc).contains(&Action::FinishThenClose(first)));
    assert_eq!(lc.poll_timeout(), Some(at(fourth)));
}

/// A connection in transfer waits for the successor's answer: no idle close, no cut at the
/// deadline, no request read. Taken back, it is served here again — its grace from then,
/// and past the deadline, cut at once; held, it is counted handed over.
#[test]
fn a_connection_in_transfer_is_untouched_until_the_successor_answers() {
    let config = config().with_deadline(Some(Duration::from_millis(100)));
    let mut lc = Lifecycle::new(config);
    let held = conn_in(&mut lc, ConnState::Idle);
    let back = conn_in(&mut lc, ConnState::Idle);
    let late = conn_in(&mut lc, ConnState::Idle);
    lc.begin_shutdown(ms(10)).unwrap();
    drain_actions(&mut lc);
    for id in [held, back, late] {
        lc.transfer_started(id, ms(11)).unwrap();
    }
    assert_eq!(
        lc.request_started(back, ms(12)),
        Err(Error::InvalidTransition {
            id: back,
            from: ConnState::Idle,
            event: Event::RequestStarted
        }),
        "a socket in flight is not read"
    );
    // Past the idle grace (50 ms): nothing is closed while in transfer.
    lc.handle_timeout(ms(70));
    assert_eq!(drain_actions(&mut lc), vec![]);
    lc.handed_over(held, ms(71)).unwrap();
    lc.taken_back(back, ms(72)).unwrap();
    // Its grace runs from the take-back: not closed at 100 ms - 1, closed at 72 + 50.
    lc.handle_timeout(ms(99));
    assert_eq!(drain_actions(&mut lc), vec![]);
    // The deadline: `back` is cut, `late` (still in transfer) is not.
    lc.handle_timeout(ms(110));
    assert_eq!(
        drain_actions(&mut lc),
        vec![Action::Close(back, CloseReason::Deadline)]
    );
    lc.closed(back, ms(110)).unwrap();
    // Taken back past the deadline: cut at once.
    lc.taken_back(late, ms(120)).unwrap();
    assert_eq!(
        drain_actions(&mut lc),
        vec![Action::Close(late, CloseReason::Deadline)]
    );
    lc.closed(late, ms(120)).unwrap();
    assert_eq!(lc.phase(), Phase::Drained);
    let report = lc.report().unwrap();
    assert_eq!(
        (report.handed_over, report.taken_back, report.cut.idle),
        (1, 2, 2)
    );
    assert_eq!(report.total(), report.accounted());
}
