//! The handover to a successor process, as the OS sees it: the child started with the
//! listening sockets at fd 3 on (systemd's socket-activation convention), a ready pipe
//! after them and (version 2) a Unix socket for the connection transfer after that, placed
//! between `fork` and `execve`; the parent waiting for its `READY=1`; the successor taking
//! its ends; reaping.
//!
//! The protocol around it — when to upgrade, rollback, probation, the PID file's owner —
//! is `lameduck_process::restart`'s. This module writes no environment variable: the
//! successor's environment is built explicitly for `execve`, and what a successor reads
//! from its own is read, never removed.

use std::ffi::{CString, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustix::event::PollFlags;

use crate::inherit::{LISTEN_FDNAMES, LISTEN_FDS, LISTEN_PID, SERVER_STARTER_PORT};
use crate::transfer::poll_once;

/// `LAMEDUCK_HANDOVER`: the handover protocol's version, [`HANDOVER_VERSION`].
pub const LAMEDUCK_HANDOVER: &str = "LAMEDUCK_HANDOVER";
/// `LAMEDUCK_READY_FD`: the fd the successor writes `READY=1\n` to.
pub const LAMEDUCK_READY_FD: &str = "LAMEDUCK_READY_FD";
/// `LAMEDUCK_DRAINING`: the pids of older generations still draining.
pub const LAMEDUCK_DRAINING: &str = "LAMEDUCK_DRAINING";
/// The value of `LAMEDUCK_HANDOVER`: the base protocol (listeners, ready pipe, draining
/// pids), which every version keeps — so a successor of the first version, which refuses
/// any other value, still takes over from a newer parent. What a successor speaks beyond
/// it, it announces on the ready pipe ([`VERSION_2`]).
pub const HANDOVER_VERSION: &str = "1";
/// What the successor writes to the ready fd once it serves.
pub const READY: &[u8] = b"READY=1\n";
/// What a successor that accepts the connection transfer writes before [`READY`], in the
/// same write: it serves connections the parent sends it over the transfer socket
/// ([`take_transfer_fd`]).
pub const VERSION_2: &[u8] = b"VERSION=2\n";
/// What a successor that acknowledges each connection it holds (the transfer's version 3,
/// [`transfer`](crate::transfer)'s records) writes after [`VERSION_2`] and before
/// [`READY`], in the same write: a version-2 parent reads only `VERSION=2` and sends as
/// version 2 does; a version-3 parent says so in the transfer's first record.
pub const VERSION_3: &[u8] = b"VERSION=3\n";

/// Whether this process took its ready pipe already: the fd is owned once.
static READY_TAKEN: AtomicBool = AtomicBool::new(false);

/// The successor's end of the ready pipe, if this process is a successor: `LAMEDUCK_READY_FD`
/// when `LISTEN_PID` names this process (a child this process starts inherits the variables
/// but not the fd, and is not a successor). Taken once per process: later calls return
/// `Ok(None)`. A malformed variable, another protocol version or an fd that is not an open
/// pipe is an `InvalidInput` error naming the variable.
pub fn take_ready_fd() -> io::Result<Option<File>> {
    let invalid = |msg: String| io::Error::new(io::ErrorKind::InvalidInput, msg);
    let Some(fd) = std::env::var_os(LAMEDUCK_READY_FD) else {
        return Ok(None);
    };
    let ours = std::env::var(LISTEN_PID)
        .ok()
        .and_then(|pid| pid.parse::<u32>().ok())
        == Some(std::process::id());
    if !ours || READY_TAKEN.swap(true, Ordering::AcqRel) {
        return Ok(None);
    }
    let version = std::env::var_os(LAMEDUCK_HANDOVER);
    if version.as_deref() != Some(HANDOVER_VERSION.as_ref()) {
        return Err(invalid(format!(
            "{LAMEDUCK_HANDOVER}={version:?}: this lameduck speaks handover version {HANDOVER_VERSION}"
        )));
    }
    let text = fd.to_string_lossy();
    let fd: RawFd = text
        .parse()
        .ok()
        .filter(|&fd: &RawFd| fd > 2 && text.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| {
            invalid(format!(
                "{LAMEDUCK_READY_FD}={text:?}: not an fd number above 2"
            ))
        })?;
    // SAFETY: only to ask the kernel about the number, which may be no open fd at all
    // (`fstat` then fails with EBADF); the borrow ends before anything else can close it.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let is_pipe = rustix::fs::fstat(borrowed).is_ok_and(|stat| {
        rustix::fs::FileType::from_raw_mode(stat.st_mode) == rustix::fs::FileType::Fifo
    });
    if !is_pipe {
        return Err(invalid(format!(
            "{LAMEDUCK_READY_FD}={fd}: not an open pipe"
        )));
    }
    // SAFETY: the fd is an open pipe that our parent placed here for us alone (the
    // handover protocol, with LISTEN_PID naming us), taken once (READY_TAKEN); nothing else
    // in this process knows its number.
    let file = unsafe { File::from_raw_fd(fd) };
    rustix::io::fcntl_setfd(&file, rustix::io::FdFlags::CLOEXEC)?;
    Ok(Some(file))
}

