//! The whole point, in one command and with no tool to install:
//!
//! ```text
//! cargo run --release --example demo -- [--seconds 10] [--concurrency 64] [--restart-ms 500]
//! ```
//!
//! The demo starts the hello server and restarts it every `--restart-ms` while a built-in
//! load — half keep-alive clients, half a new connection per request — counts every request
//! that fails. It runs twice:
//!
//! - **lameduck**, restarting itself with no supervisor ([`lameduck::restart`], as
//!   `hello --self-restart` does): `kill -HUP $(cat pid-file)` starts the successor, hands it
//!   the socket, and the old process drains once the successor serves;
//! - **naive**, the server most code ships (hyper, exit at once on SIGTERM), restarted the
//!   only way it can be without a supervisor: SIGTERM, wait for it to exit, start it again.
//!
//! then prints both side by side.
#![forbid(unsafe_code)]

mod hello_server;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use lameduck::restart;
use rustix::process::{Pid, Signal, WaitOptions};

struct Options {
    seconds: u64,
    concurrency: usize,
    restart: Duration,
}

fn options() -> Options {
    let mut options = Options {
        seconds: 10,
        concurrency: 64,
        restart: Duration::from_millis(500),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let value = args.next().and_then(|v| v.parse::<u64>().ok());
        match (flag.as_str(), value) {
            ("--seconds", Some(v)) if v > 0 => options.seconds = v,
            ("--concurrency", Some(v)) if v > 1 => options.concurrency = v as usize,
            ("--restart-ms", Some(v)) if v >= 50 => options.restart = Duration::from_millis(v),
            _ => {
                eprintln!(
                    "usage: demo [--seconds N>0] [--concurrency N>1] [--restart-ms N>=50] \
                     (got `{flag}`)"
                );
                std::process::exit(2);
            }
        }
    }
    options
}

fn main() {
    match std::env::var("DEMO_SERVER").as_deref() {
        Ok(variant) => server(variant == "naive"),
        Err(_) => demo(options()),
    }
}

/// The server under test, started as `DEMO_SERVER=lameduck|naive demo ADDR PID_FILE`.
/// lameduck's successors are started the same way, by the restart module.
fn server(naive: bool) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, pid_file] = &args[..] else {
        eprintln!("demo: the server takes ADDR PID_FILE");
        std::process::exit(2);
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let code = runtime.block_on(async {
        if naive {
            hello_server::serve_naive(addr, || {}).await
        } else {
            let self_restart = restart::Options::default().pid_file(pid_file);
            hello_server::serve_lameduck::<lameduck::tokio::Tokio>(addr, || {}, Some(self_restart))
                .await
        }
    });
    std::process::exit(code);
}

/// What one run measured.
#[derive(Default)]
struct Stats {
    requests: AtomicU64,
    failed: AtomicU64,
    restarts: AtomicU64,
    failed_restarts: AtomicU64,
    server_pid: AtomicU64,
    latencies_us: Mutex<Vec<u32>>,
    drains_ms: Mutex<Vec<f64>>,
}

