//! Arbitrary text as `SERVER_STARTER_PORT`: the parser never panics, and what it accepts is
//! consistent with the text — one entry per `;`-separated part, each fd the decimal after
//! the part's last `=`, no fd twice.
//!
//! `cargo +nightly fuzz run server_starter_port`
#![no_main]

use lameduck_os::inherit::{ListenSpec, parse_server_starter_port};

libfuzzer_sys::fuzz_target!(|value: &str| {
    let Ok(fds) = parse_server_starter_port(value) else {
        return;
    };
    let parts: Vec<&str> = value.split(';').collect();
    assert_eq!(fds.len(), parts.len());
    for (fd, part) in fds.iter().zip(&parts) {
        let (spec, number) = part.rsplit_once('=').expect("accepted entries have `=`");
        assert!(!spec.is_empty());
        assert_eq!(number.parse::<i32>().ok(), Some(fd.fd));
        assert!(fd.fd >= 0);
        // Addresses and ports are normalised (`08` is port 8); paths and names stay whole.
        if !matches!(fd.spec, ListenSpec::Port(_) | ListenSpec::Addr(_)) {
            assert_eq!(fd.spec.to_string(), spec);
        }
    }
    for (i, a) in fds.iter().enumerate() {
        assert!(
            fds[i + 1..].iter().all(|b| b.fd != a.fd),
            "fd {} twice",
            a.fd
        );
    }
});
