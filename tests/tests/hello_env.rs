//! `hello` as operators run it, tuned by `LAMEDUCK_*` variables on a socket it inherits.
//!
//! - A cut is done, not only counted: `GET /hold` keeps an upgraded connection whose handler
//!   never reads, writes or watches a notice. With `LAMEDUCK_DEADLINE=1s`, SIGTERM ends that
//!   connection for the client about a second later (lameduck shuts its socket down), and
//!   hello exits non-zero because something was cut.
//! - `LAMEDUCK_LAME_DUCK=2s`: after SIGTERM hello still accepts and serves, every response
//!   says `Connection: close` (a keep-alive client's next request included), and it leaves
//!   only after the window.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use lameduck_tests::{read_head, read_response, start_hello};

/// `GET /` on `client`: the response head (its body is read by its length).
fn get(client: &mut TcpStream) -> String {
    get_path(client, "/").0
}

/// `GET path` on `client`: the response (head, body).
fn get_path(client: &mut TcpStream, path: &str) -> (String, String) {
    client
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    read_response(client)
}

fn says_close(head: &str) -> bool {
    head.to_ascii_lowercase().contains("connection: close")
}

#[test]
fn lameduck_lame_duck_keeps_serving_with_connection_close_then_leaves() {
    let (child, addr, _watchdog) = start_hello(&[
        ("LAMEDUCK_LAME_DUCK", "2s"),
        ("LAMEDUCK_IDLE_GRACE", "close"),
    ]);
    let mut keep_alive = TcpStream::connect(addr).unwrap();
    let head = get(&mut keep_alive);
    assert!(
        head.starts_with("HTTP/1.1 200") && !says_close(&head),
        "{head}"
    );

    let signalled = Instant::now();
    lameduck_tests::signal_group(child.id(), "TERM");
    // New connections are still accepted and served; once hello has taken the signal, every
    // response says `Connection: close`. (Bounded: the window is 2 s.)
    loop {
        let mut fresh = TcpStream::connect(addr).expect("still accepting in the lame duck");
        let head = get(&mut fresh);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        if says_close(&head) {
            break;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(2),
            "no Connection: close"
        );
    }
    assert!(
        signalled.elapsed() < Duration::from_secs(2),
        "the window was over already"
    );
    // The idle keep-alive connection is not closed under its client: its next request is
    // answered, and told to go.
    let head = get(&mut keep_alive);
    assert!(
        head.starts_with("HTTP/1.1 200") && says_close(&head),
        "{head}"
    );

    let output = child.wait_with_output().unwrap();
    let took = signalled.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(10),
        "left {took:?} after SIGTERM, not after the 2 s window: {stderr}"
    );
}

/// `/ready` is the readiness probe: 200 while serving, 503 from the moment of SIGTERM — the
/// lame-duck window included, while `/` still answers 200 on a new connection (with
/// `Connection: close`) — and hello leaves about the window later. `/metrics` says the same
/// in Prometheus text, with a gauge per connection state.
#[test]
fn ready_says_503_from_sigterm_while_the_lame_duck_still_serves() {
    let (child, addr, _watchdog) = start_hello(&[("LAMEDUCK_LAME_DUCK", "2s")]);
    let probe = || get_path(&mut TcpStream::connect(addr).unwrap(), "/ready");
    let (head, body) = probe();
    assert!(
        head.starts_with("HTTP/1.1 200") && body == "ready\n",
        "{head}{body}"
    );
    // One keep-alive connection scrapes (it is the one Active while it does): the probe's
    // connection is Idle until hello reads the client's close, which may come after a
    // scrape's request, so scrape until it has (hello reports every close), for at most 5 s.
    let mut scraper = TcpStream::connect(addr).unwrap();
    let idle_gone = Instant::now() + Duration::from_secs(5);
    let metrics = loop {
        let metrics = get_path(&mut scraper, "/metrics").1;
        let idle = metrics
            .lines()
            .any(|l| l == "lameduck_connections{state=\"idle\"} 0");
        if idle || Instant::now() > idle_gone {
            break metrics;
        }
    };
    for line in [
        "lameduck_ready 1",
        "lameduck_phase{phase=\"serving\"} 1",
        // The scrape's own connection is the one Active.
        "lameduck_connections{state=\"active\"} 1",
        "lameduck_connections{state=\"new\"} 0",
        "lameduck_connections{state=\"idle\"} 0",
        "lameduck_connections{state=\"upgraded\"} 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in\n{metrics}"
        );
    }

    let signalled = Instant::now();
    lameduck_tests::signal_group(child.id(), "TERM");
    // The probe turns the moment hello has taken the signal (a probe polled as a balancer
    // would, bounded by the window).
    let turned = loop {
        let (head, body) = probe();
        if head.starts_with("HTTP/1.1 503") {
            assert_eq!(body, "shutting down\n");
            break signalled.elapsed();
        }
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(signalled.elapsed() < Duration::from_secs(2), "never 503");
    };
    let head = get(&mut TcpStream::connect(addr).expect("still accepting"));
    assert!(
        head.starts_with("HTTP/1.1 200") && says_close(&head),
        "the lame duck serves, and tells the client to go: {head}"
    );
    assert!(
        turned < Duration::from_millis(500),
        "503 only {turned:?} after SIGTERM"
    );
    let metrics = get_path(&mut TcpStream::connect(addr).unwrap(), "/metrics").1;
    for line in ["lameduck_ready 0", "lameduck_phase{phase=\"lame_duck\"} 1"] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in\n{metrics}"
        );
    }
    let output = child.wait_with_output().unwrap();
    let took = signalled.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(5),
        "left {took:?} after SIGTERM, not after the 2 s window: {stderr}"
    );
}

