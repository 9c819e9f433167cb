//! One hyper hello-world, served five ways, for `benches/run.sh`:
//!
//! - `plain`: hyper's HTTP/1 connection, untracked, exits at SIGTERM (the baseline);
//! - `lameduck`: `lameduck_hyper::serve`, drains on SIGTERM;
//! - `hyper-util`: hyper-util's `GracefulShutdown` around each connection;
//! - `axum`: `axum::serve(..).with_graceful_shutdown(SIGTERM)`;
//! - `plain-tls`: `plain` over tokio-rustls (the TLS baseline);
//! - `lameduck-tls`: `lameduck_hyper::serve_tls`, drains on SIGTERM;
//! - `lameduck-metrics` (feature `metrics`): `lameduck` with a Prometheus recorder installed
//!   (metrics-exporter-prometheus) and lameduck's metrics recorded into it once, as a scrape
//!   does; the same service.
//!
//! The TLS variants take their certificate and key from `BENCH_TLS_CERT` and
//! `BENCH_TLS_KEY` (PEM files), with the same rustls configuration (ring, ALPN `h2` and
//! `http/1.1`) for both.
//!
//! `bench_server VARIANT FLAVOR ADDR` — FLAVOR is `multi` (tokio, 2 workers) or `current`.
//! Serves the socket start_server passes (`SERVER_STARTER_PORT`) when there is one. Prints
//! `listening on ADDR` once it accepts. `GET /` answers `hello`; `GET /sleep?ms=N` sleeps N ms
//! first. `LAMEDUCK_IDLE_GRACE=close` makes lameduck close idle connections at once when
//! draining (`IdlePolicy::CloseImmediately`, what the others do), like every `LAMEDUCK_*`
//! variable; `BENCH_REPORT=1` prints lameduck's
//! drain report on stderr.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use lameduck::{Config, env::ConfigFromEnv};
use tokio::signal::unix::{SignalKind, signal};

// Counts heap bytes, so that SIGUSR1 can report the live heap (bytes per connection).
#[global_allocator]
static HEAP: &stats_alloc::StatsAlloc<std::alloc::System> = &stats_alloc::INSTRUMENTED_SYSTEM;

/// On SIGUSR1, prints `heap BYTES`: the bytes allocated and not yet freed.
async fn report_heap() {
    let mut usr1 = signal(SignalKind::user_defined1()).unwrap();
    while usr1.recv().await.is_some() {
        let stats = HEAP.stats();
        // (Reallocations are already in both counters.)
        println!(
            "heap {}",
            stats.bytes_allocated as i64 - stats.bytes_deallocated as i64
        );
    }
}

/// `GET /sleep?ms=N` sleeps N ms (100 by default); any other path answers at once.
async fn maybe_sleep(uri: &hyper::Uri) {
    if uri.path() == "/sleep" {
        let ms = uri
            .query()
            .and_then(|q| q.strip_prefix("ms="))
            .and_then(|ms| ms.parse().ok())
            .unwrap_or(100);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

async fn hello(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    maybe_sleep(req.uri()).await;
    Ok(Response::new(Full::new(Bytes::from_static(b"hello\n"))))
}

/// Prints `drained at NS` (wall clock, Unix nanoseconds): the moment the graceful shutdown
/// reported done, for `drain_timer` to compare with when its last response arrived.
fn drained_now() {
    let ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    println!("drained at {ns}");
}

/// The inherited socket, or `addr` bound.
fn std_listener(addr: &str) -> std::net::TcpListener {
    match lameduck::inherit::from_env() {
        Ok(Some(mut inherited)) => match inherited.remove(0).listener {
            lameduck::inherit::Listener::Tcp(l) => l,
            lameduck::inherit::Listener::Unix(_) => panic!("TCP only"),
        },
        Ok(None) => {
            let l = std::net::TcpListener::bind(addr).unwrap();
            l.set_nonblocking(true).unwrap();
            l
        }
        Err(e) => panic!("{e}"),
    }
}

fn ready(listener: &tokio::net::TcpListener) {
    println!("listening on {}", listener.local_addr().unwrap());
}

/// hyper's HTTP/1 builder; `BENCH_WRITEV=0` makes it flatten every response into one
/// buffer instead of writing it vectored (hyper's choice for a transport that says it
/// writes vectored well, as tokio's `TcpStream` does).
fn http1() -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    if std::env::var_os("BENCH_WRITEV").is_some_and(|v| v == "0") {
        builder.writev(false);
    }
    builder
}

async fn plain(addr: &str) {
    let listener = tokio::net::TcpListener::from_std(std_listener(addr)).unwrap();
    let mut term = signal(SignalKind::terminate()).unwrap();
    ready(&listener);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                tokio::spawn(http1()
                    .serve_connection(TokioIo::new(stream), hyper::service::service_fn(hello)));
            }
            _ = term.recv() => return,
        }
    }
}

