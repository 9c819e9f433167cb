//! Readiness, and learning that the shutdown began, from a handler that serves no connection
//! of its own: a readiness probe or a gRPC health service that must say "not ready", a
//! server-streaming RPC that should end.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::Stream;

use super::Shutdown;

/// A stream that ends once the shutdown begins; see [`Shutdown::end_on_begin`].
#[must_use = "streams do nothing unless polled"]
pub struct EndOnBegin<S> {
    stream: S,
    /// Resolves when the shutdown begins; `None` once the stream ended.
    begun: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl<S> std::fmt::Debug for EndOnBegin<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndOnBegin")
            .field("ended", &self.begun.is_none())
            .finish_non_exhaustive()
    }
}

impl Shutdown {
    /// Whether the server should get new work: true while Serving, false from the moment
    /// the shutdown begins — the lame-duck window included, while connections are still
    /// accepted and served, so that a load balancer's health check or Kubernetes' readiness
    /// probe takes the instance out before it stops accepting. [`begun`](Shutdown::begun)
    /// resolves when it turns false.
    pub fn is_ready(&self) -> bool {
        self.phase() == lameduck_core::Phase::Serving
    }

    /// Resolves once the shutdown has begun (the lame-duck window included), at once if it
    /// already has. Event-driven.
    pub async fn begun(&self) {
        loop {
            let listener = self.inner.changed.listen();
            if self.phase() != lameduck_core::Phase::Serving {
                return;
            }
            listener.await;
        }
    }

    /// `stream`, ended (`None`) as soon as the shutdown begins: a server-streaming response
    /// — gRPC, SSE — that finishes cleanly when asked instead of running into the
    /// deadline's cut. Items already yielded stay delivered; the next poll after the
    /// shutdown began ends it.
    pub fn end_on_begin<S: Stream + Unpin>(&self, stream: S) -> EndOnBegin<S> {
        let shutdown = self.clone();
        EndOnBegin {
            stream,
            begun: Some(Box::pin(async move { shutdown.begun().await })),
        }
    }
}

impl<S: Stream + Unpin> Stream for EndOnBegin<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let this = self.get_mut();
        let Some(begun) = this.begun.as_mut() else {
            return Poll::Ready(None);
        };
        if begun.as_mut().poll(cx).is_ready() {
            this.begun = None;
            return Poll::Ready(None);
        }
        let next = Pin::new(&mut this.stream).poll_next(cx);
        if let Poll::Ready(None) = next {
            this.begun = None;
        }
        next
    }
}
