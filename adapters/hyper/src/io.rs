//! The connection's I/O as hyper sees it: the bytes read while detecting the protocol are
//! replayed first; a flush after a finished response reports the connection Idle; and
//! closing lingers (RFC 9112 §9.6) so unread bytes never turn into a reset that destroys
//! the last response.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use futures_lite::future;
use hyper::rt::{Read, ReadBuf, ReadBufCursor, Write};
use lameduck_core::ConnState;
use lameduck_driver::ConnHandle;

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
    /// A request has started on this connection (HTTP/2: its GOAWAY waits for one).
    seen_request: AtomicBool,
    /// Its socket may go to a successor (plain HTTP/1.1 on TCP, served by
    /// `serve_connection`); cleared for HTTP/2, and once an attempt failed.
    transferable: AtomicBool,
}

impl HttpState {
    pub fn new(conn: ConnHandle, transferable: bool) -> Arc<HttpState> {
        Arc::new(HttpState {
            conn,
            inflight: AtomicUsize::new(0),
            finish_pending: AtomicBool::new(false),
            http2: AtomicBool::new(false),
            seen_request: AtomicBool::new(false),
            transferable: AtomicBool::new(transferable),
        })
    }

    /// Whether the connection leaves by handover rather than by `Connection: close`: its
    /// socket can move, and this process hands over to a successor that takes connections.
    #[inline]
    pub fn hands_over(&self) -> bool {
        self.transferable.load(Ordering::Relaxed) && self.conn.can_hand_over()
    }

    /// Whether the connection is to be handed over now: asked to leave, Idle (nothing of a
    /// next request read), and the transfer works. From then on nothing is read from its
    /// socket: what the client sends next waits in the kernel for the successor.
    #[inline]
    pub fn hand_over_now(&self) -> bool {
        self.transferable.load(Ordering::Relaxed)
            && self.conn.notice().is_some()
            && self.conn.state() == ConnState::Idle
            && self.conn.can_hand_over()
    }

    /// The connection stays (HTTP/2, bytes of a next request already read, the transfer
    /// failed): it leaves as it would without a successor.
    pub fn stays(&self) {
        self.transferable.store(false, Ordering::Relaxed);
    }

    #[inline]
    pub fn is_http2(&self) -> bool {
        self.http2.load(Ordering::Acquire)
    }

    /// Whether a request has started on this connection.
    #[inline]
    pub fn has_seen_request(&self) -> bool {
        self.seen_request.load(Ordering::Relaxed)
    }

    #[inline]
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Acquire)
    }

    /// A request's head was parsed and handed to the service.
    #[inline]
    pub fn request(&self) {
        self.finish_pending.store(false, Ordering::Release);
        self.seen_request.store(true, Ordering::Relaxed);
        // Usually Active already (HTTP/1: its first byte was read): then nothing to report,
        // and no lock to take. From Idle on HTTP/2.
        if self.inflight.fetch_add(1, Ordering::AcqRel) == 0
            && self.conn.state() != ConnState::Active
        {
            let _ = self.conn.request_started();
        }
    }

    /// A response is complete (its body ended, or it was dropped).
    #[inline]
    pub fn response_done(&self) {
        if self.inflight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.finish_pending.store(true, Ordering::Release);
        }
    }

    /// The I/O flushed: a completed last response is now on the wire, and the connection is
    /// Idle. (Reporting Idle before the flush would let an idle close drop the response.)
    #[inline]
    fn flushed(&self) {
        if self.finish_pending.swap(false, Ordering::AcqRel) && self.inflight() == 0 {
            let _ = self.conn.request_finished();
        }
    }
}

/// The I/O hyper drives: the connection's I/O `I` (reading through its
/// [`Tracked`](lameduck_driver::Tracked) stream, which marks the first byte of a request and
/// fails once the lifecycle cut the connection), plus replay, flush accounting, and a
/// lingering close on the handle's runtime.
pub(crate) struct HttpIo<I: Read + Write + Unpin + Send + 'static> {
    io: Option<I>,
    replay: Bytes,
    state: Arc<HttpState>,
    /// The TCP socket under `io`, when it can be handed over.
    socket: Option<Socket<I>>,
}

/// The TCP socket under an I/O, if it has one of its own.
pub(crate) type Socket<I> = fn(&I) -> Option<std::os::fd::BorrowedFd<'_>>;

