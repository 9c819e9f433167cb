//! The API every runtime crate exposes, written once.

/// Expands, in a runtime crate, to lameduck's whole API on that runtime: the re-exports,
/// the listener and stream types, and `shutdown`, `track*`, `listeners`, `bind_or_inherit`,
/// `drain_on_signals` and `drain_on` — each a call into the generic function of the same
/// name here. So every runtime has the same API with the same signatures, and a runtime
/// crate is its [`Runtime`](crate::Runtime) implementation plus this line.
#[macro_export]
macro_rules! runtime_api {
    ($rt:ty) => {
        pub use $crate::core::{Config, ConnState, Counts, DrainReport, IdlePolicy, Phase};
        pub use $crate::env::{ConfigFromEnv, EnvError};
        pub use $crate::inherit::{self, InheritError};
        pub use $crate::signal::Signal;
        pub use $crate::{
            Conn, ConnHandle, Decrypted, EndOnBegin, Notice, NoticeWatch, Notices, Runtime,
            Shutdown, Timers, Tracked, accept,
        };

        /// A tracked TCP listener.
        pub type TcpListener = $crate::TcpListener<$rt>;
        /// A tracked Unix listener.
        pub type UnixListener = $crate::UnixListener<$rt>;
        /// A tracked TCP or Unix listener.
        pub type Listener = $crate::Listener<$rt>;
        /// What a [`Listener`] accepts: a tracked TCP or Unix stream.
        pub type Stream = $crate::Stream<$rt>;

        /// A shutdown handle on this runtime's clock, timer and spawner.
        pub fn shutdown(config: Config) -> Shutdown {
            $crate::shutdown::<$rt>(config)
        }

        /// Tracks a TCP listener of this runtime.
        pub fn track_tcp(
            shutdown: &Shutdown,
            listener: <$rt as Runtime>::TcpListener,
        ) -> TcpListener {
            $crate::track_tcp::<$rt>(shutdown, listener)
        }

        /// Tracks a Unix listener of this runtime.
        pub fn track_unix(
            shutdown: &Shutdown,
            listener: <$rt as Runtime>::UnixListener,
        ) -> UnixListener {
            $crate::track_unix::<$rt>(shutdown, listener)
        }

        /// Tracks an inherited (or freshly bound) non-blocking std listener.
        pub fn track(
            shutdown: &Shutdown,
            listener: inherit::Listener,
        ) -> ::std::io::Result<Listener> {
            $crate::track::<$rt>(shutdown, listener)
        }

        /// The listeners a supervisor passed (`SERVER_STARTER_PORT`, systemd's
        /// `LISTEN_FDS`), all tracked; or, when there are none, a TCP listener bound to
        /// `addr`.
        ///
        /// A malformed variable or an unusable fd is an error naming the variable, the
        /// entry and the reason (kind `InvalidInput`, with the [`InheritError`] as its
        /// source); it never silently falls back to binding.
        pub fn listeners(shutdown: &Shutdown, addr: &str) -> ::std::io::Result<Vec<Listener>> {
            $crate::listeners::<$rt>(shutdown, addr)
        }

        /// Like [`listeners`], for a server that serves exactly one socket: the single
        /// inherited one, or `addr`. More than one inherited socket is an error.
        pub fn bind_or_inherit(shutdown: &Shutdown, addr: &str) -> ::std::io::Result<Listener> {
            $crate::bind_or_inherit::<$rt>(shutdown, addr)
        }

        /// SIGTERM, SIGINT and SIGHUP begin the drain; SIGINT while draining (a second
        /// Ctrl-C) cuts every connection at once. A repeated SIGTERM does not cut
        /// (supervisors repeat it; the deadline bounds the drain). The handling task is
        /// spawned on this runtime; the handlers are installed before this returns, and a
        /// signal that arrives meanwhile is never lost. See
        /// [`lameduck_driver::drain_on_signals`]($crate::drain_on_signals).
        pub fn drain_on_signals(shutdown: &Shutdown) -> ::std::io::Result<()> {
            $crate::drain_on_signals::<$rt>(shutdown)
        }

        /// Each of `drain` begins the drain; one of `force` received while draining cuts
        /// every connection (a signal in `force` should also be in `drain`).
        pub fn drain_on(
            shutdown: &Shutdown,
            drain: &[Signal],
            force: &[Signal],
        ) -> ::std::io::Result<()> {
            $crate::drain_on::<$rt>(shutdown, drain, force)
        }
    };
}
