//! Arbitrary `LISTEN_FDS`, `LISTEN_PID` and `LISTEN_FDNAMES`: the parser never panics, and
//! what it accepts matches the variables — as many fds as `LISTEN_FDS` says, from fd 3, only
//! for our pid, one name each.
//!
//! `cargo +nightly fuzz run listen_fds`
#![no_main]

use lameduck_os::inherit::{ListenSpec, parse_listen_fds};

libfuzzer_sys::fuzz_target!(|input: (&str, Option<&str>, Option<&str>, u32)| {
    let (fds, pid, names, ours) = input;
    let Ok(parsed) = parse_listen_fds(fds, pid, names, ours) else {
        return;
    };
    if parsed.is_empty() {
        return;
    }
    assert_eq!(pid.and_then(|p| p.parse::<u32>().ok()), Some(ours));
    assert_eq!(fds.parse::<usize>().ok(), Some(parsed.len()));
    for (i, fd) in parsed.iter().enumerate() {
        assert_eq!(fd.fd, 3 + i as i32);
        let ListenSpec::Named(name) = &fd.spec else {
            panic!("systemd fds are named");
        };
        if let Some(names) = names {
            assert_eq!(names.split(':').nth(i), Some(name.as_str()));
        }
    }
});
