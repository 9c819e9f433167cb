//! A signal sent at any instant while `signal::subscribe` installs its handler is either
//! handled by the disposition that was there before (the default: the process ends) or
//! delivered to the subscriber's socket — never lost.
//!
//! Each trial is a fresh child process (a handler is installed once per process): one
//! thread calls `subscribe(&[TERM])` while another sends the process SIGTERM after a delay,
//! the delays sweeping across the time `subscribe` takes. `signal-hook-registry`, on which
//! `tokio::signal` and `async-signal` sit, loses a signal sent in the gap between its
//! `sigaction` and publishing its table; with it in place of `subscribe`, this test reports
//! lost signals — the reproduction in docs/upstream/signal-hook-registry-install-race.md:
//!
//! ```sh
//! LAMEDUCK_SIGNAL_RACE_VIA=registry cargo test -p lameduck-os --test signal_race
//! ```

use std::io::Read;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lameduck_os::signal::{Signal, subscribe};

const CHILD: &str = "LAMEDUCK_SIGNAL_RACE_CHILD";
/// `registry`: install through `signal_hook_registry::register` instead of `subscribe`.
const VIA: &str = "LAMEDUCK_SIGNAL_RACE_VIA";
const TRIALS: u32 = 600;

/// Exit codes of a child that was not killed.
const DELIVERED: i32 = 0;
const LOST: i32 = 1;

fn main() {
    match std::env::var(CHILD) {
        Ok(role) if role == "measure" => measure(),
        Ok(offset) => trial(offset.parse().expect("an offset in ns")),
        Err(_) => sweep(),
    }
}

/// SIGTERM's handler installed, and the socket it writes each arrival's number to: through
/// `subscribe`, or (`LAMEDUCK_SIGNAL_RACE_VIA=registry`) through `signal-hook-registry`.
fn install() -> (
    std::os::unix::net::UnixStream,
    Box<dyn std::any::Any + Send>,
) {
    if std::env::var_os(VIA).is_some_and(|v| v == "registry") {
        use std::os::fd::AsRawFd;
        let (socket, writer) = std::os::unix::net::UnixStream::pair().expect("a socket pair");
        let fd = writer.as_raw_fd();
        // SAFETY: the action only calls write(2), which is async-signal-safe, on `writer`,
        // which is returned with the registration and outlives it.
        let id = unsafe {
            signal_hook_registry::register(libc::SIGTERM, move || {
                let byte = libc::SIGTERM as u8;
                // SAFETY: writes one byte from a local to a socket that is open.
                libc::write(fd, (&byte as *const u8).cast(), 1);
            })
        }
        .expect("register");
        (socket, Box::new((writer, id)))
    } else {
        let (socket, subscription) = subscribe(&[Signal::TERM]).expect("subscribe");
        (socket, Box::new(subscription))
    }
}

/// Child: prints how long one install takes in a fresh process, in ns.
fn measure() {
    let started = Instant::now();
    let installed = install();
    println!("{}", started.elapsed().as_nanos());
    drop(installed);
}

/// Child: a second thread subscribes while this one sends SIGTERM; `offset` is how long
/// after the subscriber starts the signal is sent (negative: before). The sending thread is
/// the thread group's leader, so the kernel runs the handler on it the moment `kill`
/// returns — while the other thread may be mid-install. Both threads spin (no sleep and
/// wake-up between them), so the offset is accurate to well under a microsecond.
fn trial(offset: i64) {
    let me = std::process::id() as libc::pid_t;
    let go = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(AtomicBool::new(false));
    let wait = |nanos: i64| {
        let started = Instant::now();
        while started.elapsed() < Duration::from_nanos(nanos.unsigned_abs()) {
            std::hint::spin_loop();
        }
    };
    let subscriber = std::thread::spawn({
        let (go, ready) = (go.clone(), ready.clone());
        move || {
            ready.store(true, Ordering::SeqCst);
            while !go.load(Ordering::SeqCst) {
                std::hint::spin_loop();
            }
            if offset < 0 {
                wait(offset);
            }
            install()
        }
    });
    while !ready.load(Ordering::SeqCst) {
        std::hint::spin_loop();
    }
    go.store(true, Ordering::SeqCst);
    if offset > 0 {
        wait(offset);
    }
    // SAFETY: kill(2) sends this process the signal under test; no memory involved.
    unsafe { libc::kill(me, libc::SIGTERM) };
    let (mut socket, _subscription) = subscriber.join().unwrap();
    // Sent and not fatal: it must arrive.
    socket.set_nonblocking(false).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut byte = [0u8];
    let code = match socket.read(&mut byte) {
        Ok(1) if i32::from(byte[0]) == libc::SIGTERM => DELIVERED,
        _ => LOST,
    };
    std::process::exit(code);
}

fn child(role: &str) -> std::process::Output {
    Command::new(std::env::current_exe().unwrap())
        .env(CHILD, role)
        .output()
        .expect("the test binary runs as a child")
}

/// Parent: the trials. Their offsets track the instant the handler takes over — the delay
/// at which half the signals still meet the default disposition — and scatter around it, so
/// that most trials probe the install itself rather than long before or after it.
fn sweep() {
    let took: u64 = (0..5)
        .map(|_| {
            let out = child("measure");
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<u64>()
                .unwrap()
        })
        .max()
        .unwrap();
    let took = took as i64;
    let (spread, step) = (took / 4, took / 100);
    let mut instant = took / 2;
    let mut random = 0x2545_f491_4f6c_dd1d_u64;
    let (mut killed, mut delivered, mut lost) = (0, 0, Vec::new());
    for _ in 0..TRIALS {
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        let offset = instant - spread + (random % (2 * spread as u64)) as i64;
        let status = child(&offset.to_string()).status;
        match (
            std::os::unix::process::ExitStatusExt::signal(&status),
            status.code(),
        ) {
            (Some(libc::SIGTERM), _) => {
                killed += 1;
                instant += step;
            }
            (_, Some(DELIVERED)) => {
                delivered += 1;
                instant -= step;
            }
            (_, Some(LOST)) => lost.push(offset),
            _ => panic!("trial at offset {offset} ns ended unexpectedly: {status}"),
        }
    }
    println!(
        "signal_race: the install takes up to {took} ns, the handler takes over about {instant} ns \
         in; {TRIALS} trials: {killed} ended by the default action, {delivered} delivered, {} lost",
        lost.len()
    );
    assert!(lost.is_empty(), "signals lost at offsets (ns) {lost:?}");
    // Not vacuous: the offsets must have straddled the moment the handler took over.
    assert!(
        killed > 0 && delivered > 0,
        "the sweep missed the install: {killed} killed, {delivered} delivered"
    );
}
