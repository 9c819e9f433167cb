//! N WebSocket clients (tokio-tungstenite) against the websocket example under restarts,
//! for benches/long_lived.sh: the same protocol as tests/clients/ws_clients.py, in Rust, so
//! that a thousand clients' handshakes cost the measuring side little CPU and the figures
//! are the server's.
//!
//! ```text
//! ws_clients ADDR CLIENTS EVERY_MS RESTARTS HUP_PID
//! ```
//!
//! Each client sends a numbered text message every EVERY_MS and times its echo; at the
//! server's Close it records the code (1006 when the connection ended without one), answers
//! it, reconnects at once and resends what was not echoed. RESTARTS times, once every
//! client is connected, the harness sends SIGHUP to HUP_PID (start_server) and waits until
//! every client has reconnected. It prints, per restart, the peak share of its asks (the
//! Close frames' arrival, when each client starts to reconnect) and of its completed
//! reconnections in any 100 ms window, a histogram of the asks per 100 ms from the HUP, and
//! the round-trip p99 during the restart against steady state.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

#[derive(Default)]
struct Stats {
    connected: bool,
    /// Completed reconnections.
    reconnects: Vec<Instant>,
    /// (arrival, code) of each server close; 1006 without a frame.
    closes: Vec<(Instant, u16)>,
    /// (sent, round trip).
    rtts: Vec<(Instant, Duration)>,
    unacked: BTreeMap<u64, Instant>,
    errors: usize,
}

