//! The README's first command, run as a user runs it: `cargo run --example walkthrough`, in a
//! child process. It must exit 0, drain, and account for every connection without a cut.

use std::time::Duration;

#[test]
fn the_walkthrough_drains_every_connection_and_cuts_none() {
    let output = lameduck_tests::run_example("walkthrough", false, &[], Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "walkthrough failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let timeline: Vec<&str> = stdout.lines().collect();
    let position = |needle: &str| {
        timeline
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("`{needle}` not in:\n{stdout}"))
    };
    // The backlogged client is accepted after StopAccepting and before the drain ends.
    assert!(position("stop accepting") < position("accept           late"));
    // The silent client is closed as stale at 5 s, and that is the last thing before drained.
    assert!(position("close silent    (Stale)") + 1 == position("DRAINED"));
    assert!(
        stdout.contains(
            "5 connections: 4 finished, 0 closed idle, 1 closed stale, 0 cut — no request lost"
        ),
        "{stdout}"
    );
}
