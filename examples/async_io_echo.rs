//! The line echo server of `tokio_echo`, on smol or async-std: `futures-io` streams, the
//! same drain.
//!
//! `cargo run --example async_io_echo -- 127.0.0.1:7000` (smol), or with
//! `ECHO_RUNTIME=async-std`. The environment variables of `tokio_echo` apply.
#![forbid(unsafe_code)]

mod echo_config;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use echo_config::{config, env_ms, verbose};

use futures_lite::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use lameduck::{Listener, Runtime, Shutdown, Stream};

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

async fn echo<R: Runtime>(stream: Stream<R>, delay: Option<Duration>)
where
    Stream<R>: AsyncRead + AsyncWrite,
{
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
                async_io::Timer::after(delay).await;
            }
            if stream.get_mut().write_all(line.as_bytes()).await.is_err() {
                return;
            }
            let conn = stream.get_mut().conn_mut();
            let _ = conn.request_finished();
            if conn.should_close_after_response() {
                let _ = stream.get_mut().close().await;
                return;
            }
        }
    };
    notices.unless_closed(serve).await;
}

fn print_addr<
    R: Runtime<
            TcpListener = async_io::Async<std::net::TcpListener>,
            UnixListener = async_io::Async<std::os::unix::net::UnixListener>,
        >,
>(
    listener: &Listener<R>,
) {
    let addr = match listener {
        Listener::Tcp(l) => l
            .get_ref()
            .and_then(|l| l.get_ref().local_addr().ok())
            .map(|a| a.to_string()),
        Listener::Unix(l) => l
            .get_ref()
            .and_then(|l| l.get_ref().local_addr().ok())
            .and_then(|a| a.as_pathname().map(|p| p.display().to_string())),
    };
    println!("listening on {}", addr.unwrap_or_else(|| "?".into()));
}

/// The server on runtime `R` (smol's or async-std's), spawning with `spawn`.
async fn serve<R>(addr: String, spawn: fn(Task))
where
    R: Runtime<
            TcpListener = async_io::Async<std::net::TcpListener>,
            UnixListener = async_io::Async<std::os::unix::net::UnixListener>,
        >,
    Stream<R>: AsyncRead + AsyncWrite,
{
    let shutdown: Shutdown = Shutdown::new(config(), lameduck::Timers::of::<R>());
    let listeners = match lameduck::Listener::<R>::bind_or_inherit_all(&shutdown, &addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    lameduck::signals::drain_on_signals(&shutdown).expect("signal handlers");
    let delay = env_ms("ECHO_DELAY_MS");
    for mut listener in listeners {
        print_addr(&listener);
        spawn(Box::pin(async move {
            while let Some(stream) = listener.accept().await {
                match stream {
                    Ok(stream) => spawn(Box::pin(echo(stream, delay))),
                    Err(e) => eprintln!("accept: {e}"),
                }
            }
        }));
    }
    let report = shutdown.drained().await;
    println!("drained: {report:?}");
    if !report.is_clean() {
        std::process::exit(3);
    }
}

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7000".into());
    match std::env::var("ECHO_RUNTIME").as_deref() {
        Ok("async-std") => {
            async_std::task::block_on(serve::<lameduck::async_std::AsyncStd>(addr, |task| {
                async_std::task::spawn(task);
            }))
        }
        Ok("smol") | Err(_) => smol::block_on(serve::<lameduck::smol::Smol>(addr, |task| {
            smol::spawn(task).detach()
        })),
        Ok(other) => {
            eprintln!("ECHO_RUNTIME={other:?}: expected smol or async-std");
            std::process::exit(2);
        }
    }
}
