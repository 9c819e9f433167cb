//! What an accept loop does with an error: the policy every adapter shares.
//!
//! An accept loop must never spin on a persistent error (a full fd table makes `accept`
//! fail at once, forever, while the listener stays readable — hyperium/hyper#2294) and must
//! never stop serving because of a transient one.

use std::io;
use std::time::Duration;

/// What to do after a failed `accept`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcceptError {
    /// The connection died in the backlog (`ECONNABORTED`, `EPROTO`, …) or the call was
    /// interrupted: accept the next one at once.
    Skip,
    /// The process or system is out of a resource (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`):
    /// wait [`Backoff::next_delay`] and retry. Existing connections keep being served, and
    /// closing them frees what the next accept needs.
    Backoff,
    /// The listener itself is broken (`EBADF`, `EINVAL`, `ENOTSOCK`, …): give up on it.
    Fatal,
}

impl AcceptError {
    /// Classifies an error returned by `accept`.
    pub fn classify(error: &io::Error) -> AcceptError {
        match error.raw_os_error() {
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                AcceptError::Backoff
            }
            Some(
                libc::ECONNABORTED
                | libc::ECONNRESET
                | libc::EPROTO
                | libc::EPERM
                | libc::EINTR
                | libc::EAGAIN
                | libc::ETIMEDOUT
                | libc::EHOSTUNREACH
                | libc::ENETUNREACH
                | libc::ENETDOWN
                | libc::ENONET
                | libc::EHOSTDOWN
                | libc::ENOPROTOOPT
                | libc::EOPNOTSUPP,
            ) => AcceptError::Skip,
            Some(_) => AcceptError::Fatal,
            None => match error.kind() {
                io::ErrorKind::ConnectionAborted
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::Interrupted
                | io::ErrorKind::WouldBlock
                | io::ErrorKind::TimedOut => AcceptError::Skip,
                io::ErrorKind::OutOfMemory => AcceptError::Backoff,
                _ => AcceptError::Fatal,
            },
        }
    }
}

/// A bounded, growing delay between accept retries: 5 ms doubling up to 1 s, reset by the
/// first successful accept.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    /// The first delay.
    pub const MIN: Duration = Duration::from_millis(5);
    /// The largest delay.
    pub const MAX: Duration = Duration::from_secs(1);

    /// The delay to wait now; the following one is twice as long, up to [`Backoff::MAX`].
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        delay
    }

    /// After a successful accept.
    pub fn reset(&mut self) {
        self.next = Self::MIN;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: Self::MIN }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified() {
        let os = io::Error::from_raw_os_error;
        assert_eq!(
            AcceptError::classify(&os(libc::EMFILE)),
            AcceptError::Backoff
        );
        assert_eq!(
            AcceptError::classify(&os(libc::ENFILE)),
            AcceptError::Backoff
        );
        assert_eq!(
            AcceptError::classify(&os(libc::ENOBUFS)),
            AcceptError::Backoff
        );
        assert_eq!(
            AcceptError::classify(&os(libc::ECONNABORTED)),
            AcceptError::Skip
        );
        assert_eq!(AcceptError::classify(&os(libc::EINTR)), AcceptError::Skip);
        assert_eq!(AcceptError::classify(&os(libc::EBADF)), AcceptError::Fatal);
        assert_eq!(AcceptError::classify(&os(libc::EINVAL)), AcceptError::Fatal);
        let kind = io::Error::from(io::ErrorKind::ConnectionAborted);
        assert_eq!(AcceptError::classify(&kind), AcceptError::Skip);
    }

    #[test]
    fn backoff_grows_to_a_bound_and_resets() {
        let mut b = Backoff::default();
        let delays: Vec<_> = (0..10).map(|_| b.next_delay()).collect();
        assert_eq!(delays[0], Duration::from_millis(5));
        assert_eq!(delays[1], Duration::from_millis(10));
        assert!(delays.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*delays.last().unwrap(), Backoff::MAX);
        b.reset();
        assert_eq!(b.next_delay(), Backoff::MIN);
    }
}
