//! Graceful shutdown and restart for Rust servers, without losing a single accepted
//! connection or in-flight request.
//!
//! This is the crate servers depend on. Today it re-exports the runtime-independent
//! [`lameduck-core`](lameduck_core) lifecycle, which any event loop can drive; the adapters
//! for tokio, smol, async-std and hyper will be picked here by cargo feature.
//!
//! ```
//! use lameduck::{Action, Config, Instant, Lifecycle};
//!
//! let mut lc = Lifecycle::new(Config::default());
//! lc.begin_shutdown(Instant::ZERO)?;
//! assert_eq!(lc.poll_action(), Some(Action::StopAccepting));
//! lc.stopped_accepting(Instant::ZERO);
//! assert_eq!(lc.poll_action(), Some(Action::Drained));
//! # Ok::<(), lameduck::Error>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use lameduck_core::*;

/// The README's examples, compiled and run as doc tests.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// The sans-IO core, for drivers that embed the lifecycle in their own event loop.
pub use lameduck_core as core;
