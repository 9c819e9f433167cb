//! How a runtime's tracked streams become hyper's I/O: once per family of I/O traits, never
//! per runtime. The traits are sealed — they are plumbing, named in bounds, implemented here
//! only.

use hyper::rt::{Read, Write};
use lameduck_driver::{IoFamily, Runtime, Stream};

pub(crate) mod sealed {
    //! Unnameable outside this crate, so the plumbing traits are implemented here only.

    use lameduck_driver::Runtime;

    /// An I/O family this crate adapts.
    pub trait Family {}
    impl Family for lameduck_driver::TokioTraits {}
    impl Family for lameduck_driver::FuturesTraits {}

    /// A runtime of such a family.
    pub trait Http {}
    impl<R: Runtime> Http for R where R::IoTraits: super::HyperIo<R> {}
}

/// A runtime lameduck serves HTTP on: the shared [`Runtime`] (spawning, timers) plus how its
/// tracked streams become hyper's I/O. Every runtime whose streams implement tokio's I/O
/// traits (feature `tokio`: hyper-util's `TokioIo`) or `futures-io`'s (features `smol`,
/// `async-std`: smol-hyper's `FuturesIo`) is one: it is decided by
/// [`Runtime::IoTraits`], never per runtime. Sealed: nothing outside this crate implements
/// it — a new runtime gets it by naming one of the two families.
pub trait HttpRuntime: Runtime + sealed::Http {
    /// A tracked stream as hyper's I/O.
    type Io: Read + Write + Unpin + Send + 'static;

    /// Wraps a tracked stream for hyper.
    fn io(stream: Stream<Self>) -> Self::Io;

    /// The tracked stream inside hyper's I/O.
    fn stream(io: &Self::Io) -> &Stream<Self>;
}

impl<R: Runtime> HttpRuntime for R
where
    R::IoTraits: HyperIo<R>,
{
    type Io = <R::IoTraits as HyperIo<R>>::Io;

    #[inline]
    fn io(stream: Stream<Self>) -> Self::Io {
        <R::IoTraits as HyperIo<R>>::io(stream)
    }

    #[inline]
    fn stream(io: &Self::Io) -> &Stream<Self> {
        <R::IoTraits as HyperIo<R>>::stream(io)
    }
}

/// How hyper reads and writes a tracked stream of one I/O family: written once per family
/// of traits, for every runtime of that family. Sealed: implemented for
/// [`TokioTraits`](lameduck_driver::TokioTraits) (feature `tokio`) and
/// [`FuturesTraits`](lameduck_driver::FuturesTraits) (features `smol`, `async-std`).
pub trait HyperIo<R: Runtime>: IoFamily + sealed::Family {
    /// The stream as hyper's I/O.
    type Io: Read + Write + Unpin + Send + 'static;

    /// Wraps the stream.
    fn io(stream: Stream<R>) -> Self::Io;

    /// The stream inside.
    fn stream(io: &Self::Io) -> &Stream<R>;
}

#[cfg(feature = "tokio")]
impl<R: Runtime> HyperIo<R> for lameduck_driver::TokioTraits
where
    Stream<R>: tokio::io::AsyncRead + tokio::io::AsyncWrite,
{
    type Io = hyper_util::rt::TokioIo<Stream<R>>;

    #[inline]
    fn io(stream: Stream<R>) -> Self::Io {
        hyper_util::rt::TokioIo::new(stream)
    }

    #[inline]
    fn stream(io: &Self::Io) -> &Stream<R> {
        io.inner()
    }
}

#[cfg(feature = "async-io")]
impl<R: Runtime> HyperIo<R> for lameduck_driver::FuturesTraits
where
    Stream<R>: futures_io::AsyncRead + futures_io::AsyncWrite,
{
    type Io = smol_hyper::rt::FuturesIo<Stream<R>>;

    #[inline]
    fn io(stream: Stream<R>) -> Self::Io {
        smol_hyper::rt::FuturesIo::new(stream)
    }

    #[inline]
    fn stream(io: &Self::Io) -> &Stream<R> {
        io.get_ref()
    }
}
