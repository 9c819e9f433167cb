//! The shutdown's state through the [`metrics`](https://docs.rs/metrics) facade (feature
//! `metrics`), for Prometheus or any other recorder.
//!
//! Nothing is recorded per event: [`record`] reads the state the handle already keeps and
//! sets the metrics from it, so call it when they are read — right before an exporter
//! renders a scrape:
//!
//! ```no_run
//! # fn scrape(render: impl Fn() -> String, shutdown: &lameduck_driver::Shutdown) -> String {
//! lameduck_driver::metrics::record(shutdown);
//! render() // e.g. metrics-exporter-prometheus's `PrometheusHandle::render`
//! # }
//! ```
//!
//! | metric | kind | labels | value |
//! |---|---|---|---|
//! | `lameduck_connections` | gauge | `state`: `new`, `active`, `idle`, `upgraded` | live connections in that state |
//! | `lameduck_phase` | gauge | `phase`: `serving`, `lame_duck`, `draining`, `drained` | 1 for the current phase, 0 for the others |
//! | `lameduck_ready` | gauge | | 1 while serving, 0 from the shutdown's begin |
//! | `lameduck_drain_closed_total` | counter | `reason`: `finished`, `handed_over`, `idle`, `stale`, `cut` | connections the drain ended here, by why |
//! | `lameduck_drain_accepted_total` | counter | | connections accepted after the shutdown began |
//! | `lameduck_drain_seconds` | gauge | | time since the shutdown began, until it drained |
//! | `lameduck_connections_total` | counter | `how`: `accepted`, `adopted` | connections tracked since start: accepted from a listener, adopted from a predecessor ([`Totals`](crate::Totals)) |
//!
//! The drain's counters are the [`DrainReport`](lameduck_core::DrainReport)'s: `finished +
//! handed_over + idle + stale + cut` is its [`accounted`](lameduck_core::DrainReport::accounted); they are
//! 0 until the shutdown begins.

use lameduck_core::Phase;

use crate::Shutdown;

/// Sets every lameduck metric from `shutdown`'s current state (see the [module](self)).
/// Takes the handle's lock once and walks the live connections while serving: for a
/// scrape, not for every request.
pub fn record(shutdown: &Shutdown) {
    let counts = shutdown.counts();
    for (state, n) in [
        ("new", counts.new),
        ("active", counts.active),
        ("idle", counts.idle),
        ("upgraded", counts.upgraded),
    ] {
        metrics::gauge!("lameduck_connections", "state" => state).set(n as f64);
    }
    let phase = shutdown.phase();
    for (name, of) in [
        ("serving", Phase::Serving),
        ("lame_duck", Phase::LameDuck),
        ("draining", Phase::Draining),
        ("drained", Phase::Drained),
    ] {
        metrics::gauge!("lameduck_phase", "phase" => name).set(f64::from(u8::from(phase == of)));
    }
    metrics::gauge!("lameduck_ready").set(f64::from(u8::from(phase == Phase::Serving)));
    let report = shutdown.report().unwrap_or_default();
    for (reason, n) in [
        ("finished", report.finished),
        ("handed_over", report.handed_over),
        ("idle", report.closed_idle),
        ("stale", report.closed_stale),
        ("cut", report.cut.total()),
    ] {
        metrics::counter!("lameduck_drain_closed_total", "reason" => reason).absolute(n as u64);
    }
    metrics::counter!("lameduck_drain_accepted_total").absolute(report.accepted_during as u64);
    let drain = match shutdown.report() {
        None => std::time::Duration::ZERO,
        Some(report) => report
            .drained_at
            .unwrap_or_else(|| shutdown.now())
            .saturating_duration_since(report.began_at),
    };
    metrics::gauge!("lameduck_drain_seconds").set(drain.as_secs_f64());
    let totals = shutdown.totals();
    metrics::counter!("lameduck_connections_total", "how" => "accepted").absolute(totals.accepted);
    metrics::counter!("lameduck_connections_total", "how" => "adopted").absolute(totals.adopted);
}
