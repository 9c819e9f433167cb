//! Listening sockets inherited from a supervisor: Perl's Server::Starter (`start_server`),
//! go-server-starter, and systemd socket activation.
//!
//! The parsers are pure functions of the variables' text (fuzzed in `fuzz/`); adoption
//! checks every fd before using it: it must be open, a socket, of stream type, listening
//! (`SO_ACCEPTCONN`) and of the family its entry names. Adopted sockets are made
//! non-blocking (tokio panics on blocking sockets since 1.44) and close-on-exec.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, Ordering};

use socket2::{Domain, Socket, Type};

/// `SERVER_STARTER_PORT`: `spec=fd` entries joined by `;`.
pub const SERVER_STARTER_PORT: &str = "SERVER_STARTER_PORT";
/// `SERVER_STARTER_GENERATION`: the supervisor's restart counter.
pub const SERVER_STARTER_GENERATION: &str = "SERVER_STARTER_GENERATION";
/// `LISTEN_FDS`: how many fds systemd passed, from fd 3.
pub const LISTEN_FDS: &str = "LISTEN_FDS";
/// `LISTEN_PID`: the pid the fds are meant for.
pub const LISTEN_PID: &str = "LISTEN_PID";
/// `LISTEN_FDNAMES`: `:`-separated names of the fds.
pub const LISTEN_FDNAMES: &str = "LISTEN_FDNAMES";

/// The first fd systemd passes.
pub const SD_LISTEN_FDS_START: RawFd = 3;

/// The most fds `LISTEN_FDS` may announce. No process has this many listening sockets; a
/// larger count is garbage, and believing it would allocate without bound.
pub const MAX_LISTEN_FDS: usize = 65_536;

/// What an inherited socket's entry says it listens on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ListenSpec {
    /// `127.0.0.1:8080`, `[::1]:8080`.
    Addr(SocketAddr),
    /// `8080`: a port on every address.
    Port(u16),
    /// `localhost:8080`: a host name and port, as the supervisor was given it.
    HostPort(String),
    /// `/tmp/app.sock`: a Unix socket path.
    Unix(String),
    /// systemd: the fd's name from `LISTEN_FDNAMES` (or `unknown`); any family.
    Named(String),
}

impl ListenSpec {
    /// A Server::Starter spec: a path, an address, a port or `host:port`; `None` when it is
    /// none of those (a port out of range, no host, stray characters).
    fn parse_server_starter(spec: &str) -> Option<ListenSpec> {
        if spec.contains('/') {
            Some(ListenSpec::Unix(spec.to_owned()))
        } else if let Ok(addr) = spec.parse() {
            Some(ListenSpec::Addr(addr))
        } else if let Ok(port) = spec.parse() {
            Some(ListenSpec::Port(port))
        } else {
            let (host, port) = spec.rsplit_once(':')?;
            let host_ok = !host.is_empty()
                && host.chars().all(|c| c.is_ascii_graphic())
                && host.starts_with('[') == host.ends_with(']');
            (host_ok && port.parse::<u16>().is_ok()).then(|| ListenSpec::HostPort(spec.to_owned()))
        }
    }

    fn wants(&self, domain: Domain) -> bool {
        match self {
            ListenSpec::Unix(_) => domain == Domain::UNIX,
            ListenSpec::Addr(SocketAddr::V4(_)) => domain == Domain::IPV4,
            ListenSpec::Addr(SocketAddr::V6(_)) => domain == Domain::IPV6,
            ListenSpec::Port(_) | ListenSpec::HostPort(_) => {
                domain == Domain::IPV4 || domain == Domain::IPV6
            }
            ListenSpec::Named(_) => true,
        }
    }
}

impl fmt::Display for ListenSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenSpec::Addr(a) => write!(f, "{a}"),
            ListenSpec::Port(p) => write!(f, "{p}"),
            ListenSpec::HostPort(s) | ListenSpec::Unix(s) | ListenSpec::Named(s) => f.write_str(s),
        }
    }
}

/// One inherited fd, parsed but not yet adopted.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct InheritedFd {
    /// What the entry says the socket listens on.
    pub spec: ListenSpec,
    /// The fd number.
    pub fd: RawFd,
}