async fn with_lameduck(addr: &str, metrics: bool) {
    let config = Config::from_env().unwrap_or_else(|e| {
        eprintln!("bench_server: {e}");
        std::process::exit(2);
    });
    let shutdown = lameduck::tokio::shutdown(config);
    lameduck::signals::drain_on_signals(&shutdown).unwrap();
    // Before `ready`: the recorder's set-up is start-up, not serving.
    if metrics {
        #[cfg(feature = "metrics")]
        install_metrics(&shutdown);
        #[cfg(not(feature = "metrics"))]
        {
            eprintln!("bench_server: lameduck-metrics needs the `metrics` feature");
            std::process::exit(2);
        }
    }
    let listener = tokio::net::TcpListener::from_std(std_listener(addr)).unwrap();
    ready(&listener);
    let listener = lameduck::tokio::Listener::from_tcp(&shutdown, listener);
    tokio::spawn(lameduck_hyper::serve(
        listener,
        hyper::service::service_fn(hello),
    ));
    let report = shutdown.drained().await;
    drained_now();
    if std::env::var_os("BENCH_REPORT").is_some() {
        eprintln!("{report:?}");
    }
}

/// Installs a Prometheus recorder and records lameduck's metrics into it once, as a scrape
/// would (`record` at scrape time is all the feature does; nothing is recorded per request).
#[cfg(feature = "metrics")]
fn install_metrics(shutdown: &lameduck::Shutdown) {
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .expect("a Prometheus recorder");
    // BENCH_RECORD=0: the recorder alone, to tell its own cost from lameduck's.
    if std::env::var_os("BENCH_RECORD").is_none_or(|v| v != "0") {
        lameduck::metrics::record(shutdown);
        let scrape = prometheus.render();
        assert!(scrape.contains("lameduck_connections"), "{scrape}");
    }
}

/// The TLS configuration both TLS variants serve, from `BENCH_TLS_CERT` and `BENCH_TLS_KEY`.
fn tls() -> lameduck_hyper::Tls {
    let var = |name| {
        std::env::var_os(name).unwrap_or_else(|| {
            eprintln!("bench_server: {name} must name a PEM file");
            std::process::exit(2);
        })
    };
    lameduck_hyper::Tls::from_pem_files(var("BENCH_TLS_CERT"), var("BENCH_TLS_KEY")).unwrap_or_else(
        |e| {
            eprintln!("bench_server: {e}");
            std::process::exit(2);
        },
    )
}

async fn plain_tls(addr: &str) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls().config().clone());
    let listener = tokio::net::TcpListener::from_std(std_listener(addr)).unwrap();
    let mut term = signal(SignalKind::terminate()).unwrap();
    ready(&listener);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(stream).await else { return };
                    let _ = http1()
                        .serve_connection(TokioIo::new(stream), hyper::service::service_fn(hello))
                        .await;
                });
            }
            _ = term.recv() => return,
        }
    }
}

async fn with_lameduck_tls(addr: &str) {
    let tls = tls();
    let shutdown = lameduck::tokio::shutdown(Config::from_env().unwrap());
    lameduck::signals::drain_on_signals(&shutdown).unwrap();
    let listener = tokio::net::TcpListener::from_std(std_listener(addr)).unwrap();
    ready(&listener);
    let listener = lameduck::tokio::Listener::from_tcp(&shutdown, listener);
    tokio::spawn(lameduck_hyper::serve_tls(
        listener,
        tls,
        hyper::service::service_fn(hello),
    ));
    shutdown.drained().await;
    drained_now();
}

async fn with_hyper_util(addr: &str) {
    let listener = tokio::net::TcpListener::from_std(std_listener(addr)).unwrap();
    let mut term = signal(SignalKind::terminate()).unwrap();
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    ready(&listener);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), hyper::service::service_fn(hello));
                tokio::spawn(graceful.watch(conn));
            }
            _ = term.recv() => break,
        }
    }
    drop(listener);
    graceful.shutdown().await;
    drained_now();
}

async fn with_axum(addr: &str) {
    let listener = tokio::net::TcpListener::from_std(std_listener(addr)).unwrap();
    let mut term = signal(SignalKind::terminate()).unwrap();
    ready(&listener);
    let app = axum::Router::new().fallback(axum::routing::any(
        |req: axum::extract::Request| async move {
            maybe_sleep(req.uri()).await;
            "hello\n"
        },
    ));
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            term.recv().await;
        })
        .await
        .unwrap();
    drained_now();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (variant, flavor, addr) = match &args[1..] {
        [v, f, a] => (v.clone(), f.clone(), a.clone()),
        _ => {
            eprintln!(
                "usage: bench_server plain|lameduck|hyper-util|axum|plain-tls|lameduck-tls|lameduck-metrics multi|current ADDR"
            );
            std::process::exit(2);
        }
    };
    let runtime = match flavor.as_str() {
        "multi" => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build(),
        "current" => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        other => panic!("flavor {other:?}: multi or current"),
    }
    .unwrap();
    runtime.block_on(async {
        tokio::spawn(report_heap());
        match variant.as_str() {
            "plain" => plain(&addr).await,
            "lameduck" => with_lameduck(&addr, false).await,
            "lameduck-metrics" => with_lameduck(&addr, true).await,
            "hyper-util" => with_hyper_util(&addr).await,
            "axum" => with_axum(&addr).await,
            "plain-tls" => plain_tls(&addr).await,
            "lameduck-tls" => with_lameduck_tls(&addr).await,
            other => panic!("variant {other:?}"),
        }
    });
}
