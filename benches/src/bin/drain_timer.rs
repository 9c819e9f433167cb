//! Drain speed and per-connection memory of a server process, for `benches/run.sh`.
//!
//! `drain_timer CONNS INFLIGHT -- SERVER ARGS...` starts the server, waits for its
//! `listening on ADDR` line, and opens CONNS keep-alive connections that each make one
//! request and then stay idle (each, like a real client, reads until the server closes,
//! then closes). With INFLIGHT = 1 it then starts one slow request (`/sleep?ms=200`), so
//! that something is in flight. Then SIGTERM. Prints one CSV line:
//!
//! `conns,heap_per_conn_bytes,rss_per_conn_bytes,sigterm_to_exit_ms,sigterm_to_drained_ms,last_response_to_drained_ms`
//!
//! With `DRAIN_TLS_CA=ca.pem` every connection is HTTPS instead (`localhost`, trusting that
//! CA): the heap and RSS per idle TLS connection.
//!
//! - heap: the server's live heap (it prints `heap N` on SIGUSR1; `bench_server` and the Go
//!   server do) after the connections minus before, per connection; `-1` if not reported;
//! - `sigterm_to_exit_ms`: SIGTERM until the kernel reaped the process;
//! - `sigterm_to_drained_ms` / `last_response_to_drained_ms`: until the server printed
//!   `drained at NS` (its graceful shutdown returned; wall clock) — from the signal, and
//!   from the moment the in-flight response was read in full (INFLIGHT = 1, else empty).

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn rss_kb(pid: u32) -> i64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status();
}

/// A client connection, plain or TLS.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// Connects to `addr`, over TLS when `DRAIN_TLS_CA` names the CA to trust.
async fn connect(addr: std::net::SocketAddr) -> Box<dyn Io> {
    static TLS: std::sync::OnceLock<Option<tokio_rustls::TlsConnector>> =
        std::sync::OnceLock::new();
    let tls = TLS.get_or_init(|| {
        let ca = std::fs::read(std::env::var_os("DRAIN_TLS_CA")?).expect("DRAIN_TLS_CA");
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&ca) {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Some(tokio_rustls::TlsConnector::from(std::sync::Arc::new(
            config,
        )))
    });
    let tcp = TcpStream::connect(addr).await.expect("connect");
    match tls {
        None => Box::new(tcp),
        Some(tls) => Box::new(
            tls.connect("localhost".try_into().unwrap(), tcp)
                .await
                .expect("a TLS handshake"),
        ),
    }
}

/// Reads one response (headers and a `Content-Length` body) off `stream`.
async fn read_response(
    stream: &mut (impl tokio::io::AsyncRead + Unpin + ?Sized),
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return Ok(());
            }
        }
    }
}

/// One idle keep-alive client: a request, then reading until the server closes.
async fn idle_client(addr: std::net::SocketAddr, done: tokio::sync::mpsc::Sender<()>) {
    let mut stream = connect(addr).await;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
        .await
        .unwrap();
    read_response(&mut stream).await.expect("a response");
    let _ = done.send(()).await;
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest).await;
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let conns: usize = args[1].parse().expect("CONNS");
    let inflight = args[2] == "1";
    assert_eq!(args[3], "--");
    let mut child = Command::new(&args[4])
        .args(&args[5..])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the server");
    let pid = child.id();
    let (lines_tx, lines) = mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = |prefix: &str| -> Option<String> {
        loop {
            let line = lines.recv_timeout(Duration::from_secs(30)).ok()?;
            if let Some(rest) = line.strip_prefix(prefix) {
                return Some(rest.trim().to_owned());
            }
        }
    };
    let addr: std::net::SocketAddr = next("listening on ").expect("listening").parse().unwrap();
    let heap = |next: &dyn Fn(&str) -> Option<String>| -> Option<i64> {
        signal(pid, "-USR1");
        next("heap ")?.parse().ok()
    };
    let (exit_tx, exit_rx) = mpsc::channel();
    // A thread blocked in waitpid takes the exit instant the moment the kernel reaps it.
    let waiter = std::thread::spawn(move || {
        let _ = child.wait();
        let _ = exit_tx.send(Instant::now());
    });

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let heap_before = heap(&next);
    let rss_before = rss_kb(pid);
    runtime.block_on(async {
        let (done_tx, mut done_rx) = tokio::sync::mpsc::channel(conns.max(1));
        for batch in 0..conns.div_ceil(500) {
            let range = batch * 500..((batch + 1) * 500).min(conns);
            for _ in range.clone() {
                tokio::spawn(idle_client(addr, done_tx.clone()));
            }
            // Paced, so that the listen backlog never overflows.
            for _ in range {
                done_rx.recv().await.unwrap();
            }
        }
    });
    // Connections settle (Idle, buffers in place) before the memory is read.
    std::thread::sleep(Duration::from_millis(300));
    let heap_after = heap(&next);
    let rss_after = rss_kb(pid);
    // The slow request goes out just before the signal, so that it is in flight then.
    let slow = inflight.then(|| {
        runtime.block_on(async {
            let mut slow = connect(addr).await;
            slow.write_all(b"GET /sleep?ms=200 HTTP/1.1\r\nHost: bench\r\n\r\n")
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            slow
        })
    });

    let signalled = Instant::now();
    let signalled_ns = unix_ns();
    signal(pid, "-TERM");
    let last_response_ns = slow.map(|mut slow| {
        runtime.block_on(async move {
            read_response(&mut slow)
                .await
                .expect("the in-flight response");
            let at = unix_ns();
            let mut rest = Vec::new();
            let _ = slow.read_to_end(&mut rest).await;
            at
        })
    });
    let drained_ns: Option<u128> = next("drained at ").and_then(|ns| ns.parse().ok());
    let exited = exit_rx.recv().unwrap();
    waiter.join().unwrap();
    drop(runtime);

    let ms = |ns: i128| format!("{:.3}", ns as f64 / 1e6);
    let per_conn = |before: i64, after: i64| (after - before) / conns.max(1) as i64;
    println!(
        "{conns},{},{},{},{},{}",
        match (heap_before, heap_after) {
            (Some(b), Some(a)) => per_conn(b, a),
            _ => -1,
        },
        per_conn(rss_before * 1024, rss_after * 1024),
        ms(exited.duration_since(signalled).as_nanos() as i128),
        drained_ns.map_or(String::new(), |d| ms(d as i128 - signalled_ns as i128)),
        match (drained_ns, last_response_ns) {
            (Some(d), Some(r)) => ms(d as i128 - r as i128),
            _ => String::new(),
        },
    );
}
