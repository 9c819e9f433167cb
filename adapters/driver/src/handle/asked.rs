//! Ending a long-lived response at its connection's ask: an event stream, a gRPC
//! server stream, any body made of a `Stream`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::Stream;

use super::Notices;

/// A stream that ends at its connection's ask to leave; see [`Notices::end_when_asked`].
#[must_use = "streams do nothing unless polled"]
pub struct EndWhenAsked<S> {
    stream: S,
    /// Resolves at the connection's first notice; `None` once the stream ended.
    asked: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl<S> std::fmt::Debug for EndWhenAsked<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndWhenAsked")
            .field("ended", &self.asked.is_none())
            .finish_non_exhaustive()
    }
}

impl Notices {
    /// `stream`, ended (`None`) at this connection's ask to leave — its moment in the
    /// [`spread`](lameduck_core::Config::spread) window, or the shutdown's begin without
    /// one: a server-sent event stream whose chunked body then ends with its last chunk (a
    /// complete response; the client reconnects after its `retry`), a gRPC server stream that
    /// then ends with status OK. Items already yielded stay delivered; the next poll after
    /// the ask ends it. Without it such a response runs until the deadline cuts it.
    ///
    /// ```
    /// # fn events(conn: lameduck_driver::ConnHandle) {
    /// let ticks = futures_lite::stream::repeat("data: tick\n\n");
    /// // Ends when the drain asks this connection to leave.
    /// let body = conn.notices().end_when_asked(ticks);
    /// # drop(body);
    /// # }
    /// ```
    pub fn end_when_asked<S: Stream + Unpin>(&self, stream: S) -> EndWhenAsked<S> {
        let notices = self.clone();
        EndWhenAsked {
            stream,
            asked: Some(Box::pin(async move {
                notices.wait_notice().await;
            })),
        }
    }
}

impl<S: Stream + Unpin> Stream for EndWhenAsked<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let this = self.get_mut();
        let Some(asked) = this.asked.as_mut() else {
            return Poll::Ready(None);
        };
        if asked.as_mut().poll(cx).is_ready() {
            this.asked = None;
            return Poll::Ready(None);
        }
        let next = Pin::new(&mut this.stream).poll_next(cx);
        if let Poll::Ready(None) = next {
            this.asked = None;
        }
        next
    }
}
