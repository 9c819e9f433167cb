//! The process around a lameduck server, on any runtime: what a server decides about its
//! own process, above the driver's connections.
//!
//! - [`signals`]: which signals drain and which cut;
//! - [`restart`]: in-place upgrade without a supervisor — when to hand over, rollback,
//!   probation (the OS half is `lameduck-os`'s `handover`; the connection transfer is the
//!   driver's);
//! - [`env`](mod@env): the shutdown timeline from `LAMEDUCK_*` variables.
//!
//! It depends on `lameduck-driver` (the shutdown handle and its runtime seam), never the
//! other way: the task that reads signals is the seam's, only the policy is here.
//! Applications use it through the `lameduck` crate (`lameduck::signals`,
//! `lameduck::restart`, `lameduck::env`).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod env;
pub mod restart;
pub mod signals;