/// Whether this process took its transfer socket already.
static TRANSFER_TAKEN: AtomicBool = AtomicBool::new(false);

/// The successor's end of the connection-transfer socket, if its parent offered one
/// (handover version 2): the fd right after the ready pipe (`LAMEDUCK_READY_FD + 1`), when
/// `LISTEN_PID` names this process and that fd is a Unix stream socket whose peer is this
/// process's parent (`SO_PEERCRED`). There is no variable for it: a version-1 successor
/// refuses any `LAMEDUCK_*` setting it does not know, so the offer must be invisible to
/// it — it leaves the socket unused. An fd there that is anything else (a version-1
/// parent places nothing there; the number is then this process's own) is not touched:
/// `Ok(None)`. Taken once per process.
pub fn take_transfer_fd() -> io::Result<Option<std::os::unix::net::UnixStream>> {
    let Some(ready) = std::env::var_os(LAMEDUCK_READY_FD) else {
        return Ok(None);
    };
    let ours = std::env::var(LISTEN_PID)
        .ok()
        .and_then(|pid| pid.parse::<u32>().ok())
        == Some(std::process::id());
    let Some(fd) = ready
        .to_str()
        .filter(|t| t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse::<RawFd>().ok())
        .filter(|&fd| fd > 2)
        .and_then(|fd| fd.checked_add(1))
    else {
        // Malformed: `take_ready_fd` says so, naming the variable.
        return Ok(None);
    };
    if !ours || !is_parents_unix_stream(fd) || TRANSFER_TAKEN.swap(true, Ordering::AcqRel) {
        return Ok(None);
    }
    // SAFETY: the fd is an open Unix stream socket whose peer is our parent, at the number
    // the handover protocol reserves for it (after the ready pipe, with LISTEN_PID naming
    // us), taken once (TRANSFER_TAKEN); nothing else in this process knows its number.
    let sock = unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) };
    rustix::io::fcntl_setfd(&sock, rustix::io::FdFlags::CLOEXEC)?;
    Ok(Some(sock))
}

/// Whether `fd` is an open Unix stream socket connected to this process's parent. Reads
/// only: the fd may be anyone's.
fn is_parents_unix_stream(fd: RawFd) -> bool {
    use rustix::net::{AddressFamily, SocketType, sockopt};
    // SAFETY: only to ask the kernel about the number, which may be no open fd or no socket
    // (each call then fails); the borrow ends with this function, which closes nothing.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    sockopt::socket_domain(fd).ok() == Some(AddressFamily::UNIX)
        && sockopt::socket_type(fd).ok() == Some(SocketType::STREAM)
        && sockopt::socket_peercred(fd)
            .is_ok_and(|cred| Some(cred.pid) == rustix::process::getppid())
}

