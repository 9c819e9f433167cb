//! Long-lived connections leave on cue, with real clients: WebSocket clients (PyPI's
//! `websockets`, `tests/clients/ws_clients.py`) under Perl's `start_server` restarts, an
//! event stream read by `curl -N`, and a WebSocket handler that ignores its asks.
//!
//! Needs `start_server` (libserver-starter-perl), `curl`, and Python's `websockets`;
//! `scripts/test` installs them.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lameduck_tests::{
    Watchdog, build_examples, free_port, output_within, own_group, require, root, signal_group,
    start_example,
};

fn websocket_example() -> PathBuf {
    build_examples(&["websocket"], false).join("websocket")
}

/// `start_server` running the websocket example on a fresh port, with `vars`.
struct Supervisor {
    child: std::process::Child,
    port: u16,
    log: PathBuf,
    _watchdog: Watchdog,
}

impl Supervisor {
    fn start(vars: &[(&str, &str)]) -> Supervisor {
        require("start_server", "libserver-starter-perl");
        let example = websocket_example();
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("lameduck-ws-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("server.log");
        let mut command = Command::new("start_server");
        command
            .arg(format!("--port=127.0.0.1:{port}"))
            .arg(format!("--log-file={}", log.display()))
            .arg("--")
            .arg(&example)
            .envs(vars.iter().copied())
            .stdin(Stdio::null());
        let child = own_group(&mut command).spawn().expect("start_server runs");
        let watchdog = Watchdog::new(child.id(), "start_server", Duration::from_secs(150));
        Supervisor {
            child,
            port,
            log,
            _watchdog: watchdog,
        }
    }

    /// Runs the WebSocket clients against it: `clients` clients, `restarts` HUPs.
    fn clients(&self, clients: usize, restarts: usize) -> String {
        let script = root().join("tests/clients/ws_clients.py");
        let output = output_within(
            Command::new("python3")
                .arg(script)
                .arg(format!("--url=ws://127.0.0.1:{}/ws", self.port))
                .arg(format!("--clients={clients}"))
                .arg(format!("--restarts={restarts}"))
                .arg(format!("--hup-pid={}", self.child.id())),
            Duration::from_secs(120),
        );
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "the clients failed: {stdout}\n{}\n{}",
            String::from_utf8_lossy(&output.stderr),
            self.log()
        );
        stdout
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// TERM, and the whole group's exit.
    fn stop(mut self) -> String {
        signal_group(self.child.id(), "TERM");
        let _ = self.child.wait();
        self.log()
    }
}

/// The figures one `key value...` line of the clients' output gives.
fn lines<'a>(output: &'a str, key: &str) -> Vec<Vec<&'a str>> {
    output
        .lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
        .map(|rest| rest.split_whitespace().collect())
        .collect()
}

/// 40 WebSocket clients under two `start_server` restarts with `LAMEDUCK_SPREAD=2s`:
/// every close the server makes is a Close frame with 1001 (none 1006), no message is lost
/// (clients resend what was not echoed), and each restart's reconnections are spread — no
/// 100 ms holds more than a quarter of them (without the spread, all of them fall in one).
#[test]
fn websocket_clients_get_1001_lose_nothing_and_reconnect_spread_over_the_window() {
    let server = Supervisor::start(&[("LAMEDUCK_SPREAD", "2s")]);
    let output = server.clients(40, 2);
    let log = server.stop();
    let context = format!("{output}\n{log}");
    assert_eq!(
        lines(&output, "server_closes"),
        vec![vec!["1001", "80"]],
        "every server close a 1001 Close frame: {context}"
    );
    assert_eq!(lines(&output, "lost"), vec![vec!["0"]], "{context}");
    let restarts = lines(&output, "restart");
    assert_eq!(restarts.len(), 2, "{context}");
    for restart in restarts {
        // restart K reconnections N peak_share S first_ms A last_ms B
        assert_eq!(restart[2], "40", "{context}");
        let share: f64 = restart[4].parse().unwrap();
        assert!(
            share <= 0.25,
            "a restart's reconnections bunched ({share} of them in 100 ms): {context}"
        );
    }
    // Every worker drained on its own: nothing cut.
    assert!(!log.contains("deadline_hit: true"), "{log}");
    assert_eq!(log.matches("drained:").count(), 3, "{log}");
}

