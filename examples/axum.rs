//! An axum `Router`, unchanged, served by lameduck over HTTP/1.1 and HTTP/2: restarts and
//! SIGTERM lose no request. It depends on `lameduck` (features `tokio`, `hyper`) and `axum`
//! alone — the README's first example.
//!
//! `cargo run --example axum -- 127.0.0.1:3000`, then SIGTERM (Ctrl-C) while requests run.
//! Under `start_server` or systemd it serves the inherited socket; `LAMEDUCK_*` variables
//! tune the drain (`LAMEDUCK_DEADLINE=10s`, `LAMEDUCK_LAME_DUCK=2s`, ...). It exits 0 when
//! every connection ended on its own, 1 when the deadline cut some or (printing the
//! error) on bad settings.
#![forbid(unsafe_code)]

use std::time::Duration;

use axum::{Router, routing::get};
use lameduck::{
    Config,
    env::ConfigFromEnv,
    tokio::{Listener, shutdown},
};

#[tokio::main]
async fn main() -> Result<std::process::ExitCode, Box<dyn std::error::Error>> {
    let shutdown = shutdown(Config::from_env()?);
    let app = Router::new()
        .route("/", get(|| async { "hello from axum\n" }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(500)).await;
                "slow, and still answered across a restart\n"
            }),
        )
        // The readiness probe: 200 while serving, 503 from SIGTERM (lame duck included).
        .route(
            "/ready",
            get({
                let shutdown = shutdown.clone();
                move || async move { lameduck::hyper::readiness(&shutdown) }
            }),
        );
    let addr = std::env::args().nth(1);
    let addr = addr.as_deref().unwrap_or("127.0.0.1:3000");

    lameduck::signals::drain_on_signals(&shutdown)?;
    let listener = Listener::bind_or_inherit(&shutdown, addr)?;
    lameduck::hyper::serve_tower(listener, app).await; // until the drain stops accepting
    let report = shutdown.drained().await;
    eprintln!("axum example: drained: {report:?}");
    Ok(if report.is_clean() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}