async fn client(
    index: usize,
    addr: String,
    every: Duration,
    stats: Arc<Mutex<Stats>>,
    stop: Arc<AtomicBool>,
) {
    let url = format!("ws://{addr}/ws");
    let mut first = true;
    let mut seq = 0u64;
    loop {
        let connected = tokio_tungstenite::connect_async(url.as_str()).await;
        let Ok((ws, _)) = connected else {
            stats.lock().unwrap().errors += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (mut tx, mut rx) = ws.split();
        let resend: Vec<u64> = {
            let mut s = stats.lock().unwrap();
            if !first {
                s.reconnects.push(Instant::now());
            }
            s.connected = true;
            let now = Instant::now();
            s.unacked.values_mut().for_each(|t| *t = now);
            s.unacked.keys().copied().collect()
        };
        first = false;
        let mut ok = true;
        for n in resend {
            ok &= tx.send(Message::text(format!("{index}:{n}"))).await.is_ok();
        }
        let mut tick = tokio::time::interval(every);
        let mut close_code = None;
        let mut leaving = false;
        // A failed resend means the connection is gone: straight to reconnecting.
        loop {
            if !ok {
                break;
            }
            tokio::select! {
                _ = tick.tick(), if !leaving => {
                    if stop.load(Ordering::Relaxed) {
                        if stats.lock().unwrap().unacked.is_empty() {
                            leaving = true;
                            let _ = tx.send(Message::Close(None)).await;
                        }
                        continue;
                    }
                    seq += 1;
                    stats.lock().unwrap().unacked.insert(seq, Instant::now());
                    if tx.send(Message::text(format!("{index}:{seq}"))).await.is_err() {
                        break;
                    }
                }
                message = rx.next() => match message {
                    Some(Ok(Message::Text(text))) => {
                        let now = Instant::now();
                        let n: u64 = text.split(':').nth(1).and_then(|n| n.parse().ok()).unwrap_or(0);
                        let mut s = stats.lock().unwrap();
                        if let Some(sent) = s.unacked.remove(&n) {
                            s.rtts.push((sent, now - sent));
                        }
                    }
                    Some(Ok(Message::Close(frame))) => {
                        if !leaving {
                            close_code = Some(frame.map_or(1005, |f| u16::from(f.code)));
                            let mut s = stats.lock().unwrap();
                            s.closes.push((Instant::now(), close_code.unwrap()));
                            s.connected = false;
                        }
                        // tungstenite answers the close; read on to the end.
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => break,
                }
            }
        }
        let mut s = stats.lock().unwrap();
        s.connected = false;
        if leaving {
            return;
        }
        if close_code.is_none() {
            s.closes.push((Instant::now(), 1006));
        }
    }
}

fn peak_share(times: &[Instant], total: usize) -> f64 {
    let mut times = times.to_vec();
    times.sort();
    let (mut best, mut lo) = (0, 0);
    for hi in 0..times.len() {
        while times[hi] - times[lo] >= Duration::from_millis(100) {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best as f64 / total.max(1) as f64
}

fn p99(mut values: Vec<Duration>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort();
    values[(values.len() * 99 / 100).min(values.len() - 1)].as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, clients, every_ms, restarts, hup_pid] = &args[..] else {
        eprintln!("usage: ws_clients ADDR CLIENTS EVERY_MS RESTARTS HUP_PID");
        std::process::exit(2);
    };
    let clients: usize = clients.parse().unwrap();
    let every = Duration::from_millis(every_ms.parse().unwrap());
    let restarts: usize = restarts.parse().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stats: Vec<Arc<Mutex<Stats>>> = (0..clients).map(|_| Arc::default()).collect();
    let mut tasks = vec![];
    for (i, s) in stats.iter().enumerate() {
        tasks.push(tokio::spawn(client(
            i,
            addr.clone(),
            every,
            s.clone(),
            stop.clone(),
        )));
        if i % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(20)).await; // within the listen backlog
        }
    }
    let limit = Instant::now() + Duration::from_secs(120);
    let until = |what: &str, done: &dyn Fn() -> bool| {
        assert!(Instant::now() < limit, "timed out waiting for {what}");
        !done()
    };
    while until("every client to connect", &|| {
        stats.iter().all(|s| s.lock().unwrap().connected)
    }) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let steady_from = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let steady_to = Instant::now();
    let mut windows = vec![];
    for _ in 0..restarts {
        let before: Vec<(usize, usize)> = stats
            .iter()
            .map(|s| {
                let s = s.lock().unwrap();
                (s.reconnects.len(), s.closes.len())
            })
            .collect();
        let t0 = Instant::now();
        let hup = std::process::Command::new("kill")
            .args(["-HUP", hup_pid])
            .status();
        assert!(hup.is_ok_and(|s| s.success()), "kill -HUP {hup_pid}");
        let reconnected = || {
            stats.iter().zip(&before).all(|(s, (r, _))| {
                let s = s.lock().unwrap();
                s.reconnects.len() > *r && s.connected
            })
        };
        while until("every client to reconnect", &reconnected) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (mut asks, mut done) = (vec![], vec![]);
        for (s, (r, c)) in stats.iter().zip(&before) {
            let s = s.lock().unwrap();
            asks.extend(s.closes[*c..].iter().map(|(t, _)| *t));
            done.push(s.reconnects[*r]);
        }
        windows.push((t0, asks, done));
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
    }

    println!("clients {clients}");
    let mut codes = BTreeMap::new();
    for s in &stats {
        for (_, code) in &s.lock().unwrap().closes {
            *codes.entry(*code).or_insert(0) += 1;
        }
    }
    for (code, n) in codes {
        println!("server_closes {code} {n}");
    }
    let lost: usize = stats.iter().map(|s| s.lock().unwrap().unacked.len()).sum();
    let errors: usize = stats.iter().map(|s| s.lock().unwrap().errors).sum();
    println!("lost {lost}");
    println!("errors {errors}");
    let mut during = vec![];
    for (k, (t0, asks, done)) in windows.iter().enumerate() {
        let ms = |t: &Instant| t.duration_since(*t0).as_secs_f64() * 1000.0;
        let first = asks.iter().map(ms).fold(f64::INFINITY, f64::min);
        let last = asks.iter().map(ms).fold(0.0, f64::max);
        println!(
            "restart {k} asks {} peak_share {:.3} reconnected_peak_share {:.3} first_ms {first:.0} last_ms {last:.0}",
            asks.len(),
            peak_share(asks, asks.len()),
            peak_share(done, done.len()),
        );
        let mut bins = vec![0usize; (last / 100.0) as usize + 1];
        for t in asks {
            bins[(ms(t) / 100.0) as usize] += 1;
        }
        let bins: Vec<String> = bins.iter().map(|n| n.to_string()).collect();
        println!("histogram {k} {}", bins.join(" "));
        let end = *done.iter().max().unwrap() + Duration::from_millis(500);
        for s in &stats {
            during.extend(
                s.lock()
                    .unwrap()
                    .rtts
                    .iter()
                    .filter(|(t, _)| *t >= *t0 && *t <= end)
                    .map(|(_, r)| *r),
            );
        }
    }
    let steady: Vec<Duration> = stats
        .iter()
        .flat_map(|s| {
            s.lock()
                .unwrap()
                .rtts
                .iter()
                .filter(|(t, _)| *t >= steady_from && *t <= steady_to)
                .map(|(_, r)| *r)
                .collect::<Vec<_>>()
        })
        .collect();
    let (steady, during) = (p99(steady), p99(during));
    println!(
        "rtt_p99_ms steady {steady:.2} restart {during:.2} ratio {:.2}",
        during / steady
    );
}
