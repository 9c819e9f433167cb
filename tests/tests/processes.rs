//! The echo examples as real child processes, on each runtime (`tokio_echo`, and
//! `async_io_echo` on smol and on async-std): signals, inherited sockets from a parent
//! acting as the supervisor, bad inherited sockets, and fd exhaustion.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use lameduck_tests::{Watchdog, output_within, own_group, signal_group};

/// One echo server on one runtime.
#[derive(Clone, Copy)]
struct Kind {
    example: &'static str,
    runtime: Option<&'static str>,
}

/// Builds the examples once and returns the path of `example`.
fn example_binary(example: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| lameduck_tests::build_examples(&["tokio_echo", "async_io_echo"], false))
        .join(example)
}

impl Kind {
    fn binary(self) -> PathBuf {
        example_binary(self.example)
    }

    /// The server, started directly.
    fn command(self) -> Command {
        let mut command = Command::new(self.binary());
        self.env(&mut command);
        command
    }

    /// The server, started by `bash -c SCRIPT` whose `$0` is the server's path (bash, not
    /// sh: dash cannot redirect from an fd above 9).
    fn shell(self, script: &str) -> Command {
        let mut command = Command::new("bash");
        command.arg("-c").arg(script).arg(self.binary());
        self.env(&mut command);
        command
    }

    fn env(self, command: &mut Command) {
        if let Some(runtime) = self.runtime {
            command.env("ECHO_RUNTIME", runtime);
        }
    }
}

struct Server {
    child: Child,
    stdout: BufReader<ChildStdout>,
    addr: String,
    /// The server (and its `bash` wrapper) is one process group, killed if a test that
    /// waits on it (reading its output, say) would otherwise wait forever.
    _watchdog: Watchdog,
}

impl Server {
    /// Starts `command` (the example, maybe behind `sh`) and waits for its listening line.
    fn start(mut command: Command) -> Server {
        command
            .env("ECHO_VERBOSE", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = own_group(&mut command).spawn().expect("spawn the example");
        let watchdog = Watchdog::new(child.id(), "the echo server", Duration::from_secs(60));
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}: {}", stderr_of(&mut child)))
            .to_owned();
        Server {
            child,
            stdout,
            addr,
            _watchdog: watchdog,
        }
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(&self.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream
    }

    /// Waits for the server to print that it received `request`.
    fn wait_request(&mut self, request: &str) {
        let mut line = String::new();
        loop {
            line.clear();
            assert!(
                self.stdout.read_line(&mut line).unwrap() > 0,
                "server exited"
            );
            if line.trim() == format!("request: {request}") {
                return;
            }
        }
    }

    fn signal(&self, signal: libc::c_int) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for exit; returns the exit code and the rest of stdout.
    fn wait(mut self, within: Duration) -> (i32, String) {
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not exit within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).unwrap();
        (status.code().unwrap_or(-1), rest)
    }
}

/// A failed test must not leave its server behind (a spinning one would skew everything
/// measured on the machine afterwards).
impl Drop for Server {
    fn drop(&mut self) {
        signal_group(self.child.id(), "KILL");
        let _ = self.child.wait();
    }
}

fn stderr_of(child: &mut Child) -> String {
    let _ = child.wait();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    err
}

fn echo(kind: Kind) -> Command {
    let mut command = kind.command();
    command.arg("127.0.0.1:0");
    command
}

fn read_all(stream: &mut TcpStream) -> String {
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .unwrap_or_else(|e| panic!("closed cleanly, not reset: {e} (read so far {text:?})"));
    text
}

fn sigterm_drains_the_in_flight_exchange_then_exits_zero(kind: Kind) {
    a_drain_signal_drains_the_in_flight_exchange_then_exits_zero(kind, libc::SIGTERM);
}

/// SIGHUP without a supervisor (a closed terminal, an operator expecting a reload): the
/// documented default is a graceful drain, not the default action's death mid-request.
fn sighup_drains_like_sigterm(kind: Kind) {
    a_drain_signal_drains_the_in_flight_exchange_then_exits_zero(kind, libc::SIGHUP);
}

fn a_drain_signal_drains_the_in_flight_exchange_then_exits_zero(kind: Kind, signal: libc::c_int) {
    let mut command = echo(kind);
    command.env("ECHO_DELAY_MS", "300");
    let mut server = Server::start(command);
    let mut client = server.connect();
    client.write_all(b"hello\n").unwrap();
    server.wait_request("hello");
    server.signal(signal);
    assert_eq!(read_all(&mut client), "hello\n", "answered, then closed");
    let (code, rest) = server.wait(Duration::from_secs(10));
    assert_eq!(code, 0, "{rest}");
    assert!(rest.contains("finished: 1"), "{rest}");
    assert!(rest.contains("deadline_hit: false"), "{rest}");
}

