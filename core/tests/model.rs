//! Random interleavings of connection events, shutdown, time and driver decisions, checked
//! step by step against the reference model in `lameduck_core::fuzzing` (the same checker
//! the fuzz target uses): the invariant of DESIGN.md must hold after every call, and a
//! driver that obeys must reach `Drained` in a bounded number of steps.

use lameduck_core::fuzzing::{Op, Scenario, ScenarioConfig, run};
use proptest::prelude::*;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Accept),
        4 => any::<u8>().prop_map(Op::RequestStarted),
        4 => any::<u8>().prop_map(Op::RequestFinished),
        1 => any::<u8>().prop_map(Op::Upgrade),
        3 => any::<u8>().prop_map(Op::PeerClose),
        1 => (0u32..4, 0u32..3).prop_map(|(slot, generation)| Op::ForgedId { slot, generation }),
        3 => (0u16..300).prop_map(Op::Advance),
        2 => (0u16..300).prop_map(Op::Elapse),
        2 => Just(Op::SleepUntilTimeout),
        2 => Just(Op::WakeEarly),
        1 => (0u16..300).prop_map(Op::ClockBack),
        2 => Just(Op::BeginShutdown),
        1 => Just(Op::ForceClose),
        1 => Just(Op::ListenersGone),
        3 => Just(Op::Poll),
        4 => Just(Op::Obey),
        1 => any::<u8>().prop_map(Op::LingerClose),
        1 => Just(Op::LingerEnd),
        3 => (any::<u8>(), 0u8..5).prop_map(|(i, state)| Op::CatchUp(i, state)),
        1 => Just(Op::ListenerOpen),
        1 => Just(Op::ListenerClose),
        2 => any::<u8>().prop_map(Op::HandOver),
        1 => Just(Op::Adopt),
        2 => any::<u8>().prop_map(Op::Acknowledged),
        2 => any::<u8>().prop_map(Op::TakeBack),
    ]
}

fn config() -> impl Strategy<Value = ScenarioConfig> {
    (
        0u16..400,
        prop::option::of(0u16..400),
        prop_oneof![Just(0u16), 1u16..300],
        prop::option::weighted(0.5, 0u16..1000),
        prop_oneof![Just(0u16), 1u16..600],
    )
        .prop_map(
            |(stale_new_ms, idle_grace_ms, lame_duck_ms, deadline_ms, spread_ms)| ScenarioConfig {
                stale_new_ms,
                idle_grace_ms,
                lame_duck_ms,
                deadline_ms,
                spread_ms,
            },
        )
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        config(),
        prop::collection::vec(op(), 0..120),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(config, ops, cooperative, closes_after_notice)| Scenario {
            config,
            ops,
            cooperative,
            closes_after_notice,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn every_interleaving_keeps_the_invariant(s in scenario()) {
        let report = run(&s);
        prop_assert_eq!(report.total(), report.accounted());
        if !report.deadline_hit {
            prop_assert!(report.is_clean());
        }
    }

    /// Cooperative clients with no deadline: nothing is ever cut, whatever happened before.
    #[test]
    fn cooperative_drains_without_a_deadline_cut_nothing(
        mut s in scenario(),
    ) {
        s.config.deadline_ms = None;
        s.cooperative = true;
        s.ops.retain(|op| *op != Op::ForceClose);
        let report = run(&s);
        prop_assert!(!report.deadline_hit);
        prop_assert_eq!(report.cut.total(), 0);
    }
}

/// The checker is not vacuous: a driver that closes an Active connection on its own is fine,
/// but a lifecycle that asked for it would be caught. Here we feed the checker a scenario
/// known to exercise every action kind and make sure each appears.
#[test]
fn scenarios_reach_every_rule() {
    let s = Scenario {
        config: ScenarioConfig {
            stale_new_ms: 50,
            idle_grace_ms: Some(20),
            lame_duck_ms: 10,
            deadline_ms: Some(500),
            spread_ms: 0,
        },
        ops: vec![
            Op::Accept, // 0: stays New: stale
            Op::Accept, // 1: Idle: grace
            Op::RequestStarted(1),
            Op::RequestFinished(1),
            Op::Accept, // 2: Active across shutdown: finished
            Op::RequestStarted(2),
            Op::Accept, // 3: upgraded, never leaves: cut at the deadline
            Op::RequestStarted(3),
            Op::Upgrade(3),
            Op::BeginShutdown,
            Op::Obey,
            Op::Accept, // 4: accepted during the lame-duck window
            Op::Advance(10),
            Op::Obey,
            Op::RequestFinished(2),
            Op::Obey,
            Op::Advance(100),
            Op::Obey,
            Op::Advance(500),
            Op::Obey,
        ],
        cooperative: false,
        closes_after_notice: true,
    };
    let r = run(&s);
    assert_eq!(r.at_begin.total(), 4);
    assert_eq!(r.accepted_during, 1);
    assert_eq!(r.closed_stale, 2, "{r:?}");
    assert_eq!(r.closed_idle, 1, "{r:?}");
    assert_eq!(r.finished, 1, "{r:?}");
    assert_eq!(r.cut.upgraded, 1, "{r:?}");
    assert!(r.deadline_hit);
}
