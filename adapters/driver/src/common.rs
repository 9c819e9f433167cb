//! The runtime-independent half of every runtime's API: what `lameduck::tokio`,
//! `lameduck::smol` and `lameduck::async_std` re-export beside their own `shutdown`,
//! `Listener` and `Stream`, so that a server on one runtime imports everything from one
//! module.

pub use crate::env::{ConfigFromEnv, EnvError, EnvReason};
pub use crate::inherit::{self, InheritError};
#[cfg(feature = "metrics")]
pub use crate::metrics;
pub use crate::restart::{self, Restarter};
pub use crate::signal::Signal;
pub use crate::{
    Conn, ConnHandle, Decrypted, DrainHold, EndWhenAsked, Notice, NoticeWatch, Notices,
    RequestStart, Runtime, Shutdown, Timers, Totals, Tracked, TrackedListener, accept,
};
pub use lameduck_core::{Config, ConnState, Counts, DrainReport, IdlePolicy, Phase};
