//! The [`Runtime`] on `async-io`, the reactor under smol and async-std: written once, with
//! each runtime's spawner plugged in ([`Spawner`]).

use std::fmt::Debug;
use std::future::Future;
use std::io::{self, Read};
use std::marker::PhantomData;
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::task::{Context, Poll};
use std::time::Instant;

use async_io::{Async, Timer};

use crate::runtime::poll_nonblocking;
use crate::{Runtime, Sleep};

/// How a runtime on `async-io` spawns a background task.
pub trait Spawner: Debug + Send + Sync + 'static {
    /// The runtime's name, as servers print it (`"smol"`).
    const NAME: &'static str;

    /// Spawns `task`, detached; false when it cannot.
    fn spawn<F: Future<Output = ()> + Send + 'static>(task: F) -> bool;
}

/// A [`Runtime`] on `async-io`'s reactor and timer, spawning with `S`.
#[derive(Debug)]
pub struct AsyncIo<S: Spawner>(PhantomData<S>);

/// Accepts from an `async-io` listener: a non-blocking `accept`, readiness while there is
/// none pending.
fn poll_accept<L, S: std::os::fd::AsFd>(
    listener: &Async<L>,
    cx: &mut Context<'_>,
    accept: impl Fn(&L) -> io::Result<S>,
) -> Poll<io::Result<Async<S>>> {
    poll_nonblocking(
        cx,
        || accept(listener.get_ref()).and_then(Async::new),
        |cx| listener.poll_readable(cx),
    )
}

impl<S: Spawner> Runtime for AsyncIo<S> {
    const NAME: &'static str = S::NAME;
    type IoTraits = crate::FuturesTraits;

    type TcpListener = Async<TcpListener>;
    type TcpStream = Async<TcpStream>;
    type UnixListener = Async<UnixListener>;
    type UnixStream = Async<UnixStream>;

    fn now() -> Instant {
        Instant::now()
    }

    fn sleep_until(at: Instant) -> Sleep {
        Box::pin(async move {
            Timer::at(at).await;
        })
    }

    fn spawn<F: Future<Output = ()> + Send + 'static>(task: F) -> bool {
        S::spawn(task)
    }

    fn tcp_listener(listener: TcpListener) -> io::Result<Self::TcpListener> {
        Async::new(listener)
    }

    fn tcp_stream(stream: TcpStream) -> io::Result<Self::TcpStream> {
        Async::new(stream)
    }

    fn unix_listener(listener: UnixListener) -> io::Result<Self::UnixListener> {
        Async::new(listener)
    }

    fn unix_stream(stream: UnixStream) -> io::Result<Self::UnixStream> {
        Async::new(stream)
    }

    fn poll_accept_tcp(
        listener: &Self::TcpListener,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<Self::TcpStream>> {
        poll_accept(listener, cx, |l| l.accept().map(|(s, _)| s))
    }

    fn poll_accept_unix(
        listener: &Self::UnixListener,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<Self::UnixStream>> {
        poll_accept(listener, cx, |l| l.accept().map(|(s, _)| s))
    }

    fn poll_read_unix(
        stream: &Self::UnixStream,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        poll_nonblocking(
            cx,
            || (&mut stream.get_ref()).read(buf),
            |cx| stream.poll_readable(cx),
        )
    }
}
