//! `hello --self-restart`: in-place upgrades with no supervisor, over real processes and
//! signals. The test process is a child subreaper (`PR_SET_CHILD_SUBREAPER`), so every
//! generation of hello — each the child of the one before — ends up its child once its
//! parent exits, and can be reaped and checked here: nothing left running, no zombie.
//!
//! - SIGHUP every 0.2 s under `wrk` and under `ab -k`: at least 50 upgrades each, 0 failed
//!   requests, the serving processes' fds (other than connections), environment and RSS
//!   flat across generations, every generation exiting 0;
//! - a broken deploy (the binary replaced by a script that exits 1) and a hanging one
//!   (never ready, upgrade timeout): the successor is killed, the same pid serves on and
//!   keeps the PID file, no request fails; the deploy fixed, the next SIGHUP upgrades;
//! - two SIGHUPs back to back: one upgrade, the other refused ("upgrade in progress");
//! - systemd's notifications, read from an abstract `@` datagram socket, in order;
//! - SIGTERM drains and exits 0, and removes the PID file;
//! - the connection transfer (handover version 2): 32 keep-alive clients under SIGHUP every
//!   0.5 s keep their connections — 0 failed, 0 reconnections, each connection served by
//!   several generations; under `wrk -c64` and SIGHUP every 0.2 s, 64 connections accepted
//!   over all generations; a successor that dies during its probation takes no connection
//!   with it.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use lameduck_tests::{Watchdog, free_port, own_group, require};

/// Seconds of load per run: at 0.2 s per upgrade, more than 50 upgrades.
const SECONDS: u64 = 12;
/// Upgrades each load run must see.
const UPGRADES: usize = 50;

/// One test at a time: each reaps the processes it started, and they all share the
/// subreaper.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn hello_binary() -> &'static Path {
    static HELLO: OnceLock<PathBuf> = OnceLock::new();
    HELLO.get_or_init(|| {
        // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes plain integers.
        assert_eq!(
            unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) },
            0
        );
        lameduck_tests::build_examples(&["hello"], true).join("hello")
    })
}

/// A hello generation chain started with `--self-restart`.
struct Hello {
    first: Child,
    port: u16,
    pid_file: PathBuf,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
    /// Every pid seen serving.
    pids: BTreeSet<u32>,
    _watchdog: Watchdog,
}

impl Hello {
    /// `binary` started as a user starts it; `env` added.
    fn start(binary: &Path, extra: &[&str], env: &[(&str, &str)]) -> Hello {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("lameduck-self-restart-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let pid_file = dir.join("hello.pid");
        let _ = std::fs::remove_file(&pid_file);
        let mut command = Command::new(binary);
        command
            .arg(format!("127.0.0.1:{port}"))
            .args(["--self-restart", "--pid-file"])
            .arg(&pid_file)
            .args(extra)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut first = own_group(&mut command).spawn().expect("hello runs");
        let watchdog = Watchdog::new(first.id(), "hello", Duration::from_secs(SECONDS + 90));
        let (tx, lines) = mpsc::channel();
        let stderr = first.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut hello = Hello {
            first,
            port,
            pid_file,
            lines,
            log: Vec::new(),
            pids: BTreeSet::new(),
            _watchdog: watchdog,
        };
        let pid = hello.wait_pid(|_| true, "hello wrote its PID file");
        hello.pids.insert(pid);
        hello
    }

    /// The pid in the PID file, once `accept` takes it.
    fn wait_pid(&mut self, accept: impl Fn(u32) -> bool, what: &str) -> u32 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(pid) = self.pid() {
                if accept(pid) {
                    return pid;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{what}: never; log:\n{}",
                self.drain_log()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(&self.pid_file)
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Waits for a stderr line containing `text`; returns it.
    fn wait_line(&mut self, text: &str) -> String {
        if let Some(line) = self.log.iter().find(|l| l.contains(text)) {
            return line.clone();
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(_) => panic!("no line with {text:?}; log:\n{}", self.log.join("\n")),
            }
        }
    }

    fn drain_log(&mut self) -> String {
        while let Ok(line) = self.lines.try_recv() {
            self.log.push(line);
        }
        self.log.join("\n")
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// SIGTERM to the serving process; then every generation must have exited 0 and been
    /// reaped, and nothing this test started may be left.
    fn stop(mut self) -> Vec<String> {
        if let Some(pid) = self.pid() {
            self.pids.insert(pid);
            kill(pid, libc::SIGTERM);
        }
        let first = self.first.id();
        for pid in self.pids.clone() {
            let status = if pid == first {
                self.first.wait().unwrap().code()
            } else {
                match reap(pid) {
                    Some(code) => Some(code),
                    // Drained and gone before its own parent: that parent reaped it, and
                    // logged how it ended.
                    // Reaped by its parent: its own last line says whether it was clean.
                    None => {
                        let line = self.wait_line(&format!("hello {pid}: drained: "));
                        line.contains("cut: Counts { new: 0, active: 0, idle: 0, upgraded: 0 }")
                            .then_some(0)
                    }
                }
            };
            assert_eq!(
                status,
                Some(0),
                "generation {pid} did not exit 0; log:\n{}",
                self.drain_log()
            );
        }
        assert!(
            !self.pid_file.exists(),
            "the PID file outlived the last generation"
        );
        let left = children();
        assert!(left.is_empty(), "processes left behind: {left:?}");
        self.drain_log();
        self.log
    }
}

fn kill(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) with plain integers.
    unsafe { libc::kill(pid as libc::pid_t, signal) };
}

/// Waits (bounded) for `pid`, a child or an orphan we adopted, and returns its exit code;
/// `None` when it is not ours (its parent, still alive when it ended, reaped it).
fn reap(pid: u32) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status into `status`.
        let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) };
        if r == pid as libc::pid_t {
            return Some(if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                -1
            });
        }
        // Not our child (yet): its parent, a generation still draining, may reap it, or
        // exit first and leave it to us.
        if r == -1 && !Path::new(&format!("/proc/{pid}")).exists() {
            return None;
        }
        assert!(Instant::now() < deadline, "pid {pid} never exited");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Our children still there (running or zombie): `(pid, state)`.