/// Why an inherited socket could not be used.
#[derive(Debug)]
#[non_exhaustive]
pub enum Reason {
    /// The variable is set but empty.
    Empty,
    /// An entry has no `=` between its spec and its fd.
    MissingEquals,
    /// An entry has nothing before its `=`.
    EmptySpec,
    /// What is before the `=` is not a port, an address, `host:port` or a path.
    BadSpec,
    /// The fd is not a non-negative decimal number within `RawFd`.
    BadFd,
    /// The same fd appears twice.
    DuplicateFd,
    /// `LISTEN_FDS` is not a decimal count up to [`MAX_LISTEN_FDS`].
    BadCount,
    /// `LISTEN_PID` is not a decimal pid.
    BadPid,
    /// `LISTEN_PID` names another process: the fds are not ours.
    PidMismatch {
        /// Our pid.
        ours: u32,
    },
    /// `LISTEN_FDNAMES` has a different number of names than `LISTEN_FDS`.
    NameCountMismatch {
        /// `LISTEN_FDS`.
        fds: usize,
        /// Names in `LISTEN_FDNAMES`.
        names: usize,
    },
    /// The fd is not open.
    Closed(io::Error),
    /// The fd is not a socket.
    NotASocket,
    /// The socket is not a stream socket.
    NotStream,
    /// The socket is not listening (`SO_ACCEPTCONN` is 0).
    NotListening,
    /// The socket's family is not the one its entry names.
    WrongFamily,
    /// A system call on the socket failed.
    Io(io::Error),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Empty => f.write_str("the variable is empty"),
            Reason::MissingEquals => f.write_str("expected `spec=fd`, found no `=`"),
            Reason::EmptySpec => f.write_str("nothing before `=`"),
            Reason::BadSpec => {
                f.write_str("before `=` is not a port, an address, `host:port` or a socket path")
            }
            Reason::BadFd => f.write_str("the fd is not a non-negative number"),
            Reason::DuplicateFd => f.write_str("the fd appears twice"),
            Reason::BadCount => write!(f, "not a count from 0 to {MAX_LISTEN_FDS}"),
            Reason::BadPid => f.write_str("not a pid"),
            Reason::PidMismatch { ours } => {
                write!(f, "the sockets are for another process (we are pid {ours})")
            }
            Reason::NameCountMismatch { fds, names } => {
                write!(f, "{names} names for {fds} fds")
            }
            Reason::Closed(e) => write!(f, "the fd is not open ({e})"),
            Reason::NotASocket => f.write_str("the fd is not a socket"),
            Reason::NotStream => f.write_str("the socket is not a stream socket"),
            Reason::NotListening => f.write_str("the socket is not listening"),
            Reason::WrongFamily => f.write_str("the socket's family does not match its entry"),
            Reason::Io(e) => write!(f, "{e}"),
        }
    }
}

/// An inherited-socket variable or fd that cannot be used: names the variable, the entry and
/// the reason.
#[derive(Debug)]
pub struct InheritError {
    /// The variable, e.g. `SERVER_STARTER_PORT`.
    pub var: &'static str,
    /// The offending entry (or the whole value).
    pub entry: String,
    /// What is wrong with it.
    pub reason: Reason,
}

impl fmt::Display for InheritError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} entry `{}`: {}", self.var, self.entry, self.reason)
    }
}

impl std::error::Error for InheritError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.reason {
            Reason::Closed(e) | Reason::Io(e) => Some(e),
            _ => None,
        }
    }
}

fn parse_fd(text: &str) -> Option<RawFd> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Parses `SERVER_STARTER_PORT` (`8080=3;127.0.0.1:8081=4;/tmp/s.sock=5;[::1]:8080=6`).
///
/// Keys on the fd after the *last* `=` of each entry, so a spec is taken whole whatever it
/// contains (go-server-starter's own regex misreads dotted hosts).
pub fn parse_server_starter_port(value: &str) -> Result<Vec<InheritedFd>, InheritError> {
    let error = |entry: &str, reason| InheritError {
        var: SERVER_STARTER_PORT,
        entry: entry.to_owned(),
        reason,
    };
    if value.trim().is_empty() {
        return Err(error(value, Reason::Empty));
    }
    let mut fds: Vec<InheritedFd> = Vec::new();
    for entry in value.split(';') {
        let (spec, fd) = entry
            .rsplit_once('=')
            .ok_or_else(|| error(entry, Reason::MissingEquals))?;
        if spec.is_empty() {
            return Err(error(entry, Reason::EmptySpec));
        }
        let fd = parse_fd(fd).ok_or_else(|| error(entry, Reason::BadFd))?;
        if fds.iter().any(|f| f.fd == fd) {
            return Err(error(entry, Reason::DuplicateFd));
        }
        let spec =
            ListenSpec::parse_server_starter(spec).ok_or_else(|| error(entry, Reason::BadSpec))?;
        fds.push(InheritedFd { spec, fd });
    }
    Ok(fds)
}

