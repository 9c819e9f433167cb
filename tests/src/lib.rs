//! Helpers for the end-to-end tests in `tests/`: building and running the workspace's
//! examples the way a user does, through cargo, and keeping every child process bounded in
//! time, so that a server that never exits fails its test instead of hanging the run.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(root());
    command
}

/// Builds `examples` (in release if `release`) and returns the directory holding them.
pub fn build_examples(examples: &[&str], release: bool) -> PathBuf {
    let mut command = cargo();
    command.args(["build", "--quiet"]);
    if release {
        command.arg("--release");
    }
    for example in examples {
        command.args(["--example", example]);
    }
    let status = command.status().expect("cargo runs");
    assert!(status.success(), "building {examples:?} failed");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("target"));
    target
        .join(if release { "release" } else { "debug" })
        .join("examples")
}

/// `cargo run --quiet [--release] --example NAME -- ARGS`, as the README says to, once the
/// example is built: the run itself must end within `limit` (see [`output_within`]).
pub fn run_example(name: &str, release: bool, args: &[&str], limit: Duration) -> Output {
    build_examples(&[name], release);
    let mut command = cargo();
    command.args(["run", "--quiet"]);
    if release {
        command.arg("--release");
    }
    command.args(["--example", name, "--"]).args(args);
    output_within(&mut command, limit)
}

