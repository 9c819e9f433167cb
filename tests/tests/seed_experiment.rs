//! The seed experiment, for real: Perl's `start_server` (Debian `libserver-starter-perl`)
//! owns the listening socket and restarts the `hello` example worker on every SIGHUP while a
//! load tool hammers it. Every cell must end with zero failed requests and zero non-2xx
//! responses — and the same experiment against a naive server (exits at once on SIGTERM)
//! must fail, or the experiment proves nothing.
//!
//! Needs `start_server`, `ab` (apache2-utils), `wrk` and `hey`; `.ci/run` installs them. The
//! long version (`ab -n 100000 -c 1000`, 100+ restarts) is `scripts/seed-experiment.sh`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use lameduck_tests::{
    Watchdog, describe_group, free_port, output_within, own_group, require, signal_group,
};

/// Seconds each cell's load runs.
const SECONDS: u64 = 8;

/// The release build of example `name` (`hello` or `axum`).
fn example_binary(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        lameduck_tests::build_examples(&["hello", "axum", "grpc", "grpc_client"], true)
    })
    .join(name)
}

/// The test CA and hello's certificate, made once with `openssl`.
fn certificates() -> &'static lameduck_tests::TestCertificates {
    static CERTS: OnceLock<lameduck_tests::TestCertificates> = OnceLock::new();
    CERTS.get_or_init(|| lameduck_tests::test_certificates("seed"))
}

/// `start_server` running `hello` on a fresh port, restarted every `restart_every`.
struct Supervisor {
    /// The worker: an example's binary.
    example: PathBuf,
    child: Child,
    dir: PathBuf,
    port: u16,
    /// `https` when hello serves TLS, else `http`.
    scheme: &'static str,
    stop: Arc<AtomicBool>,
    /// Sends the HUPs; returns how many it sent.
    hupper: Option<std::thread::JoinHandle<usize>>,
    /// start_server and its workers form one process group, killed if a cell overruns.
    watchdog: Watchdog,
}

/// How long one cell (start, load, stop) may take before its processes are killed.
const CELL_LIMIT: Duration = Duration::from_secs(SECONDS + 150);

/// How long start_server may take to exit after TERM: its workers drain, bounded by their
/// 30 s deadline (`Config::default()`).
const EXIT_LIMIT: Duration = Duration::from_secs(45);

impl Supervisor {
    /// `hello` on `runtime` (`HELLO_RUNTIME`), or the naive server.
    fn start(runtime: &str, naive: bool, restart_every: Duration) -> Supervisor {
        Supervisor::start_with("hello", runtime, naive, false, restart_every)
    }

