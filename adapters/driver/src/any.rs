//! One type for "a TCP or a Unix listener", and for what it accepts, so that a server can
//! serve every inherited socket with the same loop.

use std::io;
#[cfg(any(feature = "tokio", feature = "futures-io"))]
use std::pin::Pin;
#[cfg(any(feature = "tokio", feature = "futures-io"))]
use std::task::{Context, Poll};

use crate::{Conn, Runtime, Tracked, TrackedListener};

/// A tracked TCP listener on runtime `R`.
pub type TcpListener<R> = TrackedListener<<R as Runtime>::TcpListener, <R as Runtime>::TcpStream>;
/// A tracked Unix listener on runtime `R`.
pub type UnixListener<R> =
    TrackedListener<<R as Runtime>::UnixListener, <R as Runtime>::UnixStream>;

/// A tracked TCP or Unix listener on runtime `R`: what [`Listener::bind_or_inherit`]
/// returns, so that a server serves every inherited socket with the same loop.
#[derive(Debug)]
pub enum Listener<R: Runtime> {
    /// TCP.
    Tcp(TcpListener<R>),
    /// Unix.
    Unix(UnixListener<R>),
}

/// A tracked TCP or Unix stream on runtime `R`: what a [`Listener`] accepts.
#[derive(Debug)]
pub enum Stream<R: Runtime> {
    /// TCP.
    Tcp(Tracked<R::TcpStream>),
    /// Unix.
    Unix(Tracked<R::UnixStream>),
}

/// A plain (untracked) TCP or Unix stream on runtime `R`; see [`Stream::into_parts`].
#[derive(Debug)]
pub enum PlainStream<R: Runtime> {
    /// TCP.
    Tcp(R::TcpStream),
    /// Unix.
    Unix(R::UnixStream),
}

impl<R: Runtime> Listener<R> {
    /// The listening socket, to hand to a successor
    /// (`lameduck_process::restart::Restarter::start`); an error once the listener
    /// has stopped and closed.
    pub fn as_fd(&self) -> io::Result<std::os::fd::BorrowedFd<'_>> {
        match self {
            Listener::Tcp(l) => l.as_fd(),
            Listener::Unix(l) => l.as_fd(),
        }
    }

    /// The next tracked connection; `None` once the listener has stopped and closed. See
    /// [`TrackedListener::accept`].
    pub async fn accept(&mut self) -> Option<io::Result<Stream<R>>> {
        match self {
            Listener::Tcp(l) => Some(l.accept().await?.map(Stream::Tcp)),
            Listener::Unix(l) => Some(l.accept().await?.map(Stream::Unix)),
        }
    }
}

impl<R: Runtime> Stream<R> {
    /// The connection's lifecycle handle.
    pub fn conn(&self) -> &Conn {
        match self {
            Stream::Tcp(s) => s.conn(),
            Stream::Unix(s) => s.conn(),
        }
    }

    /// The connection's lifecycle handle, to report protocol events.
    pub fn conn_mut(&mut self) -> &mut Conn {
        match self {
            Stream::Tcp(s) => s.conn_mut(),
            Stream::Unix(s) => s.conn_mut(),
        }
    }

    /// Splits into the plain stream and the connection handle (which still reports Closed
    /// when dropped), for a protocol layer that does its own accounting.
    pub fn into_parts(self) -> (PlainStream<R>, Conn) {
        match self {
            Stream::Tcp(s) => {
                let (io, conn) = s.into_parts();
                (PlainStream::Tcp(io), conn)
            }
            Stream::Unix(s) => {
                let (io, conn) = s.into_parts();
                (PlainStream::Unix(io), conn)
            }
        }
    }
}

#[cfg(any(feature = "tokio", feature = "futures-io"))]
macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Self::Tcp($s) => $e,
            Self::Unix($s) => $e,
        }
    };
}

/// The runtime I/O traits for an enum of a TCP and a Unix stream, by delegation.
macro_rules! io_impls {
    ($ty:ident, $tcp:ty, $unix:ty) => {
        #[cfg(feature = "tokio")]
        impl<R: Runtime> tokio::io::AsyncRead for $ty<R>
        where
            $tcp: tokio::io::AsyncRead + Unpin,
            $unix: tokio::io::AsyncRead + Unpin,
        {
            // Out of line on purpose: inlined (both arms, the cut check, marking Active)
            // it made hyper-util's `TokioIo` read too big for hyper to inline into its
            // read loop; as a call of its own, `TokioIo` inlines and a keep-alive request
            // costs ~135 instructions less (callgrind, benches/instructions.sh).
            #[inline(never)]
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                delegate!(self, s => Pin::new(s).poll_read(cx, buf))
            }
        }

        #[cfg(feature = "tokio")]
        impl<R: Runtime> tokio::io::AsyncWrite for $ty<R>
        where
            $tcp: tokio::io::AsyncWrite + Unpin,
            $unix: tokio::io::AsyncWrite + Unpin,
        {
            #[inline]
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                delegate!(self, s => Pin::new(s).poll_write(cx, buf))
            }

            #[inline]
            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                delegate!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
            }

            #[inline]
            fn is_write_vectored(&self) -> bool {
                match self {
                    Self::Tcp(s) => s.is_write_vectored(),
                    Self::Unix(s) => s.is_write_vectored(),
                }
            }

            #[inline]
            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                delegate!(self, s => Pin::new(s).poll_flush(cx))
            }

            fn poll_shutdown(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<io::Result<()>> {
                delegate!(self, s => Pin::new(s).poll_shutdown(cx))
            }
        }

        #[cfg(feature = "futures-io")]
        impl<R: Runtime> futures_io::AsyncRead for $ty<R>
        where
            $tcp: futures_io::AsyncRead + Unpin,
            $unix: futures_io::AsyncRead + Unpin,
        {
            #[inline]
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut [u8],
            ) -> Poll<io::Result<usize>> {
                delegate!(self, s => Pin::new(s).poll_read(cx, buf))
            }
        }

        #[cfg(feature = "futures-io")]
        impl<R: Runtime> futures_io::AsyncWrite for $ty<R>
        where
            $tcp: futures_io::AsyncWrite + Unpin,
            $unix: futures_io::AsyncWrite + Unpin,
        {
            #[inline]
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                delegate!(self, s => Pin::new(s).poll_write(cx, buf))
            }

            #[inline]
            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                delegate!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
            }

            #[inline]
            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                delegate!(self, s => Pin::new(s).poll_flush(cx))
            }

            fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                delegate!(self, s => Pin::new(s).poll_close(cx))
            }
        }

        impl<R: Runtime> std::os::fd::AsFd for $ty<R> {
            fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
                match self {
                    Self::Tcp(s) => s.as_fd(),
                    Self::Unix(s) => s.as_fd(),
                }
            }
        }

        impl<R: Runtime> std::os::fd::AsRawFd for $ty<R> {
            fn as_raw_fd(&self) -> std::os::fd::RawFd {
                match self {
                    Self::Tcp(s) => s.as_raw_fd(),
                    Self::Unix(s) => s.as_raw_fd(),
                }
            }
        }
    };
}

io_impls!(Stream, Tracked<R::TcpStream>, Tracked<R::UnixStream>);
io_impls!(PlainStream, R::TcpStream, R::UnixStream);