#[test]
fn a_held_upgraded_connection_is_cut_at_the_socket_at_the_deadline() {
    held_upgraded_connection_is_cut_on("tokio");
}

#[test]
fn a_held_upgraded_connection_is_cut_at_the_socket_at_the_deadline_on_smol() {
    held_upgraded_connection_is_cut_on("smol");
}

#[test]
fn a_held_upgraded_connection_is_cut_at_the_socket_at_the_deadline_on_async_std() {
    held_upgraded_connection_is_cut_on("async-std");
}

#[test]
fn hello_runtime_says_where_it_serves_and_refuses_an_unknown_runtime() {
    for runtime in ["tokio", "smol", "async-std"] {
        let (mut child, addr, _watchdog) = start_hello(&[("HELLO_RUNTIME", runtime)]);
        let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
        assert_eq!(line, format!("hello: serving on {runtime}\n"));
        // Answered: its signal handlers are installed (before it serves).
        let head = get(&mut TcpStream::connect(addr).unwrap());
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        lameduck_tests::signal_group(child.id(), "TERM");
        assert_eq!(child.wait().unwrap().code(), Some(0), "{runtime}");
    }
    let (child, _addr, _watchdog) = start_hello(&[("HELLO_RUNTIME", "tokyo")]);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("HELLO_RUNTIME=\"tokyo\": expected tokio, smol or async-std"),
        "{stderr}"
    );
}

fn held_upgraded_connection_is_cut_on(runtime: &str) {
    let (child, addr, _watchdog) =
        start_hello(&[("LAMEDUCK_DEADLINE", "1s"), ("HELLO_RUNTIME", runtime)]);

    // The listener is already bound: the connection waits in the backlog until hello serves.
    let mut client = TcpStream::connect(addr).unwrap();
    client
        .write_all(b"GET /hold HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: hold\r\n\r\n")
        .unwrap();
    let head = read_head(&mut client);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut byte = [0u8; 1];

    let signalled = Instant::now();
    lameduck_tests::signal_group(child.id(), "TERM");
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // EOF (or a reset) once the socket is shut down; a timeout means it was never cut.
    match client.read(&mut byte) {
        Ok(0) => {}
        Ok(_) => panic!("the held connection sent data"),
        Err(e) => assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "not cut within 10 s: {e}"
        ),
    }
    let ended = signalled.elapsed();
    assert!(
        ended >= Duration::from_millis(900) && ended < Duration::from_secs(4),
        "the connection ended {ended:?} after SIGTERM, not at the 1 s deadline"
    );

    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(3),
        "exit 3: something was cut: {stderr}"
    );
    assert!(stderr.contains("deadline_hit: true"), "{stderr}");
    assert!(stderr.contains("upgraded: 1"), "{stderr}");
}

/// `LAMEDUCK_SPREAD=2s`: eight keep-alive clients, each sending a request every 20 ms, are
/// told `Connection: close` each at its own moment over the two seconds after SIGTERM — not
/// all on their first response after it — and every request is answered.
#[test]
fn lameduck_spread_tells_keep_alive_clients_to_close_over_the_window() {
    let (child, addr, _watchdog) = start_hello(&[("LAMEDUCK_SPREAD", "2s")]);
    let clients: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut client = TcpStream::connect(addr).unwrap();
            assert!(get(&mut client).starts_with("HTTP/1.1 200"));
            client
        })
        .collect();
    let term = Instant::now();
    lameduck_tests::signal_group(child.id(), "TERM");
    let threads: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            std::thread::spawn(move || {
                loop {
                    let head = get(&mut client);
                    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
                    if says_close(&head) {
                        return term.elapsed();
                    }
                    assert!(
                        term.elapsed() < Duration::from_secs(5),
                        "never told to close"
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        })
        .collect();
    let mut told: Vec<Duration> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    told.sort();
    let (first, last) = (told[0], told[told.len() - 1]);
    assert!(
        last - first >= Duration::from_millis(1000) && last < Duration::from_secs(4),
        "told to close at {told:?} after SIGTERM: not spread over the 2 s window"
    );
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("finished: 8,"), "{stderr}");
}
