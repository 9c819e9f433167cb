//! The synchronisation primitives of the shared handle: std's, or `loom`'s when built with
//! `--cfg loom`, so that `tests/loom.rs` can explore every interleaving of the real code.

#[cfg(loom)]
pub(crate) use loom::sync::{
    Arc, Mutex, MutexGuard,
    atomic::{AtomicU8, Ordering},
};
#[cfg(not(loom))]
pub(crate) use std::sync::{
    Arc, Mutex, MutexGuard,
    atomic::{AtomicU8, Ordering},
};
