//! Readiness, and learning that the shutdown began, from a handler that serves no connection
//! of its own: a readiness probe or a gRPC health service that must say "not ready".

use super::Shutdown;

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
}
