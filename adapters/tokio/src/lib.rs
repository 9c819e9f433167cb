//! lameduck on tokio.
//!
//! ```no_run
//! use lameduck::{Config, signals, tokio::{Listener, shutdown}};
//! use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
//!
//! # async fn run() -> std::io::Result<()> {
//! let shutdown = shutdown(Config::default());
//! signals::drain_on_signals(&shutdown)?; // SIGTERM/SIGINT/SIGHUP drain; Ctrl-C again cuts
//! let mut listener = Listener::bind_or_inherit(&shutdown, "127.0.0.1:8080")?;
//!
//! // Until shutdown: accept, then drain the backlog, then None.
//! while let Some(stream) = listener.accept().await {
//!     let Ok(stream) = stream else { continue };
//!     tokio::spawn(async move {
//!         // A line-based echo: each line is one request.
//!         let notices = stream.conn().notices();
//!         let mut stream = BufReader::new(stream);
//!         let serve = async move {
//!             let mut line = String::new();
//!             while matches!(stream.read_line(&mut line).await, Ok(n) if n > 0) {
//!                 if stream.write_all(line.as_bytes()).await.is_err() { return }
//!                 line.clear();
//!                 let conn = stream.get_mut().conn_mut();
//!                 let _ = conn.request_finished();          // Active → Idle
//!                 if conn.should_close_after_response() { return }
//!             }
//!         };
//!         // Stale, idle-grace and deadline closes cut the loop wherever it is.
//!         notices.unless_closed(serve).await;
//!     }); // dropping the stream reports it Closed
//! }
//! let report = shutdown.drained().await;
//! println!("drained: {report:?}");
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::io;
use std::task::{Context, Poll};
use std::time::Instant;

use lameduck_core::Config;
use lameduck_driver::{Shutdown, Timers};

/// lameduck's [`Runtime`](lameduck_driver::Runtime) on tokio: tokio's clock (which
/// `tokio::time::pause` controls), timer, spawner and reactor.
#[derive(Debug)]
pub struct Tokio;

impl lameduck_driver::Runtime for Tokio {
    const NAME: &'static str = "tokio";

    type IoTraits = lameduck_driver::TokioTraits;

    type TcpListener = tokio::net::TcpListener;
    type TcpStream = tokio::net::TcpStream;
    type UnixListener = tokio::net::UnixListener;
    type UnixStream = tokio::net::UnixStream;

    fn now() -> Instant {
        tokio::time::Instant::now().into_std()
    }

    fn sleep_until(at: Instant) -> lameduck_driver::Sleep {
        Box::pin(tokio::time::sleep_until(at.into()))
    }

    fn spawn<F: std::future::Future<Output = ()> + Send + 'static>(task: F) -> bool {
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(task);
                true
            }
            Err(_) => false,
        }
    }

    fn tcp_listener(listener: std::net::TcpListener) -> io::Result<Self::TcpListener> {
        tokio::net::TcpListener::from_std(listener)
    }

    fn tcp_stream(stream: std::net::TcpStream) -> io::Result<Self::TcpStream> {
        tokio::net::TcpStream::from_std(stream)
    }

    fn unix_listener(listener: std::os::unix::net::UnixListener) -> io::Result<Self::UnixListener> {
        tokio::net::UnixListener::from_std(listener)
    }

    fn unix_stream(stream: std::os::unix::net::UnixStream) -> io::Result<Self::UnixStream> {
        tokio::net::UnixStream::from_std(stream)
    }

    fn poll_accept_tcp(
        listener: &Self::TcpListener,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<Self::TcpStream>> {
        listener.poll_accept(cx).map_ok(|(s, _)| s)
    }

    fn poll_accept_unix(
        listener: &Self::UnixListener,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<Self::UnixStream>> {
        listener.poll_accept(cx).map_ok(|(s, _)| s)
    }

    fn poll_read_unix(
        stream: &Self::UnixStream,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        lameduck_driver::runtime::poll_nonblocking(
            cx,
            || stream.try_read(buf),
            |cx| stream.poll_read_ready(cx),
        )
    }
}

/// A shutdown handle in the Serving phase on tokio's clock, timer and spawner: what every
/// listener, connection and signal of the server is tracked by.
pub fn shutdown(config: Config) -> Shutdown {
    Shutdown::new(config, Timers::of::<Tokio>())
}

/// A tracked TCP or Unix listener on tokio: [`Listener::bind_or_inherit`] (the socket a
/// supervisor passed, else a bound address), [`Listener::from_tcp`] (a listener of your own).
pub type Listener = lameduck_driver::Listener<Tokio>;
/// What a [`Listener`] accepts: a tracked TCP or Unix stream.
pub type Stream = lameduck_driver::Stream<Tokio>;