fn children() -> Vec<(u32, String)> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((name, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(1) == Some(&me.as_str()) {
            found.push((
                pid,
                format!("{} {}", &name[name.find('(').unwrap_or(0)..], fields[0]),
            ));
        }
    }
    found
}

/// What a serving process holds: (fds that are not sockets, all fds, environment bytes, RSS kB).
fn footprint(pid: u32) -> Option<(usize, usize, usize, u64)> {
    let mut files = 0;
    let mut all = 0;
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
        all += 1;
        let target = std::fs::read_link(fd.path()).ok()?;
        if !target.to_string_lossy().starts_with("socket:") {
            files += 1;
        }
    }
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?.len();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches(" kB")
        .parse()
        .ok()?;
    Some((files, all, environ, rss))
}

/// One `GET /` on a new connection: the status line's code, or the error.
fn get(port: u16) -> Result<String, String> {
    let mut stream =
        std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    match text.split_whitespace().nth(1) {
        Some("200") if text.contains("from pid") => Ok(text),
        _ => Err(format!("bad response {text:?}")),
    }
}

/// Requests one after another on new connections until `stop`; the failures.
fn client(port: u16, stop: mpsc::Receiver<()>) -> std::thread::JoinHandle<(u64, Vec<String>)> {
    std::thread::spawn(move || {
        let (mut ok, mut failed) = (0, Vec::new());
        while stop.try_recv().is_err() {
            match get(port) {
                Ok(_) => ok += 1,
                Err(e) => failed.push(e),
            }
        }
        (ok, failed)
    })
}

/// Stops a [`client`]; it must have made requests, and none may have failed.
fn no_failures(stop: mpsc::Sender<()>, load: std::thread::JoinHandle<(u64, Vec<String>)>) {
    stop.send(()).unwrap();
    let (ok, errors) = load.join().unwrap();
    assert!(ok > 10, "the client made {ok} requests");
    assert!(
        errors.is_empty(),
        "{} requests failed: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
}

/// What a [`keep_alive`] client saw.
#[derive(Debug, Default)]
struct KeepAlive {
    requests: u64,
    failed: Vec<String>,
    /// Connections it had to open again: the server ended the one it had.
    reconnections: u64,
    /// For each connection, the pids whose bodies came over it.
    served_by: Vec<BTreeSet<u32>>,
}

/// One response on a keep-alive connection: the pid in its body, and whether the server
/// said `Connection: close`.
fn read_response(reader: &mut BufReader<std::net::TcpStream>) -> Result<(u32, bool), String> {
    let mut line = String::new();
    if reader.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
        return Err("the connection ended before a response".into());
    }
    if !line.starts_with("HTTP/1.1 200") {
        return Err(format!("bad status line {line:?}"));
    }
    let (mut length, mut close) = (None, false);
    loop {
        line.clear();
        reader.read_line(&mut line).map_err(|e| e.to_string())?;
        let header = line.trim_end().to_ascii_lowercase();
        if header.is_empty() {
            break;
        }
        if let Some(n) = header.strip_prefix("content-length:") {
            length = n.trim().parse::<usize>().ok();
        }
        close |= header == "connection: close";
    }
    let mut body = vec![0u8; length.ok_or("no Content-Length")?];
    reader.read_exact(&mut body).map_err(|e| e.to_string())?;
    let body = String::from_utf8_lossy(&body);
    let pid = body
        .split("pid")
        .nth(1)
        .and_then(|rest| rest.trim().parse().ok())
        .ok_or_else(|| format!("no pid in {body:?}"))?;
    Ok((pid, close))
}

