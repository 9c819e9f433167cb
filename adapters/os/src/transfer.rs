//! Passing open sockets to another process over a Unix socket (`SCM_RIGHTS`): how a
//! restarting server can hand its idle keep-alive connections to its successor.
//!
//! One message carries a payload of at least one byte (a stream socket attaches ancillary
//! data to bytes) and at most [`MAX_FDS`] descriptors, the kernel's own limit
//! (`SCM_MAX_FD`); [`send_batched`] cuts a longer list into such messages. The receiving side
//! takes ownership of every descriptor a message brought before it looks at anything else,
//! so none leaks, and a message whose descriptors or payload did not fit is an error (the
//! descriptors that did arrive are closed).
//!
//! ```
//! use std::io::{Read, Write};
//! use std::os::fd::AsFd;
//! use std::os::unix::net::UnixStream;
//!
//! use lameduck_os::transfer;
//!
//! let (old, new) = UnixStream::pair()?;
//! let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
//! let mut client = std::net::TcpStream::connect(listener.local_addr()?)?;
//! let (served, _) = listener.accept()?;
//! transfer::send(old.as_fd(), b"h", &[served.as_fd()])?;
//! drop(served); // the old process closes its own descriptor: the connection lives on
//!
//! let mut payload = [0u8; 1];
//! let mut fds = Vec::new();
//! transfer::recv(new.as_fd(), &mut payload, &mut fds)?;
//! let mut adopted = std::net::TcpStream::from(fds.pop().unwrap());
//! adopted.write_all(b"served by the successor")?;
//! drop(adopted);
//! let mut got = String::new();
//! client.read_to_string(&mut got)?;
//! assert_eq!(got, "served by the successor");
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::io::Errno;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

/// The most descriptors one message carries: Linux's `SCM_MAX_FD`.
pub const MAX_FDS: usize = 253;

/// Bytes of control buffer for [`MAX_FDS`] descriptors: on the stack, a little over 1 KiB.
const CONTROL_SPACE: usize = rustix::cmsg_space!(ScmRights(MAX_FDS));

/// Sends one message over the connected Unix socket `sock`: `payload` (at least one byte)
/// and `fds` (at most [`MAX_FDS`]). The descriptors stay open here: the receiver gets
/// duplicates of them, and closing ours afterwards does not touch the connection.
pub fn send(sock: BorrowedFd<'_>, payload: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if payload.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a message that carries descriptors needs at least one byte of payload",
        ));
    }
    if fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} descriptors in one message, at most {MAX_FDS}",
                fds.len()
            ),
        ));
    }
    let mut space = [MaybeUninit::uninit(); CONTROL_SPACE];
    let mut control = SendAncillaryBuffer::new(&mut space);
    // Fits: the buffer is sized for MAX_FDS, checked above.
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other("descriptors beyond the control buffer"));
    }
    let iov = [IoSlice::new(payload)];
    loop {
        // MSG_NOSIGNAL: a gone peer is an error, not SIGPIPE.
        match rustix::net::sendmsg(sock, &iov, &mut control, SendFlags::NOSIGNAL) {
            Ok(sent) if sent == payload.len() => return Ok(()),
            Ok(sent) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!("sent {sent} of the message's {} bytes", payload.len()),
                ));
            }
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Sends `fds` in as many messages as [`MAX_FDS`] requires, each with `payload` (at least one
/// byte). Returns the number of messages sent; on an error, the batches before it were sent.
pub fn send_batched(
    sock: BorrowedFd<'_>,
    payload: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<usize> {
    let mut messages = 0;
    for batch in fds.chunks(MAX_FDS) {
        send(sock, payload, batch)?;
        messages += 1;
    }
    Ok(messages)
}

/// Receives one message from the Unix socket `sock`: its payload into `payload` (the length
/// is returned; 0 when the peer has closed), its descriptors appended to `fds` as owned,
/// close-on-exec descriptors. A message whose payload was longer than `payload`, or whose
/// descriptors did not all fit, is an error; the descriptors that arrived are closed.
pub fn recv(sock: BorrowedFd<'_>, payload: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
    let mut space = [MaybeUninit::uninit(); CONTROL_SPACE];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let payload_len = payload.len();
    let mut iov = [IoSliceMut::new(payload)];
    let msg = loop {
        match rustix::net::recvmsg(sock, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC) {
            Ok(msg) => break msg,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    // Own every descriptor first: whatever happens next, none leaks. (What is left in the
    // buffer is closed when it drops.)
    let mut arrived = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = message {
            arrived.extend(rights);
        }
    }
    let truncated = msg.flags.contains(ReturnFlags::TRUNC);
    if msg.flags.contains(ReturnFlags::CTRUNC) && !truncated {
        drop(arrived);
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            Truncated::Descriptors { len: msg.bytes },
        ));
    }
    if truncated || msg.flags.contains(ReturnFlags::CTRUNC) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a message longer than its {payload_len}-byte buffer"),
        ));
    }
    fds.append(&mut arrived);
    Ok(msg.bytes)
}