fn demo(options: Options) {
    // Each generation of the self-restarting server is the child of the one before, which
    // exits: as the child subreaper, the demo inherits them and reaps them (no zombies),
    // and can tell when one is gone.
    // rustix's prctl takes any pid as "on".
    rustix::process::set_child_subreaper(rustix::process::Pid::from_raw(1))
        .expect("PR_SET_CHILD_SUBREAPER");
    let addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        probe.local_addr().unwrap()
    };
    let dir = std::env::temp_dir().join(format!("lameduck-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    println!(
        "demo: {} s per run, {} clients (half keep-alive), a restart every {} ms, on {addr}\n",
        options.seconds,
        options.concurrency,
        options.restart.as_millis()
    );
    let mut rows = Vec::new();
    for (name, naive) in [("lameduck", false), ("naive", true)] {
        let stats = Arc::new(Stats::default());
        run(
            &options,
            addr,
            &dir.join(format!("{name}.pid")),
            naive,
            &stats,
        );
        rows.push((name, stats));
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!();
    println!(
        "{:<10} {:>10} {:>8} {:>9} {:>9} {:>9} {:>20}",
        "server", "requests", "failed", "restarts", "p50", "p99", "old gone p50 / max"
    );
    for (name, stats) in &rows {
        let mut latencies = stats.latencies_us.lock().unwrap().clone();
        latencies.sort_unstable();
        let pct = |p: f64| {
            latencies
                .get(((latencies.len() as f64 - 1.0) * p) as usize)
                .map_or("-".into(), |us| format!("{:.2} ms", *us as f64 / 1000.0))
        };
        let mut drains = stats.drains_ms.lock().unwrap().clone();
        drains.sort_by(f64::total_cmp);
        let drain = if drains.is_empty() {
            "-".into()
        } else {
            format!(
                "{:.1} / {:.1} ms",
                drains[drains.len() / 2],
                drains[drains.len() - 1]
            )
        };
        println!(
            "{:<10} {:>10} {:>8} {:>9} {:>9} {:>9} {:>20}",
            name,
            stats.requests.load(Ordering::Relaxed),
            stats.failed.load(Ordering::Relaxed),
            stats.restarts.load(Ordering::Relaxed),
            pct(0.50),
            pct(0.99),
            drain
        );
    }
    println!(
        "\n\"old gone\": from the restart's signal until the old process has exited (lameduck \
         keeps it {} ms after the handover, so it can replace a successor that dies at once).",
        restart::PROBATION.as_millis()
    );
    let lameduck = &rows[0].1;
    let lameduck_failed = lameduck.failed.load(Ordering::Relaxed);
    let failed_restarts = lameduck.failed_restarts.load(Ordering::Relaxed);
    println!(
        "\n{}",
        if lameduck_failed == 0 && failed_restarts == 0 {
            "lameduck: zero failed requests across every restart."
        } else {
            "lameduck FAILED requests or restarts: this is a bug, please report it."
        }
    );
    std::process::exit(i32::from(lameduck_failed != 0 || failed_restarts != 0));
}

/// Starts the server and waits until it serves: lameduck's restart module writes the PID
/// file once the accept loop runs; the naive server is serving once it accepts.
fn start(addr: SocketAddr, pid_file: &Path, naive: bool) -> Child {
    let child = Command::new(std::env::current_exe().unwrap())
        .env("DEMO_SERVER", if naive { "naive" } else { "lameduck" })
        .arg(addr.to_string())
        .arg(pid_file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the server");
    let started = Instant::now();
    while if naive {
        std::net::TcpStream::connect(addr).is_err()
    } else {
        read_pid(pid_file).is_none()
    } {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the server did not start"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    child
}

fn read_pid(pid_file: &Path) -> Option<u32> {
    std::fs::read_to_string(pid_file).ok()?.trim().parse().ok()
}

/// Sends `signal` to `pid` (no `kill` process per restart: its start-up would be timed too).
fn signal(pid: u32, signal: Signal) {
    // A pid that has gone meanwhile only gets ESRCH.
    if let Some(pid) = Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(pid, signal);
    }
}

/// Whether `pid` has exited; reaps it if it is the demo's child (its parent exited before
/// it, or it is the first generation). A zombie stays one until reaped, so looking first and
/// reaping second cannot miss it.
fn gone(pid: u32) -> bool {
    let zombie = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => return true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|s| s.trim_start().starts_with(['Z', 'X'])),
    };
    if !zombie {
        return false;
    }
    let Some(pid) = Pid::from_raw(pid as i32) else {
        return true;
    };
    match rustix::process::waitpid(Some(pid), WaitOptions::NOHANG) {
        // Its main thread is a zombie while the others still exit: not gone yet.
        Ok(None) => false,
        // Reaped; or (an error) not the demo's child, and its parent, still draining,
        // reaps it.
        Ok(Some(_)) | Err(_) => true,
    }
}

