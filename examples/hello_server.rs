//! The seed experiment's `hello` server, shared by the `hello` and `demo` examples.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use lameduck::env::ConfigFromEnv;
use lameduck::hyper::{Tls, TlsRuntime};
use lameduck::signals::{self, Signal};
use lameduck::{Config, Listener, Runtime, Shutdown, Timers, inherit, restart};

/// `GET /` answers `from pid N` (N padded to a fixed width, so every response has the same
/// length: `ab` counts a length change as a failure); `GET /sleep?ms=N` sleeps first.
/// (`GET /ready`, the readiness probe, and `GET /metrics` are answered in `serve_lameduck`.)
/// `GET /hold` with `Upgrade:` answers `101 Switching Protocols` and then keeps the upgraded
/// connection forever without reading, writing or watching a notice — the handler that only
/// a cut at the socket can end.
/// On runtime `R`, whose timer and spawner it uses.
pub async fn hello<R: Runtime>(
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() == "/hold" {
        return Ok(hold::<R>(req));
    }
    if req.uri().path() == "/sleep" {
        let ms = req
            .uri()
            .query()
            .and_then(|q| q.strip_prefix("ms="))
            .and_then(|ms| ms.parse().ok())
            .unwrap_or(100);
        R::sleep_until(R::now() + Duration::from_millis(ms)).await;
    }
    let body = format!("from pid {:>10}\n", std::process::id());
    Ok(Response::new(Full::new(Bytes::from(body))))
}

fn hold<R: Runtime>(req: Request<Incoming>) -> Response<Full<Bytes>> {
    if !req.headers().contains_key(hyper::header::UPGRADE) {
        let mut response = Response::new(Full::new(Bytes::from("/hold needs Upgrade:\n")));
        *response.status_mut() = hyper::StatusCode::BAD_REQUEST;
        return response;
    }
    R::spawn(async move {
        if let Ok(upgraded) = hyper::upgrade::on(req).await {
            let _held_forever = upgraded;
            std::future::pending::<()>().await;
        }
    });
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = hyper::StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::UPGRADE,
        hyper::header::HeaderValue::from_static("hold"),
    );
    headers.insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("upgrade"),
    );
    response
}

/// `HELLO_TLS_CERT` and `HELLO_TLS_KEY` (PEM files): TLS when both are set, plain HTTP
/// when neither is, an error naming the variable or the file otherwise.
pub fn tls_from_env() -> Result<Option<Tls>, String> {
    let cert = std::env::var_os("HELLO_TLS_CERT");
    let key = std::env::var_os("HELLO_TLS_KEY");
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => Tls::from_pem_files(cert, key)
            .map(Some)
            .map_err(|e| e.to_string()),
        (Some(_), None) => Err("HELLO_TLS_CERT is set, HELLO_TLS_KEY is not".into()),
        (None, Some(_)) => Err("HELLO_TLS_KEY is set, HELLO_TLS_CERT is not".into()),
    }
}

/// Serves with lameduck on runtime `R`: the inherited socket (or `addr`), drained on
/// SIGTERM, tuned by the `LAMEDUCK_*` variables, over TLS when `HELLO_TLS_*` say so. Calls
/// `ready` once it accepts; returns the exit code (0 when nothing was cut, 2 for bad
/// settings).
///
/// With `self_restart`, SIGHUP upgrades the process in place (see
/// `lameduck::restart`) and only SIGTERM and SIGINT drain.
pub async fn serve_lameduck<R: TlsRuntime>(
    addr: &str,
    ready: impl FnOnce(),
    self_restart: Option<restart::Options>,
) -> i32 {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("hello: {e}");
            return 2;
        }
    };
    let tls = match tls_from_env() {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("hello: {e}");
            return 2;
        }
    };
    let shutdown = Shutdown::new(config, Timers::of::<R>());
    let listener = match Listener::<R>::bind_or_inherit(&shutdown, addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("hello: {e}");
            return 2;
        }
    };
    let restarter = match self_restart {
        None => {
            signals::drain_on_signals(&shutdown).expect("signal handlers");
            None
        }
        Some(options) => {
            signals::drain_on(&shutdown, &[Signal::TERM, Signal::INT], &[Signal::INT])
                .expect("signal handlers");
            match listener
                .as_fd()
                .and_then(|fd| restart::Restarter::start(&shutdown, &[fd], options))
            {
                Ok(restarter) => Some(restarter),
                Err(e) => {
                    eprintln!("hello: {e}");
                    return 2;
                }
            }
        }
    };
    // `GET /metrics`: lameduck's metrics in Prometheus text (none if a recorder was already
    // installed in this process).
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .ok();
    // `GET /ready`: 200 while serving, 503 from SIGTERM on (lame-duck window included).
    let service = hyper::service::service_fn({
        let shutdown = shutdown.clone();
        move |req: Request<Incoming>| {
            let answer = match req.uri().path() {
                "/ready" => Some(lameduck::hyper::readiness(&shutdown).map(Bytes::from)),
                "/metrics" => prometheus.as_ref().map(|prometheus| {
                    lameduck::metrics::record(&shutdown);
                    let mut response = Response::new(Bytes::from(prometheus.render()));
                    response.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
                    );
                    response
                }),
                _ => None,
            };
            async move {
                match answer {
                    Some(answer) => Ok(answer.map(Full::new)),
                    None => hello::<R>(req).await,
                }
            }
        }
    });
    match tls {
        Some(tls) => R::spawn(lameduck::hyper::serve_tls(listener, tls, service)),
        None => R::spawn(lameduck::hyper::serve(listener, service)),
    };
    ready();
    if let Some(restarter) = &restarter {
        if let Err(e) = restarter.serving() {
            eprintln!("hello: {e}");
            shutdown.begin();
        }
    }
    let report = shutdown.drained().await;
    // One write, so the line stays whole in a log it shares with its supervisor.
    let line = format!(
        "hello {}: drained: {report:?}; {:?}\n",
        std::process::id(),
        shutdown.totals()
    );
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    if report.is_clean() { 0 } else { 3 }
}

/// The usual server: hyper without lameduck (hyper-util's auto builder, as axum::serve uses),
/// serving until SIGTERM, then exiting at once.
pub async fn serve_naive(addr: &str, ready: impl FnOnce()) -> i32 {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let listener = match inherit::from_env() {
        Ok(Some(mut inherited)) => match inherited.remove(0).listener {
            inherit::Listener::Tcp(l) => tokio::net::TcpListener::from_std(l).unwrap(),
            inherit::Listener::Unix(_) => panic!("TCP only"),
        },
        _ => tokio::net::TcpListener::bind(addr).await.unwrap(),
    };
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
    ready();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                // The same protocol support as lameduck's side: HTTP/1.1 or HTTP/2 by the
                // preface, upgrades on, hyper's default (vectored) writes — axum::serve's
                // builder, so the two differ only by what lameduck adds.
                let service = hyper::service::service_fn(hello::<lameduck::tokio::Tokio>);
                tokio::spawn(async move {
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let _ = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await;
                });
            }
            _ = term.recv() => return 0,
        }
    }
}