/// One message received by [`recv_lossy`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received {
    /// Bytes of payload (0: the peer has closed).
    pub len: usize,
    /// The message carried descriptors that did not all arrive (`MSG_CTRUNC`: this process
    /// had no room for them, or the control buffer was too small); those that did arrive
    /// were closed. The sender still holds its own.
    pub descriptors_lost: bool,
}

/// Like [`recv`], but a message whose descriptors did not fit is not an error: it is
/// received (its payload read, the descriptors that arrived closed) and reported in
/// [`Received::descriptors_lost`], so that the receiver can tell its sender which message
/// it could not take. A payload longer than `payload` is still an error.
pub fn recv_lossy(
    sock: BorrowedFd<'_>,
    payload: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> io::Result<Received> {
    let before = fds.len();
    match recv(sock, payload, fds) {
        Ok(len) => Ok(Received {
            len,
            descriptors_lost: false,
        }),
        Err(e) if e.kind() == io::ErrorKind::InvalidData && fds.len() == before => {
            match e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<Truncated>())
            {
                Some(Truncated::Descriptors { len }) => Ok(Received {
                    len: *len,
                    descriptors_lost: true,
                }),
                _ => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// What [`recv`] found truncated (the error's inner value, for [`recv_lossy`]).
#[derive(Debug)]
enum Truncated {
    Descriptors { len: usize },
}

impl std::fmt::Display for Truncated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Truncated::Descriptors { .. } => f.write_str(
                "a message brought more descriptors than fit (those that arrived were closed)",
            ),
        }
    }
}

impl std::error::Error for Truncated {}

/// Waits up to `timeout` until `fd` is readable (or hung up, or broken): true when it is.
/// `EINTR` counts as not yet.
pub fn wait_readable(fd: BorrowedFd<'_>, timeout: std::time::Duration) -> io::Result<bool> {
    match poll_once(fd, rustix::event::PollFlags::IN, timeout) {
        Err(Errno::INTR) => Ok(false),
        other => Ok(other? > 0),
    }
}

/// One `poll(2)` of `fd` for `events`, for at most `timeout` (saturated at what a
/// `timespec` holds): how many descriptors are ready, 0 or 1.
pub(crate) fn poll_once(
    fd: BorrowedFd<'_>,
    events: rustix::event::PollFlags,
    timeout: std::time::Duration,
) -> rustix::io::Result<usize> {
    let timeout = rustix::event::Timespec::try_from(timeout).unwrap_or(rustix::event::Timespec {
        tv_sec: i64::MAX,
        tv_nsec: 0,
    });
    let mut fds = [rustix::event::PollFd::new(&fd, events)];
    rustix::event::poll(&mut fds, Some(&timeout))
}

/// How many more descriptors this process may open now: its soft `RLIMIT_NOFILE` (read from
/// `/proc/self/limits`) less those open (counted in `/proc/self/fd`). `None` where either
/// cannot be read.
pub fn free_descriptors() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let soft = soft_nofile(&limits)?;
    // The listing's own descriptor is counted too, and closed again right after.
    let open = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    Some(soft.saturating_sub(open))
}

/// The soft limit on open files in the text of `/proc/self/limits`
/// (`Max open files  1024  524288  files`); `unlimited` is `u64::MAX`.
fn soft_nofile(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    match line["Max open files".len()..].split_whitespace().next()? {
        "unlimited" => Some(u64::MAX),
        soft => soft.parse().ok(),
    }
}