    /// Like `start`, with `example` as the worker, over TLS (`HELLO_TLS_CERT`,
    /// `HELLO_TLS_KEY`) if `tls`.
    fn start_with(
        example: &str,
        runtime: &str,
        naive: bool,
        tls: bool,
        restart_every: Duration,
    ) -> Supervisor {
        let example = example_binary(example);
        require("start_server", "libserver-starter-perl");
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("lameduck-seed-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut command = Command::new("start_server");
        if restart_every < Duration::from_secs(1) {
            // start_server waits `--interval` (1 s by default) before it retires the old
            // worker; a faster restart rate needs it at 0.
            command.arg("--interval=0");
        }
        command
            .arg(format!("--port=127.0.0.1:{port}"))
            .arg(format!("--pid-file={}", dir.join("app.pid").display()))
            .arg(format!("--log-file={}", dir.join("server.log").display()))
            .arg("--")
            .arg(&example)
            .stdin(Stdio::null());
        command.env("HELLO_RUNTIME", runtime);
        if naive {
            command.env("HELLO_NAIVE", "1");
        }
        if tls {
            let certs = certificates();
            command.env("HELLO_TLS_CERT", &certs.cert);
            command.env("HELLO_TLS_KEY", &certs.key);
        }
        let child = own_group(&mut command).spawn().expect("start_server runs");
        let watchdog = Watchdog::new(child.id(), "start_server", CELL_LIMIT);
        let mut supervisor = Supervisor {
            example,
            child,
            dir,
            port,
            scheme: if tls { "https" } else { "http" },
            stop: Arc::new(AtomicBool::new(false)),
            hupper: None,
            watchdog,
        };
        supervisor.wait_ready();
        let (stop, pid) = (supervisor.stop.clone(), supervisor.child.id());
        let log = supervisor.dir.join("server.log");
        supervisor.hupper = Some(std::thread::spawn(move || {
            let mut sent = 0;
            loop {
                std::thread::sleep(restart_every);
                if stop.load(Ordering::Relaxed) {
                    return sent;
                }
                // One HUP at a time: the kernel merges a HUP into one still pending, and
                // the count must be exact for `stop` to know when the restarts are over.
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                if log.matches("received HUP").count() == sent {
                    signal(pid, "HUP");
                    sent += 1;
                }
            }
        }));
        supervisor
    }

    fn url(&self, path: &str) -> String {
        format!("{}://127.0.0.1:{}{path}", self.scheme, self.port)
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "start_server never listened: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// Waits until start_server has finished every restart it was asked for and its newest
    /// worker has installed its TERM handler. start_server forwards TERM to a worker it has
    /// just forked, and a TERM that reaches the child before it `exec`s is taken by the
    /// Perl handler the child inherited, then lost with it: the worker would run forever,
    /// and start_server wait for it. (A TERM between `exec` and the handler ends the worker
    /// by the default action; lameduck's own handler install is probed by `lameduck-driver`'s
    /// `signal_race` test.) start_server's bug, with a reproduction:
    /// docs/upstream/start-server-term-before-exec.md; this wait can go once that
    /// reproduction no longer hangs.
    fn wait_restarts_over(&self, hups: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let newest = loop {
            let log = self.log();
            let done = log.matches("received HUP").count() == hups
                && log.matches("new worker is now running").count() == hups;
            let newest = log
                .rsplit("starting new worker ")
                .next()
                .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|pid| pid.parse::<u32>().ok());
            if let (true, Some(newest)) = (done, newest) {
                break newest;
            }
            assert!(
                Instant::now() < deadline,
                "start_server did not finish its {hups} restarts:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        while !handles_term(newest, &self.example) {
            assert!(
                Instant::now() < deadline,
                "worker {newest} never installed its TERM handler:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops the restarts, then start_server and its workers (TERM, as a service manager
    /// does). Returns each worker's exit status as start_server's log reports it, in start
    /// order, and the log; panics if start_server does not exit in time or lost track of a
    /// worker.
    fn stop(mut self) -> (Vec<(u32, i32)>, String) {
        self.stop.store(true, Ordering::Relaxed);
        let hups = self.hupper.take().unwrap().join().unwrap();
        self.wait_restarts_over(hups);
        signal(self.child.id(), "TERM");
        let deadline = Instant::now() + EXIT_LIMIT;
        while self.child.try_wait().unwrap().is_none() {
            if Instant::now() >= deadline {
                panic!(
                    "start_server did not exit within {EXIT_LIMIT:?} of TERM; still running:\n{}\nits log:\n{}",
                    describe_group(self.child.id()),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            !self.watchdog.fired(),
            "killed by the watchdog:\n{}",
            self.log()
        );
        let log = self.log();
        let statuses = worker_statuses(&log);
        assert!(
            statuses.len() >= 2,
            "start_server's log shows no restart:\n{log}"
        );
        (statuses, log)
    }
}

/// Whether `pid` runs `hello` (it has `exec`ed) and catches SIGTERM, per /proc; also true
/// once it is gone (it can no longer miss a TERM).
fn handles_term(pid: u32, example: &std::path::Path) -> bool {
    let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) else {
        return true;
    };
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return true;
    };
    let caught = status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    exe.file_name() == example.file_name() && caught & (1 << (libc::SIGTERM - 1)) != 0
}

/// Each worker start_server started, with the exit status it logged for it (`wait(2)`'s
/// status: 0 is exit code 0, `hello`'s "drained, nothing cut"); panics on a worker whose
/// end it never logged. start_server's messages are whole writes, but may land inside a
/// line a worker is writing to the same log: they are found anywhere, not at line starts.
fn worker_statuses(log: &str) -> Vec<(u32, i32)> {
    fn leading_number<T: std::str::FromStr>(text: &str) -> Option<(T, &str)> {
        let end = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        Some((text[..end].parse().ok()?, &text[end..]))
    }
    let started = log
        .split("starting new worker ")
        .skip(1)
        .filter_map(|rest| Some(leading_number::<u32>(rest)?.0));
    let ended: Vec<(u32, i32)> = log
        .split("worker ")
        .skip(1)
        .filter_map(|rest| {
            let (pid, rest) = leading_number(rest)?;
            let (status, _) = leading_number(rest.strip_prefix(" died, status:")?)?;
            Some((pid, status))
        })
        .collect();
    started
        .map(|pid| match ended.iter().find(|(p, _)| *p == pid) {
            Some(&ended) => ended,
            None => panic!("worker {pid} never logged its end:\n{log}"),
        })
        .collect()
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if self.child.try_wait().ok().flatten().is_none() {
            // A failed cell: take its processes down (bounded) so the next one starts clean.
            signal_group(self.child.id(), "TERM");
            let deadline = Instant::now() + Duration::from_secs(5);
            while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            signal_group(self.child.id(), "KILL");
            let _ = self.child.wait();
        }
        if let Some(hupper) = self.hupper.take() {
            let _ = hupper.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
}

/// What a load tool reported.
#[derive(Debug)]
struct Outcome {
    requests: u64,
    failed: u64,
    non_2xx: u64,
}

fn run(tool: &str, args: &[String]) -> String {
    // Every load runs SECONDS; ab's own socket timeout is 30 s.
    let limit = Duration::from_secs(SECONDS + 60);
    let output = output_within(Command::new(tool).args(args), limit);
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{tool} failed: {text}");
    text
}

fn number_after(text: &str, label: &str) -> Option<u64> {
    let rest = &text[text.find(label)? + label.len()..];
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

fn ab(url: &str, keep_alive: bool, concurrency: u32) -> Outcome {
    require("ab", "apache2-utils");
    let mut args: Vec<String> = vec!["-r".into(), "-q".into()];
    if keep_alive {
        args.push("-k".into());
    }
    args.extend([
        "-t".into(),
        SECONDS.to_string(),
        "-n".into(),
        "10000000".into(),
        "-c".into(),
        concurrency.to_string(),
        url.into(),
    ]);
    let text = run("ab", &args);
    Outcome {
        requests: number_after(&text, "Complete requests:").expect(&text),
        failed: number_after(&text, "Failed requests:").expect(&text),
        non_2xx: number_after(&text, "Non-2xx responses:").unwrap_or(0),
    }
}

fn wrk(url: &str) -> Outcome {
    require("wrk", "wrk");
    let text = run(
        "wrk",
        &[
            "-t2".into(),
            "-c100".into(),
            format!("-d{SECONDS}s"),
            url.into(),
        ],
    );
    let (requests, failed, non_2xx) = lameduck_tests::wrk_figures(&text);
    Outcome {
        requests,
        failed,
        non_2xx,
    }
}

fn hey(url: &str) -> Outcome {
    require("hey", "hey");
    let mut args = vec![
        "-z".into(),
        format!("{SECONDS}s"),
        "-c".into(),
        "100".into(),
    ];
    if url.starts_with("https:") {
        // hey sends its Host header, port included, as the TLS server name; rustls 0.23
        // refuses a name that is no DNS name (RFC 6066 §3) with `illegal_parameter`, so
        // every request would fail. `-host` makes both `localhost`.
        args.extend(["-host".into(), "localhost".into()]);
    }
    args.push(url.into());
    let text = run("hey", &args);
    // `[STATUS]\tN responses` lines only: the latency histogram before them has bracketed
    // counts too (`0.002 [200]\t|■■`), and a bucket of exactly 200 read as the 200s made
    // every response look non-2xx.
    let statuses: Vec<(&str, u64)> = text
        .lines()
        .filter(|l| l.trim_start().starts_with('[') && l.contains("responses"))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            Some((words.next()?, words.next()?.parse::<u64>().ok()?))
        })
        .collect();
    let ok: u64 = statuses
        .iter()
        .filter(|(status, _)| *status == "[200]")
        .map(|(_, n)| n)
        .sum();
    let all_statuses: u64 = statuses.iter().map(|(_, n)| n).sum();
    let errors: u64 = text
        .split("Error distribution:")
        .nth(1)
        .map(|e| {
            e.lines()
                .filter_map(|l| {
                    l.trim()
                        .strip_prefix('[')?
                        .split(']')
                        .next()?
                        .parse::<u64>()
                        .ok()
                })
                .sum()
        })
        .unwrap_or(0);
    Outcome {
        requests: all_statuses + errors,
        failed: errors,
        non_2xx: all_statuses - ok,
    }
}

/// One experiment at a time: they measure a loaded machine, and two at once would share it.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn cell(name: &str, restart_every: Duration, load: impl FnOnce(&Supervisor) -> Outcome) {
    cell_on("tokio", name, restart_every, load)
}

fn cell_on(
    runtime: &str,
    name: &str,
    restart_every: Duration,
    load: impl FnOnce(&Supervisor) -> Outcome,
) {
    cell_with(runtime, false, name, restart_every, load)
}

/// One cell with `hello` on `runtime` (over TLS if `tls`): 0 failed requests, every worker
/// drained clean.
fn cell_with(
    runtime: &str,
    tls: bool,
    name: &str,
    restart_every: Duration,
    load: impl FnOnce(&Supervisor) -> Outcome,
) {
    let _serial = serial();
    let supervisor = Supervisor::start_with("hello", runtime, false, tls, restart_every);
    let (outcome, workers, log) = measure(supervisor, load);
    let name = format!("{name} on {runtime}");
    // Every worker that got as far as main said which runtime it serves on (one a TERM
    // ended at start-up may not have): the cell measured that runtime and no other.
    let serving = log.matches("hello: serving on ").count();
    let on_runtime = log
        .matches(&format!("hello: serving on {runtime}\n"))
        .count();
    let drained = workers.iter().filter(|&&(_, status)| status == 0).count();
    assert!(
        serving == on_runtime && on_runtime >= drained.max(1),
        "{name}: {on_runtime} of {serving} workers said they serve on {runtime}, \
         {drained} drained\n{log}"
    );
    judge(&name, &outcome, &workers, &log);
}

/// Runs `load` against `supervisor`'s server, then stops it: what the load saw, each
/// worker's exit status, and start_server's log.
fn measure(
    supervisor: Supervisor,
    load: impl FnOnce(&Supervisor) -> Outcome,
) -> (Outcome, Vec<(u32, i32)>, String) {
    let outcome = load(&supervisor);
    let (workers, log) = supervisor.stop();
    (outcome, workers, log)
}

/// A cell passes: enough restarts and load to mean something, 0 failed requests, and every
/// worker drained clean.
fn judge(name: &str, outcome: &Outcome, workers: &[(u32, i32)], log: &str) {
    let restarts = workers.len() - 1;
    println!("{name}: {outcome:?}, {restarts} restarts");
    assert!(
        restarts >= 3,
        "{name}: too few restarts to mean anything ({restarts})"
    );
    assert!(
        outcome.requests > 1000,
        "{name}: too little load: {outcome:?}"
    );
    assert_eq!(
        (outcome.failed, outcome.non_2xx),
        (0, 0),
        "{name}: {outcome:?} across {restarts} restarts\n{log}"
    );
    // The examples exit 0 only when their drain report is clean: nothing cut at a
    // deadline. Or a TERM right after its start (start_server is stopped, or restarts with
    // `--interval=0`) ended it before its handlers existed — before it accepted anything.
    let unclean: Vec<_> = workers
        .iter()
        .filter(|&&(_, status)| status != 0 && status != libc::SIGTERM)
        .collect();
    assert!(
        unclean.is_empty(),
        "{name}: workers that did not drain cleanly (pid, wait status): {unclean:?}\n{log}"
    );
}

/// The grpc example in the seed experiment: tonic's own client (`grpc_client load`) makes
/// unary calls, each with a 10 s deadline, over 4 persistent channels while start_server
/// restarts the server every 0.2 s; no RPC is lost, none is stuck.
///
/// Before the deadline, one call hung here for more than a minute, once, in CI (stop 27),
/// with no call failing meanwhile — longer than the 30 s after which every draining worker
/// has cut what it still holds — and never in ~7,600 restarts since on this machine;
/// reqwest#1323 describes hyper's HTTP/2 client hanging a request among GOAWAYs. A stuck call
/// now fails the cell in 10 s, with start_server's log, rather than at the watchdog.
#[test]
fn grpc_unary_calls_over_persistent_channels_every_200ms_lose_nothing() {
    grpc_cell("grpc unary (tonic) every 0.2 s", |url| {
        let mut load = Command::new(example_binary("grpc_client"));
        load.args(["load", url, &SECONDS.to_string(), "4"]);
        load
    });
}

/// The same with PyPI's `grpcio` (gRPC's C core, the client of Python, Ruby, C++ and PHP
/// services; `tests/clients/grpc_load.py`), whose calls have their deadline too. It sends a
/// WINDOW_UPDATE right after a new stream's HEADERS, and opens streams until it has handled
/// the server's first GOAWAY: without lameduck-hyper's `goaway` guard, h2 took such a frame
/// for a connection error and ended the streams it was still answering — 12 calls failed
/// in 1,774 restarts here, ~1 cell in 4.
#[test]
fn grpcio_unary_calls_over_persistent_channels_every_200ms_lose_nothing() {
    grpc_cell("grpc unary (grpcio) every 0.2 s", |url| {
        let mut load = Command::new("python3");
        load.arg(lameduck_tests::root().join("tests/clients/grpc_load.py"))
            .args([url, &SECONDS.to_string(), "4"]);
        load
    });
}

/// A gRPC load (`calls N failed M` on its output) against the grpc example under
/// start_server, restarting every 0.2 s.
fn grpc_cell(name: &str, load: impl FnOnce(&str) -> Command) {
    let _serial = serial();
    let supervisor = Supervisor::start_with("grpc", "tokio", false, false, FIVE_PER_SECOND);
    let (outcome, workers, log) = measure(supervisor, |s| {
        let url = s.url("");
        let output = output_within(&mut load(&url), Duration::from_secs(SECONDS + 60));
        let text = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        Outcome {
            requests: number_after(&text, "calls ").expect(&text),
            failed: number_after(&text, "failed ").expect(&text),
            non_2xx: 0,
        }
    });
    judge(name, &outcome, &workers, &log);
}

/// The axum example (the README's first server) in the seed experiment: restarts every
/// 0.2 s under `wrk` and `ab -k`, 0 failed.
mod axum {
    use super::*;

    fn axum_cell(name: &str, load: impl FnOnce(&Supervisor) -> Outcome) {
        let _serial = serial();
        let supervisor = Supervisor::start_with("axum", "tokio", false, false, FIVE_PER_SECOND);
        let (outcome, workers, log) = measure(supervisor, load);
        judge(&format!("axum example: {name}"), &outcome, &workers, &log);
    }

    #[test]
    fn wrk_every_200ms_fails_nothing() {
        axum_cell("wrk / every 0.2 s", |s| wrk(&s.url("/")));
    }

    #[test]
    fn ab_keep_alive_every_200ms_fails_nothing() {
        axum_cell("ab -k / every 0.2 s", |s| ab(&s.url("/"), true, 100));
    }
}

const EVERY_SECOND: Duration = Duration::from_secs(1);
const FIVE_PER_SECOND: Duration = Duration::from_millis(200);

#[test]
fn ab_without_keep_alive_fails_nothing() {
    cell("ab -c 100 /", EVERY_SECOND, |s| ab(&s.url("/"), false, 100));
}

#[test]
fn ab_with_a_thousand_clients_fails_nothing() {
    cell("ab -c 1000 /", EVERY_SECOND, |s| {
        ab(&s.url("/"), false, 1000)
    });
}

#[test]
fn ab_with_http10_keep_alive_fails_nothing() {
    cell("ab -k /", EVERY_SECOND, |s| ab(&s.url("/"), true, 100));
}

#[test]
fn ab_against_a_slow_handler_fails_nothing() {
    cell("ab /sleep?ms=100", EVERY_SECOND, |s| {
        ab(&s.url("/sleep?ms=100"), false, 100)
    });
}

#[test]
fn wrk_keep_alive_fails_nothing() {
    cell("wrk /", EVERY_SECOND, |s| wrk(&s.url("/")));
}

#[test]
fn wrk_keep_alive_with_restarts_every_200ms_fails_nothing() {
    cell("wrk / every 0.2 s", FIVE_PER_SECOND, |s| wrk(&s.url("/")));
}

#[test]
fn wrk_against_a_slow_handler_with_restarts_every_200ms_fails_nothing() {
    cell("wrk /sleep?ms=100 every 0.2 s", FIVE_PER_SECOND, |s| {
        wrk(&s.url("/sleep?ms=100"))
    });
}

#[test]
fn hey_fails_nothing() {
    cell("hey /", EVERY_SECOND, |s| hey(&s.url("/")));
}

/// The experiment can fail: the usual server, which exits at once on SIGTERM, loses
/// requests under exactly the same load.
#[test]
fn a_naive_server_fails_the_same_experiment() {
    let _serial = serial();
    let supervisor = Supervisor::start("tokio", true, EVERY_SECOND);
    let outcome = ab(&supervisor.url("/"), false, 100);
    let restarts = supervisor.stop().0.len() - 1;
    println!("naive ab -c 100 /: {outcome:?}, {restarts} restarts");
    assert!(
        outcome.failed + outcome.non_2xx > 0,
        "the naive server lost nothing, so the experiment cannot tell: {outcome:?}"
    );
}

/// An HTTP/2 load that behaves like browsers and Go's transport: each task keeps one
/// connection (prior-knowledge h2c, or `h2` by ALPN over TLS trusting the test CA),
/// reconnects once the server closed it or said GOAWAY, and retries only requests the server
/// never processed (RFC 9113 §6.8). `h2load` never reconnects, so its failure count after any
/// GOAWAY is meaningless; hyper-util's pooled client can leave requests waiting forever on a
/// connection that went away (seen here: every task parked, no socket open; the same as
/// reqwest#1323), so each task owns its connection instead. A request that takes more than
/// 10 s counts as failed.
fn h2_load(url: &str, concurrency: usize) -> Outcome {
    use hyper_util::client::legacy::connect::HttpConnector;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _entered = runtime.enter();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(client_tls())
        .https_or_http()
        .enable_http2()
        .wrap_connector(http);
    runtime.block_on(h2_requests(connector, url, concurrency))
}

/// A TLS client configuration that trusts the test CA.
fn client_tls() -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(&certificates().ca).unwrap();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&ca) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

type H2Sender = hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>;

/// A new HTTP/2 connection through `connector`; its driver runs as its own task.
async fn h2_connect<C>(connector: &mut C, uri: &hyper::Uri) -> Result<H2Sender, String>
where
    C: tower_service::Service<hyper::Uri>,
    C::Response: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    C::Error: std::fmt::Debug,
{
    std::future::poll_fn(|cx| connector.poll_ready(cx))
        .await
        .map_err(|e| format!("connector: {e:?}"))?;
    let io = connector
        .call(uri.clone())
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    let (sender, connection) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .handshake(io)
            .await
            .map_err(|e| format!("handshake: {e:?}"))?;
    tokio::spawn(connection);
    Ok(sender)
}

/// `concurrency` tasks sending GETs to `url` for SECONDS, each on its own connection.
async fn h2_requests<C>(connector: C, url: &str, concurrency: usize) -> Outcome
where
    C: tower_service::Service<hyper::Uri> + Clone + Send + 'static,
    C::Response: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    C::Future: Send,
    C::Error: std::fmt::Debug,
{
    use http_body_util::BodyExt;

    let uri: hyper::Uri = url.parse().unwrap();
    let until = Instant::now() + Duration::from_secs(SECONDS);
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (mut connector, uri) = (connector.clone(), uri.clone());
            tokio::spawn(async move {
                let mut outcome = Outcome {
                    requests: 0,
                    failed: 0,
                    non_2xx: 0,
                };
                let mut sender: Option<H2Sender> = None;
                while Instant::now() < until {
                    outcome.requests += 1;
                    let request = async {
                        // A connection the server closed (or that said GOAWAY and then
                        // closed) fails `ready` before anything is sent on it: reconnect.
                        // A stream GOAWAY refused was never processed: retry it, a few
                        // times, so that a server that refuses everything still fails.
                        let mut retries = 0;
                        loop {
                            let mut s = match sender.take() {
                                Some(s) if !s.is_closed() => s,
                                _ => h2_connect(&mut connector, &uri).await?,
                            };
                            if s.ready().await.is_err() {
                                retries += 1;
                                if retries > 3 {
                                    return Err("connection closed before the request".into());
                                }
                                continue;
                            }
                            let request = hyper::Request::get(uri.clone())
                                .body(http_body_util::Empty::new())
                                .unwrap();
                            match s.try_send_request(request).await {
                                Err(mut e) => {
                                    // Never written (the connection closed first), or
                                    // refused by GOAWAY: the server did not process it.
                                    let unprocessed =
                                        e.take_message().is_some() || refused_by_goaway(e.error());
                                    if !unprocessed || retries >= 3 {
                                        return Err(format!("{:?}", e.error()));
                                    }
                                    retries += 1;
                                }
                                Ok(response) => {
                                    sender = Some(s);
                                    let ok = response.status().is_success();
                                    return match response.into_body().collect().await {
                                        Ok(_) => Ok(ok),
                                        Err(e) => Err(format!("body: {e:?}")),
                                    };
                                }
                            }
                        }
                    };
                    match tokio::time::timeout(Duration::from_secs(10), request).await {
                        Ok(Ok(true)) => {}
                        Ok(Ok(false)) => outcome.non_2xx += 1,
                        Ok(Err(e)) => {
                            if outcome.failed < 3 {
                                eprintln!("h2 request failed: {e}");
                            }
                            outcome.failed += 1;
                        }
                        Err(_) => {
                            eprintln!("h2 request took more than 10 s");
                            outcome.failed += 1;
                            sender = None;
                        }
                    }
                }
                outcome
            })
        })
        .collect();
    let mut total = Outcome {
        requests: 0,
        failed: 0,
        non_2xx: 0,
    };
    for task in tasks {
        let o = task.await.unwrap();
        total.requests += o.requests;
        total.failed += o.failed;
        total.non_2xx += o.non_2xx;
    }
    total
}

/// Whether an HTTP/2 request failed because the server's GOAWAY refused its stream
/// (`NO_ERROR`, sent by the server): unprocessed by definition (RFC 9113 §6.8).
fn refused_by_goaway(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(e) = source {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return h2.is_go_away() && h2.is_remote() && h2.reason() == Some(h2::Reason::NO_ERROR);
        }
        source = e.source();
    }
    false
}

