//! `lameduck_driver::metrics::record` (feature `metrics`), read back through a recorder: each
//! state's gauge, the phase and readiness, and a drain's counters that add up to its report.

use std::collections::HashMap;
use std::time::Duration;

use lameduck::{Config, IdlePolicy, Shutdown};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

/// What `record` sets, by metric name and label value (`""` without a label).
fn recorded(shutdown: &Shutdown) -> HashMap<(String, String), f64> {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || lameduck_driver::metrics::record(shutdown));
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let label = key
                .labels()
                .next()
                .map_or(String::new(), |l| l.value().to_owned());
            let value = match value {
                DebugValue::Gauge(g) => g.into_inner(),
                DebugValue::Counter(c) => c as f64,
                DebugValue::Histogram(_) => panic!("no histograms"),
            };
            ((key.name().to_owned(), label), value)
        })
        .collect()
}

fn get(metrics: &HashMap<(String, String), f64>, name: &str, label: &str) -> f64 {
    *metrics
        .get(&(name.to_owned(), label.to_owned()))
        .unwrap_or_else(|| panic!("{name}{{{label}}} not recorded: {metrics:?}"))
}

#[tokio::test]
async fn gauges_follow_the_states_and_the_drain_counters_add_up_to_the_report() {
    let config = Config::default()
        .with_stale_new(Duration::from_millis(50))
        .with_idle_policy(IdlePolicy::CloseImmediately)
        .with_deadline(Some(Duration::from_secs(10)));
    let shutdown = lameduck::tokio::shutdown(config);
    // Two silent connections, so that no two of the drain's counters are equal.
    let new = shutdown.accept().unwrap();
    let also_new = shutdown.accept().unwrap();
    let active = shutdown.accept().unwrap();
    active.request_started().unwrap();
    let idle = shutdown.accept().unwrap();
    idle.request_started().unwrap();
    idle.request_finished().unwrap();

    let m = recorded(&shutdown);
    for (state, n) in [
        ("new", 2.0),
        ("active", 1.0),
        ("idle", 1.0),
        ("upgraded", 0.0),
    ] {
        assert_eq!(get(&m, "lameduck_connections", state), n, "{state}: {m:?}");
    }
    assert_eq!(get(&m, "lameduck_phase", "serving"), 1.0);
    assert_eq!(get(&m, "lameduck_phase", "draining"), 0.0);
    assert_eq!(get(&m, "lameduck_ready", ""), 1.0);
    assert_eq!(get(&m, "lameduck_drain_seconds", ""), 0.0);

    shutdown.begin();
    let m = recorded(&shutdown);
    assert_eq!(get(&m, "lameduck_ready", ""), 0.0);
    assert_eq!(get(&m, "lameduck_phase", "serving"), 0.0);

    // The Active connection leaves by itself (finished); the idle one is closed at once and
    // the silent one goes stale — each dropped by its "task" when told to close.
    drop(active);
    let mut told = vec![Some(idle), Some(new), Some(also_new)];
    let report = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            for conn in &mut told {
                if conn
                    .as_ref()
                    .is_some_and(|c| c.notice() == Some(lameduck::Notice::Close))
                {
                    drop(conn.take());
                }
            }
            if let Some(report) = shutdown.report().filter(|r| r.drained_at.is_some()) {
                return report;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("never drained: {:?}", shutdown.report()));
    let m = recorded(&shutdown);
    let closed = |reason| get(&m, "lameduck_drain_closed_total", reason) as usize;
    assert_eq!(closed("finished"), report.finished, "{report:?}");
    assert_eq!(closed("idle"), report.closed_idle, "{report:?}");
    assert_eq!(closed("stale"), report.closed_stale, "{report:?}");
    assert_eq!(closed("cut"), report.cut.total(), "{report:?}");
    assert_eq!(
        closed("finished") + closed("idle") + closed("stale") + closed("cut"),
        report.accounted()
    );
    assert_eq!(report.accounted(), 4, "{report:?}");
    assert_eq!(
        (report.finished, report.closed_idle, report.closed_stale),
        (1, 1, 2),
        "{report:?}"
    );
    assert_eq!(get(&m, "lameduck_phase", "drained"), 1.0);
    let drain = report
        .drained_at
        .unwrap()
        .saturating_duration_since(report.began_at);
    assert_eq!(get(&m, "lameduck_drain_seconds", ""), drain.as_secs_f64());
    for state in ["new", "active", "idle", "upgraded"] {
        assert_eq!(get(&m, "lameduck_connections", state), 0.0, "{state}");
    }
}
