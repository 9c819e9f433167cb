//! The seed experiment's server: `GET /` answers `from pid N` (N padded to a fixed width, so
//! every response has the same length — `ab` counts a length change as a failure),
//! `GET /sleep?ms=N` sleeps first. It takes its listener from `SERVER_STARTER_PORT` or
//! `LISTEN_FDS`, else binds the address given (default `127.0.0.1:8080`), and drains on
//! SIGTERM.
//!
//! ```text
//! start_server --port 127.0.0.1:8080 --pid-file app.pid -- target/release/examples/hello
//! while true; do kill -HUP $(cat app.pid); sleep 1; done
//! ab -r -n 100000 -c 1000 http://127.0.0.1:8080/
//! ```
//!
//! `HELLO_NAIVE=1` runs the same server the way most are written — hyper, no lameduck, exit
//! at once on SIGTERM — so the experiment can show the difference.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use lameduck_tokio::{self as lameduck, Config};

async fn hello(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() == "/sleep" {
        let ms = req
            .uri()
            .query()
            .and_then(|q| q.strip_prefix("ms="))
            .and_then(|ms| ms.parse().ok())
            .unwrap_or(100);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let body = format!("from pid {:>10}\n", std::process::id());
    Ok(Response::new(Full::new(Bytes::from(body))))
}

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    if std::env::var_os("HELLO_NAIVE").is_some() {
        return naive(&addr).await;
    }
    let shutdown = lameduck::shutdown(Config::default());
    let listener = match lameduck::bind_or_inherit(&shutdown, &addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("hello: {e}");
            std::process::exit(2);
        }
    };
    lameduck::drain_on_signals(&shutdown).expect("signal handlers");
    tokio::spawn(lameduck_hyper::serve(
        listener,
        hyper::service::service_fn(hello),
    ));
    let report = shutdown.drained().await;
    eprintln!("hello {}: drained: {report:?}", std::process::id());
    if !report.is_clean() {
        std::process::exit(3);
    }
}

/// The usual server: accept and serve until SIGTERM, then exit.
async fn naive(addr: &str) {
    use hyper_util::rt::TokioIo;
    let listener = match lameduck::inherit::from_env() {
        Ok(Some(mut inherited)) => match inherited.remove(0).listener {
            lameduck::inherit::Listener::Tcp(l) => tokio::net::TcpListener::from_std(l).unwrap(),
            lameduck::inherit::Listener::Unix(_) => panic!("TCP only"),
        },
        _ => tokio::net::TcpListener::bind(addr).await.unwrap(),
    };
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                tokio::spawn(hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), hyper::service::service_fn(hello)));
            }
            _ = term.recv() => return,
        }
    }
}
