//! The whole point, in one command and with no tool to install:
//!
//! ```text
//! cargo run --release --example demo -- [--seconds 10] [--concurrency 64] [--restart-ms 500]
//! ```
//!
//! The demo is its own supervisor, like Perl's `start_server`: it holds a listening socket
//! and re-executes itself as a worker that inherits the socket through
//! `SERVER_STARTER_PORT`, starting a new worker and retiring the old one (SIGTERM) every
//! `--restart-ms`. Meanwhile a built-in load — half keep-alive clients, half a new
//! connection per request — counts every request that fails. It runs twice: with lameduck,
//! and with the naive server most code ships (hyper, exit at once on SIGTERM), then prints
//! both side by side.

mod hello_server;

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

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
    match std::env::var("DEMO_WORKER").as_deref() {
        Ok(variant) => worker(variant == "naive"),
        Err(_) => supervisor(options()),
    }
}

/// A worker: the hello server on the inherited socket; prints `ready` once it accepts.
fn worker(naive: bool) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let code = runtime.block_on(async {
        let ready = || println!("ready");
        if naive {
            hello_server::serve_naive("127.0.0.1:0", ready).await
        } else {
            hello_server::serve_lameduck::<lameduck_tokio::Tokio>("127.0.0.1:0", ready, None).await
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
    worker_pid: AtomicU64,
    latencies_us: Mutex<Vec<u32>>,
    drains_ms: Mutex<Vec<f64>>,
}

fn supervisor(options: Options) {
    // The listening socket lives here, in the supervisor, for the whole run: workers come and
    // go, the socket and its backlog stay.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    socket2::SockRef::from(&listener)
        .set_cloexec(false)
        .unwrap();
    let addr = listener.local_addr().unwrap();
    println!(
        "demo: {} s per run, {} clients (half keep-alive), a restart every {} ms, on {addr}\n",
        options.seconds,
        options.concurrency,
        options.restart.as_millis()
    );
    let mut rows = Vec::new();
    for (name, naive) in [("lameduck", false), ("naive", true)] {
        let stats = Arc::new(Stats::default());
        run(&options, &listener, addr, naive, &stats);
        rows.push((name, stats));
    }
    println!();
    println!(
        "{:<10} {:>10} {:>8} {:>9} {:>9} {:>9} {:>17}",
        "server", "requests", "failed", "restarts", "p50", "p99", "drain p50 / max"
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
            "{:<10} {:>10} {:>8} {:>9} {:>9} {:>9} {:>17}",
            name,
            stats.requests.load(Ordering::Relaxed),
            stats.failed.load(Ordering::Relaxed),
            stats.restarts.load(Ordering::Relaxed),
            pct(0.50),
            pct(0.99),
            drain
        );
    }
    let lameduck_failed = rows[0].1.failed.load(Ordering::Relaxed);
    println!(
        "\n{}",
        if lameduck_failed == 0 {
            "lameduck: zero failed requests across every restart."
        } else {
            "lameduck FAILED requests: this is a bug, please report it."
        }
    );
    std::process::exit(i32::from(lameduck_failed != 0));
}

/// Starts a worker on the socket and waits until it accepts.
fn spawn_worker(listener: &std::net::TcpListener, addr: SocketAddr, naive: bool) -> Child {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env("DEMO_WORKER", if naive { "naive" } else { "lameduck" })
        .env(
            "SERVER_STARTER_PORT",
            format!("{addr}={}", listener.as_raw_fd()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("re-execute as a worker");
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert_eq!(line.trim(), "ready", "the worker did not start");
    child
}

fn run(
    options: &Options,
    listener: &std::net::TcpListener,
    addr: SocketAddr,
    naive: bool,
    stats: &Arc<Stats>,
) {
    let name = if naive { "naive" } else { "lameduck" };
    let stop = Arc::new(AtomicBool::new(false));
    let mut current = spawn_worker(listener, addr, naive);
    stats
        .worker_pid
        .store(u64::from(current.id()), Ordering::Relaxed);

    let load = {
        let (stats, stop, concurrency) = (stats.clone(), stop.clone(), options.concurrency);
        std::thread::spawn(move || load(addr, concurrency, &stats, &stop))
    };
    let started = Instant::now();
    let until = started + Duration::from_secs(options.seconds);
    let mut retiring: Vec<std::thread::JoinHandle<()>> = Vec::new();
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
            // A new worker first, then SIGTERM to the old one: the socket always has a worker.
            let new = spawn_worker(listener, addr, naive);
            stats
                .worker_pid
                .store(u64::from(new.id()), Ordering::Relaxed);
            let old = std::mem::replace(&mut current, new);
            stats.restarts.fetch_add(1, Ordering::Relaxed);
            let stats = stats.clone();
            retiring.push(std::thread::spawn(move || retire(old, &stats)));
        }
    }
    progress(name, started, stats);
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    retiring.push(std::thread::spawn({
        let stats = Arc::new(Stats::default());
        move || retire(current, &stats)
    }));
    for r in retiring {
        r.join().unwrap();
    }
    println!();
}

fn progress(name: &str, started: Instant, stats: &Stats) {
    print!(
        "\r{name:<9} {:>5.1} s  requests {:>8}  failed {:>6}  restarts {:>4}  worker pid {:>7}",
        started.elapsed().as_secs_f64(),
        stats.requests.load(Ordering::Relaxed),
        stats.failed.load(Ordering::Relaxed),
        stats.restarts.load(Ordering::Relaxed),
        stats.worker_pid.load(Ordering::Relaxed),
    );
    let _ = std::io::Write::flush(&mut std::io::stdout());
}

/// SIGTERM, then the time until the worker has exited: its drain.
fn retire(mut worker: Child, stats: &Stats) {
    let sent = Instant::now();
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(worker.id().to_string())
        .status();
    let _ = worker.wait();
    stats
        .drains_ms
        .lock()
        .unwrap()
        .push(sent.elapsed().as_secs_f64() * 1000.0);
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
