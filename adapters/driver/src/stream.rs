//! A connection whose lifecycle is tracked.

#[cfg(any(feature = "tokio", feature = "futures-io"))]
use std::io;
#[cfg(any(feature = "tokio", feature = "futures-io"))]
use std::pin::Pin;
#[cfg(any(feature = "tokio", feature = "futures-io"))]
use std::task::{Context, Poll, ready};

use lameduck_os::cut::Armed;

use crate::Conn;
use crate::handle::Mailbox;

/// A runtime's stream plus its handle into the lifecycle.
///
/// Protocol-agnostic by default: the first byte read on a New or Idle connection moves it to
/// Active. A protocol layer marks the end of each exchange with
/// [`conn_mut().request_finished()`](crate::ConnHandle::request_finished) (Active → Idle) and upgrades with
/// [`ConnHandle::upgraded`](crate::ConnHandle::upgraded); its task waits on
/// [`ConnHandle::notices`](crate::ConnHandle::notices) to learn what shutdown wants of it. Dropping the `Tracked` — normally, in a panic, or by cancelling
/// its task — reports the connection Closed, exactly once.
///
/// Implements tokio's `AsyncRead`/`AsyncWrite` (feature `tokio`) and `futures-io`'s
/// (feature `futures-io`) when the stream does.
///
/// A cut is done, not only counted: from the lifecycle's close on, reads and writes through
/// the wrapper fail (`ConnectionAborted`), and a stream made by a tracked listener
/// ([`Tracked::with_socket`]) has its socket shut down at the deadline's cut even if the
/// task holding it never polls again.
#[derive(Debug)]
pub struct Tracked<S> {
    // Declared first, so dropped first: the connection is out of the table (no cut can
    // find it) before the stream's own guard disarms and the stream closes its fd.
    conn: Conn,
    /// The stream, armed for the deadline's cut when it has a socket of its own.
    io: Armed<S, Mailbox>,
}

impl<S> Tracked<S> {
    /// Pairs a stream with its tracked connection.
    pub fn new(io: S, conn: Conn) -> Self {
        Tracked {
            conn,
            io: Armed::unarmed(io),
        }
    }

    /// Like [`new`](Tracked::new), and a deadline cut (or
    /// [`Shutdown::force_close`](crate::Shutdown::force_close)) ends the connection at its
    /// socket: `shutdown(2)` ends both directions, so the client sees the connection end even
    /// if the handler holding the stream never polls it again, and the connection counts as
    /// closed at once, so that the drain completes. Streams from a tracked listener are made
    /// this way.
    pub fn with_socket(io: S, conn: Conn) -> Self
    where
        S: std::os::fd::AsFd,
    {
        Tracked {
            io: Armed::new(io, conn.cell()),
            conn,
        }
    }

    /// The error every read and write returns once the lifecycle closed the connection.
    #[cfg(any(feature = "tokio", feature = "futures-io"))]
    #[inline]
    fn check_cut(&self) -> io::Result<()> {
        if self.conn.is_cut() {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "lameduck closed the connection",
            ));
        }
        Ok(())
    }

    /// The connection's lifecycle handle.
    pub fn conn(&self) -> &Conn {
        &self.conn
    }

    /// The connection's lifecycle handle, to report protocol events.
    pub fn conn_mut(&mut self) -> &mut Conn {
        &mut self.conn
    }

    /// The stream.
    pub fn get_ref(&self) -> &S {
        self.io.get_ref()
    }

    /// The stream, mutably. Bytes read through it directly do not mark the connection
    /// Active; call [`ConnHandle::data_received`](crate::ConnHandle::data_received) if you bypass the wrapper.
    pub fn get_mut(&mut self) -> &mut S {
        self.io.get_mut()
    }

    /// Splits into the stream and the connection handle (which still reports Closed when
    /// dropped). A cut no longer reaches the socket: put them back together with
    /// [`with_socket`](Tracked::with_socket) to arm it again.
    pub fn into_parts(self) -> (S, Conn) {
        (self.io.into_inner(), self.conn)
    }
}

