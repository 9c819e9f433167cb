//! The README's first command, as a user runs it (shorter): the demo must report zero failed
//! requests for lameduck — and failures for the naive server, or it demonstrates nothing.

use std::time::Duration;

#[test]
fn the_demo_shows_zero_failures_for_lameduck_and_losses_for_the_naive_server() {
    // Two 4 s runs, each worker's drain bounded by its 30 s deadline.
    let output = lameduck_tests::run_example(
        "demo",
        true,
        &["--seconds", "4", "--restart-ms", "250"],
        Duration::from_secs(120),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "demo failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let row = |name: &str| -> Vec<u64> {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(name) && !l.contains(" s  requests"))
            .unwrap_or_else(|| panic!("no `{name}` row in:\n{stdout}"));
        line.split_whitespace()
            .skip(1)
            .take(3)
            .map(|n| n.parse().unwrap())
            .collect()
    };
    let (lameduck, naive) = (row("lameduck"), row("naive"));
    assert!(
        lameduck[0] > 1000 && lameduck[2] >= 8,
        "load and restarts: {lameduck:?}"
    );
    assert_eq!(lameduck[1], 0, "lameduck failed requests:\n{stdout}");
    assert!(
        naive[1] > 0,
        "the naive server lost nothing, so the demo shows nothing:\n{stdout}"
    );
}
