//! The `grpc` example (tonic's routes on lameduck's HTTP/2 path) seen from a real gRPC
//! client — the `grpc_client` example, on tonic's transport — as separate processes:
//! health flips to NOT_SERVING the moment the shutdown begins while RPCs still succeed; a
//! server-streaming RPC that listens for the shutdown ends cleanly; one that ignores it is
//! cut at the deadline and counted. (Restarts every 0.2 s under load are a cell of
//! `seed_experiment`.)

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use lameduck_tests::{Watchdog, own_group, start_example};

/// The gRPC client example on `args`, its stdout piped, bounded by a watchdog.
fn client(args: &[&str]) -> (Child, BufReader<ChildStdout>, Watchdog) {
    // Built once: a call inside the lame-duck window must not wait for cargo.
    static BINARY: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let binary = BINARY.get_or_init(|| {
        lameduck_tests::build_examples(&["grpc_client"], false).join("grpc_client")
    });
    let mut command = Command::new(binary);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let mut child = own_group(&mut command).spawn().expect("grpc_client runs");
    let watchdog = Watchdog::new(child.id(), "grpc_client", Duration::from_secs(60));
    let stdout = BufReader::new(child.stdout.take().unwrap());
    (child, stdout, watchdog)
}

/// One call of the client to its end: what it printed, and whether it succeeded.
fn call(args: &[&str]) -> (String, bool) {
    let (mut child, mut stdout, _watchdog) = client(args);
    let mut text = String::new();
    stdout.read_to_string(&mut text).unwrap();
    (text.trim().to_owned(), child.wait().unwrap().success())
}

fn line(stdout: &mut BufReader<ChildStdout>) -> String {
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    line.trim().to_owned()
}

fn url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

/// The server's exit status and what it said on stderr.
fn finish(mut server: Child) -> (std::process::ExitStatus, String) {
    let status = server.wait().unwrap();
    let mut stderr = String::new();
    server
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status, stderr)
}

#[test]
fn health_says_not_serving_from_the_moment_shutdown_begins_while_rpcs_still_succeed() {
    let (server, addr, _watchdog) = start_example("grpc", &[("LAMEDUCK_LAME_DUCK", "3s")]);
    let url = url(addr);
    assert!(call(&["say-hello", &url]).1);
    // Watch: the health service streams each change as it happens.
    let (mut watch, mut statuses, _watch_dog) = client(&["watch", &url]);
    assert_eq!(line(&mut statuses), "SERVING");
    assert_eq!(
        call(&["health", &url, "helloworld.Greeter"]),
        ("SERVING".into(), true)
    );

    let term = Instant::now();
    lameduck_tests::signal_group(server.id(), "TERM");
    assert_eq!(line(&mut statuses), "NOT_SERVING");
    let flipped = term.elapsed();
    // Within the lame-duck window: the service itself says so too, and serves.
    assert_eq!(
        call(&["health", &url, "helloworld.Greeter"]),
        ("NOT_SERVING".into(), true)
    );
    let (reply, ok) = call(&["say-hello", &url]);
    assert!(ok && reply.starts_with("hello you from pid"), "{reply}");
    assert!(
        term.elapsed() < Duration::from_secs(3),
        "took {:?}",
        term.elapsed()
    );
    assert!(
        flipped < Duration::from_secs(1),
        "flipped after {flipped:?}"
    );
    // The watch, a stream that never ends on its own, ends with OK at its connection's ask
    // (the shutdown's begin: no spread), once it has said NOT_SERVING.
    let mut rest = String::new();
    statuses.read_to_string(&mut rest).unwrap();
    let watched = watch.wait().unwrap();
    assert!(watched.success() && rest.is_empty(), "{watched:?}: {rest}");
    assert!(
        term.elapsed() < Duration::from_secs(3),
        "the watch ended {:?} after SIGTERM, past the lame-duck window",
        term.elapsed()
    );

    let (status, stderr) = finish(server);
    assert!(status.success(), "{status:?}\n{stderr}");
}

