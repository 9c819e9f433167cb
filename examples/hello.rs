//! The seed experiment's server: `GET /` answers `from pid N` (N padded to a fixed width, so
//! every response has the same length — `ab` counts a length change as a failure),
//! `GET /sleep?ms=N` sleeps first; `GET /ready` is the readiness probe (200 while serving, 503
//! from SIGTERM on, the lame-duck window included); `GET /metrics` is lameduck's metrics in
//! Prometheus text (connections per state, the phase, the drain's closes by reason). It takes its listener from `SERVER_STARTER_PORT` or
//! `LISTEN_FDS`, else binds the address given (default `127.0.0.1:8080`), and drains on
//! SIGTERM.
//!
//! ```text
//! start_server --port 127.0.0.1:8080 --pid-file app.pid -- target/release/examples/hello
//! while true; do kill -HUP $(cat app.pid); sleep 1; done
//! ab -r -n 100000 -c 1000 http://127.0.0.1:8080/
//! ```
//!
//! `HELLO_RUNTIME=tokio|smol|async-std` picks the runtime (default tokio); hello says which
//! on stderr (`hello: serving on smol`), and exits 2 naming the variable for any other value.
//!
//! `HELLO_TLS_CERT=cert.pem HELLO_TLS_KEY=key.pem` serves HTTPS (HTTP/1.1 and HTTP/2 by
//! ALPN) instead; a missing or bad file is an error naming it, and exit 2.
//!
//! `HELLO_NAIVE=1` runs the same server the way most are written — hyper on tokio, no
//! lameduck, exit at once on SIGTERM — so the experiment can show the difference.

mod hello_server;

/// What `HELLO_RUNTIME` may say.
const RUNTIMES: &str = "tokio, smol or async-std";

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let runtime = match std::env::var("HELLO_RUNTIME") {
        Err(std::env::VarError::NotPresent) => "tokio".to_owned(),
        Ok(name) if ["tokio", "smol", "async-std"].contains(&name.as_str()) => name,
        Ok(other) => {
            eprintln!("hello: HELLO_RUNTIME={other:?}: expected {RUNTIMES}");
            std::process::exit(2);
        }
        Err(std::env::VarError::NotUnicode(other)) => {
            eprintln!("hello: HELLO_RUNTIME={other:?}: expected {RUNTIMES}");
            std::process::exit(2);
        }
    };
    let naive = std::env::var_os("HELLO_NAIVE").is_some();
    // One write, so the line stays whole in a log it shares with its supervisor.
    let line = format!(
        "hello: serving on {runtime}{}\n",
        if naive { " (naive)" } else { "" }
    );
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    let ready = || {};
    let code = match runtime.as_str() {
        _ if naive => tokio_runtime().block_on(hello_server::serve_naive(&addr, ready)),
        "smol" => smol::block_on(hello_server::serve_lameduck::<lameduck::smol::Smol>(
            &addr, ready,
        )),
        "async-std" => async_std::task::block_on(hello_server::serve_lameduck::<
            lameduck::async_std::AsyncStd,
        >(&addr, ready)),
        _ => tokio_runtime().block_on(hello_server::serve_lameduck::<lameduck_tokio::Tokio>(
            &addr, ready,
        )),
    };
    std::process::exit(code);
}

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}
