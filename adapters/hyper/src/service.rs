//! The service wrapper: request accounting, `Connection: close` while draining, upgrades.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION};
use hyper::{Request, Response, StatusCode, Version};

use crate::io::HttpState;

/// Wraps the user's service for one connection.
pub(crate) struct TrackedService<S> {
    pub inner: S,
    pub state: Arc<HttpState>,
}

/// Marks a response complete when dropped (its body ended, failed, or was abandoned).
struct ResponseGuard(Option<Arc<HttpState>>);

impl Drop for ResponseGuard {
    fn drop(&mut self) {
        if let Some(state) = self.0.take() {
            state.response_done();
        }
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

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        let state = self.state.clone();
        state.request();
        let guard = ResponseGuard(Some(state.clone()));
        // The task that takes over an upgraded connection finds it here, to watch its
        // notices. Only requests that ask for an upgrade: an extension costs an allocation
        // and a hash map per request (measured: ~600 instructions, 7 % of a hello-world).
        // hyper marks exactly those with an `OnUpgrade` in the extensions, which are empty
        // otherwise: a null check, where looking up the `Upgrade` header hashed (~50
        // instructions a request).
        if req
            .extensions()
            .get::<hyper::upgrade::OnUpgrade>()
            .is_some()
        {
            req.extensions_mut().insert(state.conn.clone());
        }
        let version = req.version();
        TrackedFuture {
            inner: self.inner.call(req),
            state,
            guard: Some(guard),
            version,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of a tracked service (no allocation per request).
    pub struct TrackedFuture<F> {
        #[pin]
        inner: F,
        state: Arc<HttpState>,
        guard: Option<ResponseGuard>,
        version: Version,
    }
}

impl<F, B, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<TrackedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = match ready!(this.inner.poll(cx)) {
            Ok(response) => response,
            Err(e) => {
                this.guard.take(); // no response: complete now
                return Poll::Ready(Err(e));
            }
        };
        let state = &*this.state;
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            let _ = state.conn.upgraded();
        } else if !state.is_http2() && state.conn.should_close_after_response() {
            // The last response on this connection says so, so the client reconnects
            // instead of sending its next request into a closing socket. (An HTTP/1.0
            // keep-alive client gets no `Connection: keep-alive` either.)
            response
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
            if *this.version == Version::HTTP_10 {
                // hyper appends `keep-alive` to the Connection header of an HTTP/1.1
                // response to an HTTP/1.0 keep-alive client, even after `close` — then
                // closes anyway, into the client's next request (Go 1.19's bug, ~640
                // failed requests per restart under `ab -k`). Answering as HTTP/1.0
                // makes hyper drop keep-alive instead.
                *response.version_mut() = Version::HTTP_10;
            }
        }
        let guard = this.guard.take().unwrap_or(ResponseGuard(None));
        Poll::Ready(Ok(response.map(|body| TrackedBody {
            inner: body,
            _guard: guard,
        })))
    }
}

/// A response body that reports the response complete when it ends or is dropped.
pub struct TrackedBody<B> {
    inner: B,
    _guard: ResponseGuard,
}

impl<B: Body + Unpin> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> std::fmt::Debug for TrackedBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TrackedBody")
    }
}