#[cfg(feature = "tokio")]
impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Tracked<S> {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check_cut()?;
        // `remaining`, not `filled().len()`: no slice, so no bounds check on every read.
        let before = buf.remaining();
        ready!(Pin::new(this.io.get_mut()).poll_read(cx, buf))?;
        if buf.remaining() < before {
            this.conn.data_received();
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(feature = "tokio")]
impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Tracked<S> {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check_cut()?;
        Pin::new(self.get_mut().io.get_mut()).poll_write(cx, buf)
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().io.get_mut()).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().io.get_mut()).poll_shutdown(cx)
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check_cut()?;
        Pin::new(self.get_mut().io.get_mut()).poll_write_vectored(cx, bufs)
    }

    #[inline]
    fn is_write_vectored(&self) -> bool {
        self.io.get_ref().is_write_vectored()
    }
}

#[cfg(feature = "futures-io")]
impl<S: futures_io::AsyncRead + Unpin> futures_io::AsyncRead for Tracked<S> {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check_cut()?;
        let n = ready!(Pin::new(this.io.get_mut()).poll_read(cx, buf))?;
        if n > 0 {
            this.conn.data_received();
        }
        Poll::Ready(Ok(n))
    }
}

#[cfg(feature = "futures-io")]
/// Closing flushes, then shuts the socket's write side down, so the peer reads EOF — what
/// tokio's `poll_shutdown` does. `async-io`'s close only flushes: a lingering close on smol
/// or async-std then waited its full second for a peer that never saw the end (66 requests
/// a second under `ab`). Hence the `AsFd`: a tracked futures-io stream is a socket.
impl<S: futures_io::AsyncWrite + std::os::fd::AsFd + Unpin> futures_io::AsyncWrite for Tracked<S> {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check_cut()?;
        Pin::new(self.get_mut().io.get_mut()).poll_write(cx, buf)
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().io.get_mut()).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(Pin::new(this.io.get_mut()).poll_close(cx))?;
        Poll::Ready(
            match socket2::SockRef::from(this.io.get_ref()).shutdown(std::net::Shutdown::Write) {
                Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
                result => result,
            },
        )
    }
}

impl<S: std::os::fd::AsFd> std::os::fd::AsFd for Tracked<S> {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.io.get_ref().as_fd()
    }
}

impl<S: std::os::fd::AsRawFd> std::os::fd::AsRawFd for Tracked<S> {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.io.get_ref().as_raw_fd()
    }
}

/// The plaintext side of a protocol layered over a [`Tracked`] stream — TLS, above all: its
/// reads report [`ConnHandle::decrypted_received`](crate::ConnHandle::decrypted_received), as
/// `Tracked`'s own do on a plain stream, so a request begins at its first decrypted byte
/// rather than at the first record (or the handshake) that carries it. Turn the tracked
/// stream's own marking off with
/// [`ConnHandle::set_request_start`](crate::ConnHandle::set_request_start)`(FirstDecryptedByte)`.
///
/// Implements tokio's `AsyncRead`/`AsyncWrite` (feature `tokio`) and `futures-io`'s
/// (feature `futures-io`) when the stream does, delegating everything else.
#[derive(Debug)]
pub struct Decrypted<S> {
    io: S,
    conn: crate::ConnHandle,
}

impl<S> Decrypted<S> {
    /// `io`, whose reads report to `conn`.
    pub fn new(io: S, conn: crate::ConnHandle) -> Self {
        Decrypted { io, conn }
    }

    /// The connection its reads report to.
    pub fn conn(&self) -> &crate::ConnHandle {
        &self.conn
    }

    /// The stream.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// The stream, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.io
    }

    /// The stream.
    pub fn into_inner(self) -> S {
        self.io
    }
}

#[cfg(feature = "tokio")]
impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Decrypted<S> {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            this.conn.decrypted_received();
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(feature = "tokio")]
impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Decrypted<S> {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    #[inline]
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(feature = "futures-io")]
impl<S: futures_io::AsyncRead + Unpin> futures_io::AsyncRead for Decrypted<S> {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        if n > 0 {
            this.conn.decrypted_received();
        }
        Poll::Ready(Ok(n))
    }
}

#[cfg(feature = "futures-io")]
impl<S: futures_io::AsyncWrite + Unpin> futures_io::AsyncWrite for Decrypted<S> {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_close(cx)
    }
}