/// Parses systemd's `LISTEN_FDS`, `LISTEN_PID` and `LISTEN_FDNAMES` for the process `our_pid`.
///
/// `LISTEN_PID` absent means the fds are not meant for anyone in particular and yields no
/// socket, like `sd_listen_fds`; present and different from `our_pid` is an error (the fds
/// belong to another process — usually a child that inherited the environment).
pub fn parse_listen_fds(
    listen_fds: &str,
    listen_pid: Option<&str>,
    listen_fdnames: Option<&str>,
    our_pid: u32,
) -> Result<Vec<InheritedFd>, InheritError> {
    let Some(pid) = listen_pid else {
        return Ok(Vec::new());
    };
    let pid: u32 = pid
        .parse()
        .ok()
        .filter(|_| pid.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| InheritError {
            var: LISTEN_PID,
            entry: pid.to_owned(),
            reason: Reason::BadPid,
        })?;
    if pid != our_pid {
        return Err(InheritError {
            var: LISTEN_PID,
            entry: pid.to_string(),
            reason: Reason::PidMismatch { ours: our_pid },
        });
    }
    let count: usize = listen_fds
        .parse()
        .ok()
        .filter(|_| listen_fds.bytes().all(|b| b.is_ascii_digit()))
        .filter(|&n: &usize| n <= MAX_LISTEN_FDS)
        .ok_or_else(|| InheritError {
            var: LISTEN_FDS,
            entry: listen_fds.to_owned(),
            reason: Reason::BadCount,
        })?;
    let names: Vec<&str> = match listen_fdnames {
        Some(names) => names.split(':').collect(),
        None => vec!["unknown"; count],
    };
    if names.len() != count {
        return Err(InheritError {
            var: LISTEN_FDNAMES,
            entry: listen_fdnames.unwrap_or_default().to_owned(),
            reason: Reason::NameCountMismatch {
                fds: count,
                names: names.len(),
            },
        });
    }
    Ok(names
        .into_iter()
        .enumerate()
        .map(|(i, name)| InheritedFd {
            spec: ListenSpec::Named(name.to_owned()),
            fd: SD_LISTEN_FDS_START + i as RawFd,
        })
        .collect())
}

/// An adopted listening socket.
#[derive(Debug)]
pub enum Listener {
    /// A TCP listener (IPv4 or IPv6).
    Tcp(TcpListener),
    /// A Unix stream listener.
    Unix(UnixListener),
}

/// An adopted inherited socket and what its entry said about it.
#[derive(Debug)]
pub struct Inherited {
    /// The entry's spec (Server::Starter) or name (systemd).
    pub spec: ListenSpec,
    /// The listener, non-blocking and close-on-exec.
    pub listener: Listener,
}

/// Checks `fd` and takes ownership of it as a listener, non-blocking and close-on-exec.
///
/// On error the fd is left open and untouched: it was not ours to close.
fn adopt(fd: RawFd, spec: &ListenSpec) -> Result<Listener, Reason> {
    if fd < 0 {
        return Err(Reason::Closed(io::Error::from_raw_os_error(libc::EBADF)));
    }
    // SAFETY: `fcntl(F_GETFD)` only reads the descriptor flags of the fd number; it touches
    // no memory of ours and fails with EBADF if the number is not an open fd.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return Err(Reason::Closed(io::Error::last_os_error()));
    }
    // SAFETY: the fd is open (checked just above). The supervisor passed it to this process
    // to own — that is the protocol of both Server::Starter and systemd — the parsers
    // reject an fd listed twice, and `from_env`, the only caller, adopts once per process
    // (`TAKEN`), so nothing else in this process owns it. If it turns out
    // to be unusable we give it back unclosed with `into_raw_fd` below.
    let socket = Socket::from(unsafe { OwnedFd::from_raw_fd(fd) });
    match check(&socket, spec) {
        Ok(domain) => {
            let owned = OwnedFd::from(socket);
            Ok(if domain == Domain::UNIX {
                Listener::Unix(UnixListener::from(owned))
            } else {
                Listener::Tcp(TcpListener::from(owned))
            })
        }
        Err(reason) => {
            let _ = socket.into_raw_fd();
            Err(reason)
        }
    }
}

