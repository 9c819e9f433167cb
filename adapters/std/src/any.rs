//! One type for "a TCP or a Unix listener", and for what it accepts, so that a server can
//! serve every inherited socket with the same loop.

use std::io;
#[cfg(any(feature = "tokio", feature = "futures-io"))]
use std::pin::Pin;
#[cfg(any(feature = "tokio", feature = "futures-io"))]
use std::task::{Context, Poll};

use crate::{Conn, Tracked, TrackedListener};

/// A tracked TCP or Unix listener.
#[derive(Debug)]
pub enum AnyListener<T, U> {
    /// TCP.
    Tcp(T),
    /// Unix.
    Unix(U),
}

/// A tracked TCP or Unix stream.
#[derive(Debug)]
pub enum AnyStream<T, U> {
    /// TCP.
    Tcp(T),
    /// Unix.
    Unix(U),
}

impl<LT, ST: std::os::fd::AsRawFd, LU, SU: std::os::fd::AsRawFd>
    AnyListener<TrackedListener<LT, ST>, TrackedListener<LU, SU>>
{
    /// The next tracked connection; `None` once the listener has stopped and closed. See
    /// [`TrackedListener::accept`].
    pub async fn accept(&mut self) -> Option<io::Result<AnyStream<Tracked<ST>, Tracked<SU>>>> {
        match self {
            AnyListener::Tcp(l) => Some(l.accept().await?.map(AnyStream::Tcp)),
            AnyListener::Unix(l) => Some(l.accept().await?.map(AnyStream::Unix)),
        }
    }
}

impl<ST, SU> AnyStream<Tracked<ST>, Tracked<SU>> {
    /// The connection's lifecycle handle.
    pub fn conn(&self) -> &Conn {
        match self {
            AnyStream::Tcp(s) => s.conn(),
            AnyStream::Unix(s) => s.conn(),
        }
    }

    /// The connection's lifecycle handle, to report protocol events.
    pub fn conn_mut(&mut self) -> &mut Conn {
        match self {
            AnyStream::Tcp(s) => s.conn_mut(),
            AnyStream::Unix(s) => s.conn_mut(),
        }
    }

    /// Splits into the plain stream and the connection handle (which still reports Closed
    /// when dropped), for a protocol layer that does its own accounting.
    pub fn into_parts(self) -> (AnyStream<ST, SU>, Conn) {
        match self {
            AnyStream::Tcp(s) => {
                let (io, conn) = s.into_parts();
                (AnyStream::Tcp(io), conn)
            }
            AnyStream::Unix(s) => {
                let (io, conn) = s.into_parts();
                (AnyStream::Unix(io), conn)
            }
        }
    }
}

#[cfg(any(feature = "tokio", feature = "futures-io"))]
macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            AnyStream::Tcp($s) => $e,
            AnyStream::Unix($s) => $e,
        }
    };
}

#[cfg(feature = "tokio")]
impl<T, U> tokio::io::AsyncRead for AnyStream<T, U>
where
    T: tokio::io::AsyncRead + Unpin,
    U: tokio::io::AsyncRead + Unpin,
{
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

#[cfg(feature = "tokio")]
impl<T, U> tokio::io::AsyncWrite for AnyStream<T, U>
where
    T: tokio::io::AsyncWrite + Unpin,
    U: tokio::io::AsyncWrite + Unpin,
{
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}

#[cfg(feature = "futures-io")]
impl<T, U> futures_io::AsyncRead for AnyStream<T, U>
where
    T: futures_io::AsyncRead + Unpin,
    U: futures_io::AsyncRead + Unpin,
{
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

#[cfg(feature = "futures-io")]
impl<T, U> futures_io::AsyncWrite for AnyStream<T, U>
where
    T: futures_io::AsyncWrite + Unpin,
    U: futures_io::AsyncWrite + Unpin,
{
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_close(cx))
    }
}

impl<T: std::os::fd::AsRawFd, U: std::os::fd::AsRawFd> std::os::fd::AsRawFd for AnyStream<T, U> {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        match self {
            AnyStream::Tcp(s) => s.as_raw_fd(),
            AnyStream::Unix(s) => s.as_raw_fd(),
        }
    }
}