#[test]
fn http2_with_reconnects_fails_nothing() {
    cell("h2c prior knowledge /", EVERY_SECOND, |s| {
        h2_load(&s.url("/"), 50)
    });
}

#[test]
fn http2_against_a_slow_handler_fails_nothing() {
    cell("h2c /sleep?ms=100", EVERY_SECOND, |s| {
        h2_load(&s.url("/sleep?ms=100"), 50)
    });
}

/// The seed experiment's cells, restarting five times a second, with `hello` on the runtimes
/// that are not tokio: the same HTTP server through the same driver, 0 failed requests.
macro_rules! on_runtime {
    ($module:ident, $runtime:literal) => {
        mod $module {
            use super::*;

            #[test]
            fn ab_every_200ms_fails_nothing() {
                cell_on($runtime, "ab -c 100 / every 0.2 s", FIVE_PER_SECOND, |s| {
                    ab(&s.url("/"), false, 100)
                });
            }

            #[test]
            fn ab_keep_alive_every_200ms_fails_nothing() {
                cell_on($runtime, "ab -k / every 0.2 s", FIVE_PER_SECOND, |s| {
                    ab(&s.url("/"), true, 100)
                });
            }

            #[test]
            fn wrk_every_200ms_fails_nothing() {
                cell_on($runtime, "wrk / every 0.2 s", FIVE_PER_SECOND, |s| {
                    wrk(&s.url("/"))
                });
            }

            #[test]
            fn hey_every_200ms_fails_nothing() {
                cell_on($runtime, "hey / every 0.2 s", FIVE_PER_SECOND, |s| {
                    hey(&s.url("/"))
                });
            }
        }
    };
}