fn sigint_while_draining_cuts_at_once(kind: Kind) {
    let mut command = echo(kind);
    command.env("ECHO_DELAY_MS", "600000");
    let mut server = Server::start(command);
    let mut client = server.connect();
    client.write_all(b"forever\n").unwrap();
    server.wait_request("forever");
    server.signal(libc::SIGTERM);
    server.signal(libc::SIGINT);
    let started = Instant::now();
    assert_eq!(read_all(&mut client), "", "cut: no answer");
    let (code, rest) = server.wait(Duration::from_secs(5));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(code, 3, "exit code 3 says connections were cut: {rest}");
    assert!(rest.contains("deadline_hit: true"), "{rest}");
}

/// `LAMEDUCK_DEADLINE` reaches the server: a request that would take ten minutes is cut
/// about 400 ms after SIGTERM (the default deadline would wait 30 s), and the exit code says so.
fn the_deadline_comes_from_lameduck_deadline(kind: Kind) {
    let mut command = echo(kind);
    command
        .env("ECHO_DELAY_MS", "600000")
        .env("LAMEDUCK_DEADLINE", "400ms");
    let mut server = Server::start(command);
    let mut client = server.connect();
    client.write_all(b"too slow\n").unwrap();
    server.wait_request("too slow");
    let signalled = Instant::now();
    server.signal(libc::SIGTERM);
    assert_eq!(read_all(&mut client), "", "cut: no answer");
    let (code, rest) = server.wait(Duration::from_secs(10));
    let took = signalled.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(5),
        "cut after {took:?}"
    );
    assert_eq!(code, 3, "exit code 3 says connections were cut: {rest}");
    assert!(rest.contains("deadline_hit: true"), "{rest}");
}

/// A malformed `LAMEDUCK_*` value stops the server before it binds: exit code 2 and a
/// message naming the variable and the value, never a panic or a silent default.
fn bad_lameduck_settings_fail_with_the_variable_named(kind: Kind) {
    let cases = [
        ("LAMEDUCK_DEADLINE", "5 parsecs"),
        ("LAMEDUCK_LAME_DUCK", "off"),
        ("LAMEDUCK_STALE_NEW", ""),
        ("LAMEDUCK_IDLE_GRACE", "soon"),
        ("LAMEDUCK_DEADLNE", "5s"),
    ];
    for (name, value) in cases {
        let mut command = kind.command();
        command
            .arg("127.0.0.1:0")
            .env(name, value)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let output = output_within(&mut command, Duration::from_secs(20));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{name}={value:?}: {stderr}");
        let named = format!("{name}={value:?}: ");
        assert!(stderr.contains(&named), "expected {named:?} in {stderr:?}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(
            output.stdout.is_empty(),
            "it must not listen: {:?}",
            output.stdout
        );
    }
}

/// Server::Starter sends SIGTERM again to a draining worker on every restart: that must not
/// cut what the worker is finishing.
fn a_repeated_sigterm_does_not_cut(kind: Kind) {
    let mut command = echo(kind);
    command.env("ECHO_DELAY_MS", "500");
    let mut server = Server::start(command);
    let mut client = server.connect();
    client.write_all(b"finish me\n").unwrap();
    server.wait_request("finish me");
    for _ in 0..3 {
        server.signal(libc::SIGTERM);
    }
    assert_eq!(
        read_all(&mut client),
        "finish me\n",
        "answered despite three SIGTERMs"
    );
    let (code, rest) = server.wait(Duration::from_secs(10));
    assert_eq!(code, 0, "{rest}");
    assert!(rest.contains("deadline_hit: false"), "{rest}");
}

/// A supervisor's TERM (or an operator's Ctrl-C) can come at any instant of a worker's
/// start-up. Before the handlers exist the default action ends the process (nothing was
/// accepted yet); from then on the signal drains. Never may the worker miss it and keep
/// running: with the inherited socket it would serve on, unsupervised, forever. (The
/// instant the handler is installed, which these coarse instants rarely hit, is probed
/// sub-microsecond by `lameduck-driver`'s `signal_race` test.)
fn a_signal_at_any_instant_of_start_up_is_never_lost(kind: Kind) {
    let mut drained = 0;
    let mut killed = 0;
    for i in 0..60u64 {
        let mut command = echo(kind);
        command.stdout(Stdio::null()).stderr(Stdio::null());
        let mut child = command.spawn().unwrap();
        // Spread over the first ~12 ms, where the runtime, the listener and the handlers
        // come up (a deliberate instant, not a wait for anything).
        std::thread::sleep(Duration::from_micros((i * 7919) % 12_000));
        let signal = if i % 2 == 0 {
            libc::SIGTERM
        } else {
            libc::SIGINT
        };
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("attempt {i}: signal {signal} was lost: the server still runs after 10 s");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(0), _) => drained += 1,
            (None, Some(s)) if s == signal => killed += 1,
            other => panic!("attempt {i}: unexpected exit {other:?}"),
        }
    }
    // Most attempts land after the handlers are installed; the test is about those.
    assert!(
        drained > 0,
        "drained {drained}, killed before handlers {killed}"
    );
}