impl<I: Read + Write + Unpin + Send + 'static> HttpIo<I> {
    pub fn new(io: I, state: Arc<HttpState>, socket: Option<Socket<I>>) -> Self {
        HttpIo {
            io: Some(io),
            replay: Bytes::new(),
            state,
            socket,
        }
    }

    /// A duplicate of the connection's socket, to hand over.
    pub fn dup_socket(&self) -> Option<std::os::fd::OwnedFd> {
        let socket = (self.socket?)(self.io.as_ref()?)?;
        socket.try_clone_to_owned().ok()
    }

    /// Drops the I/O without a lingering close or `shutdown(2)`: its socket went to the
    /// successor, and shutting it down would end the connection there too. Closing our
    /// own descriptor does not.
    pub fn forget(mut self) {
        drop(self.io.take());
    }

    /// Bytes already read (while detecting the protocol) to hand to hyper first.
    pub fn replay(&mut self, bytes: Bytes) {
        self.replay = bytes;
    }

    fn io(&mut self) -> Pin<&mut I> {
        Pin::new(self.io.as_mut().expect("the I/O is only taken in drop"))
    }
}

/// Reads into `buf`: the number of bytes read, 0 at the end.
pub(crate) async fn read<I: Read + Unpin>(io: &mut I, buf: &mut [u8]) -> io::Result<usize> {
    let mut buf = ReadBuf::new(buf);
    future::poll_fn(|cx| Pin::new(&mut *io).poll_read(cx, buf.unfilled())).await?;
    Ok(buf.filled().len())
}

impl<I: Read + Write + Unpin + Send + 'static> HttpIo<I> {
    /// The first read after detection: the replayed bytes, then whatever else already
    /// arrived. Out of line, so that every other read is only the inner one.
    #[cold]
    #[inline(never)]
    fn poll_replay(
        &mut self,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let n = self.replay.len().min(buf.remaining());
        buf.put_slice(&self.replay[..n]);
        self.replay.advance(n);
        // Whatever else already arrived goes in the same read: hyper then usually gets the
        // whole first request at once. Handing it only the replayed few bytes made it read
        // again with them unconsumed, and grow its 8 KiB read buffer to 16 KiB for the life
        // of the connection (measured: +8.6 KB heap per connection).
        if buf.remaining() > 0 && !self.replay.has_remaining() {
            // Not ready is fine: the bytes we have are the answer, and the waker is
            // registered for the next read. An error shows again on the next read.
            let _ = self.io().poll_read(cx, buf);
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: Read + Write + Unpin + Send + 'static> Read for HttpIo<I> {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.replay.has_remaining() {
            return this.poll_replay(cx, buf);
        }
        if this.state.hand_over_now() {
            // Not a byte more: the connection goes to the successor, with what the client
            // sends next still in the kernel. The connection's driver acts as soon as
            // hyper returns (see `Http1`); no waker is needed.
            return Poll::Pending;
        }
        this.io().poll_read(cx, buf)
    }
}

impl<I: Read + Write + Unpin + Send + 'static> Write for HttpIo<I> {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().io().poll_write(cx, buf)
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().io().poll_write_vectored(cx, bufs)
    }

    #[inline]
    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(|io| io.is_write_vectored())
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.io().poll_flush(cx))?;
        this.state.flushed();
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.io().poll_flush(cx))?;
        this.state.flushed();
        this.io().poll_shutdown(cx)
    }
}

impl<I: Read + Write + Unpin + Send + 'static> Drop for HttpIo<I> {
    /// Closes the connection for the lifecycle (it is counted as done), then lingers on a
    /// task of the handle's runtime (once per connection, so its spawner's boxed task is
    /// no cost on a request's path): shut the write side (the peer reads everything sent, then EOF),
    /// keep reading and discarding what the peer still sends until it closes, for at most
    /// the configuration's [`linger`](lameduck_core::Config::linger) — so that a close never meets unread bytes, which would make the kernel
    /// reset the connection and destroy the response still in flight. The drain waits for
    /// the linger ([`ConnHandle::linger`]): exiting earlier would reset exactly these
    /// sockets. Without a runtime to spawn on, the socket closes at once.
    fn drop(&mut self) {
        let Some(mut io) = self.io.take() else {
            return;
        };
        let shutdown = self.state.conn.shutdown();
        let linger = shutdown.config().linger;
        let timers = *shutdown.timers();
        let hold = self.state.conn.linger();
        let until = (timers.now)() + linger;
        (timers.spawn)(Box::pin(async move {
            let _hold = hold;
            let linger = async {
                let _ = future::poll_fn(|cx| Pin::new(&mut io).poll_shutdown(cx)).await;
                // Small: it sizes every lingering task, and a peer rarely sends much after
                // the last response.
                let mut scratch = [0u8; 1024];
                let mut discarded = 0;
                while discarded < LINGER_BYTES {
                    match read(&mut io, &mut scratch).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => discarded += n,
                    }
                }
            };
            future::or(linger, (timers.sleep_until)(until)).await;
            drop(io);
        }));
    }
}