/// Waits up to `timeout` for the successor to end, watching the parent's end of the
/// transfer socket (it hangs up when the successor's process ends): true when it is still
/// there after `timeout` — its probation passed.
pub fn survives(transfer: &OwnedFd, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        let n = match poll_once(transfer.as_fd(), PollFlags::RDHUP, left) {
            Err(rustix::io::Errno::INTR) => continue,
            // A broken socket counts as ready: the successor is gone either way.
            other => other.unwrap_or(1),
        };
        if n != 0 {
            // Hung up (POLLRDHUP/POLLHUP), or the socket broke: the successor is gone.
            return false;
        }
    }
}

/// `LAMEDUCK_DRAINING`: the pids of the older generations that may still drain (empty when
/// unset); a malformed list is an `InvalidInput` error naming the variable.
pub fn draining_from_env() -> io::Result<Vec<u32>> {
    let Ok(list) = std::env::var(LAMEDUCK_DRAINING) else {
        return Ok(Vec::new());
    };
    list.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse().map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{LAMEDUCK_DRAINING}={list:?}: expected pids joined by `,`"),
                )
            })
        })
        .collect()
}

/// Writes `pid` to `path` atomically: a temp file beside it, renamed over it.
pub fn write_pid_file(path: &Path, pid: u32) -> io::Result<()> {
    let mut temp = path.as_os_str().to_owned();
    temp.push(format!(".{}.tmp", std::process::id()));
    let temp = PathBuf::from(temp);
    std::fs::write(&temp, format!("{pid}\n"))
        .and_then(|()| std::fs::rename(&temp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&temp);
            io::Error::new(e.kind(), format!("PID file {}: {e}", path.display()))
        })
}

/// Is `pid` a live process (not a zombie)?
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => {
            // No procfs: ask the kernel (signal 0 checks for existence; nothing is
            // delivered).
            rustix::process::Pid::from_raw(pid as i32)
                .is_some_and(|pid| rustix::process::test_kill_process(pid).is_ok())
        }
    }
}

/// A successor this process started and has not reaped: its pid is still its own.
#[derive(Debug)]
pub struct Child {
    pid: libc::pid_t,
}

impl Child {
    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// Kills it (SIGKILL); reap it next.
    pub fn kill(&self) {
        // `pid` is our child, not yet reaped (reaping consumes the `Child`), so the number is
        // still its own.
        if let Some(pid) = rustix::process::Pid::from_raw(self.pid) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }

    /// Waits for it to end (blocking) and says how it ended.
    pub fn reap(self) -> Ended {
        reap(self.pid)
    }
}

/// How a child process ended, as `waitpid(2)` told. Prints as `exit status 0`, `signal 9`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ended {
    /// It exited with this status.
    Exited(i32),
    /// This signal ended it.
    Signaled(i32),
    /// `waitpid` reported a status that is neither (the raw value).
    Other(i32),
    /// It could not be waited for: `waitpid` failed with this `errno`.
    NotWaited(i32),
}

impl Ended {
    /// A clean end: exit status 0.
    pub fn is_success(self) -> bool {
        self == Ended::Exited(0)
    }
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Exited(code) => write!(f, "exit status {code}"),
            Ended::Signaled(signal) => write!(f, "signal {signal}"),
            Ended::Other(status) => write!(f, "status {status}"),
            Ended::NotWaited(errno) => {
                write!(
                    f,
                    "not waited for: {}",
                    io::Error::from_raw_os_error(*errno)
                )
            }
        }
    }
}

/// What a successor is started with.
#[derive(Debug)]
pub struct Spawn<'a> {
    /// The binary.
    pub exe: &'a Path,
    /// Its arguments, without the program name.
    pub args: &'a [OsString],
    /// The listening sockets, placed at fd 3 on, with their `LISTEN_FDNAMES` names.
    pub listeners: &'a [(OwnedFd, String)],
    /// The pids still draining, for `LAMEDUCK_DRAINING`.
    pub draining: &'a [u32],
    /// Offer the connection transfer (version 2): a Unix socket pair, the successor's end at
    /// fd `4 + listeners`, right after the ready pipe (no variable names it; see
    /// [`take_transfer_fd`]).
    pub transfer: bool,
}