on_runtime!(smol, "smol");

/// The seed experiment over HTTPS, restarting five times a second: `wrk` and `hey` over
/// TLS, and an HTTP/2 client negotiating `h2` by ALPN, on tokio and on smol.
macro_rules! over_tls {
    ($module:ident, $runtime:literal) => {
        mod $module {
            use super::*;

            #[test]
            fn wrk_over_tls_every_200ms_fails_nothing() {
                cell_with(
                    $runtime,
                    true,
                    "wrk https / every 0.2 s",
                    FIVE_PER_SECOND,
                    |s| wrk(&s.url("/")),
                );
            }

            #[test]
            fn hey_over_tls_every_200ms_fails_nothing() {
                cell_with(
                    $runtime,
                    true,
                    "hey https / every 0.2 s",
                    FIVE_PER_SECOND,
                    |s| hey(&s.url("/")),
                );
            }

            #[test]
            fn http2_over_tls_every_200ms_fails_nothing() {
                cell_with(
                    $runtime,
                    true,
                    "h2 https / every 0.2 s",
                    FIVE_PER_SECOND,
                    |s| h2_load(&s.url("/"), 50),
                );
            }
        }
    };
}

over_tls!(tls_tokio, "tokio");
over_tls!(tls_smol, "smol");
on_runtime!(async_std, "async-std");
