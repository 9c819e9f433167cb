//! Inherited sockets or a bound address, tracked on any runtime: the start-up every runtime
//! shares, as [`Listener`]'s constructors.

use std::io;
use std::net::TcpListener as StdTcpListener;

use crate::any::{Listener, TcpListener, UnixListener};
use crate::inherit;
use crate::{Runtime, Shutdown};

impl<R: Runtime> Listener<R> {
    /// The listening socket a supervisor passed (Server::Starter's `SERVER_STARTER_PORT`,
    /// systemd's `LISTEN_FDS`, a lameduck predecessor's handover), tracked; or, when there
    /// is none, a TCP listener bound to `addr`. For a server that serves exactly one socket:
    /// more than one inherited socket is an error (see
    /// [`bind_or_inherit_all`](Listener::bind_or_inherit_all)).
    ///
    /// A malformed variable or an unusable fd is an error naming the variable, the entry and
    /// the reason (kind `InvalidInput`, with the [`InheritError`](inherit::InheritError) as
    /// its source); it never silently falls back to binding.
    pub fn bind_or_inherit(shutdown: &Shutdown, addr: &str) -> io::Result<Listener<R>> {
        let mut all = Listener::bind_or_inherit_all(shutdown, addr)?;
        match all.len() {
            1 => Ok(all.remove(0)),
            n => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "expected one inherited listening socket, found {n}: use `bind_or_inherit_all`"
                ),
            )),
        }
    }

    /// Every listening socket a supervisor passed, tracked; or, when there are none, a TCP
    /// listener bound to `addr`. Errors as [`bind_or_inherit`](Listener::bind_or_inherit)'s.
    pub fn bind_or_inherit_all(shutdown: &Shutdown, addr: &str) -> io::Result<Vec<Listener<R>>> {
        match inherit::from_env().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))? {
            Some(inherited) => inherited
                .into_iter()
                .map(|i| Listener::track(shutdown, i.listener))
                .collect(),
            None => {
                let listener = StdTcpListener::bind(addr)?;
                listener.set_nonblocking(true)?;
                Listener::track(shutdown, inherit::Listener::Tcp(listener))
                    .map(|listener| vec![listener])
            }
        }
    }

    /// Tracks an inherited (or freshly bound) non-blocking std listener.
    pub fn track(shutdown: &Shutdown, listener: inherit::Listener) -> io::Result<Listener<R>> {
        Ok(match listener {
            inherit::Listener::Tcp(l) => Listener::from_tcp(shutdown, R::tcp_listener(l)?),
            inherit::Listener::Unix(l) => Listener::from_unix(shutdown, R::unix_listener(l)?),
        })
    }

    /// Tracks a TCP listener of the runtime's own (`tokio::net::TcpListener`, ...).
    pub fn from_tcp(shutdown: &Shutdown, listener: R::TcpListener) -> Listener<R> {
        Listener::Tcp(
            TcpListener::<R>::new(shutdown, listener, R::poll_accept_tcp).adopting(R::tcp_stream),
        )
    }

    /// Tracks a Unix listener of the runtime's own.
    pub fn from_unix(shutdown: &Shutdown, listener: R::UnixListener) -> Listener<R> {
        Listener::Unix(UnixListener::<R>::new(
            shutdown,
            listener,
            R::poll_accept_unix,
        ))
    }
}
