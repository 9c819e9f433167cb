//! Inherited sockets or a bound address, tracked on any runtime: the start-up every adapter
//! shares.

use std::io;
use std::net::TcpListener as StdTcpListener;

use crate::any::{Listener, TcpListener, UnixListener};
use crate::inherit;
use crate::{Runtime, Shutdown};

/// Tracks a runtime's TCP listener.
pub fn track_tcp<R: Runtime>(shutdown: &Shutdown, listener: R::TcpListener) -> TcpListener<R> {
    TcpListener::<R>::new(shutdown, listener, R::poll_accept_tcp)
}

/// Tracks a runtime's Unix listener.
pub fn track_unix<R: Runtime>(shutdown: &Shutdown, listener: R::UnixListener) -> UnixListener<R> {
    UnixListener::<R>::new(shutdown, listener, R::poll_accept_unix)
}

/// Tracks an inherited (or freshly bound) non-blocking std listener on runtime `R`.
pub fn track<R: Runtime>(
    shutdown: &Shutdown,
    listener: inherit::Listener,
) -> io::Result<Listener<R>> {
    Ok(match listener {
        inherit::Listener::Tcp(l) => Listener::Tcp(track_tcp::<R>(shutdown, R::tcp_listener(l)?)),
        inherit::Listener::Unix(l) => {
            Listener::Unix(track_unix::<R>(shutdown, R::unix_listener(l)?))
        }
    })
}

/// The listeners a supervisor passed (`SERVER_STARTER_PORT`, systemd's `LISTEN_FDS`), all
/// tracked on runtime `R`; or, when there are none, a TCP listener bound to `addr`.
///
/// A malformed variable or an unusable fd is an error naming the variable, the entry and the
/// reason (kind `InvalidInput`, with the [`InheritError`](inherit::InheritError) as its
/// source); it never silently falls back to binding.
pub fn listeners<R: Runtime>(shutdown: &Shutdown, addr: &str) -> io::Result<Vec<Listener<R>>> {
    match inherit::from_env().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))? {
        Some(inherited) => inherited
            .into_iter()
            .map(|i| track::<R>(shutdown, i.listener))
            .collect(),
        None => {
            let listener = StdTcpListener::bind(addr)?;
            listener.set_nonblocking(true)?;
            Ok(vec![track::<R>(
                shutdown,
                inherit::Listener::Tcp(listener),
            )?])
        }
    }
}

/// Like [`listeners`], for a server that serves exactly one socket: the single inherited
/// one, or `addr`. More than one inherited socket is an error.
pub fn bind_or_inherit<R: Runtime>(shutdown: &Shutdown, addr: &str) -> io::Result<Listener<R>> {
    let mut all = listeners::<R>(shutdown, addr)?;
    match all.len() {
        1 => Ok(all.remove(0)),
        n => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("expected one inherited listening socket, found {n}: use `listeners`"),
        )),
    }
}