/// A listening socket the parent (the supervisor) owns and passes to the child.
fn inheritable_listener() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    socket2::SockRef::from(&listener)
        .set_cloexec(false)
        .unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    (listener, addr)
}

fn serves_and_drains(mut server: Server, expect_addr: &str) {
    assert_eq!(server.addr, expect_addr);
    let mut client = server.connect();
    client.write_all(b"inherited\n").unwrap();
    server.wait_request("inherited");
    let mut answer = [0u8; 10];
    client.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"inherited\n");
    server.signal(libc::SIGTERM);
    let (code, rest) = server.wait(Duration::from_secs(10));
    assert_eq!(code, 0, "{rest}");
}

fn serves_a_socket_inherited_through_server_starter_port(kind: Kind) {
    let (listener, addr) = inheritable_listener();
    let mut command = kind.command();
    command.env(
        "SERVER_STARTER_PORT",
        format!("{addr}={}", listener.as_raw_fd()),
    );
    serves_and_drains(Server::start(command), &addr);
}

fn serves_a_socket_inherited_through_listen_fds(kind: Kind) {
    let (listener, addr) = inheritable_listener();
    // systemd passes fd 3 and names the pid: the shell moves the socket to fd 3 and execs
    // the server in its own process, so $$ is the server's pid.
    let command = kind.shell(&format!(
        "export LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=http; exec \"$0\" 3<&{}",
        listener.as_raw_fd()
    ));
    serves_and_drains(Server::start(command), &addr);
}

fn bad_inherited_sockets_fail_with_the_variable_named(kind: Kind) {
    let (listener, addr) = inheritable_listener();
    let fd = listener.as_raw_fd();
    let cases: Vec<(Vec<(&str, String)>, String)> = vec![
        (
            vec![("SERVER_STARTER_PORT", "8080=x".into())],
            "SERVER_STARTER_PORT entry `8080=x`: the fd is not a non-negative number".into(),
        ),
        (
            vec![("SERVER_STARTER_PORT", format!("{addr}=987"))],
            format!("SERVER_STARTER_PORT entry `{addr}=987`: the fd is not open"),
        ),
        (
            vec![("SERVER_STARTER_PORT", format!("{addr}=0"))],
            format!("SERVER_STARTER_PORT entry `{addr}=0`: the fd is not a socket"),
        ),
        (
            vec![("SERVER_STARTER_PORT", format!("/tmp/x.sock={fd}"))],
            format!(
                "SERVER_STARTER_PORT entry `/tmp/x.sock={fd}`: the socket's family does not match its entry"
            ),
        ),
        (
            vec![("LISTEN_FDS", "1".into()), ("LISTEN_PID", "1".into())],
            "LISTEN_PID entry `1`: the sockets are for another process".into(),
        ),
    ];
    for (vars, message) in cases {
        let mut command = kind.command();
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &vars {
            command.env(k, v);
        }
        let output = output_within(&mut command, Duration::from_secs(20));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{vars:?}: {stderr}");
        assert!(
            stderr.contains(&message),
            "{vars:?}: expected {message:?} in {stderr:?}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn out_of_fds_the_server_backs_off_keeps_serving_and_still_drains(kind: Kind) {
    let command = kind.shell("ulimit -n 40 && exec \"$0\" 127.0.0.1:0");
    let mut server = Server::start(command);
    let mut existing = server.connect();
    existing.write_all(b"before\n").unwrap();
    server.wait_request("before");
    let mut answer = [0u8; 7];
    existing.read_exact(&mut answer).unwrap();

    // Flood: far more connections than the server has fds for; the kernel completes them
    // into the backlog, and accept fails with EMFILE.
    let flood: Vec<TcpStream> = (0..120).map(|_| server.connect()).collect();
    let ticks = cpu_ticks(server.child.id());
    let window = Instant::now();
    // The existing connection is still served while accept backs off.
    for i in 0..10 {
        let line = format!("during {i}\n");
        existing.write_all(line.as_bytes()).unwrap();
        server.wait_request(line.trim());
        let mut answer = vec![0u8; line.len()];
        existing.read_exact(&mut answer).unwrap();
        assert_eq!(answer, line.as_bytes());
        std::thread::sleep(Duration::from_millis(100));
    }
    let used = cpu_ticks(server.child.id()) - ticks;
    let seconds = window.elapsed().as_secs_f64();
    // /proc reports in USER_HZ, which Linux fixes at 100 for user space.
    let hz = 100.0;
    let cpu = used as f64 / hz / seconds;
    assert!(
        cpu < 0.25,
        "the accept loop spins: {:.0}% CPU while out of fds",
        cpu * 100.0
    );

    // Fds free up: the backlog is accepted again and served.
    drop(flood);
    let mut fresh = server.connect();
    fresh.write_all(b"after\n").unwrap();
    server.wait_request("after");
    let mut answer = [0u8; 6];
    fresh.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"after\n");

    server.signal(libc::SIGTERM);
    drop(existing);
    drop(fresh);
    let (code, rest) = server.wait(Duration::from_secs(15));
    assert_eq!(code, 0, "{rest}");
}

/// SIGTERM while the accept loop is backing off (out of fds): the request in flight is
/// answered, the connections accepted from the flood (silent) are closed as stale, and the
/// worker exits 0 — the backoff never delays the drain.
fn sigterm_while_out_of_fds_still_drains(kind: Kind) {
    let mut command = kind.shell("ulimit -n 40 && exec \"$0\" 127.0.0.1:0");
    command
        .env("LAMEDUCK_STALE_NEW", "300ms")
        .env("ECHO_DELAY_MS", "300");
    let mut server = Server::start(command);
    let mut existing = server.connect();
    let flood: Vec<TcpStream> = (0..120).map(|_| server.connect()).collect();
    existing.write_all(b"in flight\n").unwrap();
    server.wait_request("in flight");
    let signalled = Instant::now();
    server.signal(libc::SIGTERM);
    assert_eq!(read_all(&mut existing), "in flight\n");
    let (code, rest) = server.wait(Duration::from_secs(10));
    assert_eq!(code, 0, "{rest}");
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "drain took {:?}",
        signalled.elapsed()
    );
    assert!(rest.contains("deadline_hit: false"), "{rest}");
    drop(flood);
}

