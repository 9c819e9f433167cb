//! lameduck's OS layer: everything it asks of the operating system, synchronous and
//! std-only, and the one crate of lameduck's with `unsafe` in it (each block says why it is
//! sound in a `// SAFETY:` comment).
//!
//! - [`inherit`]: listening sockets passed by Server::Starter (`SERVER_STARTER_PORT`) or
//!   systemd (`LISTEN_FDS`), parsed and checked before use — read without writing the
//!   environment;
//! - [`signal`]: signals as bytes on a socket, installed so that none is lost;
//! - [`handover`]: starting a successor process with the listening sockets, its readiness
//!   pipe, reaping it;
//! - [`systemd`]: `sd_notify` notifications (an abstract `@` socket too);
//! - [`cut`]: a socket another thread may shut down while its owner still holds it — what
//!   makes a deadline's cut reach a connection whose handler never polls again;
//! - [`transfer`]: open sockets passed to another process over a Unix socket
//!   (`SCM_RIGHTS`), batched and bounded.
//!
//! Nothing here knows about connections, runtimes or the shutdown protocol: that is
//! `lameduck-core` (the protocol) and `lameduck-driver` (the runtime-generic driver).
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod cut;
pub mod handover;
pub mod inherit;
pub mod signal;
pub mod systemd;
pub mod transfer;

/// One line on stderr, written at once so that it stays whole in a log shared by several
/// generations of a server: `lameduck <pid>: <message>`.
pub fn log(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let line = format!("lameduck {}: {args}\n", std::process::id());
    let _ = std::io::stderr().write_all(line.as_bytes());
}
