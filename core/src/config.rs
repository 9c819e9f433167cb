//! How a [`Lifecycle`](crate::Lifecycle) shuts down: the knobs and their defaults.

use core::time::Duration;

use crate::ConnId;

/// What draining does with a keep-alive connection that sits Idle between requests.
///
/// Closing an idle connection races the client: it may have sent its next request at the same
/// instant, and that request then meets a reset. Go's `net/http` and hyper close idle
/// connections at once ([`CloseImmediately`](IdlePolicy::CloseImmediately)); measured under
/// `wrk` keep-alive load, every such server lost 1,100–3,800 requests across 20 restarts.
/// [`AwaitNextRequest`](IdlePolicy::AwaitNextRequest) leaves the connection open for a grace
/// period instead: a request already on its way is served (with `Connection: close` or
/// GOAWAY) and then the connection closes; one that stays silent for the whole grace is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IdlePolicy {
    /// Close Idle connections as soon as draining begins (Go, hyper). Fastest drain; a request
    /// racing the close is lost.
    CloseImmediately,
    /// Tell Idle connections to finish-then-close and wait up to `grace` for their next
    /// request; close them when the grace runs out.
    AwaitNextRequest {
        /// How long an Idle connection is kept open once draining began (or once it went Idle,
        /// if later).
        grace: Duration,
    },
}

impl Default for IdlePolicy {
    /// `AwaitNextRequest { grace: 1 s }`.
    ///
    /// Zero lost requests is the product, so the default is the policy that does not race
    /// keep-alive clients. One second covers a busy client's next request on a loopback or
    /// LAN round trip many times over while keeping an idle-heavy drain short; raise it for
    /// clients behind long round trips, or pick `CloseImmediately` when drain speed matters
    /// more than a request that might be in flight.
    fn default() -> Self {
        IdlePolicy::AwaitNextRequest {
            grace: Duration::from_secs(1),
        }
    }
}

/// Shutdown settings. Start from [`Config::default()`] and change what you need.
///
/// ```
/// use core::time::Duration;
/// use lameduck_core::{Config, IdlePolicy};
///
/// let config = Config::default()
///     .with_idle_policy(IdlePolicy::CloseImmediately)
///     .with_lame_duck(Duration::from_secs(5))
///     .with_deadline(None);
/// assert_eq!(config.stale_new, Duration::from_secs(5));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Config {
    /// How long a connection may stay New (accepted, no request byte yet) while draining
    /// before it is handled as Idle and closed. Default 5 s, Go's rule (golang/go#22682): a
    /// client that connects and never sends must not hold shutdown open, but one whose first
    /// request is merely slow to arrive is served.
    pub stale_new: Duration,
    /// What draining does with Idle keep-alive connections. Default
    /// [`IdlePolicy::AwaitNextRequest`] with a 1 s grace.
    pub idle_policy: IdlePolicy,
    /// The lame-duck window between [`begin_shutdown`](crate::Lifecycle::begin_shutdown) and
    /// draining: connections are still accepted and served, but every one is told to close
    /// after its next response, so that a load balancer can take the server out of rotation
    /// first. Default zero (drain at once).
    pub lame_duck: Duration,
    /// The hard limit, counted from `begin_shutdown`, after which every connection still open
    /// is closed whatever its state, and the [`DrainReport`](crate::DrainReport) counts them
    /// as cut. `None` waits for Active connections forever, like Go's `Shutdown` with a
    /// background context.
    ///
    /// Default 30 s, the grace period Kubernetes gives a pod before it kills it: a shutdown
    /// must not hang forever on a client that never finishes, and a report that names what
    /// was cut beats a SIGKILL that says nothing.
    pub deadline: Option<Duration>,
    /// How long a closing connection keeps reading (and discarding) what its peer still sends
    /// after the last response, before its socket closes (RFC 9112 §9.6): closing with unread
    /// bytes makes the kernel reset the connection, which destroys the response still in
    /// flight. The drain waits for lingering closes, so this adds to the longest drain.
    /// Default 1 s: a peer that read its response answers with its own close within a round
    /// trip; one that keeps sending for a second is not reading.
    pub linger: Duration,
    /// How long a TLS client may take to complete its handshake while serving; during a
    /// shutdown the stale-New rule bounds it too. Default 10 s: a handshake is two round trips
    /// and some CPU, so ten seconds covers slow mobile links, while a client that opens a
    /// connection and sends nothing cannot hold a task and a socket for long.
    pub handshake_timeout: Duration,
    /// The window over which the asks to leave are spread, from
    /// [`begin_shutdown`](crate::Lifecycle::begin_shutdown): each connection live at that
    /// moment gets its own instant in the window ([`spread_offset`](Config::spread_offset)),
    /// and its ask — [`FinishThenClose`](crate::Action::FinishThenClose) (HTTP/1's
    /// `Connection: close`, HTTP/2's GOAWAY, the end of a stream) or
    /// [`AskToLeave`](crate::Action::AskToLeave) (a WebSocket's close frame) — is issued
    /// then instead of all at once, so that N clients do not reconnect in the same few
    /// milliseconds. The window is capped by the deadline: no ask is ever issued at or after
    /// it. A connection accepted once the shutdown has begun is asked at once (its client
    /// arrived on its own schedule; holding its ask back would only lengthen the drain).
    /// Under [`AwaitNextRequest`](IdlePolicy::AwaitNextRequest) an Idle connection's grace
    /// runs from its ask (or from draining, if later), so no connection is closed before it
    /// was asked.
    ///
    /// Default zero: every ask at the shutdown's begin. A spread delays each connection's
    /// ask by up to the window, so the drain of plain keep-alive traffic lasts that much
    /// longer, and it only pays where many clients reconnect at once at their ask —
    /// WebSockets, event streams, gRPC streams, behind one balancer or many —; the right
    /// window depends on how many connections the rest of the fleet can take per second,
    /// which the library cannot know.
    pub spread: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            stale_new: Duration::from_secs(5),
            idle_policy: IdlePolicy::default(),
            lame_duck: Duration::ZERO,
            deadline: Some(Duration::from_secs(30)),
            linger: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(10),
            spread: Duration::ZERO,
        }
    }
}

