//! A tonic gRPC server on lameduck's HTTP/2 path: `helloworld.Greeter` (`SayHello`, unary;
//! `SayHellos`, server-streaming) and `grpc.health.v1.Health` (tonic-health), served as one
//! tower service. Restarts and SIGTERM lose no RPC.
//!
//! - It serves the socket from `SERVER_STARTER_PORT` or `LISTEN_FDS`, else the address given
//!   as its first argument (default `127.0.0.1:50051`); `LAMEDUCK_*` tune the drain.
//! - Health says SERVING while serving, and NOT_SERVING (the server as a whole, `""`, and
//!   `helloworld.Greeter`) from the moment the shutdown begins — the lame-duck window
//!   included, while RPCs still succeed — so a load balancer's health check takes it out.
//! - `SayHellos` with `ends_on_shutdown` ends its stream with status OK at its connection's
//!   ask to leave — its moment in `LAMEDUCK_SPREAD`'s window, or the shutdown's begin
//!   ([`Notices::end_when_asked`](lameduck::Notices::end_when_asked), on the
//!   [`ConnHandle`] lameduck puts in every HTTP/2 request's extensions); without, it
//!   streams on until the deadline cuts it, and
//!   the cut is counted: the example exits 1 when anything was cut, 0 otherwise, 2 on bad
//!   settings.
//!
//! ```text
//! cargo run --example grpc -- 127.0.0.1:50051
//! cargo run --example grpc_client -- say-hello http://127.0.0.1:50051
//! ```
#![forbid(unsafe_code)]

use std::pin::Pin;
use std::time::Duration;

use futures_lite::{Stream, StreamExt};
use lameduck::{
    Config, ConnHandle,
    env::ConfigFromEnv,
    tokio::{Listener, shutdown},
};
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;

/// The code generated from `proto/helloworld.proto` (build.rs).
pub mod helloworld {
    tonic::include_proto!("helloworld");
}

use helloworld::greeter_server::{Greeter, GreeterServer};
use helloworld::{HelloReply, HelloRequest, HellosRequest};

struct Hello;

type Replies = Pin<Box<dyn Stream<Item = Result<HelloReply, Status>> + Send>>;

#[tonic::async_trait]
impl Greeter for Hello {
    async fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        let message = format!(
            "hello {} from pid {}",
            request.into_inner().name,
            std::process::id()
        );
        Ok(Response::new(HelloReply { message }))
    }

    type SayHellosStream = Replies;

    async fn say_hellos(
        &self,
        request: Request<HellosRequest>,
    ) -> Result<Response<Replies>, Status> {
        let conn = request.extensions().get::<ConnHandle>().cloned();
        let request = request.into_inner();
        let every = Duration::from_millis(request.interval_ms.max(1).into());
        let name = request.name;
        let replies = futures_lite::stream::unfold(0u64, move |n| {
            let message = format!("hello {name} #{n}");
            async move {
                if n > 0 {
                    tokio::time::sleep(every).await;
                }
                Some((Ok(HelloReply { message }), n + 1))
            }
        })
        .boxed();
        Ok(Response::new(match conn {
            // Ends with an OK status at the connection's ask.
            Some(conn) if request.ends_on_shutdown => {
                Box::pin(conn.notices().end_when_asked(replies)) as Replies
            }
            _ => replies,
        }))
    }
}

/// tonic-health's service, its streams ending at their ask, as tonic's routes take it.
#[derive(Clone)]
struct HealthEndsWhenAsked<S>(lameduck::hyper::EndStreamsWhenAsked<S>);

impl<S> tonic::server::NamedService for HealthEndsWhenAsked<S> {
    const NAME: &'static str = "grpc.health.v1.Health";
}

impl<S> tower_service::Service<http::Request<tonic::body::Body>> for HealthEndsWhenAsked<S>
where
    S: tower_service::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        >,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let response = self.0.call(req);
        Box::pin(async move { Ok(response.await?.map(tonic::body::Body::new)) })
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match serve().await {
        Ok(report) if report.is_clean() => std::process::ExitCode::SUCCESS,
        Ok(_) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("grpc: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn serve() -> Result<lameduck::DrainReport, Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1);
    let shutdown = shutdown(Config::from_env()?);
    lameduck::signals::drain_on_signals(&shutdown)?;
    let listener =
        Listener::bind_or_inherit(&shutdown, addr.as_deref().unwrap_or("127.0.0.1:50051"))?;

    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<GreeterServer<Hello>>().await;
    // Set once every status says NOT_SERVING.
    let (flipped, not_serving) = tokio::sync::watch::channel(false);
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            shutdown.begun().await;
            reporter
                .set_service_status("", ServingStatus::NotServing)
                .await;
            reporter.set_not_serving::<GreeterServer<Hello>>().await;
            let _ = flipped.send(true);
        }
    });
    // Watch streams end with OK at their connection's ask — once NOT_SERVING went out.
    let health = HealthEndsWhenAsked(lameduck::hyper::EndStreamsWhenAsked::new(health).after(
        move || {
            let mut not_serving = not_serving.clone();
            async move {
                let _ = not_serving.wait_for(|flipped| *flipped).await;
            }
        },
    ));
    let greeter = GreeterServer::new(Hello);
    let routes = tonic::service::Routes::new(health)
        .add_service(greeter)
        .prepare();
    eprintln!("grpc: serving");
    lameduck::hyper::serve_tower(listener, routes).await;
    let report = shutdown.drained().await;
    eprintln!("grpc {}: drained: {report:?}", std::process::id());
    Ok(report)
}