/// A started successor: the child, the ready pipe's read end, and (when offered) the
/// parent's end of the transfer socket.
#[derive(Debug)]
pub struct Started {
    /// The child.
    pub child: Child,
    /// The ready pipe's read end.
    pub ready: OwnedFd,
    /// The parent's end of the transfer socket.
    pub transfer: Option<OwnedFd>,
}

impl Spawn<'_> {
    /// Forks and execs the successor with the listeners at fd 3 on and the ready pipe after
    /// them (and the transfer socket after it), in an environment built for it: this
    /// process's, less `SERVER_STARTER_PORT` and any `LISTEN_*` and `LAMEDUCK_*` handover
    /// variables, plus the handover's.
    ///
    /// Everything the child needs is built here, before the fork (`Image`); between
    /// `fork` and `execve` the child only places descriptors, writes its pid into a buffer
    /// made for it, resets its signals and execs (`Image::become_child`).
    pub fn start(&self) -> io::Result<Started> {
        let (read, write) = ready_pipe()?;
        // Close-on-exec both ends: only the child's copy at its target fd survives its exec.
        let transfer = if self.transfer {
            let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
            Some((OwnedFd::from(ours), OwnedFd::from(theirs)))
        } else {
            None
        };
        let sources: Vec<RawFd> = self
            .listeners
            .iter()
            .map(|(fd, _)| fd.as_raw_fd())
            .chain([write.as_raw_fd()])
            .chain(transfer.as_ref().map(|(_, theirs)| theirs.as_raw_fd()))
            .collect();
        let mut image = Image::new(self, sources)?;
        let pid = image.fork_exec()?;
        drop(write);
        Ok(Started {
            child: Child { pid },
            ready: read,
            transfer: transfer.map(|(ours, _theirs)| ours),
        })
    }

    /// The successor's environment: this process's, less the handover's variables, plus
    /// the handover's own (`LISTEN_PID` apart: the child writes it).
    fn environment(&self) -> io::Result<Vec<CString>> {
        let replaced = [
            SERVER_STARTER_PORT,
            LISTEN_FDS,
            LISTEN_PID,
            LISTEN_FDNAMES,
            LAMEDUCK_HANDOVER,
            LAMEDUCK_READY_FD,
            LAMEDUCK_DRAINING,
        ];
        let mut envp = Vec::new();
        for (key, value) in std::env::vars_os() {
            if replaced.iter().any(|r| key.as_bytes() == r.as_bytes()) {
                continue;
            }
            let mut entry = key.as_bytes().to_vec();
            entry.push(b'=');
            entry.extend_from_slice(value.as_bytes());
            envp.push(cstring(&entry)?);
        }
        let n = self.listeners.len();
        let names: Vec<&str> = self.listeners.iter().map(|(_, n)| n.as_str()).collect();
        let draining: Vec<String> = self.draining.iter().map(u32::to_string).collect();
        for entry in [
            format!("{LAMEDUCK_HANDOVER}={HANDOVER_VERSION}"),
            format!("{LISTEN_FDS}={n}"),
            format!("{LISTEN_FDNAMES}={}", names.join(":")),
            format!("{LAMEDUCK_READY_FD}={}", 3 + n),
            format!("{LAMEDUCK_DRAINING}={}", draining.join(",")),
        ] {
            envp.push(cstring(entry.as_bytes())?);
        }
        Ok(envp)
    }
}

/// `bytes` as a C string; a NUL inside is an `InvalidInput` error.
fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "a NUL byte in the path, an argument or the environment",
        )
    })
}

/// The ready pipe, both ends close-on-exec: (read, write).
fn ready_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

