//! Rolling updates of a small fleet behind a real load balancer (Debian's `haproxy`): each
//! instance of `hello` owns its own socket; an update starts the new instance, puts it in
//! the balancer, and SIGTERMs the old one, while `wrk` runs through the balancer.
//!
//! - TCP mode, `retries 0`, the old instance taken out through HAProxy's runtime API 300 ms
//!   after its SIGTERM (as kube-proxy removes an endpoint, late): with a 1 s lame-duck window
//!   nothing fails; without one, the connections HAProxy still sends are refused — the test
//!   can fail, and does.
//! - HTTP mode, HAProxy health-checking `/ready` every 100 ms, nobody removing anything by
//!   hand: the old instance says 503 from its SIGTERM and keeps serving through its lame
//!   duck; nothing fails.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use lameduck_tests::{Watchdog, free_port, output_within, own_group, require, signal_group};

/// Seconds of load per run.
const SECONDS: u64 = 8;
/// Instances serving at once.
const FLEET: usize = 2;
/// Server slots in the balancer: the fleet, plus room for the instances that replace it.
const SLOTS: usize = 8;

fn hello_binary() -> &'static Path {
    static HELLO: OnceLock<PathBuf> = OnceLock::new();
    HELLO.get_or_init(|| lameduck_tests::build_examples(&["hello"], true).join("hello"))
}

/// One instance of hello on its own port, with `vars`.
struct Instance {
    child: Child,
    _watchdog: Watchdog,
}

impl Instance {
    fn start(port: u16, vars: &[(&str, &str)]) -> Instance {
        let mut command = Command::new(hello_binary());
        command
            .arg(format!("127.0.0.1:{port}"))
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = own_group(&mut command).spawn().expect("hello runs");
        let watchdog = Watchdog::new(child.id(), "hello", Duration::from_secs(SECONDS + 60));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "hello never listened on {port}");
            std::thread::sleep(Duration::from_millis(10));
        }
        Instance {
            child,
            _watchdog: watchdog,
        }
    }

    /// SIGTERM; the instance drains and exits on its own.
    fn terminate(&self) {
        signal_group(self.child.id(), "TERM");
    }

    /// Waits for its exit: its status.
    fn wait(mut self) -> std::process::ExitStatus {
        self.child.wait().unwrap()
    }
}

/// HAProxy in front of `SLOTS` server slots on `ports`, the first `FLEET` enabled; an
/// update enables the next slot (the new instance, already listening) through the runtime
/// API.
struct Balancer {
    child: Child,
    dir: PathBuf,
    port: u16,
    _watchdog: Watchdog,
}

