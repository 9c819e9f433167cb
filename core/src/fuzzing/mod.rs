//! Testing a driver against the lifecycle: a checked lifecycle, an operation language with
//! an [`Arbitrary`](arbitrary::Arbitrary) impl, and a reference driver that runs it.
//!
//! Enabled by the `fuzzing` feature (which brings in `std` and `arbitrary`).
//!
//! - [`Checked`] wraps a [`Lifecycle`](crate::Lifecycle) and keeps an independent reference
//!   model beside it. Every call is forwarded, and every answer and every action is checked
//!   against the invariant (see the [crate docs](crate#guarantees)); a violation panics with
//!   a message naming the rule. Use it in place of `Lifecycle` in your driver's fuzz build.
//! - [`Scenario`] and [`Op`] describe a run: a configuration and a sequence of connection
//!   events, time steps and driver decisions. [`run`] plays one through a reference driver
//!   on a [`Checked`] lifecycle, then shuts down and asserts that the driver reaches
//!   `Drained` in a bounded number of steps.
//!
//! The crate's own fuzz target is this, in full:
//!
//! ```no_run
//! // fuzz/fuzz_targets/lifecycle.rs
//! # /*
//! #![no_main]
//! libfuzzer_sys::fuzz_target!(|scenario: lameduck_core::fuzzing::Scenario| {
//! # */ let scenario: lameduck_core::fuzzing::Scenario = unimplemented!();
//!     lameduck_core::fuzzing::run(&scenario);
//! # /*
//! });
//! # */
//! ```
//!
//! A driver of your own is fuzzed the same way: decode a `Scenario`, replay its ops into
//! your driver, and let your driver talk to a `Checked` instead of a `Lifecycle`.

mod checker;
mod scenario;

pub use checker::Checked;
pub use scenario::{Op, Scenario, ScenarioConfig, run};
