//! lameduck on async-std.
//!
//! **async-std is discontinued upstream (RUSTSEC-2025-0052); new code should pick
//! `lameduck-smol`.** This adapter stays for existing async-std servers. It is the smol
//! adapter's `async-io` code with async-std's spawner: async-std drives the same reactor, so
//! listeners, streams (`futures-io`), timers and signals are shared, not reimplemented.
//!
//! ```no_run
//! use lameduck::{Config, signals, async_std::{Listener, shutdown}};
//!
//! async_std::task::block_on(async {
//!     let shutdown = shutdown(Config::default());
//!     signals::drain_on_signals(&shutdown)?;
//!     let mut listener = Listener::bind_or_inherit(&shutdown, "127.0.0.1:8080")?;
//!     while let Some(stream) = listener.accept().await {
//!         let Ok(stream) = stream else { continue };
//!         async_std::task::spawn(async move {
//!             // serve `stream` (futures-io), racing it with `stream.conn().notices()`
//!             drop(stream);
//!         });
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

/// async-std's spawner, for the shared `async-io` runtime.
#[derive(Debug)]
pub struct AsyncStdSpawner;

impl lameduck_driver::async_io::Spawner for AsyncStdSpawner {
    const NAME: &'static str = "async-std";

    fn spawn<F: std::future::Future<Output = ()> + Send + 'static>(task: F) -> bool {
        async_std::task::spawn(task);
        true
    }
}

/// lameduck's [`Runtime`](lameduck_driver::Runtime) on async-std: `async-io`'s reactor and
/// timer, async-std's spawner.
pub type AsyncStd = lameduck_driver::async_io::AsyncIo<AsyncStdSpawner>;

/// A shutdown handle in the Serving phase on async-std's clock, timer and spawner: what every
/// listener, connection and signal of the server is tracked by.
pub fn shutdown(config: Config) -> Shutdown {
    Shutdown::new(config, Timers::of::<AsyncStd>())
}

/// A tracked TCP or Unix listener on async-std: [`Listener::bind_or_inherit`] (the socket a
/// supervisor passed, else a bound address), [`Listener::from_tcp`] (a listener of your own).
pub type Listener = lameduck_driver::Listener<AsyncStd>;
/// What a [`Listener`] accepts: a tracked TCP or Unix stream.
pub type Stream = lameduck_driver::Stream<AsyncStd>;