#[test]
fn a_stream_that_listens_for_the_shutdown_ends_cleanly_and_one_that_ignores_it_is_cut() {
    let (server, addr, _watchdog) = start_example("grpc", &[("LAMEDUCK_DEADLINE", "2s")]);
    let url = url(addr);
    let (mut listening, mut listened, _w1) = client(&["stream", &url, "listen"]);
    let (mut ignoring, mut ignored, _w2) = client(&["stream", &url, "ignore"]);
    assert!(line(&mut listened).starts_with("hello stream #0"));
    assert!(line(&mut ignored).starts_with("hello stream #0"));

    let term = Instant::now();
    lameduck_tests::signal_group(server.id(), "TERM");
    let ended = |stdout: &mut BufReader<ChildStdout>| loop {
        let line = line(stdout);
        if let Some(how) = line.strip_prefix("ended: ") {
            return (how.to_owned(), term.elapsed());
        }
        assert!(line.starts_with("hello stream #"), "{line}");
    };
    let (how, after) = ended(&mut listened);
    assert_eq!(how, "ok");
    assert!(
        after < Duration::from_secs(1),
        "ended {after:?} after SIGTERM"
    );
    let (how, after) = ended(&mut ignored);
    assert_ne!(how, "ok", "the ignoring stream must be cut, not end");
    assert!(
        after >= Duration::from_millis(1900) && after < Duration::from_secs(4),
        "cut {after:?} after SIGTERM, the deadline is 2 s"
    );
    let _ = (listening.wait(), ignoring.wait());

    let (status, stderr) = finish(server);
    assert_eq!(status.code(), Some(1), "something was cut: {stderr}");
    assert!(
        stderr.contains("cut: Counts { new: 0, active: 1,"),
        "one stream cut: {stderr}"
    );
}

#[test]
fn a_server_whose_streams_listen_exits_clean_at_once() {
    let (server, addr, _watchdog) = start_example("grpc", &[("LAMEDUCK_DEADLINE", "20s")]);
    let url = url(addr);
    let (mut listening, mut listened, _w) = client(&["stream", &url, "listen"]);
    assert!(line(&mut listened).starts_with("hello stream #0"));
    let term = Instant::now();
    lameduck_tests::signal_group(server.id(), "TERM");
    let (status, stderr) = finish(server);
    assert!(status.success(), "{status:?}\n{stderr}");
    assert!(
        term.elapsed() < Duration::from_secs(3),
        "exited {:?} after SIGTERM",
        term.elapsed()
    );
    let mut rest = String::new();
    listened.read_to_string(&mut rest).unwrap();
    assert!(rest.trim_end().ends_with("ended: ok"), "{rest}");
    let _ = listening.wait();
}

/// With `LAMEDUCK_SPREAD=2s`, eight streams on eight connections end with OK each at its
/// connection's own moment: spread over the window, not all at SIGTERM.
#[test]
fn streams_end_at_their_own_moments_in_the_spread_window() {
    let (server, addr, _watchdog) = start_example(
        "grpc",
        &[("LAMEDUCK_SPREAD", "2s"), ("LAMEDUCK_DEADLINE", "20s")],
    );
    let url = url(addr);
    let mut streams: Vec<_> = (0..8)
        .map(|_| client(&["stream", &url, "listen"]))
        .collect();
    for (_, stdout, _) in &mut streams {
        assert!(line(stdout).starts_with("hello stream #0"));
    }
    let term = Instant::now();
    lameduck_tests::signal_group(server.id(), "TERM");
    // Each stream read on its own thread: when its end arrives, not when it is read.
    let readers: Vec<_> = streams
        .into_iter()
        .map(|(mut child, mut stdout, watchdog)| {
            std::thread::spawn(move || {
                let _watchdog = watchdog;
                loop {
                    let line = line(&mut stdout);
                    if let Some(how) = line.strip_prefix("ended: ") {
                        assert_eq!(how, "ok");
                        let ended = term.elapsed();
                        let _ = child.wait();
                        return ended;
                    }
                    assert!(line.starts_with("hello stream #"), "{line}");
                }
            })
        })
        .collect();
    let mut ends: Vec<Duration> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    ends.sort();
    let (first, last) = (ends[0], ends[ends.len() - 1]);
    assert!(
        last - first >= Duration::from_millis(1000) && last < Duration::from_secs(4),
        "the streams ended at {ends:?} after SIGTERM: not spread over the 2 s window"
    );
    let (status, stderr) = finish(server);
    assert!(status.success(), "{status:?}\n{stderr}");
    assert!(stderr.contains("last_ask_at: Some("), "{stderr}");
}