/// A keep-alive client: `GET /` after `GET /` on one connection until `stop`, opening a new
/// one only when the server ends the one it has.
fn keep_alive(port: u16, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<KeepAlive> {
    std::thread::spawn(move || {
        let mut seen = KeepAlive::default();
        let mut conn: Option<BufReader<std::net::TcpStream>> = None;
        while !stop.load(Ordering::Relaxed) {
            let reader = match conn.as_mut() {
                Some(reader) => reader,
                None => {
                    if !seen.served_by.is_empty() {
                        seen.reconnections += 1;
                    }
                    seen.served_by.push(BTreeSet::new());
                    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                    stream
                        .set_read_timeout(Some(Duration::from_secs(10)))
                        .unwrap();
                    conn.insert(BufReader::new(stream))
                }
            };
            let answer = reader
                .get_mut()
                .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                .map_err(|e| e.to_string())
                .and_then(|()| read_response(reader));
            match answer {
                Ok((pid, close)) => {
                    seen.requests += 1;
                    seen.served_by.last_mut().unwrap().insert(pid);
                    if close {
                        conn = None;
                    }
                }
                Err(e) => {
                    seen.failed.push(e);
                    conn = None;
                }
            }
        }
        seen
    })
}

/// SIGHUP to the serving process, then waits until its successor serves; its pid.
fn upgrade(hello: &mut Hello) -> u32 {
    let pid = hello.pid().unwrap();
    kill(pid, libc::SIGHUP);
    let next = hello.wait_pid(|p| p != pid, "the successor took over");
    hello.pids.insert(next);
    next
}

/// `(accepted, adopted)` summed over every generation's last line.
fn totals(log: &[String]) -> (u64, u64) {
    let field = |line: &str, name: &str| -> u64 {
        line.split(name)
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
    };
    log.iter()
        .filter(|l| l.contains(": drained: "))
        .map(|l| (field(l, "accepted: "), field(l, "adopted: ")))
        .fold((0, 0), |(a, b), (c, d)| (a + c, b + d))
}

#[test]
fn keep_alive_clients_keep_their_connections_across_restarts() {
    let _serial = serial();
    let mut hello = Hello::start(hello_binary(), &[], &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..32)
        .map(|_| keep_alive(hello.port, stop.clone()))
        .collect();
    // SIGHUP every 0.5 s for 8 s: the schedule of the load, not a wait for anything.
    let mut generations = vec![hello.pid().unwrap()];
    for _ in 0..16 {
        std::thread::sleep(Duration::from_millis(500));
        generations.push(upgrade(&mut hello));
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let seen: Vec<KeepAlive> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let log = hello.stop();
    let requests: u64 = seen.iter().map(|s| s.requests).sum();
    let failed: Vec<&String> = seen.iter().flat_map(|s| &s.failed).collect();
    let reconnections: u64 = seen.iter().map(|s| s.reconnections).sum();
    let (accepted, adopted) = totals(&log);
    eprintln!(
        "{requests} requests, {} failed, {reconnections} reconnections, {} generations, accepted {accepted}, adopted {adopted}",
        failed.len(),
        generations.len()
    );
    assert!(requests > 1000, "too little load: {requests} requests");
    assert!(
        failed.is_empty(),
        "failed: {:?}",
        &failed[..failed.len().min(5)]
    );
    assert_eq!(reconnections, 0, "clients had to reconnect");
    assert_eq!(accepted, 32, "connections accepted over all generations");
    for (client, s) in seen.iter().enumerate() {
        let pids = &s.served_by[0];
        assert!(
            pids.len() > generations.len() / 2,
            "client {client}'s connection was served by {} generations of {}: {pids:?}",
            pids.len(),
            generations.len()
        );
    }
}

#[test]
fn a_successor_that_dies_during_its_probation_takes_no_connection() {
    let _serial = serial();
    let binary = deployable("probation");
    // Says it serves and takes connections, then dies within the probation.
    let script =
        "#!/bin/sh\neval \"printf 'VERSION=2\\nREADY=1\\n' >&$LAMEDUCK_READY_FD\"\nexit 1\n";
    let mut hello = Hello::start(&binary, &[], &[]);
    let pid = hello.pid().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|_| keep_alive(hello.port, stop.clone()))
        .collect();
    let (stop_new, stopped) = mpsc::channel();
    let load = client(hello.port, stopped);
    deploy_bytes(&binary, script.as_bytes());
    kill(pid, libc::SIGHUP);
    let line = hello.wait_line("upgrade failed");
    assert!(line.contains("during its probation"), "{line}");
    assert_eq!(hello.pid(), Some(pid), "the PID file moved");
    // The deploy fixed, the next upgrade hands the connections over.
    deploy_bytes(&binary, &std::fs::read(hello_binary()).unwrap());
    let next = upgrade(&mut hello);
    hello.wait_line(&format!("successor {next} takes idle connections"));
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let seen: Vec<KeepAlive> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    no_failures(stop_new, load);
    hello.stop();
    for s in &seen {
        assert!(s.failed.is_empty(), "failed: {:?}", s.failed);
        assert_eq!(s.reconnections, 0);
        assert_eq!(s.served_by[0], BTreeSet::from([pid, next]));
    }
}

/// Runs `load` while SIGHUP goes to the serving process every 0.2 s; checks the figures,
/// and returns every generation's log.
fn upgrades_under(load: impl FnOnce(&str) -> (u64, u64, String)) -> Vec<String> {
    let _serial = serial();
    let mut hello = Hello::start(hello_binary(), &[], &[]);
    let url = hello.url();
    let (stop, stopped) = mpsc::channel::<()>();
    let pid_file = hello.pid_file.clone();
    let hup = std::thread::spawn(move || {
        let read =
            || -> Option<u32> { std::fs::read_to_string(&pid_file).ok()?.trim().parse().ok() };
        let mut seen = Vec::new();
        let mut footprints = Vec::new();
        while stopped.recv_timeout(Duration::from_millis(200)).is_err() {
            let Some(pid) = read() else { continue };
            if seen.last() != Some(&pid) {
                seen.push(pid);
                // What the generation holds once it serves, under load.
                footprints.extend(footprint(pid));
            }
            kill(pid, libc::SIGHUP);
            let deadline = Instant::now() + Duration::from_secs(5);
            while read() == Some(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        seen.extend(read());
        (seen, footprints)
    });
    let (requests, failed, text) = load(&url);
    stop.send(()).unwrap();
    let (pids, footprints) = hup.join().unwrap();
    hello.pids.extend(pids.iter().copied());
    let log = hello.stop();
    eprintln!(
        "{requests} requests, {failed} failed, {} generations; first/last footprint (files, fds, env, RSS kB): {:?} / {:?}",
        pids.len(),
        footprints.first(),
        footprints.last()
    );
    assert!(requests > 1000, "too little load:\n{text}");
    assert_eq!(failed, 0, "failed requests:\n{text}\n{}", log.join("\n"));
    assert!(
        pids.len() > UPGRADES,
        "only {} upgrades in {SECONDS} s; log:\n{}",
        pids.len() - 1,
        log.join("\n")
    );
    let upgraded = log
        .iter()
        .filter(|l| l.contains("upgrade: successor"))
        .count();
    assert!(upgraded >= UPGRADES, "{upgraded} handovers logged");
    assert!(
        footprints.len() > UPGRADES,
        "{} footprints",
        footprints.len()
    );
    let first = footprints[0];
    assert!(
        footprints.iter().all(|f| f.0 == first.0),
        "fds other than sockets changed across generations: {footprints:?}"
    );
    // Sockets: the listener, the signal and notice sockets, and the load's connections.
    assert!(
        footprints.iter().all(|f| f.1 <= first.0 + 64 + 16),
        "more fds than connections explain: {footprints:?}"
    );
    // The first generation has no handover variables; from the second on the environment
    // may vary only by the pids in it (the draining generations' list).
    let second = footprints[1].2;
    assert!(
        footprints[1..].iter().all(|f| f.2.abs_diff(second) <= 48),
        "the environment grew across generations: {footprints:?}"
    );
    let rss = |f: &(usize, usize, usize, u64)| f.3;
    let early = footprints[..10].iter().map(rss).max().unwrap();
    let late = footprints[footprints.len() - 10..]
        .iter()
        .map(rss)
        .max()
        .unwrap();
    assert!(
        late <= early + early / 4,
        "RSS grew from {early} to {late} kB: {footprints:?}"
    );
    log
}

fn wrk(url: &str) -> (u64, u64, String) {
    require("wrk", "wrk");
    let out = Command::new("wrk")
        .args(["-t2", "-c64", &format!("-d{SECONDS}s"), url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (requests, errors, non_2xx) = lameduck_tests::wrk_figures(&text);
    (requests, errors + non_2xx, text)
}

fn ab_k(url: &str) -> (u64, u64, String) {
    require("ab", "apache2-utils");
    let out = Command::new("ab")
        .args([
            "-r",
            "-q",
            "-k",
            "-t",
            &SECONDS.to_string(),
            "-n",
            "10000000",
            "-c",
            "64",
            url,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let number = |label: &str| -> Option<u64> {
        let rest = &text[text.find(label)? + label.len()..];
        rest.split_whitespace().next()?.parse().ok()
    };
    let requests = number("Complete requests:").unwrap_or_else(|| panic!("{text}"));
    let failed =
        number("Failed requests:").unwrap_or(0) + number("Non-2xx responses:").unwrap_or(0);
    (requests, failed, text)
}

#[test]
fn sighup_every_200ms_under_wrk_fails_nothing() {
    let log = upgrades_under(wrk);
    // wrk's 64 connections, each accepted once: every later generation adopted them. (And
    // one more: wrk opens and closes a connection of its own before the load — `wrk -c4`
    // against a hello that never restarts is accepted 5 times.)
    let (accepted, adopted) = totals(&log);
    eprintln!("accepted {accepted}, adopted {adopted} over all generations");
    assert_eq!(
        accepted,
        64 + 1,
        "connections accepted over all generations"
    );
}

#[test]
fn sighup_every_200ms_under_ab_keep_alive_fails_nothing() {
    upgrades_under(ab_k);
}

/// A copy of hello that the test may replace, as a deploy replaces the file.
fn deployable(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lameduck-deploy-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("hello");
    deploy_bytes(&path, &std::fs::read(hello_binary()).unwrap());
    path
}

/// Replaces `path` the way a deploy does: a new file renamed over the old one.
fn deploy_bytes(path: &Path, bytes: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    let temp = path.with_extension("new");
    std::fs::write(&temp, bytes).unwrap();
    std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

/// A deploy that fails (`script`), then the good binary again: the failure leaves the same
/// process serving with its PID file and fails no request; the next SIGHUP upgrades.
fn failed_deploy(name: &str, script: &str, extra: &[&str], expect: &str) {
    let _serial = serial();
    let binary = deployable(name);
    let mut hello = Hello::start(&binary, extra, &[]);
    let pid = hello.pid().unwrap();
    let (stop, stopped) = mpsc::channel();
    let load = client(hello.port, stopped);
    deploy_bytes(&binary, script.as_bytes());
    kill(pid, libc::SIGHUP);
    let line = hello.wait_line("upgrade failed");
    assert!(line.contains(expect), "{line}");
    assert_eq!(
        hello.pid(),
        Some(pid),
        "the PID file moved off the serving process"
    );
    assert!(
        get(hello.port).unwrap().contains(&format!("{pid:>10}")),
        "the old process serves"
    );
    // The failed successor is gone, not left running or as a zombie.
    let failed: u32 = line
        .split("successor ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no successor pid in {line:?}"));
    assert!(
        !Path::new(&format!("/proc/{failed}")).exists(),
        "successor {failed} is still there"
    );

    deploy_bytes(&binary, &std::fs::read(hello_binary()).unwrap());
    kill(pid, libc::SIGHUP);
    let next = hello.wait_pid(|p| p != pid, "the fixed deploy took over");
    hello.pids.insert(next);
    no_failures(stop, load);
    hello.stop();
}

#[test]
fn a_broken_deploy_is_rolled_back() {
    failed_deploy(
        "broken",
        "#!/bin/sh\nexit 1\n",
        &[],
        "ended before it served (exit status 1)",
    );
}

#[test]
fn a_deploy_that_never_serves_is_killed_at_the_upgrade_timeout() {
    failed_deploy(
        "hanging",
        "#!/bin/sh\nexec sleep 1000\n",
        &["--upgrade-timeout", "500ms"],
        "did not serve within 500ms; killed",
    );
}

/// hello, deployed again as a script that starts the real one after half a second, and
/// sent SIGHUP: an upgrade that is surely still under way for a while. (hello, its pid.)
fn slow_upgrade(name: &str) -> (Hello, u32) {
    let binary = deployable(name);
    let script = format!(
        "#!/bin/sh\nsleep 0.5\nexec {} \"$@\"\n",
        hello_binary().display()
    );
    let hello = Hello::start(&binary, &[], &[]);
    deploy_bytes(&binary, script.as_bytes());
    let pid = hello.pid().unwrap();
    kill(pid, libc::SIGHUP);
    (hello, pid)
}

#[test]
fn two_sighups_back_to_back_upgrade_once() {
    let _serial = serial();
    // A deploy whose successor takes half a second to start, so that the second SIGHUP
    // surely comes while the first upgrade waits for it.
    let (mut hello, pid) = slow_upgrade("slow");
    hello.wait_line("upgrade: started successor");
    kill(pid, libc::SIGHUP);
    hello.wait_line("upgrade failed: upgrade in progress");
    let next = hello.wait_pid(|p| p != pid, "the upgrade");
    hello.pids.insert(next);
    let log = hello.stop();
    assert_eq!(
        log.iter()
            .filter(|l| l.contains("upgrade: successor"))
            .count(),
        1,
        "{log:?}"
    );
}

#[test]
fn systemd_hears_ready_reloading_mainpid_and_stopping_in_order() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let _serial = serial();
    hello_binary();
    let name = format!("lameduck-test-notify-{}", std::process::id());
    let socket = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let notify = format!("@{name}");
    let mut hello = Hello::start(
        hello_binary(),
        &[],
        &[
            ("NOTIFY_SOCKET", &notify),
            ("LAMEDUCK_DEADLINE", "5s"),
            ("LAMEDUCK_LINGER", "2s"),
        ],
    );
    let mut buf = [0u8; 512];
    let mut recv = || {
        let n = socket.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(recv(), "READY=1\n");
    let pid = hello.pid().unwrap();
    kill(pid, libc::SIGHUP);
    let reloading = recv();
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading:?}"
    );
    let next = hello.wait_pid(|p| p != pid, "the upgrade");
    hello.pids.insert(next);
    assert_eq!(recv(), format!("MAINPID={next}\nREADY=1\n"));
    kill(next, libc::SIGTERM);
    // The longest drain: the lame-duck window (0) + the deadline (5 s) + the linger (2 s).
    assert_eq!(recv(), "STOPPING=1\nEXTEND_TIMEOUT_USEC=7000000\n");
    hello.stop();
}

/// The successor pid named in a log line after `after`.
fn pid_after(line: &str, after: &str) -> u32 {
    line.split(after)
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid after {after:?} in {line:?}"))
}

#[test]
fn a_successor_that_dies_right_after_it_served_is_replaced() {
    let _serial = serial();
    let binary = deployable("dies");
    // Says it serves, puts the good binary back for the replacement, and dies.
    let script = format!(
        "#!/bin/sh\ncp {good} \"$0.tmp\" && mv \"$0.tmp\" \"$0\"\neval \"echo READY=1 >&$LAMEDUCK_READY_FD\"\nexit 1\n",
        good = hello_binary().display()
    );
    let mut hello = Hello::start(&binary, &[], &[]);
    let pid = hello.pid().unwrap();
    let (stop, stopped) = mpsc::channel();
    let load = client(hello.port, stopped);
    deploy_bytes(&binary, script.as_bytes());
    kill(pid, libc::SIGHUP);
    let dead = pid_after(&hello.wait_line("failed after it served"), "successor ");
    let line = hello.wait_line("(a replacement)");
    let replacement = pid_after(&line, "successor ");
    assert_ne!(dead, replacement);
    hello.wait_pid(|p| p == replacement, "the replacement's PID file");
    hello.pids.insert(replacement);
    assert!(
        get(hello.port)
            .unwrap()
            .contains(&format!("{replacement:>10}"))
    );
    no_failures(stop, load);
    hello.stop();
}

#[test]
fn a_sigkill_of_the_old_process_mid_handover_leaves_the_successor_serving() {
    let _serial = serial();
    let (mut hello, pid) = slow_upgrade("orphan");
    let successor = pid_after(
        &hello.wait_line("upgrade: started successor"),
        "started successor ",
    );
    kill(pid, libc::SIGKILL);
    assert_eq!(hello.first.wait().unwrap().code(), None, "killed");
    hello.pids.remove(&pid);
    // Made while nobody accepts: it waits in the backlog the successor holds.
    let answer = get(hello.port).expect("the successor answers");
    assert!(answer.contains(&format!("{successor:>10}")), "{answer}");
    hello.wait_line("serving as the main process");
    // The successor writes the PID file before it logs that line.
    assert_eq!(hello.pid(), Some(successor));
    hello.pids.insert(successor);
    hello.stop();
}

/// nginx with an upstream keep-alive pool in front of hello, SIGHUP every 0.5 s under `wrk`
/// through nginx: nothing fails, and the pool's connections to hello are handed from
/// generation to generation instead of being opened anew at every restart.
#[test]
fn an_nginx_upstream_keep_alive_pool_survives_restarts() {
    require("nginx", "nginx");
    require("wrk", "wrk");
    let _serial = serial();
    let mut hello = Hello::start(hello_binary(), &[], &[]);
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("lameduck-nginx-{port}"));
    std::fs::create_dir_all(&dir).unwrap();
    // SAFETY: geteuid(2) takes nothing and cannot fail.
    let user = if unsafe { libc::geteuid() } == 0 {
        "user root;"
    } else {
        ""
    };
    let d = dir.display();
    let conf = format!(
        "{user}
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream hello {{
        server 127.0.0.1:{hello_port};
        keepalive 16;
        # Not the default 1,000: then nginx itself renews every connection under load.
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://hello;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }}
    }}
}}
",
        hello_port = hello.port
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let mut command = Command::new("nginx");
    command
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut nginx = own_group(&mut command).spawn().expect("nginx runs");
    let _watchdog = Watchdog::new(nginx.id(), "nginx", Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(port).is_err() {
        assert!(Instant::now() < deadline, "nginx does not proxy to hello");
        std::thread::sleep(Duration::from_millis(10));
    }
    let url = format!("http://127.0.0.1:{port}/");
    let wrk = std::thread::spawn(move || {
        let out = Command::new("wrk")
            .args(["-t2", "-c16", "-d8s", &url])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    });
    // SIGHUP every 0.5 s while wrk runs: the schedule of the load.
    let mut restarts = 0;
    for _ in 0..14 {
        std::thread::sleep(Duration::from_millis(500));
        upgrade(&mut hello);
        restarts += 1;
    }
    let text = wrk.join().unwrap();
    lameduck_tests::signal_group(nginx.id(), "TERM");
    let _ = nginx.wait();
    let log = hello.stop();
    let (requests, errors, non_2xx) = lameduck_tests::wrk_figures(&text);
    let (accepted, adopted) = totals(&log);
    eprintln!(
        "{requests} requests, {errors} errors, {non_2xx} non-2xx, {restarts} restarts; hello accepted {accepted}, adopted {adopted} over all generations"
    );
    assert!(requests > 1000, "too little load:\n{text}");
    assert_eq!((errors, non_2xx), (0, 0), "{text}");
    // One pool (at most 16 idle plus wrk's 16 in flight), not one per restart: without
    // the transfer every restart makes nginx open them all again (16 × 14 and more).
    assert!(
        accepted <= 40,
        "hello accepted {accepted} connections from nginx in {restarts} restarts"
    );
    assert!(adopted > 0, "no connection was handed over");
}

/// A successor that does not take the offer — as a version-1 binary does not: this wrapper
/// closes the transfer socket's fd before it starts hello — gets version 1's drain: every
/// keep-alive client is asked to reconnect, none fails. The next upgrade, between two
/// version-2 processes, transfers again.
#[test]
fn a_successor_that_does_not_take_connections_gets_version_1s_drain() {
    let _serial = serial();
    let binary = deployable("version-1");
    let mut hello = Hello::start(&binary, &[], &[]);
    let first = hello.pid().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|_| keep_alive(hello.port, stop.clone()))
        .collect();
    // One listener (fd 3), the ready pipe (fd 4), the transfer socket (fd 5).
    let script = format!(
        "#!/bin/sh\nexec 5<&-\nexec {good} \"$@\"\n",
        good = hello_binary().display()
    );
    deploy_bytes(&binary, script.as_bytes());
    let second = upgrade(&mut hello);
    hello.wait_line(&format!("hello {first}: drained: "));
    deploy_bytes(&binary, &std::fs::read(hello_binary()).unwrap());
    let third = upgrade(&mut hello);
    hello.wait_line(&format!(
        "transfer: successor {third} takes idle connections"
    ));
    hello.wait_line(&format!("hello {second}: drained: "));
    stop.store(true, Ordering::Relaxed);
    let seen: Vec<KeepAlive> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let log = hello.stop();
    let drained = |pid: u32| {
        log.iter()
            .find(|l| l.contains(&format!("hello {pid}: drained: ")))
            .unwrap()
            .clone()
    };
    assert!(
        drained(first).contains("handed_over: 0,"),
        "{}",
        drained(first)
    );
    assert!(
        !drained(second).contains("handed_over: 0,"),
        "{}",
        drained(second)
    );
    assert!(
        !log.iter()
            .any(|l| l.contains(&format!("successor {second} takes idle connections"))),
        "{log:?}"
    );
    for s in &seen {
        assert!(s.failed.is_empty(), "failed: {:?}", s.failed);
        // Asked to leave by the first generation (once, or again if its next connection
        // raced the first's stop), never by the second.
        assert!(s.reconnections >= 1, "{s:?}");
        let last = s.served_by.last().unwrap();
        assert!(last.contains(&second) && last.contains(&third), "{s:?}");
    }
}

/// The descriptors `pid` has open.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| dir.count())
        .unwrap_or(0)
}

/// `prlimit --pid PID --nofile=SOFT:HARD` (util-linux), as an operator would.
fn set_nofile(pid: u32, soft: usize, hard: &str) {
    let status = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            &format!("--nofile={soft}:{hard}"),
        ])
        .status()
        .expect("prlimit (util-linux)");
    assert!(status.success(), "prlimit failed: {status}");
}