/// The records of the acknowledged transfer (handover version 3): nine bytes each, a tag
/// and a little-endian `u64`, on the same Unix stream socket as the descriptors. A
/// [`Record::Connection`] is the one record that carries a descriptor, one message each;
/// any other records may share a write.
///
/// | from | record | meaning |
/// |---|---|---|
/// | old | `Hello(3)` | first, before anything else: this process speaks version 3 |
/// | old | `Connection(n)` | with one socket: the `n`-th offered (from 0, in order) |
/// | new | `Credit(total)` | it may be sent `total` sockets in all (grows, never shrinks) |
/// | new | `Held(n)` | it holds socket `n`, and will not read it before `Commit(n)` |
/// | new | `Lost(n)` | socket `n` did not arrive (no room for it): the old one keeps it |
/// | old | `Commit(n)` | socket `n` is the new one's: it serves it, the old one closes its own |
/// | old | `Abort(n)` | the old one took socket `n` back: the new one closes its copy, unread |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record {
    /// The protocol's version, first from the old process.
    Hello(u64),
    /// A socket offered, with its sequence number; carries the descriptor.
    Connection(u64),
    /// The cumulative number of sockets the new process can take.
    Credit(u64),
    /// The new process holds this socket, unread.
    Held(u64),
    /// This socket did not arrive.
    Lost(u64),
    /// This socket is the new process's now.
    Commit(u64),
    /// The old process took this socket back.
    Abort(u64),
}

impl Record {
    /// The encoded size of every record.
    pub const LEN: usize = 9;

    /// The record's nine bytes.
    pub fn encode(self) -> [u8; Record::LEN] {
        let (tag, value) = match self {
            Record::Hello(v) => (b'v', v),
            Record::Connection(v) => (b'c', v),
            Record::Credit(v) => (b'g', v),
            Record::Held(v) => (b'h', v),
            Record::Lost(v) => (b'l', v),
            Record::Commit(v) => (b'k', v),
            Record::Abort(v) => (b'a', v),
        };
        let mut bytes = [0u8; Record::LEN];
        bytes[0] = tag;
        bytes[1..].copy_from_slice(&value.to_le_bytes());
        bytes
    }

    /// The record in `bytes`, or `None` for an unknown tag.
    pub fn decode(bytes: &[u8; Record::LEN]) -> Option<Record> {
        let mut value = [0u8; 8];
        value.copy_from_slice(&bytes[1..]);
        let value = u64::from_le_bytes(value);
        Some(match bytes[0] {
            b'v' => Record::Hello(value),
            b'c' => Record::Connection(value),
            b'g' => Record::Credit(value),
            b'h' => Record::Held(value),
            b'l' => Record::Lost(value),
            b'k' => Record::Commit(value),
            b'a' => Record::Abort(value),
            _ => return None,
        })
    }
}

/// Writes `records` (none of them a [`Record::Connection`]) without blocking, as one write
/// when they fit in [`RECORDS_PER_WRITE`]: returns how many went out — whole records only
/// (a write of at most a few kilobytes to a Unix stream socket is all or nothing), 0 when
/// the socket's buffer is full.
pub fn send_records(sock: BorrowedFd<'_>, records: &[Record]) -> io::Result<usize> {
    let batch = &records[..records.len().min(RECORDS_PER_WRITE)];
    if batch.is_empty() {
        return Ok(0);
    }
    let mut bytes = [0u8; RECORDS_PER_WRITE * Record::LEN];
    for (i, record) in batch.iter().enumerate() {
        bytes[i * Record::LEN..(i + 1) * Record::LEN].copy_from_slice(&record.encode());
    }
    let len = batch.len() * Record::LEN;
    let flags = SendFlags::NOSIGNAL | SendFlags::DONTWAIT;
    loop {
        match rustix::net::send(sock, &bytes[..len], flags) {
            // Whole records: the kernel queues a write this small as one piece.
            Ok(sent) => return Ok(sent / Record::LEN),
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) => return Ok(0),
            Err(e) => return Err(e.into()),
        }
    }
}

/// The most records [`send_records`] writes at once (a little over 2 KiB).
pub const RECORDS_PER_WRITE: usize = 256;

/// One record read by a [`RecordReader`], with what its message carried.
#[derive(Debug)]
pub struct Incoming {
    /// The record.
    pub record: Record,
    /// The descriptor that came with it (a [`Record::Connection`]'s socket).
    pub fd: Option<OwnedFd>,
    /// It came with a descriptor that did not arrive (no room for it: `MSG_CTRUNC`).
    pub lost: bool,
}