impl Config {
    /// Sets [`stale_new`](Config::stale_new).
    pub fn with_stale_new(mut self, stale_new: Duration) -> Self {
        self.stale_new = stale_new;
        self
    }

    /// Sets [`idle_policy`](Config::idle_policy).
    pub fn with_idle_policy(mut self, idle_policy: IdlePolicy) -> Self {
        self.idle_policy = idle_policy;
        self
    }

    /// Sets [`lame_duck`](Config::lame_duck).
    pub fn with_lame_duck(mut self, lame_duck: Duration) -> Self {
        self.lame_duck = lame_duck;
        self
    }

    /// Sets [`deadline`](Config::deadline).
    pub fn with_deadline(mut self, deadline: Option<Duration>) -> Self {
        self.deadline = deadline;
        self
    }

    /// Sets [`linger`](Config::linger).
    pub fn with_linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// Sets [`handshake_timeout`](Config::handshake_timeout).
    pub fn with_handshake_timeout(mut self, handshake_timeout: Duration) -> Self {
        self.handshake_timeout = handshake_timeout;
        self
    }

    /// Sets [`spread`](Config::spread).
    pub fn with_spread(mut self, spread: Duration) -> Self {
        self.spread = spread;
        self
    }

    /// Where in the [`spread`](Config::spread) window connection `id` is asked to leave,
    /// counted from the shutdown's begin: the window (capped by the deadline) times a
    /// fraction fixed by the id alone, so that every run — the model, proptest, a fuzz
    /// target's replay — puts each connection at the same instant. The fraction is the
    /// golden-ratio (Fibonacci) hash of the id's slot and generation: consecutive slots,
    /// which is what a server's live connections mostly are, land evenly spread over the
    /// window rather than clumped.
    ///
    /// ```
    /// use core::time::Duration;
    /// use lameduck_core::{Config, ConnId};
    ///
    /// let config = Config::default().with_spread(Duration::from_secs(2));
    /// let offsets: Vec<Duration> = (0..1000)
    ///     .map(|slot| config.spread_offset(ConnId::from_parts(slot, 0)))
    ///     .collect();
    /// assert!(offsets.iter().all(|o| *o < Duration::from_secs(2)));
    /// // No 100 ms of the window holds more than 6 % of them.
    /// for start in 0..20 {
    ///     let from = Duration::from_millis(100 * start);
    ///     let n = offsets.iter().filter(|o| **o >= from && **o < from + Duration::from_millis(100)).count();
    ///     assert!(n <= 60, "{n} in the window at {from:?}");
    /// }
    /// assert_eq!(Config::default().spread_offset(ConnId::from_parts(7, 0)), Duration::ZERO);
    /// ```
    pub fn spread_offset(&self, id: ConnId) -> Duration {
        let window = match self.deadline {
            Some(deadline) => self.spread.min(deadline),
            None => self.spread,
        };
        if window.is_zero() {
            return Duration::ZERO;
        }
        // 2^64 / φ: multiplying by it walks the circle by the golden ratio, the sequence
        // whose points stay the most evenly spaced however many of them are taken.
        const PHI: u64 = 0x9E37_79B9_7F4A_7C15;
        let key =
            u64::from(id.slot()).wrapping_add(u64::from(id.generation()).wrapping_mul(0x2545_F491));
        let fraction = key.wrapping_mul(PHI) >> 32; // in [0, 2^32)
        let nanos = window.as_nanos().min(u128::from(u64::MAX));
        // Strictly inside the window: fraction < 2^32.
        let offset = (nanos * u128::from(fraction)) >> 32;
        Duration::from_nanos(offset as u64)
    }

    /// The longest a shutdown can take, from its beginning until it is drained: the lame-duck
    /// window, then the deadline, then the last lingering close — or `None` without a
    /// deadline (Active connections are waited for). Set a supervisor's stop timeout above
    /// it (systemd's `TimeoutStopSec`, Kubernetes' `terminationGracePeriodSeconds`), with a
    /// margin for the process's own exit.
    ///
    /// ```
    /// use core::time::Duration;
    /// use lameduck_core::Config;
    ///
    /// let config = Config::default().with_lame_duck(Duration::from_secs(5));
    /// assert_eq!(config.longest_drain(), Some(Duration::from_secs(5 + 30 + 1)));
    /// assert_eq!(config.with_deadline(None).longest_drain(), None);
    /// ```
    pub fn longest_drain(&self) -> Option<Duration> {
        let deadline = self.deadline?;
        Some(
            self.lame_duck
                .saturating_add(deadline)
                .saturating_add(self.linger),
        )
    }
}
