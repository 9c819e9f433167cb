//! Ending the streams of a gRPC service you do not write yourself (tonic-health's `Watch`,
//! say) at their connection's ask, with status OK.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Request, Response};
use lameduck_driver::ConnHandle;

/// A boxed future.
type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A tower service whose response bodies end at their connection's ask to leave — its
/// moment in the [`spread`](lameduck_core::Config::spread) window — with gRPC status OK
/// (trailers `grpc-status: 0`): a server stream that never ends on its own (a health
/// `Watch`) finishes cleanly instead of running into the deadline's cut, and its client
/// calls again, on the successor.
///
/// A body ends only while it waits for its next message — nothing ready on two polls in a
/// row, the second from a fresh wake-up — after at least one: whatever the inner service
/// has ready (a unary reply and its own trailers, the message that says NOT_SERVING) goes
/// out first, and the ask never turns a call into an empty one. A handler
/// you write yourself ends its stream with
/// [`Notices::end_when_asked`](lameduck_driver::Notices::end_when_asked) instead. The
/// connection comes from the request's extensions, where lameduck puts it for every HTTP/2
/// request; a request without it is passed through untouched.
///
/// ```
/// # fn wrap<S>(health: S) {
/// // tonic-health's service (`tonic_health::server::health_reporter().1`), say.
/// let health = lameduck_hyper::EndStreamsWhenAsked::new(health);
/// # let _ = health;
/// # }
/// ```
#[derive(Clone)]
pub struct EndStreamsWhenAsked<S> {
    inner: S,
    after: Option<Arc<dyn Fn() -> BoxFuture + Send + Sync>>,
}

impl<S> std::fmt::Debug for EndStreamsWhenAsked<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndStreamsWhenAsked")
            .field("after", &self.after.is_some())
            .finish_non_exhaustive()
    }
}

impl<S> EndStreamsWhenAsked<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        EndStreamsWhenAsked { inner, after: None }
    }

    /// Ends each stream at its ask only once the future `after()` makes has resolved too:
    /// a health service's streams, once the status that says NOT_SERVING has been set, so
    /// that every watcher sees it before its stream ends.
    pub fn after<F, Fut>(mut self, after: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.after = Some(Arc::new(move || Box::pin(after()) as BoxFuture));
        self
    }
}

impl<S, ReqBody, ResBody> tower_service::Service<Request<ReqBody>> for EndStreamsWhenAsked<S>
where
    S: tower_service::Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = Response<EndWhenAskedBody<ResBody>>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let conn = req.extensions().get::<ConnHandle>().cloned();
        let after = self.after.as_ref().map(|after| after());
        let response = self.inner.call(req);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|inner| EndWhenAskedBody {
                inner,
                asked: conn.map(|conn| {
                    let notices = conn.notices();
                    Box::pin(async move {
                        notices.wait_notice().await;
                        if let Some(after) = after {
                            after.await;
                        }
                    }) as BoxFuture
                }),
                was_asked: false,
                sent_data: false,
                idle_once: false,
                ended: false,
            }))
        })
    }
}

/// A response body that ends with gRPC status OK at its connection's ask; see
/// [`EndStreamsWhenAsked`].
pub struct EndWhenAskedBody<B> {
    inner: B,
    /// Resolves at the connection's ask; `None` without a connection, or once it fired.
    asked: Option<BoxFuture>,
    /// The ask came.
    was_asked: bool,
    /// A message went out: the call is not empty.
    sent_data: bool,
    /// Asked, the inner body had nothing ready on the last poll: one more poll, from a fresh
    /// wake-up, before the stream ends (a `Pending` may be a runtime's cooperative yield,
    /// not an empty stream — tokio's budget makes a ready `watch` channel say `Pending`).
    idle_once: bool,
    /// Trailers went out (the inner body's or ours): nothing more.
    ended: bool,
}

impl<B> std::fmt::Debug for EndWhenAskedBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndWhenAskedBody")
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl<B> Body for EndWhenAskedBody<B>
where
    B: Body + Unpin,
    B::Data: Buf,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        // What the inner body has ready goes out first.
        let frame = Pin::new(&mut this.inner).poll_frame(cx);
        match &frame {
            Poll::Ready(None) => this.ended = true,
            Poll::Ready(Some(Ok(f))) if f.is_trailers() => this.ended = true,
            Poll::Ready(Some(Ok(_))) => {
                this.sent_data = true;
                this.idle_once = false;
            }
            Poll::Ready(Some(Err(_))) => {}
            Poll::Pending => {
                // Waiting for the next message: the moment to end, if asked.
                if let Some(asked) = this.asked.as_mut() {
                    if asked.as_mut().poll(cx).is_ready() {
                        this.asked = None;
                        this.was_asked = true;
                    }
                }
                if this.was_asked && this.sent_data && !this.idle_once {
                    this.idle_once = true;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                if this.was_asked && this.sent_data {
                    this.ended = true;
                    let mut trailers = HeaderMap::new();
                    trailers.insert("grpc-status", HeaderValue::from_static("0"));
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
            }
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        // It may end early.
        let mut hint = SizeHint::new();
        if let Some(upper) = self.inner.size_hint().upper() {
            hint.set_upper(upper);
        }
        hint
    }
}