/// The hard descriptor limit of `pid`, as prlimit prints it.
fn hard_nofile(pid: u32) -> String {
    let out = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            "--nofile",
            "--output=HARD",
            "--noheadings",
        ])
        .output()
        .expect("prlimit (util-linux)");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// 40 keep-alive clients, one SIGHUP, and `disturb` done to the successor as soon as it
/// serves (before the transfer, which waits out its probation); every request answered.
/// Returns the log.
fn transfer_disturbed(disturb: impl FnOnce(&mut Hello, u32)) -> Vec<String> {
    transfer_with(|_| {}, disturb)
}

/// [`transfer_disturbed`], with `before` done to the serving process before the SIGHUP.
fn transfer_with(before: impl FnOnce(u32), disturb: impl FnOnce(&mut Hello, u32)) -> Vec<String> {
    let _serial = serial();
    let mut hello = Hello::start(hello_binary(), &[], &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..40)
        .map(|_| keep_alive(hello.port, stop.clone()))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    before(hello.pid().unwrap());
    let successor = upgrade(&mut hello);
    disturb(&mut hello, successor);
    // The load goes on until the old process is gone (its drain, every take-back answered).
    let old_gone = Instant::now();
    hello.wait_line("drained: ");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let seen: Vec<KeepAlive> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let log = hello.stop();
    let requests: u64 = seen.iter().map(|s| s.requests).sum();
    let failed: Vec<&String> = seen.iter().flat_map(|s| &s.failed).collect();
    eprintln!(
        "{requests} requests, {} failed, drained after {:?}",
        failed.len(),
        old_gone.elapsed()
    );
    assert!(requests > 200, "too little load: {requests} requests");
    assert!(
        failed.is_empty(),
        "{} failed: {:?}\n{}",
        failed.len(),
        &failed[..failed.len().min(5)],
        log.join("\n")
    );
    log
}