/// Reads [`Record`]s in bulk — a few kilobytes per `recvmsg`, not one record each — and
/// gives each descriptor to the record it came with. That rests on how Linux reads a Unix
/// stream socket: one read takes bytes across messages, but it ends with the first message
/// that carries descriptors, and those descriptors arrive with the read that takes its
/// first byte. A record is written whole, each `Connection` in a message of its own, so the
/// descriptors of a read belong to the last record that begins in it.
#[derive(Debug, Default)]
pub struct RecordReader {
    /// The bytes of a record begun in an earlier read (fewer than [`Record::LEN`]).
    partial: Vec<u8>,
    /// What came with that record's first bytes.
    partial_fd: Option<OwnedFd>,
    partial_lost: bool,
}

impl RecordReader {
    /// One `recvmsg` from `sock`: appends the records it completes to `out`. `Ok(false)`
    /// when the peer has closed; a `WouldBlock` error when nothing is there (non-blocking);
    /// `InvalidData` for bytes that are no record.
    pub fn read_once(&mut self, sock: BorrowedFd<'_>, out: &mut Vec<Incoming>) -> io::Result<bool> {
        let mut chunk = [0u8; 4096];
        let mut fds = Vec::new();
        let got = recv_lossy(sock, &mut chunk, &mut fds)?;
        if got.len == 0 {
            return Ok(false);
        }
        let start = self.partial.len();
        let mut bytes = std::mem::take(&mut self.partial);
        bytes.extend_from_slice(&chunk[..got.len]);
        // The record that owns this read's descriptor: the last one that begins in it.
        let last = (bytes.len() - 1) / Record::LEN * Record::LEN;
        let owner = (last >= start).then_some(last);
        let mut fd = fds.pop();
        let lost = got.descriptors_lost;
        if owner.is_none() && (fd.is_some() || lost) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a descriptor with no record of its own",
            ));
        }
        let mut at = 0;
        while at + Record::LEN <= bytes.len() {
            let mut one = [0u8; Record::LEN];
            one.copy_from_slice(&bytes[at..at + Record::LEN]);
            let record = Record::decode(&one).ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, format!("no record: {one:?}"))
            })?;
            let (fd, lost) = if Some(at) == owner {
                (fd.take(), lost)
            } else if at == 0 && start > 0 {
                (
                    self.partial_fd.take(),
                    std::mem::take(&mut self.partial_lost),
                )
            } else {
                (None, false)
            };
            out.push(Incoming { record, fd, lost });
            at += Record::LEN;
        }
        if at < bytes.len() {
            if Some(at) == owner {
                self.partial_fd = fd.take();
                self.partial_lost = lost;
            }
            self.partial = bytes[at..].to_vec();
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    /// A connected TCP pair: (client, the server's side).
    fn tcp_pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (served, _) = listener.accept().unwrap();
        (client, served)
    }

    /// 300 connections go over in two messages (253 + 47), arrive in order, and each is the
    /// same connection: what the receiver writes on it reaches its client.
    #[test]
    fn many_connections_cross_in_batches_in_order() {
        let (old, new) = UnixStream::pair().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let pairs: Vec<(TcpStream, TcpStream)> = (0..300).map(|_| tcp_pair(&listener)).collect();
        let served: Vec<BorrowedFd<'_>> = pairs.iter().map(|(_, s)| s.as_fd()).collect();
        let sender = std::thread::scope(|scope| {
            let sending = scope.spawn(|| send_batched(old.as_fd(), b"c", &served));
            let mut fds = Vec::new();
            while fds.len() < 300 {
                let mut payload = [0u8; 1];
                assert_eq!(recv(new.as_fd(), &mut payload, &mut fds).unwrap(), 1);
                assert_eq!(&payload, b"c");
            }
            (sending.join().unwrap().unwrap(), fds)
        });
        let (messages, fds) = sender;
        assert_eq!(messages, 2);
        drop(served);
        let mut clients: Vec<TcpStream> = pairs.into_iter().map(|(c, _)| c).collect();
        for (i, fd) in fds.into_iter().enumerate() {
            let mut adopted = TcpStream::from(fd);
            adopted.write_all(format!("{i}\n").as_bytes()).unwrap();
        }
        for (i, client) in clients.iter_mut().enumerate() {
            let mut line = [0u8; 8];
            let n = client.read(&mut line).unwrap();
            assert_eq!(&line[..n], format!("{i}\n").as_bytes(), "connection {i}");
        }
    }

    #[test]
    fn bad_messages_are_refused_before_anything_is_sent() {
        let (old, _new) = UnixStream::pair().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let (_client, served) = tcp_pair(&listener);
        let empty = send(old.as_fd(), b"", &[served.as_fd()]).unwrap_err();
        assert_eq!(empty.kind(), io::ErrorKind::InvalidInput);
        let too_many = vec![served.as_fd(); MAX_FDS + 1];
        let error = send(old.as_fd(), b"x", &too_many).unwrap_err();
        assert!(error.to_string().contains("at most 253"), "{error}");
    }

    #[test]
    fn the_soft_descriptor_limit_is_read_from_proc_limits() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max cpu time              unlimited            unlimited            seconds   \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(soft_nofile(limits), Some(1024));
        assert_eq!(
            soft_nofile(
                "Max open files            unlimited            unlimited            files"
            ),
            Some(u64::MAX)
        );
        assert_eq!(soft_nofile("Max processes 10 10 processes"), None);
        assert!(free_descriptors().is_some_and(|free| free > 0));
    }

    /// Records read in bulk: a thousand records, one socket every tenth, each written as
    /// the protocol writes them; every record arrives once, in order, each socket with its
    /// own record and still its client's connection.
    #[test]
    fn records_read_in_bulk_keep_each_descriptor_with_its_record() {
        let (old, new) = UnixStream::pair().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let pairs: Vec<(TcpStream, TcpStream)> = (0..100).map(|_| tcp_pair(&listener)).collect();
        let mut records = Vec::new();
        for i in 0..1000u64 {
            if i % 10 == 0 {
                let (_, served) = &pairs[(i / 10) as usize];
                send(
                    old.as_fd(),
                    &Record::Connection(i).encode(),
                    &[served.as_fd()],
                )
                .unwrap();
            } else {
                records.push(Record::Commit(i));
                if i % 10 == 9 {
                    // Runs of records in one write, between the sockets.
                    assert_eq!(send_records(old.as_fd(), &records).unwrap(), records.len());
                    records.clear();
                }
            }
        }
        drop(old);
        let mut reader = RecordReader::default();
        let mut got = Vec::new();
        while reader.read_once(new.as_fd(), &mut got).unwrap() {}
        assert_eq!(got.len(), 1000);
        for (i, incoming) in got.into_iter().enumerate() {
            let i = i as u64;
            if i % 10 == 0 {
                assert_eq!(incoming.record, Record::Connection(i));
                let mut adopted = TcpStream::from(incoming.fd.expect("its socket"));
                adopted.write_all(format!("{i}\n").as_bytes()).unwrap();
            } else {
                assert_eq!(incoming.record, Record::Commit(i));
                assert!(incoming.fd.is_none(), "record {i} got a descriptor");
            }
            assert!(!incoming.lost);
        }
        for (i, (client, _)) in pairs.iter().enumerate() {
            let mut line = [0u8; 8];
            let n = (&*client).read(&mut line).unwrap();
            assert_eq!(
                &line[..n],
                format!("{}\n", i * 10).as_bytes(),
                "connection {i}"
            );
        }
    }

    /// A payload longer than the receiver's buffer is an error, and the descriptor that came
    /// with it is closed, not leaked.
    #[test]
    fn a_truncated_message_is_an_error_and_leaks_nothing() {
        let (old, new) = std::os::unix::net::UnixDatagram::pair().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let (mut client, served) = tcp_pair(&listener);
        // A leaked descriptor would keep the connection open: fail, do not hang.
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        send(old.as_fd(), b"longer", &[served.as_fd()]).unwrap();
        drop(served);
        let mut payload = [0u8; 2];
        let mut fds = Vec::new();
        let error = recv(new.as_fd(), &mut payload, &mut fds).unwrap_err();
        assert!(error.to_string().contains("2-byte buffer"), "{error}");
        assert!(fds.is_empty());
        // Every descriptor of the connection's server side is closed: the client sees EOF.
        let mut rest = Vec::new();
        assert_eq!(client.read_to_end(&mut rest).unwrap(), 0);
    }
}