fn check(socket: &Socket, spec: &ListenSpec) -> Result<Domain, Reason> {
    let ty = socket.r#type().map_err(|e| match e.raw_os_error() {
        Some(libc::ENOTSOCK) => Reason::NotASocket,
        _ => Reason::Io(e),
    })?;
    if ty != Type::STREAM {
        return Err(Reason::NotStream);
    }
    if !socket.is_listener().map_err(Reason::Io)? {
        return Err(Reason::NotListening);
    }
    let domain = socket.domain().map_err(Reason::Io)?;
    if !spec.wants(domain) || ![Domain::IPV4, Domain::IPV6, Domain::UNIX].contains(&domain) {
        return Err(Reason::WrongFamily);
    }
    socket.set_nonblocking(true).map_err(Reason::Io)?;
    socket.set_cloexec(true).map_err(Reason::Io)?;
    Ok(domain)
}

/// Adopts every fd of a parsed variable, or fails on the first unusable one.
fn adopt_all(var: &'static str, fds: Vec<InheritedFd>) -> Result<Vec<Inherited>, InheritError> {
    fds.into_iter()
        .map(|InheritedFd { spec, fd }| match adopt(fd, &spec) {
            Ok(listener) => Ok(Inherited { spec, listener }),
            Err(reason) => Err(InheritError {
                var,
                entry: format!("{spec}={fd}"),
                reason,
            }),
        })
        .collect()
}

/// Whether this process took its inherited sockets already: each fd is owned once.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// The listening sockets a supervisor passed to this process, if any: `SERVER_STARTER_PORT`
/// first, then systemd's `LISTEN_FDS`. `Ok(None)` when neither variable is set (bind your
/// own address then).
///
/// The sockets are taken once per process: a later call returns `Ok(None)`, as each fd can
/// have one owner. The environment is read, never written (writing it is unsound once other
/// threads run); adopted sockets are close-on-exec, so a child process inherits the
/// variables but not the fds — systemd's `LISTEN_PID` tells such a child they are not its
/// own, and a `SERVER_STARTER_PORT` naming fds it does not have is an error in the child
/// (remove the variable with `Command::env_remove` when you start one).
pub fn from_env() -> Result<Option<Vec<Inherited>>, InheritError> {
    let server_starter = std::env::var(SERVER_STARTER_PORT).ok();
    let listen_fds = std::env::var(LISTEN_FDS).ok();
    if server_starter.is_none() && listen_fds.is_none() {
        return Ok(None);
    }
    if TAKEN.swap(true, Ordering::AcqRel) {
        return Ok(None);
    }
    if let Some(value) = server_starter {
        let fds = parse_server_starter_port(&value)?;
        return adopt_all(SERVER_STARTER_PORT, fds).map(Some);
    }
    if let Some(count) = listen_fds {
        let pid = std::env::var(LISTEN_PID).ok();
        let names = std::env::var(LISTEN_FDNAMES).ok();
        let fds = parse_listen_fds(&count, pid.as_deref(), names.as_deref(), std::process::id())?;
        if fds.is_empty() {
            return Ok(None);
        }
        return adopt_all(LISTEN_FDS, fds).map(Some);
    }
    Ok(None)
}

