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

mod hello_server;

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let code = if std::env::var_os("HELLO_NAIVE").is_some() {
        hello_server::serve_naive(&addr, || {}).await
    } else {
        hello_server::serve_lameduck(&addr, || {}).await
    };
    std::process::exit(code);
}