/// An event stream read by `curl -N` ends at its ask with the chunked body's last chunk (by
/// itself: its handler knows nothing of the shutdown): a complete response, curl exits 0,
/// and the server drains clean (nothing cut).
#[test]
fn event_stream_ends_with_a_complete_response_and_curl_exits_0() {
    require("curl", "curl");
    let (mut server, addr, _watchdog) = start_example("websocket", &[("LAMEDUCK_DEADLINE", "5s")]);
    let mut curl = Command::new("curl");
    curl.args([
        "-N",
        "-sS",
        "--max-time",
        "20",
        "-H",
        "Accept: text/event-stream",
    ])
    .arg(format!("http://{addr}/events"))
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut curl = own_group(&mut curl).spawn().expect("curl runs");
    let _curl_watchdog = Watchdog::new(curl.id(), "curl", Duration::from_secs(30));
    let mut events = BufReader::new(curl.stdout.take().unwrap());
    let mut seen = String::new();
    // A few events first: the stream is flowing.
    while seen.matches("data: from pid").count() < 3 {
        let mut line = String::new();
        assert!(
            events.read_line(&mut line).unwrap() > 0,
            "curl stopped early: {seen}"
        );
        seen.push_str(&line);
    }
    let term = Instant::now();
    signal_group(server.id(), "TERM");
    events.read_to_string_lossy(&mut seen);
    let status = curl.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut curl.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        status.success(),
        "curl {status:?} ({stderr}): the stream did not end cleanly: {seen}"
    );
    assert!(
        term.elapsed() < Duration::from_secs(3),
        "the stream ended {:?} after SIGTERM, not at its ask",
        term.elapsed()
    );
    assert!(seen.ends_with("\n\n"), "the last event is whole: {seen:?}");
    let server_status = server.wait().unwrap();
    let mut log = String::new();
    std::io::Read::read_to_string(&mut server.stderr.take().unwrap(), &mut log).unwrap();
    assert!(server_status.success(), "{server_status:?}: {log}");
    assert!(log.contains("deadline_hit: false"), "{log}");
}

/// A WebSocket handler that ignores its asks is cut at the deadline, at the socket — the
/// client sees the connection end without a close frame — and the report counts it.
#[test]
fn a_websocket_that_ignores_its_asks_is_cut_at_the_deadline_and_counted() {
    let (mut server, addr, _watchdog) = start_example("websocket", &[("LAMEDUCK_DEADLINE", "1s")]);
    let script = format!(
        r#"
import asyncio, os, signal, websockets
async def main():
    async with websockets.connect("ws://{addr}/ws?ignore_asks", ping_interval=None) as ws:
        await ws.send("0:1")
        assert await ws.recv() == "0:1"
        os.kill({pid}, signal.SIGTERM)
        try:
            async for _ in ws:
                pass
        except websockets.exceptions.ConnectionClosed:
            pass
        print("close_code", ws.close_code)
asyncio.run(main())
"#,
        pid = server.id()
    );
    let output = output_within(
        Command::new("python3").arg("-c").arg(script),
        Duration::from_secs(30),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.trim(), "close_code 1006", "cut, no close frame");
    let status = server.wait().unwrap();
    let mut log = String::new();
    std::io::Read::read_to_string(&mut server.stderr.take().unwrap(), &mut log).unwrap();
    assert_eq!(status.code(), Some(1), "a cut drain exits 1: {log}");
    assert!(
        log.contains("cut: Counts { new: 0, active: 0, idle: 0, upgraded: 1 }"),
        "{log}"
    );
}

trait ReadLossy {
    fn read_to_string_lossy(&mut self, into: &mut String);
}

impl<R: std::io::Read> ReadLossy for BufReader<R> {
    fn read_to_string_lossy(&mut self, into: &mut String) {
        let mut bytes = Vec::new();
        let _ = std::io::Read::read_to_end(self, &mut bytes);
        into.push_str(&String::from_utf8_lossy(&bytes));
    }
}
