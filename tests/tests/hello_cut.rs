//! A cut is done, not only counted: `hello`'s `GET /hold` keeps an upgraded connection whose
//! handler never reads, writes or watches a notice. With `LAMEDUCK_DEADLINE=1s`, SIGTERM ends
//! that connection for the client about a second later (lameduck shuts its socket down), and
//! hello exits non-zero because something was cut.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lameduck_tests::{own_group, Watchdog};

#[test]
fn a_held_upgraded_connection_is_cut_at_the_socket_at_the_deadline() {
    let hello = lameduck_tests::build_examples(&["hello"], false).join("hello");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    socket2::SockRef::from(&listener)
        .set_cloexec(false)
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let mut command = Command::new(hello);
    command
        .env(
            "SERVER_STARTER_PORT",
            format!("{addr}={}", listener.as_raw_fd()),
        )
        .env("LAMEDUCK_DEADLINE", "1s")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let child = own_group(&mut command).spawn().expect("spawn hello");
    let _watchdog = Watchdog::new(child.id(), "hello", Duration::from_secs(60));
    drop(listener);

    // The listener is already bound: the connection waits in the backlog until hello serves.
    let mut client = TcpStream::connect(addr).unwrap();
    client
        .write_all(b"GET /hold HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: hold\r\n\r\n")
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(client.read(&mut byte).unwrap(), 1, "the 101 head: {head:?}");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");

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
