//! An HTTP/1.1 connection that can leave by handover: hyper's connection, taken apart at
//! the moment it is Idle with nothing of a next request read, its socket offered to the
//! successor — and put back together, to be served here, when the offer fails.
//!
//! hyper's supported way out is `into_parts`: the I/O and its read-ahead buffer. The
//! handover goes only when that buffer is empty — a pipelined request already read is
//! served here, with `Connection: close` — and [`HttpIo`] reads nothing once the connection
//! is to go, so what the client sends meanwhile waits in the kernel for the successor.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use hyper::rt::{Read, Write};
use hyper::server::conn::http1::{self, UpgradeableConnection};

use crate::HyperService;
use crate::io::{HttpIo, HttpState};
use crate::service::TrackedService;

type Conn<I, S> = UpgradeableConnection<HttpIo<I>, TrackedService<S>>;
type Parts<I, S> = http1::Parts<HttpIo<I>, TrackedService<S>>;

// `Serving` is hyper's connection, inline on purpose: boxing it would cost every
// connection an allocation for what happens once, at a handover.
#[allow(clippy::large_enum_variant)]
enum Phase<I, S>
where
    I: Read + Write + Unpin + Send + 'static,
    S: HyperService,
{
    Serving(Conn<I, S>),
    HandingOver {
        // Boxed: the service need not be `Unpin` (hyper's connection is, whatever it
        // serves), and a handover is once per connection.
        parts: Box<Parts<I, S>>,
        sent: Pin<Box<dyn Future<Output = bool> + Send>>,
    },
    Done,
}

/// hyper's HTTP/1 connection (upgrades on), plus the handover.
pub(crate) struct Http1<I, S>
where
    I: Read + Write + Unpin + Send + 'static,
    S: HyperService,
{
    phase: Phase<I, S>,
    state: Arc<HttpState>,
}

impl<I, S> Http1<I, S>
where
    I: Read + Write + Unpin + Send + 'static,
    S: HyperService,
{
    /// Serves `io` with `service` over HTTP/1.1, upgrades on.
    pub(crate) fn serve(io: HttpIo<I>, service: TrackedService<S>, state: Arc<HttpState>) -> Self {
        Http1 {
            phase: Phase::Serving(Self::connection(io, service)),
            state,
        }
    }

    fn connection(io: HttpIo<I>, service: TrackedService<S>) -> Conn<I, S> {
        http1::Builder::new()
            .serve_connection(io, service)
            .with_upgrades()
    }

    /// Serves the parts here again: the connection stays, and leaves as it would without a
    /// successor (its next response says `Connection: close`).
    fn resume(parts: Parts<I, S>, state: &HttpState) -> Conn<I, S> {
        state.stays();
        let mut io = parts.io;
        io.replay(parts.read_buf);
        Self::connection(io, parts.service)
    }

    /// Takes the connection apart and offers its socket; serves on here when it cannot.
    #[cold]
    #[inline(never)]
    fn hand_over(&mut self) {
        let Phase::Serving(conn) = std::mem::replace(&mut self.phase, Phase::Done) else {
            return;
        };
        // `None` only after an upgrade, which an Idle connection has not had.
        let Some(parts) = conn.into_parts() else {
            return;
        };
        // Bytes of a next request already read (a pipelining client): served here.
        let fd = if parts.read_buf.is_empty() {
            parts.io.dup_socket()
        } else {
            None
        };
        self.phase = match fd {
            Some(fd) => Phase::HandingOver {
                sent: Box::pin(self.state.conn.hand_over(fd)),
                parts: Box::new(parts),
            },
            None => Phase::Serving(Self::resume(parts, &self.state)),
        };
    }
}

impl<I, S> Future for Http1<I, S>
where
    I: Read + Write + Unpin + Send + 'static,
    S: HyperService,
{
    type Output = ();

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            match &mut this.phase {
                Phase::Serving(conn) => {
                    if Pin::new(conn).poll(cx).is_ready() {
                        this.phase = Phase::Done;
                        return Poll::Ready(());
                    }
                    // hyper is waiting: for the next request, or for its handler. Only the
                    // first, on a connection asked to leave while a successor takes
                    // connections, is a handover.
                    if !this.state.hand_over_now() {
                        return Poll::Pending;
                    }
                    this.hand_over();
                }
                Phase::HandingOver { sent, .. } => {
                    let sent = ready!(sent.as_mut().poll(cx));
                    let Phase::HandingOver { parts, .. } =
                        std::mem::replace(&mut this.phase, Phase::Done)
                    else {
                        unreachable!("matched above")
                    };
                    if sent {
                        // In the successor now: no lingering close, no shutdown(2).
                        parts.io.forget();
                        return Poll::Ready(());
                    }
                    this.phase = Phase::Serving(Self::resume(*parts, &this.state));
                }
                Phase::Done => return Poll::Ready(()),
            }
        }
    }
}