/// `SERVER_STARTER_GENERATION`, the supervisor's restart counter, if set and numeric.
pub fn server_starter_generation() -> Option<u64> {
    std::env::var(SERVER_STARTER_GENERATION).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(value: &str) -> Vec<(ListenSpec, RawFd)> {
        parse_server_starter_port(value)
            .unwrap()
            .into_iter()
            .map(|f| (f.spec, f.fd))
            .collect()
    }

    fn err(value: &str) -> String {
        parse_server_starter_port(value).unwrap_err().to_string()
    }

    #[test]
    fn server_starter_port_forms() {
        assert_eq!(ok("8080=3"), [(ListenSpec::Port(8080), 3)]);
        assert_eq!(
            ok("8080=3;127.0.0.1:8081=4;/tmp/s.sock=5;[::1]:8080=6;localhost:9000=7"),
            [
                (ListenSpec::Port(8080), 3),
                (ListenSpec::Addr("127.0.0.1:8081".parse().unwrap()), 4),
                (ListenSpec::Unix("/tmp/s.sock".into()), 5),
                (ListenSpec::Addr("[::1]:8080".parse().unwrap()), 6),
                (ListenSpec::HostPort("localhost:9000".into()), 7),
            ]
        );
        // Keyed on the last `=`: a path containing `=` stays whole.
        assert_eq!(
            ok("/tmp/a=b.sock=9"),
            [(ListenSpec::Unix("/tmp/a=b.sock".into()), 9)]
        );
    }

    #[test]
    fn malformed_server_starter_port_is_named() {
        let cases = [
            ("", "SERVER_STARTER_PORT entry ``: the variable is empty"),
            (
                "   ",
                "SERVER_STARTER_PORT entry `   `: the variable is empty",
            ),
            (
                "8080",
                "SERVER_STARTER_PORT entry `8080`: expected `spec=fd`, found no `=`",
            ),
            ("=3", "SERVER_STARTER_PORT entry `=3`: nothing before `=`"),
            (
                "8080=",
                "SERVER_STARTER_PORT entry `8080=`: the fd is not a non-negative number",
            ),
            (
                "8080=x",
                "SERVER_STARTER_PORT entry `8080=x`: the fd is not a non-negative number",
            ),
            (
                "8080=-1",
                "SERVER_STARTER_PORT entry `8080=-1`: the fd is not a non-negative number",
            ),
            (
                "8080=+3",
                "SERVER_STARTER_PORT entry `8080=+3`: the fd is not a non-negative number",
            ),
            (
                "8080= 3",
                "SERVER_STARTER_PORT entry `8080= 3`: the fd is not a non-negative number",
            ),
            (
                "8080=99999999999",
                "SERVER_STARTER_PORT entry `8080=99999999999`: the fd is not a non-negative number",
            ),
            (
                "8080=3;",
                "SERVER_STARTER_PORT entry ``: expected `spec=fd`, found no `=`",
            ),
            (
                "8080=3;;9090=4",
                "SERVER_STARTER_PORT entry ``: expected `spec=fd`, found no `=`",
            ),
            (
                "8080=3;9090=3",
                "SERVER_STARTER_PORT entry `9090=3`: the fd appears twice",
            ),
            (
                ";8080=3",
                "SERVER_STARTER_PORT entry ``: expected `spec=fd`, found no `=`",
            ),
            (
                "8080=3 ",
                "SERVER_STARTER_PORT entry `8080=3 `: the fd is not a non-negative number",
            ),
            (
                "8080=3\n",
                "SERVER_STARTER_PORT entry `8080=3\n`: the fd is not a non-negative number",
            ),
            (
                "8080=2147483648",
                "SERVER_STARTER_PORT entry `8080=2147483648`: the fd is not a non-negative number",
            ),
        ];
        for (value, message) in cases {
            assert_eq!(err(value), message, "{value:?}");
        }
        // Specs that are not a port, an address, `host:port` or a path.
        for spec in [
            "70000",
            "8080=",
            "host:",
            ":8080",
            "host:port",
            "[::1",
            "::1]:80",
            "[::1]:99999",
            "é:80",
            "\t",
            "a b:80",
            "localhost",
        ] {
            let value = format!("{spec}=3");
            assert_eq!(
                err(&value),
                format!(
                    "SERVER_STARTER_PORT entry `{value}`: before `=` is not a port, an \
                     address, `host:port` or a socket path"
                ),
            );
        }
        // Accepted: a leading zero in the fd, the largest fd.
        assert_eq!(ok("8080=03"), [(ListenSpec::Port(8080), 3)]);
        assert_eq!(
            ok("8080=2147483647"),
            [(ListenSpec::Port(8080), 2147483647)]
        );
    }

    #[test]
    fn listen_fds_forms() {
        let fds = parse_listen_fds("2", Some("42"), Some("http:admin"), 42).unwrap();
        assert_eq!(
            fds,
            [
                InheritedFd {
                    spec: ListenSpec::Named("http".into()),
                    fd: 3
                },
                InheritedFd {
                    spec: ListenSpec::Named("admin".into()),
                    fd: 4
                },
            ]
        );
        let unnamed = parse_listen_fds("1", Some("42"), None, 42).unwrap();
        assert_eq!(unnamed[0].spec, ListenSpec::Named("unknown".into()));
        assert_eq!(parse_listen_fds("0", Some("42"), None, 42).unwrap(), []);
        assert_eq!(
            parse_listen_fds("2", None, None, 42).unwrap(),
            [],
            "no LISTEN_PID: not ours"
        );
    }

    #[test]
    fn malformed_listen_fds_is_named() {
        let e = |fds, pid, names| {
            parse_listen_fds(fds, pid, names, 42)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            e("1", Some("41"), None),
            "LISTEN_PID entry `41`: the sockets are for another process (we are pid 42)"
        );
        assert_eq!(e("1", Some("x"), None), "LISTEN_PID entry `x`: not a pid");
        assert_eq!(
            e("1", Some("+42"), None),
            "LISTEN_PID entry `+42`: not a pid"
        );
        let count = |v: &str| format!("LISTEN_FDS entry `{v}`: not a count from 0 to 65536");
        for bad in ["one", "-1", "", "+1", "99999999999", "65537"] {
            assert_eq!(e(bad, Some("42"), None), count(bad));
        }
        // Found by the listen_fds fuzz target: a huge count must not allocate.
        assert_eq!(e("2000000000", Some("42"), None), count("2000000000"));
        assert_eq!(
            e("2", Some("42"), Some("http")),
            "LISTEN_FDNAMES entry `http`: 1 names for 2 fds"
        );
        for bad in [" 1", "1 ", "0x1", "1.0", "١"] {
            assert_eq!(e(bad, Some("42"), None), count(bad));
        }
        for bad in ["", " 42", "42 ", "-42", "0x2a", "99999999999999999999"] {
            assert_eq!(
                e("1", Some(bad), None),
                format!("LISTEN_PID entry `{bad}`: not a pid")
            );
        }
        assert_eq!(
            e("1", Some("0"), None),
            "LISTEN_PID entry `0`: the sockets are for another process (we are pid 42)"
        );
        assert_eq!(
            e("2", Some("42"), Some("a:b:c")),
            "LISTEN_FDNAMES entry `a:b:c`: 3 names for 2 fds"
        );
        assert_eq!(
            e("0", Some("42"), Some("a")),
            "LISTEN_FDNAMES entry `a`: 1 names for 0 fds"
        );
        // Accepted: empty names (systemd passes what the unit says).
        assert_eq!(
            parse_listen_fds("2", Some("42"), Some("a:"), 42)
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn adopt_refuses_what_is_not_a_listening_socket() {
        let any = ListenSpec::Named("x".into());
        // Not open.
        assert!(matches!(adopt(1_000_000, &any), Err(Reason::Closed(_))));
        assert!(matches!(adopt(-5, &any), Err(Reason::Closed(_))));
        // Not a socket: a pipe.
        let (r, _w) = std::io::pipe().unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&r);
        assert!(matches!(adopt(fd, &any), Err(Reason::NotASocket)));
        // A socket, not listening: a connected TCP stream.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
        assert!(matches!(adopt(fd, &any), Err(Reason::NotListening)));
        // Listening, wrong family.
        let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
        let unix = ListenSpec::Unix("/tmp/x.sock".into());
        assert!(matches!(adopt(fd, &unix), Err(Reason::WrongFamily)));
        // Not a stream socket.
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&udp);
        assert!(matches!(adopt(fd, &any), Err(Reason::NotStream)));
        // The refused fds are still open and usable.
        assert!(stream.peer_addr().is_ok());
        assert!(listener.local_addr().is_ok());
    }

    #[test]
    fn adopt_takes_a_listening_socket_non_blocking_and_cloexec() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let fd = listener.into_raw_fd();
        let adopted = adopt(fd, &ListenSpec::Addr(addr)).unwrap();
        let Listener::Tcp(listener) = adopted else {
            panic!("not TCP")
        };
        assert_eq!(listener.local_addr().unwrap(), addr);
        // Non-blocking: accept with nothing pending returns WouldBlock at once.
        assert_eq!(
            listener.accept().unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        let dir = std::env::temp_dir().join(format!("lameduck-adopt-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let unix = UnixListener::bind(&dir).unwrap();
        let fd = unix.into_raw_fd();
        let spec = ListenSpec::Unix(dir.display().to_string());
        assert!(matches!(adopt(fd, &spec), Ok(Listener::Unix(_))));
        let _ = std::fs::remove_file(&dir);
    }
}
