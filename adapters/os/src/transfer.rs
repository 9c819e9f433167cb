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

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// The most descriptors one message carries: Linux's `SCM_MAX_FD`.
pub const MAX_FDS: usize = 253;

/// Bytes of control buffer for `n` descriptors, as `u64`s so that it is aligned for a
/// `cmsghdr`.
fn control_buffer(n: usize) -> (Vec<u64>, usize) {
    let bytes = (size_of::<RawFd>() * n) as u32;
    // SAFETY: `CMSG_SPACE` is arithmetic on its argument; it touches no memory.
    let space = unsafe { libc::CMSG_SPACE(bytes) } as usize;
    (vec![0u64; space.div_ceil(size_of::<u64>())], space)
}

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
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let fd_bytes = size_of::<RawFd>() * raw.len();
    let (mut control, space) = control_buffer(raw.len());
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr() as *mut libc::c_void,
        iov_len: payload.len(),
    };
    // SAFETY: `msghdr` is plain data, for which all zeroes is a valid value (no buffers).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !raw.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: `msg_control` points at `space` writable, aligned bytes, which
        // `CMSG_SPACE` sized for one header and `raw.len()` descriptors, so the first header
        // exists and its data has room for `fd_bytes` bytes; `raw` holds that many.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as _;
            std::ptr::copy_nonoverlapping(
                raw.as_ptr().cast::<u8>(),
                libc::CMSG_DATA(cmsg),
                fd_bytes,
            );
        }
    }
    loop {
        // SAFETY: `msg` points at `iov` (over `payload`) and `control`, which all outlive the
        // call; `sendmsg` only reads them. MSG_NOSIGNAL: a gone peer is an error, not SIGPIPE.
        let sent = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if sent >= 0 {
            return if sent as usize == payload.len() {
                Ok(())
            } else {
                Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!("sent {sent} of the message's {} bytes", payload.len()),
                ))
            };
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
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
    let (mut control, space) = control_buffer(MAX_FDS);
    let mut iov = libc::iovec {
        iov_base: payload.as_mut_ptr().cast(),
        iov_len: payload.len(),
    };
    // SAFETY: `msghdr` is plain data, for which all zeroes is a valid value (no buffers).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    let received = loop {
        // SAFETY: `msg` points at `iov` (over `payload`) and `control`, both writable and
        // outliving the call; `recvmsg` writes at most their lengths.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    };
    // Own every descriptor first: whatever happens next, none leaks.
    let mut arrived = Vec::new();
    // SAFETY: after a successful `recvmsg`, `msg_control`/`msg_controllen` describe the
    // control messages the kernel wrote into `control`; `CMSG_FIRSTHDR`/`CMSG_NXTHDR` walk
    // only within them, and each SCM_RIGHTS header's data holds `(cmsg_len - CMSG_LEN(0)) /
    // size_of::<RawFd>()` descriptors, read unaligned. Each is a new descriptor the kernel
    // installed for this process, owned by nothing else.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg);
                let bytes = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                for i in 0..bytes / size_of::<RawFd>() {
                    let fd = data
                        .add(i * size_of::<RawFd>())
                        .cast::<RawFd>()
                        .read_unaligned();
                    arrived.push(OwnedFd::from_raw_fd(fd));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "a message brought more descriptors than fit ({} arrived, closed)",
                arrived.len()
            ),
        ));
    }
    if msg.msg_flags & libc::MSG_TRUNC != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a message longer than its {}-byte buffer", payload.len()),
        ));
    }
    fds.append(&mut arrived);
    Ok(received)
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