/// Everything the child needs between `fork` and `execve`, built before the fork: after it,
/// in a process with other threads, the child may not allocate.
struct Image {
    exe: CString,
    /// Owns what `arg_ptrs` and `env_ptrs` point at.
    _argv: Vec<CString>,
    _envp: Vec<CString>,
    arg_ptrs: Vec<*const libc::c_char>,
    env_ptrs: Vec<*const libc::c_char>,
    /// `LISTEN_PID=` and room for the child's pid, NUL-terminated; the last `env_ptrs`
    /// entry before the null points at it.
    listen_pid: Vec<u8>,
    /// The descriptors to place at fd 3 on, in order.
    sources: Vec<RawFd>,
    /// Where the child moves them first, out of the targets' way.
    temps: Vec<RawFd>,
}

/// Where the child's pid digits go in `Image::listen_pid`.
const PID_DIGITS_AT: usize = "LISTEN_PID=".len();

impl Image {
    fn new(spawn: &Spawn<'_>, sources: Vec<RawFd>) -> io::Result<Image> {
        let exe = cstring(spawn.exe.as_os_str().as_bytes())?;
        let mut argv = vec![exe.clone()];
        for arg in spawn.args {
            argv.push(cstring(arg.as_bytes())?);
        }
        let envp = spawn.environment()?;
        let mut listen_pid = b"LISTEN_PID=".to_vec();
        listen_pid.resize(PID_DIGITS_AT + 21, 0);
        let mut env_ptrs: Vec<*const libc::c_char> = envp.iter().map(|c| c.as_ptr()).collect();
        env_ptrs.push(listen_pid.as_ptr().cast());
        env_ptrs.push(std::ptr::null());
        let mut arg_ptrs: Vec<*const libc::c_char> = argv.iter().map(|c| c.as_ptr()).collect();
        arg_ptrs.push(std::ptr::null());
        Ok(Image {
            exe,
            _argv: argv,
            _envp: envp,
            arg_ptrs,
            env_ptrs,
            listen_pid,
            temps: vec![-1; sources.len()],
            sources,
        })
    }

    /// Forks; the child becomes the successor, the parent gets its pid.
    fn fork_exec(&mut self) -> io::Result<libc::pid_t> {
        // SAFETY: after `fork` in a multi-threaded process the child may only make
        // async-signal-safe calls until `execve`: `become_child`, called in the child right
        // after `fork`, makes only those, writes only into buffers allocated before the
        // fork, and never returns.
        let pid = unsafe {
            let pid = libc::fork();
            if pid == 0 {
                self.become_child()
            }
            pid
        };
        if pid == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(pid)
    }

    /// The child between `fork` and `execve`: places the descriptors, writes its pid into
    /// `LISTEN_PID`, resets its signals and execs the successor; `_exit(127)` on any failure.
    ///
    /// # Safety
    ///
    /// Only in the child, right after `fork`: it calls only `fcntl`, `dup2`, `getpid`,
    /// `signal`, `sigemptyset`, `sigprocmask`, `execve` and `_exit` (async-signal-safe), and
    /// writes only into `temps` and `listen_pid`.
    unsafe fn become_child(&mut self) -> ! {
        // SAFETY: the caller's contract: async-signal-safe calls only, on fds this process
        // holds, and writes only into buffers made before the fork.
        unsafe {
            // Out of the way first (above every target), so that placing one fd never
            // overwrites another that is yet to be placed.
            let above = 3 + self.sources.len() as RawFd;
            for (temp, &source) in self.temps.iter_mut().zip(&self.sources) {
                *temp = libc::fcntl(source, libc::F_DUPFD_CLOEXEC, above);
                if *temp == -1 {
                    libc::_exit(127);
                }
            }
            for (target, &temp) in (3..).zip(self.temps.iter()) {
                // `dup2` leaves close-on-exec clear on the target: inherited by exec.
                if libc::dup2(temp, target) == -1 {
                    libc::_exit(127);
                }
            }
            write_digits(&mut self.listen_pid[PID_DIGITS_AT..], libc::getpid() as u32);
            // Rust ignores SIGPIPE; the successor starts from the defaults like any
            // freshly started program.
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            libc::execve(
                self.exe.as_ptr(),
                self.arg_ptrs.as_ptr(),
                self.env_ptrs.as_ptr(),
            );
            libc::_exit(127)
        }
    }
}