/// The fault of issue 29: the successor's soft descriptor limit cut to what it holds plus
/// five right after it serves, restored 0.5 s later. Before version 3 the old process
/// counted the sockets whose `recvmsg` was truncated as handed over: 11 to 35 requests lost.
#[test]
fn a_successor_short_of_descriptors_loses_no_request() {
    let log = transfer_disturbed(|_, successor| {
        let hard = hard_nofile(successor);
        set_nofile(successor, open_fds(successor) + 5, &hard);
        std::thread::sleep(Duration::from_millis(500));
        set_nofile(successor, 20_000, &hard);
    });
    let drained = log.iter().find(|l| l.contains("drained: ")).unwrap();
    eprintln!("{drained}");
}

/// A successor stopped (SIGSTOP) as soon as it serves answers nothing: every socket sent
/// comes back after the answer timeout and is served by the old process; continued, the
/// successor closes the copies it was too late for, unread, and serves on.
#[test]
fn a_successor_stopped_during_the_transfer_loses_no_request() {
    let log = transfer_disturbed(|hello, successor| {
        kill(successor, libc::SIGSTOP);
        hello.wait_line("takes idle connections");
        std::thread::sleep(Duration::from_millis(2_000));
        kill(successor, libc::SIGCONT);
    });
    let drained = log.iter().find(|l| l.contains("drained: ")).unwrap();
    assert!(!drained.contains("taken_back: 0,"), "{drained}");
}

