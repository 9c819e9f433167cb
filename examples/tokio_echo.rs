//! A line-based echo server on tokio that drains on SIGTERM and prints its drain report.
//!
//! `cargo run --example tokio_echo -- 127.0.0.1:7000` then `nc 127.0.0.1 7000`; each line is
//! one request. SIGTERM (or Ctrl-C) drains: requests in flight are answered, idle
//! connections get the idle grace, silent ones are closed once stale; SIGINT while draining cuts
//! everything. Under `start_server` (or systemd socket activation) it serves the inherited
//! socket instead of binding.
//!
//! Environment: `ECHO_DELAY_MS` delays every answer (to hold requests in flight),
//! `ECHO_VERBOSE` prints every request,
//! `LAMEDUCK_STALE_NEW`, `LAMEDUCK_IDLE_GRACE` (`close` = close idle at once),
//! `LAMEDUCK_LAME_DUCK` and `LAMEDUCK_DEADLINE` (`500ms`, `2s`, `off`) tune the shutdown.
#![forbid(unsafe_code)]

mod echo_config;

use std::time::Duration;

use echo_config::{config, env_ms, verbose};

use lameduck::tokio::Stream;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

async fn echo(stream: Stream, delay: Option<Duration>) {
    let notices = stream.conn().notices();
    let mut stream = BufReader::new(stream);
    let serve = async move {
        let mut line = String::new();
        loop {
            line.clear();
            if !matches!(stream.read_line(&mut line).await, Ok(n) if n > 0) {
                return;
            }
            if verbose() {
                println!("request: {}", line.trim_end());
            }
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            if stream.write_all(line.as_bytes()).await.is_err() {
                return;
            }
            // The response is out: Active → Idle. If shutdown asked this connection to
            // finish, this was its last response.
            let conn = stream.get_mut().conn_mut();
            let _ = conn.request_finished();
            if conn.should_close_after_response() {
                let _ = stream.shutdown().await;
                return;
            }
        }
    };
    // A close from the lifecycle (stale, idle grace, deadline) cuts the loop wherever it is.
    notices.unless_closed(serve).await;
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7000".into());
    let delay = env_ms("ECHO_DELAY_MS");
    let shutdown = lameduck::tokio::shutdown(config());
    let listeners = match lameduck::tokio::Listener::bind_or_inherit_all(&shutdown, &addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    lameduck::signals::drain_on_signals(&shutdown).expect("signal handlers");
    for mut listener in listeners {
        match &listener {
            lameduck::tokio::Listener::Tcp(l) => {
                let addr = l.get_ref().and_then(|l| l.local_addr().ok());
                println!(
                    "listening on {}",
                    addr.map_or("?".into(), |a| a.to_string())
                );
            }
            lameduck::tokio::Listener::Unix(l) => {
                let addr = l.get_ref().and_then(|l| l.local_addr().ok());
                let path = addr.as_ref().and_then(|a| a.as_pathname());
                println!(
                    "listening on {}",
                    path.map_or("?".into(), |p| p.display().to_string())
                );
            }
        }
        tokio::spawn(async move {
            while let Some(stream) = listener.accept().await {
                match stream {
                    Ok(stream) => {
                        tokio::spawn(echo(stream, delay));
                    }
                    Err(e) => eprintln!("accept: {e}"),
                }
            }
        });
    }
    let report = shutdown.drained().await;
    println!("drained: {report:?}");
    if !report.is_clean() {
        std::process::exit(3);
    }
}