/// Writes `n`'s decimal digits and a NUL into `out` (at least 11 bytes), allocating
/// nothing: safe between `fork` and `execve`.
fn write_digits(out: &mut [u8], mut n: u32) {
    let mut digits = [0u8; 10];
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        out[i] = digits[len - 1 - i];
    }
    out[len] = 0;
}

/// How the wait for a successor's `READY=1` ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadyOutcome {
    /// It wrote `READY=1`: it serves.
    Ready {
        /// The connection transfer it announced before.
        transfer: TransferVersion,
    },
    /// The pipe closed (it exited or crashed) or carried something else.
    Ended,
    /// Nothing within the timeout.
    Timeout,
}

/// The connection transfer a successor takes, by what it announced before `READY=1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TransferVersion {
    /// Nothing (a version-1 successor): its predecessor drains as version 1 does.
    None,
    /// [`VERSION_2`]: it takes sockets, and acknowledges nothing.
    Unacknowledged,
    /// [`VERSION_3`]: it acknowledges each socket it holds, and grants credit.
    Acknowledged,
}

impl TransferVersion {
    /// What the bytes a successor wrote before `READY=1` announce.
    pub fn announced(before: &[u8]) -> TransferVersion {
        let says = |v: &[u8]| before.windows(v.len()).any(|w| w == v);
        if says(VERSION_3) {
            TransferVersion::Acknowledged
        } else if says(VERSION_2) {
            TransferVersion::Unacknowledged
        } else {
            TransferVersion::None
        }
    }
}

/// Waits up to `timeout` for `READY=1` on the ready pipe's read end.
pub fn wait_ready(ready: &OwnedFd, timeout: Duration) -> ReadyOutcome {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return ReadyOutcome::Timeout;
        }
        match poll_once(ready.as_fd(), PollFlags::IN, left) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return ReadyOutcome::Ended,
        }
        let mut buf = [0u8; 64];
        match rustix::io::read(ready, &mut buf) {
            Err(rustix::io::Errno::INTR) => continue,
            Ok(0) | Err(_) => return ReadyOutcome::Ended,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if let Some(at) = got.windows(READY.len()).position(|w| w == READY) {
                    let transfer = TransferVersion::announced(&got[..at]);
                    return ReadyOutcome::Ready { transfer };
                }
                if got.len() > 4096 {
                    return ReadyOutcome::Ended;
                }
            }
        }
    }
}

/// Waits for child `pid` and says how it ended.
fn reap(pid: libc::pid_t) -> Ended {
    let Some(pid) = rustix::process::Pid::from_raw(pid) else {
        return Ended::NotWaited(libc::ECHILD);
    };
    let status = loop {
        match rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty()) {
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Ended::NotWaited(e.raw_os_error()),
            Ok(Some((_, status))) => break status,
            // Only with WNOHANG.
            Ok(None) => return Ended::NotWaited(libc::ECHILD),
        }
    };
    if let Some(code) = status.exit_status() {
        Ended::Exited(code)
    } else if let Some(signal) = status.terminating_signal() {
        Ended::Signaled(signal)
    } else {
        Ended::Other(status.as_raw())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The child's pid, written with no allocation: every width, NUL-terminated.
    #[test]
    fn pid_digits_are_written_in_place() {
        for (n, text) in [
            (0, "0"),
            (7, "7"),
            (4_194_304, "4194304"),
            (u32::MAX, "4294967295"),
        ] {
            let mut out = [0xffu8; 21];
            write_digits(&mut out, n);
            assert_eq!(&out[..text.len()], text.as_bytes());
            assert_eq!(out[text.len()], 0);
        }
    }
}