impl Balancer {
    /// `http` picks HTTP mode with health checks of `/ready` every 100 ms; otherwise TCP
    /// mode, servers enabled and disabled through the runtime API.
    fn start(ports: &[u16], http: bool) -> Balancer {
        require("haproxy", "haproxy");
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("lameduck-fleet-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut config = format!(
            "global\n  stats socket {}/admin.sock mode 600 level admin\n\
             defaults\n  mode {}\n  retries 0\n  timeout connect 1s\n  timeout client 30s\n  timeout server 30s\n\
             frontend fe\n  bind 127.0.0.1:{port}\n  default_backend be\n\
             backend be\n  balance roundrobin\n",
            dir.display(),
            if http { "http" } else { "tcp" },
        );
        if http {
            config += "  option httpchk GET /ready\n  http-check expect status 200\n";
            if std::env::var_os("FLEET_LOG").is_some() {
                config = config.replace("defaults\n", "defaults\n  log stderr format raw local0\n  option httplog\n  option dontlog-normal\n");
            }
        }
        for (i, server_port) in ports.iter().enumerate() {
            // HTTP mode checks every server; either way the slots of instances not yet
            // started are disabled (a checked server starts UP, before its first check).
            let mut state = if http {
                " check inter 100 fall 1 rise 1"
            } else {
                ""
            }
            .to_owned();
            if i >= FLEET {
                state += " disabled";
            }
            config += &format!("  server s{i} 127.0.0.1:{server_port}{state}\n");
        }
        std::fs::write(dir.join("haproxy.cfg"), config).unwrap();
        let mut command = Command::new("haproxy");
        command
            .arg("-db")
            .arg("-f")
            .arg(dir.join("haproxy.cfg"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let child = own_group(&mut command).spawn().expect("haproxy runs");
        let watchdog = Watchdog::new(child.id(), "haproxy", Duration::from_secs(SECONDS + 90));
        let deadline = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(dir.join("admin.sock")).is_err() {
            assert!(Instant::now() < deadline, "haproxy never opened its socket");
            std::thread::sleep(Duration::from_millis(10));
        }
        Balancer {
            child,
            dir,
            port,
            _watchdog: watchdog,
        }
    }

    /// One runtime API command; its answer.
    fn command(&self, command: &str) -> String {
        let mut socket = UnixStream::connect(self.dir.join("admin.sock")).unwrap();
        socket.write_all(format!("{command}\n").as_bytes()).unwrap();
        let mut answer = String::new();
        socket.read_to_string(&mut answer).unwrap();
        answer
    }

    fn enable(&self, slot: usize) {
        let answer = self.command(&format!("enable server be/s{slot}"));
        assert!(answer.trim().is_empty(), "enable s{slot}: {answer}");
    }

    fn disable(&self, slot: usize) {
        let answer = self.command(&format!("disable server be/s{slot}"));
        assert!(answer.trim().is_empty(), "disable s{slot}: {answer}");
    }

    /// Waits until HAProxy's health check has slot `slot` UP.
    fn wait_up(&self, slot: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let stat = self.command("show stat");
            let up = stat.lines().any(|l| {
                let f: Vec<&str> = l.split(',').collect();
                f.len() > 17 && f[0] == "be" && f[1] == format!("s{slot}") && f[17] == "UP"
            });
            if up {
                return;
            }
            assert!(Instant::now() < deadline, "s{slot} never UP:\n{stat}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        signal_group(self.child.id(), "KILL");
        let _ = self.child.wait();
        if std::env::var_os("FLEET_LOG").is_some() {
            let mut log = String::new();
            let _ = self.child.stderr.take().unwrap().read_to_string(&mut log);
            for line in log.lines().take(30) {
                println!("haproxy: {line}");
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `wrk` through the balancer for SECONDS: (requests, failed: socket errors + non-2xx).
fn wrk(port: u16) -> (u64, u64) {
    require("wrk", "wrk");
    let output = output_within(
        Command::new("wrk").args([
            "-t2",
            "-c50",
            &format!("-d{SECONDS}s"),
            &format!("http://127.0.0.1:{port}/"),
        ]),
        Duration::from_secs(SECONDS + 60),
    );
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "wrk failed: {text}");
    let (requests, errors, non_2xx) = lameduck_tests::wrk_figures(&text);
    println!("{text}");
    (requests, errors + non_2xx)
}

/// A rolling update under `wrk`: every second the oldest instance is replaced — the new one
/// starts on a fresh slot and is put in the balancer, the old one gets SIGTERM, and (TCP
/// mode) is taken out `removal` later. Returns (requests, failed, updates, exit statuses).
fn rolling_update(
    http: bool,
    vars: &[(&str, &str)],
    removal: Duration,
) -> (u64, u64, usize, Vec<std::process::ExitStatus>) {
    let ports: Vec<u16> = (0..SLOTS).map(|_| free_port()).collect();
    let mut serving: Vec<(usize, Instance)> = (0..FLEET)
        .map(|slot| (slot, Instance::start(ports[slot], vars)))
        .collect();
    let balancer = Balancer::start(&ports, http);
    if http {
        for (slot, _) in &serving {
            balancer.wait_up(*slot);
        }
    }
    let load = std::thread::spawn({
        let port = balancer.port;
        move || wrk(port)
    });
    let mut retired = Vec::new();
    let mut updates = 0;
    let started = Instant::now();
    for (next, &port) in ports.iter().enumerate().skip(FLEET) {
        // One update a second: pacing, not waiting for anything.
        std::thread::sleep(Duration::from_secs(1));
        if started.elapsed() > Duration::from_secs(SECONDS - 2) {
            break;
        }
        let new = Instance::start(port, vars);
        balancer.enable(next);
        if http {
            balancer.wait_up(next);
        }
        let (old_slot, old) = serving.remove(0);
        old.terminate();
        if !http {
            std::thread::sleep(removal);
            balancer.disable(old_slot);
        }
        serving.push((next, new));
        retired.push(old);
        updates += 1;
    }
    let (requests, failed) = load.join().unwrap();
    let mut statuses: Vec<_> = retired.into_iter().map(Instance::wait).collect();
    for (_, instance) in serving {
        instance.terminate();
        statuses.push(instance.wait());
    }
    (requests, failed, updates, statuses)
}

#[test]
fn tcp_mode_late_removal_loses_nothing_with_a_lame_duck_window() {
    let (requests, failed, updates, statuses) = rolling_update(
        false,
        &[("LAMEDUCK_LAME_DUCK", "1s")],
        Duration::from_millis(300),
    );
    println!(
        "haproxy tcp, removal 300 ms after SIGTERM, lame duck 1 s: {requests} requests, {failed} failed, {updates} updates"
    );
    assert!(updates >= 3, "too few updates: {updates}");
    assert!(requests > 1000, "too little load: {requests}");
    assert_eq!(failed, 0, "{requests} requests across {updates} updates");
    assert!(statuses.iter().all(|s| s.success()), "{statuses:?}");
}

/// The same run without a lame-duck window must lose requests, or the test above proves
/// nothing: the old instance stops accepting at SIGTERM while HAProxy still sends to it.
#[test]
fn tcp_mode_late_removal_loses_requests_without_a_lame_duck_window() {
    let (requests, failed, updates, _) = rolling_update(
        false,
        &[("LAMEDUCK_LAME_DUCK", "0s")],
        Duration::from_millis(300),
    );
    println!(
        "haproxy tcp, removal 300 ms after SIGTERM, no lame duck: {requests} requests, {failed} failed, {updates} updates"
    );
    assert!(
        failed > 0,
        "nothing lost without a lame duck, so the test cannot tell"
    );
}

#[test]
fn http_mode_readiness_checks_lose_nothing() {
    let (requests, failed, updates, statuses) =
        rolling_update(true, &[("LAMEDUCK_LAME_DUCK", "1s")], Duration::ZERO);
    println!(
        "haproxy http, /ready checked every 100 ms, lame duck 1 s: {requests} requests, {failed} failed, {updates} updates"
    );
    assert!(updates >= 3, "too few updates: {updates}");
    assert!(requests > 1000, "too little load: {requests}");
    assert_eq!(failed, 0, "{requests} requests across {updates} updates");
    assert!(statuses.iter().all(|s| s.success()), "{statuses:?}");
}
