//! lameduck on smol.
//!
//! The same API as `lameduck-tokio`, over `async-io` (smol's reactor): streams implement
//! `futures-io`'s `AsyncRead`/`AsyncWrite`.
//!
//! ```no_run
//! use lameduck::{Config, signals, smol::{Listener, shutdown}};
//! use smol::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
//!
//! smol::block_on(async {
//!     let shutdown = shutdown(Config::default());
//!     signals::drain_on_signals(&shutdown)?;
//!     let mut listener = Listener::bind_or_inherit(&shutdown, "127.0.0.1:8080")?;
//!     while let Some(stream) = listener.accept().await {
//!         let Ok(stream) = stream else { continue };
//!         smol::spawn(async move {
//!             let notices = stream.conn().notices();
//!             let mut stream = BufReader::new(stream);
//!             let serve = async move {
//!                 let mut line = String::new();
//!                 while matches!(stream.read_line(&mut line).await, Ok(n) if n > 0) {
//!                     if stream.get_mut().write_all(line.as_bytes()).await.is_err() { return }
//!                     line.clear();
//!                     let conn = stream.get_mut().conn_mut();
//!                     let _ = conn.request_finished();
//!                     if conn.should_close_after_response() { return }
//!                 }
//!             };
//!             notices.unless_closed(serve).await;
//!         })
//!         .detach();
//!     }
//!     println!("drained: {:?}", shutdown.drained().await);
//!     std::io::Result::Ok(())
//! })?;
//! # std::io::Result::Ok(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use lameduck_core::Config;
use lameduck_driver::{Shutdown, Timers};

/// smol's spawner, for the shared `async-io` runtime.
#[derive(Debug)]
pub struct SmolSpawner;

impl lameduck_driver::async_io::Spawner for SmolSpawner {
    const NAME: &'static str = "smol";

    fn spawn<F: std::future::Future<Output = ()> + Send + 'static>(task: F) -> bool {
        smol::spawn(task).detach();
        true
    }
}

/// lameduck's [`Runtime`](lameduck_driver::Runtime) on smol: `async-io`'s reactor and
/// timer, smol's spawner.
pub type Smol = lameduck_driver::async_io::AsyncIo<SmolSpawner>;

/// A shutdown handle in the Serving phase on smol's clock, timer and spawner: what every
/// listener, connection and signal of the server is tracked by.
pub fn shutdown(config: Config) -> Shutdown {
    Shutdown::new(config, Timers::of::<Smol>())
}

/// A tracked TCP or Unix listener on smol: [`Listener::bind_or_inherit`] (the socket a
/// supervisor passed, else a bound address), [`Listener::from_tcp`] (a listener of your own).
pub type Listener = lameduck_driver::Listener<Smol>;
/// What a [`Listener`] accepts: a tracked TCP or Unix stream.
pub type Stream = lameduck_driver::Stream<Smol>;