macro_rules! on_runtime {
    ($name:ident, $kind:expr) => {
        mod $name {
            use super::Kind;

            const KIND: Kind = $kind;

            #[test]
            fn sigterm_drains_the_in_flight_exchange_then_exits_zero() {
                super::sigterm_drains_the_in_flight_exchange_then_exits_zero(KIND);
            }

            #[test]
            fn sighup_drains_like_sigterm() {
                super::sighup_drains_like_sigterm(KIND);
            }

            #[test]
            fn a_signal_at_any_instant_of_start_up_is_never_lost() {
                super::a_signal_at_any_instant_of_start_up_is_never_lost(KIND);
            }

            #[test]
            fn sigterm_while_out_of_fds_still_drains() {
                super::sigterm_while_out_of_fds_still_drains(KIND);
            }

            #[test]
            fn sigint_while_draining_cuts_at_once() {
                super::sigint_while_draining_cuts_at_once(KIND);
            }

            #[test]
            fn the_deadline_comes_from_lameduck_deadline() {
                super::the_deadline_comes_from_lameduck_deadline(KIND);
            }

            #[test]
            fn bad_lameduck_settings_fail_with_the_variable_named() {
                super::bad_lameduck_settings_fail_with_the_variable_named(KIND);
            }

            #[test]
            fn a_repeated_sigterm_does_not_cut() {
                super::a_repeated_sigterm_does_not_cut(KIND);
            }

            #[test]
            fn serves_a_socket_inherited_through_server_starter_port() {
                super::serves_a_socket_inherited_through_server_starter_port(KIND);
            }

            #[test]
            fn serves_a_socket_inherited_through_listen_fds() {
                super::serves_a_socket_inherited_through_listen_fds(KIND);
            }

            #[test]
            fn bad_inherited_sockets_fail_with_the_variable_named() {
                super::bad_inherited_sockets_fail_with_the_variable_named(KIND);
            }

            #[test]
            fn out_of_fds_the_server_backs_off_keeps_serving_and_still_drains() {
                super::out_of_fds_the_server_backs_off_keeps_serving_and_still_drains(KIND);
            }
        }
    };
}

on_runtime!(
    tokio,
    Kind {
        example: "tokio_echo",
        runtime: None
    }
);
on_runtime!(
    smol,
    Kind {
        example: "async_io_echo",
        runtime: Some("smol")
    }
);
on_runtime!(
    async_std,
    Kind {
        example: "async_io_echo",
        runtime: Some("async-std")
    }
);
