//! An axum `Router`, unchanged, served by lameduck over HTTP/1.1 and HTTP/2: restarts and
//! SIGTERM lose no request.
//!
//! `cargo run --example axum -- 127.0.0.1:3000`, then SIGTERM (Ctrl-C) while requests run.
//! Under `start_server` or systemd it serves the inherited socket; `LAMEDUCK_*` variables
//! tune the drain.

use std::time::Duration;

use axum::routing::get;
use axum::Router;
use hyper_util::service::TowerToHyperService;
use lameduck_tokio::{self as lameduck, Config, ConfigFromEnv};

#[tokio::main]
async fn main() {
    let app = Router::new()
        .route("/", get(|| async { "hello from axum\n" }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(500)).await;
                "slow, and still answered across a restart\n"
            }),
        );

    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".into());
    // `LAMEDUCK_DEADLINE=10s`, `LAMEDUCK_LAME_DUCK=2s`, ... tune the drain.
    let config = Config::from_env().unwrap_or_else(|e| {
        eprintln!("axum example: {e}");
        std::process::exit(2);
    });
    let shutdown = lameduck::shutdown(config);
    let listener = match lameduck::bind_or_inherit(&shutdown, &addr) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("axum example: {e}");
            std::process::exit(2);
        }
    };
    lameduck::drain_on_signals(&shutdown).expect("signal handlers");
    // The Router is a tower Service; hyper-util adapts it to hyper's, and lameduck serves it.
    tokio::spawn(lameduck_hyper::serve(
        listener,
        TowerToHyperService::new(app),
    ));
    let report = shutdown.drained().await;
    eprintln!("drained: {report:?}");
}