/// Runs `command` to its end and collects what it printed, like [`Command::output`], but
/// panics (after killing it and everything it started) if it runs longer than `limit`.
pub fn output_within(command: &mut Command, limit: Duration) -> Output {
    let program = format!("{:?}", command.get_program());
    let child = own_group(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} does not start: {e}"));
    let watchdog = Watchdog::new(child.id(), &program, limit);
    // Reads both pipes to their end: after a kill, nothing in the group holds them open.
    let output = child.wait_with_output().expect("collect the output");
    assert!(
        !watchdog.fired(),
        "{program} ran longer than {limit:?} and was killed; it printed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Makes `command` start a process group of its own (its id is the child's pid), so that
/// the child and every process it starts can be signalled together.
pub fn own_group(command: &mut Command) -> &mut Command {
    std::os::unix::process::CommandExt::process_group(command, 0)
}

/// Sends `signal` (`"TERM"`, `"KILL"`, …) to every process of the group `group`.
pub fn signal_group(group: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(format!("-{group}"))
        .stderr(Stdio::null())
        .status();
}

/// What is still running in process group `group`: one line per process (pid, state, CPU
/// share, age, command), for a failure message.
pub fn describe_group(group: u32) -> String {
    let listing = Command::new("ps")
        .args(["-e", "-o", "pgid=,pid=,stat=,pcpu=,etime=,args="])
        .output();
    match listing {
        Ok(o) => String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|line| line.split_whitespace().next() == Some(&group.to_string()))
            .map(|line| format!("{line}\n"))
            .collect(),
        Err(e) => format!("(ps failed: {e})"),
    }
}

/// Kills a process group (see [`own_group`]) that is still alive `limit` after the
/// watchdog was made; dropping the watchdog disarms it. A test that waits on a child
/// without a bound of its own (reading its output to the end, `Child::wait`) thus ends
/// with a clear failure instead of hanging the whole test run. Dropped while the test
/// panics (an assertion failed with the child still serving), it kills the group at once:
/// a failed test leaves no server behind.
pub struct Watchdog {
    group: u32,
    disarm: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    fired: Arc<AtomicBool>,
}

impl Watchdog {
    /// Watches process group `group`; `what` names it in the message printed on a kill.
    pub fn new(group: u32, what: &str, limit: Duration) -> Watchdog {
        let (disarm, disarmed) = mpsc::channel::<()>();
        let fired = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let (fired, what) = (fired.clone(), what.to_owned());
            move || {
                if let Err(mpsc::RecvTimeoutError::Timeout) = disarmed.recv_timeout(limit) {
                    fired.store(true, Ordering::SeqCst);
                    eprintln!(
                        "watchdog: {what} still running after {limit:?}; killing it:\n{}",
                        describe_group(group)
                    );
                    signal_group(group, "KILL");
                }
            }
        });
        Watchdog {
            group,
            disarm: Some(disarm),
            thread: Some(thread),
            fired,
        }
    }

    /// Whether the limit passed and the group was killed.
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if std::thread::panicking() {
            signal_group(self.group, "KILL");
        }
        drop(self.disarm.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Test certificates made with `openssl` (as an operator makes them): a CA, and a leaf for
/// `localhost` and `127.0.0.1` signed by it, in PEM files.
#[derive(Debug, Clone)]
pub struct TestCertificates {
    /// The CA's certificate: what a client trusts.
    pub ca: PathBuf,
    /// The server's certificate (leaf, then the CA).
    pub cert: PathBuf,
    /// The server's private key (PKCS#8).
    pub key: PathBuf,
    /// A key that belongs to no certificate here.
    pub other_key: PathBuf,
}

/// Makes [`TestCertificates`] in a fresh directory under the system's temporary one.
pub fn test_certificates(name: &str) -> TestCertificates {
    let dir = std::env::temp_dir().join(format!("lameduck-tls-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = |file: &str| dir.join(file);
    let openssl = |args: &[&str]| {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("`openssl` is missing: apt-get install openssl");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let ca_subject = ["-subj", "/CN=lameduck test CA", "-days", "2"];
    openssl(
        &[
            &["req", "-x509"][..],
            &ca_subject,
            &ec,
            &["-keyout", "ca.key", "-out", "ca.pem"],
        ]
        .concat(),
    );
    std::fs::write(
        path("leaf.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        &[
            &["req", "-subj", "/CN=localhost"][..],
            &ec,
            &["-keyout", "key.pem", "-out", "leaf.csr"],
        ]
        .concat(),
    );
    openssl(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "leaf.ext",
        "-out",
        "leaf.pem",
    ]);
    let chain = std::fs::read_to_string(path("leaf.pem")).unwrap()
        + &std::fs::read_to_string(path("ca.pem")).unwrap();
    std::fs::write(path("cert.pem"), chain).unwrap();
    openssl(
        &[
            &[
                "genpkey",
                "-algorithm",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ][..],
            &["-out", "other.key"],
        ]
        .concat(),
    );
    TestCertificates {
        ca: path("ca.pem"),
        cert: path("cert.pem"),
        key: path("key.pem"),
        other_key: path("other.key"),
    }
}

/// `hello` (a debug build) on a socket it inherits through `SERVER_STARTER_PORT` — already
/// listening, so a connection made before hello serves waits in the backlog — with `vars`
/// set, its stderr piped, and a watchdog that kills it after a minute.
pub fn start_hello(vars: &[(&str, &str)]) -> (std::process::Child, std::net::SocketAddr, Watchdog) {
    start_example("hello", vars)
}

/// Like [`start_hello`], for the example `name`.
pub fn start_example(
    name: &str,
    vars: &[(&str, &str)],
) -> (std::process::Child, std::net::SocketAddr, Watchdog) {
    use std::os::fd::AsRawFd;
    let hello = build_examples(&[name], false).join(name);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
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
        .envs(vars.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let child = own_group(&mut command).spawn().expect("spawn the example");
    let watchdog = Watchdog::new(child.id(), name, Duration::from_secs(60));
    (child, addr, watchdog)
}

/// Reads one HTTP/1.1 response head (to the blank line), byte by byte so that nothing after
/// it is consumed.
pub fn read_head(stream: &mut impl std::io::Read) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).unwrap(),
            1,
            "a response head: {head:?}"
        );
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Reads one HTTP/1.1 response whose body has a `Content-Length`: (head, body).
pub fn read_response(stream: &mut impl std::io::Read) -> (String, String) {
    let head = read_head(stream);
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(str::to_owned)
        })
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no content-length: {head}"));
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    (head, String::from_utf8_lossy(&body).into_owned())
}

/// Panics naming the Debian package unless `tool` is on the `PATH`.
pub fn require(tool: &str, package: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(found, "`{tool}` is missing: apt-get install {package}");
}

/// A loopback port nothing listens on (now).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What `wrk` printed, read: (requests, socket errors, non-2xx/3xx responses). Panics if
/// there is no request count in it.
pub fn wrk_figures(text: &str) -> (u64, u64, u64) {
    // "Socket errors: connect 0, read 5, write 0, timeout 0" appears only when there are some.
    let errors = text
        .lines()
        .find(|l| l.contains("Socket errors:"))
        .map_or(0, |line| {
            line.split(|c: char| !c.is_ascii_digit())
                .filter_map(|n| n.parse::<u64>().ok())
                .sum()
        });
    let non_2xx = text
        .lines()
        .find(|l| l.contains("Non-2xx or 3xx responses:"))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap_or(0);
    let requests = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no request count in wrk's output:\n{text}"));
    (requests, errors, non_2xx)
}
