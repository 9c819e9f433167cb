//! Inherited sockets or a bound address: the start-up every adapter shares.

use std::io;
use std::net::TcpListener;

use crate::inherit::{self, Listener};
use crate::Shutdown;

/// The listeners a supervisor passed (`SERVER_STARTER_PORT`, systemd's `LISTEN_FDS`), each
/// made into the runtime's tracked listener by `track`; or, when there are none, a TCP
/// listener bound to `addr`.
///
/// A malformed variable or an unusable fd is an error naming the variable, the entry and the
/// reason (kind `InvalidInput`, with the [`InheritError`](inherit::InheritError) as its
/// source); it never silently falls back to binding.
pub fn listeners_with<L>(
    shutdown: &Shutdown,
    addr: &str,
    track: impl Fn(&Shutdown, Listener) -> io::Result<L>,
) -> io::Result<Vec<L>> {
    match inherit::from_env().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))? {
        Some(inherited) => inherited
            .into_iter()
            .map(|i| track(shutdown, i.listener))
            .collect(),
        None => {
            let listener = TcpListener::bind(addr)?;
            listener.set_nonblocking(true)?;
            Ok(vec![track(shutdown, Listener::Tcp(listener))?])
        }
    }
}

/// Like [`listeners_with`], for a server that serves exactly one socket.
pub fn bind_or_inherit_with<L>(
    shutdown: &Shutdown,
    addr: &str,
    track: impl Fn(&Shutdown, Listener) -> io::Result<L>,
) -> io::Result<L> {
    let mut all = listeners_with(shutdown, addr, track)?;
    match all.len() {
        1 => Ok(all.remove(0)),
        n => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("expected one inherited listening socket, found {n}: use `listeners`"),
        )),
    }
}

/// What a signal does, for a signal that `forces` or not: it begins the graceful shutdown;
/// a forcing signal that arrives once shutdown has begun cuts every connection.
///
/// Supervisors repeat SIGTERM: Server::Starter sends it again to every old worker, draining
/// or not, on each restart. So a repeated SIGTERM must not cut — only the deadline bounds a
/// drain it began — while an operator's second Ctrl-C (SIGINT) does.
pub fn on_signal(shutdown: &Shutdown, forces: bool) {
    if !shutdown.begin() && forces {
        shutdown.force_close();
    }
}