/// A successor killed (SIGKILL) in the middle of the transfer (stopped first, so that the
/// sockets wait in its queue): the kernel closes its copies, every socket not committed
/// comes back, and a replacement serves the clients that reconnect.
#[test]
fn a_successor_killed_during_the_transfer_loses_no_request() {
    let log = transfer_disturbed(|hello, successor| {
        kill(successor, libc::SIGSTOP);
        hello.wait_line("takes idle connections");
        std::thread::sleep(Duration::from_millis(200));
        kill(successor, libc::SIGKILL);
        // Killed: it logs no drain (its parent reaps it); the replacement is the last.
        hello.pids.remove(&successor);
        let replacement = hello.wait_pid(|p| p != successor, "a replacement serves");
        hello.pids.insert(replacement);
    });
    let drained = log.iter().find(|l| l.contains("drained: ")).unwrap();
    assert!(!drained.contains("taken_back: 0,"), "{drained}");
}

/// A successor with no room for more — its descriptor limit, inherited from a predecessor
/// that had 12 to spare, leaves it fewer free than the 64 it keeps for accepts — grants no
/// credit: nothing is sent to it, the old process serves its connections as version 1 after
/// the credit wait, and the successor has room to accept the clients that reconnect. Never
/// restored: the outcome the docs state for a successor that cannot take more.
#[test]
fn a_successor_without_room_gets_nothing_and_accepts_the_reconnections() {
    let log = transfer_with(
        |old| set_nofile(old, open_fds(old) + 12, &hard_nofile(old)),
        |_, _| {},
    );
    let drained = log.iter().find(|l| l.contains("drained: ")).unwrap();
    assert!(drained.contains("handed_over: 0,"), "{drained}");
    assert!(
        log.iter()
            .any(|l| l.contains("no more connections taken until some are")),
        "the successor did not say it has no room:\n{}",
        log.join("\n")
    );
}