/// One restart of the lameduck server: SIGHUP to the process in the PID file, which starts
/// its successor; counted once the PID file names the successor. Then the time until the
/// old process has exited.
fn upgrade(pid_file: &Path, stats: &Stats) {
    let Some(old) = read_pid(pid_file) else {
        return;
    };
    let sent = Instant::now();
    signal(old, Signal::HUP);
    while read_pid(pid_file) == Some(old) {
        if sent.elapsed() > Duration::from_secs(10) {
            stats.failed_restarts.fetch_add(1, Ordering::Relaxed);
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    if let Some(new) = read_pid(pid_file) {
        stats.server_pid.store(u64::from(new), Ordering::Relaxed);
    }
    stats.restarts.fetch_add(1, Ordering::Relaxed);
    while !gone(old) {
        std::thread::sleep(Duration::from_millis(1));
    }
    stats
        .drains_ms
        .lock()
        .unwrap()
        .push(sent.elapsed().as_secs_f64() * 1000.0);
}

/// SIGTERM, then the time until the server has exited: its drain.
fn stop(mut server: Child, stats: &Stats) {
    let sent = Instant::now();
    signal(server.id(), Signal::TERM);
    let _ = server.wait();
    stats
        .drains_ms
        .lock()
        .unwrap()
        .push(sent.elapsed().as_secs_f64() * 1000.0);
}

fn run(options: &Options, addr: SocketAddr, pid_file: &Path, naive: bool, stats: &Arc<Stats>) {
    let name = if naive { "naive" } else { "lameduck" };
    let stop_load = Arc::new(AtomicBool::new(false));
    let mut current = Some(start(addr, pid_file, naive));
    stats
        .server_pid
        .store(u64::from(current.as_ref().unwrap().id()), Ordering::Relaxed);

    let load = {
        let (stats, stop, concurrency) = (stats.clone(), stop_load.clone(), options.concurrency);
        std::thread::spawn(move || load(addr, concurrency, &stats, &stop))
    };
    let started = Instant::now();
    let until = started + Duration::from_secs(options.seconds);
    let mut upgrades: Vec<std::thread::JoinHandle<()>> = Vec::new();
    let mut next_restart = started + options.restart;
    let mut next_print = started;
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
        if Instant::now() >= next_print {
            next_print += Duration::from_millis(250);
            progress(name, started, stats);
        }
        if Instant::now() >= next_restart {
            next_restart += options.restart;
            if naive {
                // Stop, then start: nobody accepts in between, and in-flight requests die.
                stop(current.take().unwrap(), stats);
                let new = start(addr, pid_file, naive);
                stats
                    .server_pid
                    .store(u64::from(new.id()), Ordering::Relaxed);
                stats.restarts.fetch_add(1, Ordering::Relaxed);
                current = Some(new);
            } else {
                let (pid_file, stats) = (pid_file.to_path_buf(), stats.clone());
                upgrades.push(std::thread::spawn(move || upgrade(&pid_file, &stats)));
            }
        }
    }
    progress(name, started, stats);
    stop_load.store(true, Ordering::Relaxed);
    load.join().unwrap();
    for u in upgrades {
        u.join().unwrap();
    }
    if naive {
        stop(current.take().unwrap(), &Stats::default());
    } else {
        // The serving generation: SIGTERM drains it, like any lameduck server.
        if let Some(last) = read_pid(pid_file) {
            signal(last, Signal::TERM);
            while !gone(last) {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        // `Child` does not reap on drop: `gone` reaped every generation, the first included.
        drop(current);
    }
    println!();
}

fn progress(name: &str, started: Instant, stats: &Stats) {
    print!(
        "\r{name:<9} {:>5.1} s  requests {:>8}  failed {:>6}  restarts {:>4}  server pid {:>7}",
        started.elapsed().as_secs_f64(),
        stats.requests.load(Ordering::Relaxed),
        stats.failed.load(Ordering::Relaxed),
        stats.restarts.load(Ordering::Relaxed),
        stats.server_pid.load(Ordering::Relaxed),
    );
    let _ = std::io::Write::flush(&mut std::io::stdout());
}

/// The built-in load: `concurrency` clients until `stop`, half of them keep-alive.
fn load(addr: SocketAddr, concurrency: usize, stats: &Arc<Stats>, stop: &Arc<AtomicBool>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let clients: Vec<_> = (0..concurrency)
            .map(|i| {
                let (stats, stop) = (stats.clone(), stop.clone());
                tokio::spawn(client(addr, i % 2 == 0, stats, stop))
            })
            .collect();
        for c in clients {
            let _ = c.await;
        }
    });
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(addr: SocketAddr) -> std::io::Result<Sender> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(connection);
    Ok(sender)
}

/// One client: requests in a loop; a keep-alive client reuses its connection until the
/// server says `Connection: close`. Any error or non-2xx counts as a failed request.
async fn client(addr: SocketAddr, keep_alive: bool, stats: Arc<Stats>, stop: Arc<AtomicBool>) {
    let mut sender: Option<Sender> = None;
    let mut latencies = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let ok = async {
            let s = match sender.take() {
                Some(s) if !s.is_closed() => s,
                _ => connect(addr).await.ok()?,
            };
            let mut s = s;
            s.ready().await.ok()?;
            let mut request = hyper::Request::get("/").header("host", "demo");
            if !keep_alive {
                request = request.header("connection", "close");
            }
            let response = s
                .send_request(request.body(Empty::new()).unwrap())
                .await
                .ok()?;
            let closing = response
                .headers()
                .get("connection")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
            let success = response.status().is_success();
            response.into_body().collect().await.ok()?;
            if keep_alive && !closing {
                sender = Some(s);
            }
            Some(success)
        }
        .await;
        stats.requests.fetch_add(1, Ordering::Relaxed);
        if ok == Some(true) {
            latencies.push(started.elapsed().as_micros().min(u32::MAX as u128) as u32);
        } else {
            stats.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
    stats.latencies_us.lock().unwrap().extend(latencies);
}
