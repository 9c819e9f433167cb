//! The connection's I/O as hyper sees it: the bytes read while detecting the protocol are
//! replayed first; a flush after a finished response reports the connection Idle; and
//! closing lingers (RFC 9112 §9.6) so unread bytes never turn into a reset that destroys
//! the last response.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use lameduck_tokio::{Conn, ConnHandle, ConnState, Notice};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// How long a closing connection keeps reading (and discarding) after its last response.
pub(crate) const LINGER: Duration = Duration::from_secs(1);
/// How much it reads at most while lingering.
const LINGER_BYTES: usize = 256 * 1024;

/// Request accounting for one connection, shared by its I/O and its service.
#[derive(Debug)]
pub(crate) struct HttpState {
    pub conn: ConnHandle,
    /// Requests (HTTP/2 streams) whose response is not yet complete.
    inflight: AtomicUsize,
    /// The last response completed; the next successful flush puts it on the wire.
    finish_pending: AtomicBool,
    pub http2: AtomicBool,
}

impl HttpState {
    pub fn new(conn: ConnHandle) -> Arc<HttpState> {
        Arc::new(HttpState {
            conn,
            inflight: AtomicUsize::new(0),
            finish_pending: AtomicBool::new(false),
            http2: AtomicBool::new(false),
        })
    }

    pub fn is_http2(&self) -> bool {
        self.http2.load(Ordering::Acquire)
    }

    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Acquire)
    }

    /// A request's head was parsed and handed to the service.
    pub fn request(&self) {
        self.finish_pending.store(false, Ordering::Release);
        // Usually Active already (HTTP/1: its first byte was read): then nothing to report,
        // and no lock to take. From Idle on HTTP/2.
        if self.inflight.fetch_add(1, Ordering::AcqRel) == 0
            && self.conn.state() != ConnState::Active
        {
            let _ = self.conn.request_started();
        }
    }

    /// A response is complete (its body ended, or it was dropped).
    pub fn response_done(&self) {
        if self.inflight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.finish_pending.store(true, Ordering::Release);
        }
    }

    /// The I/O flushed: a completed last response is now on the wire, and the connection is
    /// Idle. (Reporting Idle before the flush would let an idle close drop the response.)
    fn flushed(&self) {
        if self.finish_pending.swap(false, Ordering::AcqRel) && self.inflight() == 0 {
            let _ = self.conn.request_finished();
        }
    }
}

/// The I/O hyper drives: the plain stream `S` and the connection's tracking, plus replay,
/// first-byte and flush accounting, and a lingering close.
pub(crate) struct HttpIo<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> {
    io: Option<S>,
    conn: Option<Conn>,
    replay: Bytes,
    state: Arc<HttpState>,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> HttpIo<S> {
    pub fn new(io: S, conn: Conn, state: Arc<HttpState>) -> Self {
        HttpIo {
            io: Some(io),
            conn: Some(conn),
            replay: Bytes::new(),
            state,
        }
    }

    /// Bytes already read (while detecting the protocol) to hand to hyper first.
    pub fn replay(&mut self, bytes: Bytes) {
        self.replay = bytes;
    }

    /// Reads and writes fail once the lifecycle closed the connection: a cut is done, also
    /// to a handler that holds the upgraded stream.
    fn check_cut(&self) -> io::Result<()> {
        if self.state.conn.notice() == Some(Notice::Close) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "lameduck closed the connection",
            ));
        }
        Ok(())
    }

    fn io(&mut self) -> &mut S {
        self.io.as_mut().expect("the stream is only taken in drop")
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncRead for HttpIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check_cut()?;
        if this.replay.has_remaining() {
            let n = this.replay.len().min(buf.remaining());
            buf.put_slice(&this.replay[..n]);
            this.replay.advance(n);
            // Whatever else already arrived goes in the same read: hyper then usually gets
            // the whole first request at once. Handing it only the replayed few bytes made
            // it read again with them unconsumed, and grow its 8 KiB read buffer to 16 KiB
            // for the life of the connection (measured: +8.6 KB heap per connection).
            if buf.remaining() > 0 && !this.replay.has_remaining() {
                // Not ready is fine: the bytes we have are the answer, and the waker is
                // registered for the next read.
                let _ = Pin::new(this.io()).poll_read(cx, buf);
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        ready!(Pin::new(this.io()).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            // The first byte of a request makes the connection Active (HTTP/1; HTTP/2 turns
            // this off and counts streams).
            this.state.conn.data_received();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncWrite for HttpIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check_cut()?;
        Pin::new(self.get_mut().io()).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check_cut()?;
        Pin::new(self.get_mut().io()).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(|io| io.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(Pin::new(this.io()).poll_flush(cx))?;
        this.state.flushed();
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(Pin::new(this.io()).poll_flush(cx))?;
        this.state.flushed();
        Pin::new(this.io()).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Drop for HttpIo<S> {
    /// Closes the connection for the lifecycle (it is counted as done), then lingers: shut
    /// the write side (the peer reads everything sent, then EOF), keep reading and
    /// discarding what the peer still sends until it closes, for at most [`LINGER`] — so
    /// that a close never meets unread bytes, which would make the kernel reset the
    /// connection and destroy the response still in flight. The drain waits for the linger
    /// ([`Shutdown::hold_drain`](lameduck_tokio::Shutdown::hold_drain)): exiting earlier
    /// would reset exactly these sockets.
    fn drop(&mut self) {
        let (Some(mut io), Some(conn)) = (self.io.take(), self.conn.take()) else {
            return;
        };
        let hold = conn.shutdown().hold_drain();
        drop(conn);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let _hold = hold;
            let linger = async {
                let _ = io.shutdown().await;
                // Small: it sizes every lingering task, and a peer rarely sends much after
                // the last response.
                let mut scratch = [0u8; 1024];
                let mut discarded = 0;
                while discarded < LINGER_BYTES {
                    match io.read(&mut scratch).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => discarded += n,
                    }
                }
            };
            let _ = tokio::time::timeout(LINGER, linger).await;
            drop(io);
        });
    }
}
