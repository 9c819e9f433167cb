//! The service wrapper: request accounting, `Connection: close` while draining, upgrades.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::header::{CONNECTION, CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response, StatusCode, Version};

use crate::io::HttpState;

/// A boxed error, as hyper takes them.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What lameduck serves: a hyper `Service` of `Request<Incoming>` whose responses have a
/// body of `Bytes`, shareable across tasks — any `service_fn` that builds a `Full<Bytes>`
/// or a stream body, and any tower service through [`tower`](crate::tower) (an axum
/// `Router`, tonic's routes). Implemented for every such service: it only names the bounds
/// once, so that `serve`, `serve_connection` and the rest read `S: HyperService`.
pub trait HyperService:
    hyper::service::Service<
        Request<Incoming>,
        Response = Response<<Self as HyperService>::ResBody>,
        Error: Into<BoxError> + 'static,
        Future: Send + 'static,
    > + Send
    + Sync
    + 'static
{
    /// The body of its responses.
    type ResBody: Body<Data = Bytes, Error: Into<BoxError>> + Send + Unpin + 'static;
}

impl<S, B> HyperService for S
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    type ResBody = B;
}

/// Whether a response is a server-sent event stream: a body of unknown length (checked
/// first: a size hint is a field read, so a hello-world pays nothing more) with
/// `Content-Type: text/event-stream`.
fn is_event_stream<B: Body>(response: &Response<B>) -> bool {
    response.body().size_hint().exact().is_none()
        && response
            .headers()
            .get(CONTENT_TYPE)
            .is_some_and(|t| t.as_bytes().starts_with(b"text/event-stream"))
}

/// Wraps the user's service for one connection.
pub(crate) struct TrackedService<S> {
    pub inner: S,
    pub state: Arc<HttpState>,
}

/// Marks a response complete when dropped (its body ended, failed, or was abandoned).
struct ResponseGuard(Arc<HttpState>);

impl Drop for ResponseGuard {
    #[inline]
    fn drop(&mut self) {
        self.0.response_done();
    }
}

impl<S, B> hyper::service::Service<Request<Incoming>> for TrackedService<S>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>>,
    B: Body + Send + Unpin + 'static,
{
    type Response = Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    #[inline]
    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        self.state.request();
        // The task that takes over an upgraded connection finds it here, to watch its
        // notices. Only requests that ask for an upgrade: an extension costs an allocation
        // and a hash map per request (measured: ~600 instructions, 7 % of a hello-world).
        // hyper marks exactly those with an `OnUpgrade` in the extensions, which are empty
        // otherwise: a null check, where looking up the `Upgrade` header hashed (~50
        // instructions a request).
        //
        // Every HTTP/2 request carries it too, for a stream to end at its connection's ask
        // (gRPC: `Notices::end_when_asked`, `EndStreamsWhenAsked`). An event stream needs
        // no handle: its body ends at the ask by itself (`TrackedFuture`). Looking up a
        // request header to decide would cost every HTTP/1 request (measured: `Accept`,
        // ~90 instructions, 1 % of a hello-world).
        if req
            .extensions()
            .get::<hyper::upgrade::OnUpgrade>()
            .is_some()
            || req.version() == Version::HTTP_2
        {
            req.extensions_mut().insert(self.state.conn.clone());
        }
        let version = req.version();
        TrackedFuture {
            inner: self.inner.call(req),
            // One reference per request, handed from the future to the body: it completes
            // the response when the body is done.
            guard: Some(ResponseGuard(self.state.clone())),
            version,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of a tracked service (no allocation per request).
    pub struct TrackedFuture<F> {
        #[pin]
        inner: F,
        // `None` once the response is handed on (in its body).
        guard: Option<ResponseGuard>,
        version: Version,
    }
}

impl<F, B, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
{
    type Output = Result<Response<TrackedBody<B>>, E>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = match ready!(this.inner.poll(cx)) {
            Ok(response) => response,
            Err(e) => {
                this.guard.take(); // no response: complete now
                return Poll::Ready(Err(e));
            }
        };
        let guard = this.guard.take().expect("polled after completion");
        let state = &*guard.0;
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            let _ = state.conn.upgraded();
        } else if !state.is_http2()
            && state.conn.should_close_after_response()
            && !state.hands_over()
        {
            // The last response on this connection says so, so the client reconnects
            // instead of sending its next request into a closing socket. (Unless the
            // connection goes to a successor once it is idle: then it stays keep-alive.) (An HTTP/1.0
            // keep-alive client gets no `Connection: keep-alive` either.)
            response
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
            if *this.version == Version::HTTP_10 {
                // hyper appends `keep-alive` to the Connection header of an HTTP/1.1
                // response to an HTTP/1.0 keep-alive client, even after `close` — then
                // closes anyway, into the client's next request (Go 1.19's bug, ~640
                // failed requests per restart under `ab -k`). Answering as HTTP/1.0
                // makes hyper drop keep-alive instead. hyper's bug, with a reproduction:
                // docs/upstream/hyper-http10-keep-alive-after-close.md; remove this once
                // hyper keeps the service's `close` (the reproduction then exits 0).
                *response.version_mut() = Version::HTTP_10;
            }
        }
        // An event stream ends at its connection's ask — its moment in the spread window —
        // with the chunked body's last chunk: a complete response, after which the client
        // reconnects by its `retry`. Its handler has nothing to do.
        let asked = is_event_stream(&response).then(|| {
            let notices = state.conn.notices();
            Box::pin(async move {
                notices.wait_notice().await;
            }) as Pin<Box<dyn Future<Output = ()> + Send>>
        });
        Poll::Ready(Ok(response.map(|body| TrackedBody {
            inner: body,
            asked,
            ended: false,
            _guard: guard,
        })))
    }
}

/// A response body that reports the response complete when it ends or is dropped (and ends
/// an event stream at its connection's ask).
pub struct TrackedBody<B> {
    inner: B,
    /// An event stream's: resolves at the connection's ask.
    asked: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    /// Ended at the ask.
    ended: bool,
    _guard: ResponseGuard,
}

impl<B: Body + Unpin> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if let Some(asked) = this.asked.as_mut() {
            if asked.as_mut().poll(cx).is_ready() {
                this.asked = None;
                this.ended = true;
            }
        }
        if this.ended {
            return Poll::Ready(None);
        }
        Pin::new(&mut this.inner).poll_frame(cx)
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> std::fmt::Debug for TrackedBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TrackedBody")
    }
}
