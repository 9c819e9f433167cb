//! `lameduck_os::signal`: what a subscriber can rely on, with real signals sent to this
//! process. Each test uses signals of its own, as tests run in parallel in one process.

use std::io::{ErrorKind, Read};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lameduck_os::signal::{Signal, subscribe};

fn send(signal: i32) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(std::process::id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// The next `n` bytes on `socket`, waiting up to 5 s for them.
fn read(socket: &mut UnixStream, n: usize) -> Vec<u8> {
    socket.set_nonblocking(false).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut bytes = vec![0; n];
    socket.read_exact(&mut bytes).unwrap();
    bytes
}

/// Nothing more is pending on `socket`.
fn nothing_more(socket: &mut UnixStream) {
    socket.set_nonblocking(true).unwrap();
    let error = socket.read(&mut [0u8]).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::WouldBlock);
}

/// Whether this process catches `signal` (a handler is installed), from /proc.
fn caught(signal: i32) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .map(|hex| u64::from_str_radix(hex.trim(), 16).unwrap())
        .unwrap();
    mask & (1 << (signal - 1)) != 0
}

#[test]
fn every_subscriber_gets_one_byte_per_signal_naming_it() {
    let (mut a, _a) = subscribe(&[Signal::USR1]).unwrap();
    let (mut b, _b) = subscribe(&[Signal::USR1, Signal::from_raw(libc::SIGWINCH)]).unwrap();
    send(libc::SIGUSR1);
    assert_eq!(read(&mut a, 1), [libc::SIGUSR1 as u8]);
    assert_eq!(read(&mut b, 1), [libc::SIGUSR1 as u8]);
    send(libc::SIGWINCH);
    assert_eq!(read(&mut b, 1), [libc::SIGWINCH as u8]);
    send(libc::SIGUSR1);
    assert_eq!(read(&mut a, 1), [libc::SIGUSR1 as u8]);
    assert_eq!(read(&mut b, 1), [libc::SIGUSR1 as u8]);
    nothing_more(&mut a);
    nothing_more(&mut b);
}

#[test]
fn dropping_the_last_subscription_gives_the_signal_its_default_back() {
    let signal = libc::SIGUSR2;
    assert!(!caught(signal));
    let first = subscribe(&[Signal::USR2]).unwrap();
    let second = subscribe(&[Signal::USR2]).unwrap();
    assert!(caught(signal));
    drop(first);
    assert!(caught(signal), "one subscriber is left");
    let (mut socket, subscription) = second;
    send(signal);
    assert_eq!(read(&mut socket, 1), [signal as u8]);
    drop(subscription);
    assert!(
        !caught(signal),
        "SIGUSR2 would be swallowed instead of ending the process"
    );
}

#[test]
fn signals_that_cannot_be_caught_are_refused() {
    for number in [0, -1, 65, 1000, libc::SIGKILL, libc::SIGSTOP] {
        let error = subscribe(&[Signal::from_raw(number)]).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidInput, "signal {number}");
        assert!(error.to_string().contains(&number.to_string()), "{error}");
    }
    // Nothing was half-installed: a good signal after a bad one in the same list fails too.
    let error = subscribe(&[Signal::from_raw(libc::SIGPROF), Signal::from_raw(0)]).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidInput);
    assert!(!caught(libc::SIGPROF));
}

#[test]
fn at_most_eight_subscriptions_per_signal_and_a_freed_place_is_reused() {
    let signal = Signal::from_raw(libc::SIGXCPU);
    let mut held: Vec<_> = (0..8).map(|_| subscribe(&[signal]).unwrap()).collect();
    let error = subscribe(&[signal]).unwrap_err();
    assert!(error.to_string().contains("more than 8"), "{error}");
    held.pop();
    let (mut socket, _subscription) = subscribe(&[signal]).unwrap();
    send(libc::SIGXCPU);
    assert_eq!(read(&mut socket, 1), [libc::SIGXCPU as u8]);
}

#[test]
fn a_handler_installed_before_keeps_working_beside_the_subscription() {
    let signal = libc::SIGVTALRM;
    let theirs = Arc::new(AtomicUsize::new(0));
    // SAFETY: the action is an atomic increment, async-signal-safe.
    let _id = unsafe {
        signal_hook_registry::register(signal, {
            let theirs = theirs.clone();
            move || {
                theirs.fetch_add(1, Ordering::SeqCst);
            }
        })
    }
    .unwrap();
    let (mut socket, _subscription) = subscribe(&[Signal::from_raw(signal)]).unwrap();
    send(signal);
    assert_eq!(read(&mut socket, 1), [signal as u8]);
    assert_eq!(theirs.load(Ordering::SeqCst), 1);
    nothing_more(&mut socket);
}
