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
//! `hello [ADDR] --self-restart --pid-file PATH [--upgrade-timeout DURATION]` restarts
//! without a supervisor: SIGHUP starts the binary at hello's path as its successor, hands
//! it the socket, and drains once the successor serves (a successor that fails or is not
//! ready within the timeout, default 30s, is killed and hello serves on); once the
//! successor has served through its 250 ms probation, the idle keep-alive connections go
//! to it, so keep-alive clients never reconnect (its drain line ends with `Totals {
//! accepted, adopted }`):
//!
//! ```text
//! target/release/examples/hello 127.0.0.1:8080 --self-restart --pid-file app.pid &
//! while true; do kill -HUP $(cat app.pid); sleep 1; done
//! ```
//!
//! `HELLO_NAIVE=1` runs the same server the way most are written — hyper on tokio with
//! hyper-util's auto builder (HTTP/1.1 and HTTP/2, upgrades on: what `axum::serve` uses, and
//! the protocol support lameduck's side has), no lameduck, exit at once on SIGTERM — so the
//! experiment can show the difference, and `benches/instructions.sh` what lameduck costs.
#![forbid(unsafe_code)]

mod hello_server;

use lameduck::restart;

/// What `HELLO_RUNTIME` may say.
const RUNTIMES: &str = "tokio, smol or async-std";

const USAGE: &str =
    "usage: hello [ADDR] [--self-restart --pid-file PATH [--upgrade-timeout DURATION]]";

/// `[ADDR] [--self-restart --pid-file PATH [--upgrade-timeout DURATION]]`.
fn args() -> Result<(String, Option<restart::Options>), String> {
    let mut addr = None;
    let mut self_restart = false;
    let mut pid_file = None;
    let mut timeout = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--self-restart" => self_restart = true,
            "--pid-file" => pid_file = Some(args.next().ok_or("--pid-file needs a path")?),
            "--upgrade-timeout" => {
                let value = args.next().ok_or("--upgrade-timeout needs a duration")?;
                timeout = Some(
                    humantime::parse_duration(&value)
                        .map_err(|e| format!("--upgrade-timeout {value:?}: {e}"))?,
                );
            }
            flag if flag.starts_with("--") => return Err(format!("unknown flag {flag}")),
            _ if addr.is_none() => addr = Some(arg),
            _ => return Err(format!("unexpected argument {arg:?}")),
        }
    }
    let addr = addr.unwrap_or_else(|| "127.0.0.1:8080".into());
    if !self_restart {
        return match (pid_file, timeout) {
            (None, None) => Ok((addr, None)),
            _ => Err("--pid-file and --upgrade-timeout need --self-restart".into()),
        };
    }
    let mut options = restart::Options::default();
    if let Some(path) = pid_file {
        options = options.pid_file(path);
    } else {
        return Err("--self-restart needs --pid-file PATH".into());
    }
    if let Some(timeout) = timeout {
        options = options.upgrade_timeout(timeout);
    }
    Ok((addr, Some(options)))
}

fn main() {
    let (addr, self_restart) = match args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("hello: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
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
            &addr,
            ready,
            self_restart,
        )),
        "async-std" => async_std::task::block_on(hello_server::serve_lameduck::<
            lameduck::async_std::AsyncStd,
        >(&addr, ready, self_restart)),
        _ => tokio_runtime().block_on(hello_server::serve_lameduck::<lameduck::tokio::Tokio>(
            &addr,
            ready,
            self_restart,
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
