//! Arbitrary bytes drive the real driver — `lameduck-driver`'s shared handle, lock-free serving
//! path included — on a checked lifecycle, a manual clock and a deterministic
//! single-threaded executor, the way a server would: accepts, requests started and finished
//! on the fast path, bytes read, upgrades, closes, lingering closes, listeners, begin,
//! force, time passing, connections handed over to a successor (a real socket sent over a
//! real Unix socket pair, the harness playing the successor: version 3's credit and its
//! `Held`, `Lost` or silence for each socket, or version 2's send-and-forget) and adopted
//! from a predecessor. Checked on every step:
//!
//! - by the checked lifecycle (`lameduck_core::fuzzing::Checked`, through
//!   `Shutdown::with_machine`): every call the handle makes and every action it gets;
//! - by this harness's own model of what the application reported: every connection's
//!   state as the handle tells it, the handle's counts, the report's counts at begin, and
//!   the drain ending once everything is gone.
//!
//! `cargo +nightly fuzz run driver`
#![no_main]

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::os::fd::AsFd;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant as StdInstant};

use arbitrary::Arbitrary;
use lameduck_core::fuzzing::Checked;
use lameduck_core::{Config, ConnState, Counts, IdlePolicy};
use lameduck_driver::transfer::ANSWER_TIMEOUT;
use lameduck_driver::{
    Conn, DrainHold, ListenerGuard, Notice, RequestStart, Shutdown, Sleep, Timers,
};
use lameduck_os::transfer::{Incoming, Record, RecordReader, send_records};

thread_local! {
    static BASE: StdInstant = StdInstant::now();
    static ELAPSED: Cell<Duration> = const { Cell::new(Duration::ZERO) };
    static TASKS: RefCell<Vec<Sleep>> = const { RefCell::new(Vec::new()) };
}

/// The manual clock.
fn now() -> StdInstant {
    BASE.with(|base| *base) + ELAPSED.with(Cell::get)
}

/// A timer of the manual clock: ready once the clock reaches `at`.
fn sleep_until(at: StdInstant) -> Sleep {
    Box::pin(std::future::poll_fn(move |_| {
        if now() >= at {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }))
}

fn spawn(task: Sleep) -> bool {
    TASKS.with(|tasks| tasks.borrow_mut().push(task));
    true
}

/// Polls every spawned task until none completes in a round (bounded): with the manual
/// clock nothing changes between rounds but what the tasks themselves do.
fn run_tasks() {
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..8 {
        let mut tasks = TASKS.with(|t| std::mem::take(&mut *t.borrow_mut()));
        let before = tasks.len();
        tasks.retain_mut(|task| task.as_mut().poll(&mut cx).is_pending());
        let done = before - tasks.len();
        TASKS.with(|t| {
            let mut queue = t.borrow_mut();
            tasks.append(&mut queue);
            *queue = tasks;
        });
        if done == 0 {
            break;
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    Accept,
    /// A request's first byte, reported directly (`request_started`).
    Start(u8),
    /// Bytes read (`data_received`), which start a request when that is on.
    Data(u8),
    /// HTTP/2 turns "a read starts a request" off.
    ReadStartsRequest(u8, bool),
    Finish(u8),
    Upgrade(u8),
    /// The handler drops its connection.
    Close(u8),
    /// The connection closes for the lifecycle and its socket lingers.
    Linger(u8),
    EndLinger(u8),
    OpenListener,
    Begin,
    Force,
    /// Milliseconds pass.
    Advance(u16),
    /// A dashboard reads the counts (which folds the fast path in).
    Counts,
    /// A connection a predecessor handed over.
    Adopt,
    /// The application offers connection `i` to a successor (`ConnHandle::hand_over`),
    /// which answers (version 3) as `Reply` says.
    HandOver(u8, Reply),
}

/// What the successor answers to a socket it was sent (version 3).
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq)]
enum Reply {
    /// `Held(n)`: the old process commits, and the connection is handed over.
    Held,
    /// `Lost(n)`: it did not arrive; the old process takes the connection back.
    Lost,
    /// Nothing, past the answer timeout: taken back; a late `Held` is answered `Abort`.
    Silent,
}

#[derive(Arbitrary, Debug)]
struct Input {
    stale_new_ms: u16,
    idle_grace_ms: Option<u16>,
    deadline_ms: Option<u16>,
    lame_duck_ms: u8,
    spread_ms: u16,
    /// Handover version 2 (no acknowledgements) instead of 3.
    unacknowledged: bool,
    ops: Vec<Op>,
}

/// One connection as the application knows it.
struct Live {
    conn: Conn,
    state: ConnState,
    read_starts_request: bool,
}

struct Harness {
    shutdown: Shutdown,
    live: Vec<Live>,
    lingering: Vec<DrainHold>,
    listeners: Vec<ListenerGuard>,
    /// The application's counts when shutdown began.
    at_begin: Option<Counts>,
    /// The successor's end of the transfer socket, once a handover was tried.
    successor: Option<std::os::unix::net::UnixStream>,
    /// Version 2 rather than 3.
    unacknowledged: bool,
    /// Connections handed over during the shutdown.
    handed_over: usize,
    /// Connections taken back during the shutdown (version 3).
    taken_back: usize,
}

fn counts_of(live: &[Live]) -> Counts {
    let mut counts = Counts::default();
    for l in live {
        match l.state {
            ConnState::New => counts.new += 1,
            ConnState::Active => counts.active += 1,
            ConnState::Idle => counts.idle += 1,
            ConnState::Upgraded => counts.upgraded += 1,
            ConnState::Closed => unreachable!("closed connections leave `live`"),
        }
    }
    counts
}

/// Polls `offer` to its end, calling `between` between polls; the answer comes from the
/// handle's sending thread. Bounded in real time: an offer that never settles is a bug.
fn settle(
    mut offer: std::pin::Pin<&mut impl Future<Output = bool>>,
    mut between: impl FnMut(),
) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    let give_up = StdInstant::now() + Duration::from_secs(10);
    loop {
        if let Poll::Ready(sent) = offer.as_mut().poll(&mut cx) {
            return sent;
        }
        assert!(StdInstant::now() < give_up, "an offer that never settled");
        between();
        std::thread::yield_now();
    }
}

/// Plays the version-3 successor while `offer` runs: answers the socket sent with `reply`
/// (silence: the old process's clock passes its answer timeout). Returns the offer's
/// result and the sequence number of the socket sent, if one was; checks that a `Held`
/// socket is committed, and that a late `Held` after silence is aborted.
fn play_successor(
    offer: std::pin::Pin<&mut impl Future<Output = bool>>,
    successor: &std::os::unix::net::UnixStream,
    reply: Reply,
) -> (bool, Option<u64>) {
    let mut reader = RecordReader::default();
    let mut incoming = Vec::new();
    let mut offered = None;
    let mut committed = false;
    let mut read = |offered: &mut Option<u64>, committed: &mut bool| {
        let _ = reader.read_once(successor.as_fd(), &mut incoming);
        for Incoming { record, .. } in incoming.drain(..) {
            match record {
                Record::Hello(version) => assert_eq!(version, 3, "hello"),
                Record::Connection(n) => {
                    assert_eq!(offered.replace(n), None, "two sockets for one offer");
                    let answer = match reply {
                        Reply::Held => Record::Held(n),
                        Reply::Lost => Record::Lost(n),
                        Reply::Silent => {
                            ELAPSED.with(|e| e.set(e.get() + ANSWER_TIMEOUT));
                            continue;
                        }
                    };
                    assert_eq!(send_records(successor.as_fd(), &[answer]).unwrap(), 1);
                }
                Record::Commit(n) => {
                    assert_eq!(Some(n), *offered, "a commit for a socket not held");
                    assert_eq!(reply, Reply::Held, "a commit for a socket not held");
                    *committed = true;
                }
                other => panic!("the old process sent {other:?}"),
            }
        }
    };
    let sent = settle(offer, || read(&mut offered, &mut committed));
    if sent {
        // Written before the connection counts as handed over.
        read(&mut offered, &mut committed);
        assert!(committed, "handed over without a commit");
    }
    if let (Reply::Silent, Some(n)) = (reply, offered) {
        // Too late: the old process took it back and says so.
        assert_eq!(
            send_records(successor.as_fd(), &[Record::Held(n)]).unwrap(),
            1
        );
        let mut aborted = false;
        let give_up = StdInstant::now() + Duration::from_secs(10);
        while !aborted {
            assert!(StdInstant::now() < give_up, "a late Held never aborted");
            lameduck_os::transfer::wait_readable(successor.as_fd(), Duration::from_millis(10))
                .unwrap();
            let _ = reader.read_once(successor.as_fd(), &mut incoming);
            for Incoming { record, .. } in incoming.drain(..) {
                assert_eq!(record, Record::Abort(n), "the answer to a late Held");
                aborted = true;
            }
        }
    }
    (sent, offered)
}

impl Harness {
    fn pick(&self, i: u8) -> Option<usize> {
        (!self.live.is_empty()).then(|| i as usize % self.live.len())
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Accept => match self.shutdown.accept() {
                Ok(conn) => self.live.push(Live {
                    conn,
                    state: ConnState::New,
                    read_starts_request: true,
                }),
                Err(e) => assert!(
                    self.shutdown.is_stopping_accepts(),
                    "accept refused while accepting: {e}"
                ),
            },
            Op::Start(i) => self.report(
                i,
                "request_started",
                &[ConnState::New, ConnState::Idle],
                ConnState::Active,
                |c| c.request_started(),
            ),
            Op::Data(i) => {
                let Some(i) = self.pick(i) else { return };
                let l = &mut self.live[i];
                l.conn.data_received();
                if l.read_starts_request && matches!(l.state, ConnState::New | ConnState::Idle) {
                    l.state = ConnState::Active;
                }
            }
            Op::ReadStartsRequest(i, on) => {
                let Some(i) = self.pick(i) else { return };
                let l = &mut self.live[i];
                l.conn.set_request_start(if on {
                    RequestStart::FirstByte
                } else {
                    RequestStart::Reported
                });
                l.read_starts_request = on;
            }
            Op::Finish(i) => self.report(
                i,
                "request_finished",
                &[ConnState::Active],
                ConnState::Idle,
                |c| c.request_finished(),
            ),
            Op::Upgrade(i) => self.report(
                i,
                "upgraded",
                &[ConnState::Active],
                ConnState::Upgraded,
                |c| c.upgraded(),
            ),
            Op::Close(i) => {
                let Some(i) = self.pick(i) else { return };
                drop(self.live.swap_remove(i));
            }
            Op::Linger(i) => {
                let Some(i) = self.pick(i) else { return };
                let l = self.live.swap_remove(i);
                self.lingering.push(l.conn.linger());
                assert_eq!(l.conn.state(), ConnState::Closed, "a lingering connection");
                // Its `Conn` outlives the linger's start, as in the hyper adapter.
                l.conn.data_received();
                drop(l);
            }
            Op::EndLinger(i) => {
                if !self.lingering.is_empty() {
                    let i = i as usize % self.lingering.len();
                    drop(self.lingering.swap_remove(i));
                }
            }
            Op::OpenListener => {
                if !self.shutdown.is_stopping_accepts() {
                    self.listeners.push(self.shutdown.register_listener());
                }
            }
            Op::Begin => self.begin(),
            Op::Force => {
                self.note_begin();
                self.shutdown.force_close();
            }
            Op::Advance(ms) => {
                ELAPSED.with(|e| e.set(e.get() + Duration::from_millis(u64::from(ms))));
            }
            Op::Counts => {
                let counts = self.shutdown.counts();
                assert_eq!(counts, counts_of(&self.live), "counts");
            }
            Op::Adopt => match self.shutdown.adopt() {
                Ok(conn) => self.live.push(Live {
                    conn,
                    state: ConnState::Idle,
                    read_starts_request: true,
                }),
                Err(e) => assert!(
                    self.shutdown.is_stopping_accepts(),
                    "adoption refused while accepting: {e}"
                ),
            },
            Op::HandOver(i, reply) => self.hand_over(i, reply),
        }
    }

    /// Offers connection `i`: it must go exactly when it is Idle and not closed by the
    /// lifecycle — and, in version 3, the successor said `Held` — and then be gone from the
    /// handle; otherwise it stays, as the application knows it.
    fn hand_over(&mut self, i: u8, reply: Reply) {
        let Some(i) = self.pick(i) else { return };
        let successor = self.successor();
        // Any socket will do: a duplicate of the successor's end.
        let fd = successor.try_clone().unwrap().into();
        let l = &self.live[i];
        let legal = l.state == ConnState::Idle && l.conn.notice() != Some(Notice::Close);
        let offer = std::pin::pin!(l.conn.hand_over(fd));
        let (sent, offered) = if self.unacknowledged {
            (settle(offer, || {}), None)
        } else {
            play_successor(offer, &successor, reply)
        };
        let expected = legal && (self.unacknowledged || reply == Reply::Held);
        assert_eq!(
            sent, expected,
            "handed over from {:?}, answered {reply:?}",
            l.state
        );
        assert_eq!(
            offered.is_some(),
            legal && !self.unacknowledged,
            "a socket sent from {:?}",
            l.state
        );
        if sent {
            assert_eq!(
                l.conn.state(),
                ConnState::Closed,
                "a handed-over connection"
            );
            if self.at_begin.is_some() {
                self.handed_over += 1;
            }
            drop(self.live.swap_remove(i));
        } else if offered.is_some() && self.at_begin.is_some() {
            self.taken_back += 1;
        }
        if self.unacknowledged {
            // The successor takes what came, so the socket's buffer never fills.
            let mut payload = [0u8; 1];
            let mut fds = Vec::new();
            while lameduck_os::transfer::recv(successor.as_fd(), &mut payload, &mut fds).is_ok() {
                fds.clear();
            }
        }
    }

    /// The successor's end of the transfer socket, made at the first offer; in version 3 it
    /// grants credit for everything at once.
    fn successor(&mut self) -> std::os::unix::net::UnixStream {
        if self.successor.is_none() {
            let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
            let version = if self.unacknowledged {
                lameduck_os::handover::TransferVersion::Unacknowledged
            } else {
                lameduck_os::handover::TransferVersion::Acknowledged
            };
            self.shutdown
                .hand_over_to_version(ours.into(), version)
                .unwrap();
            theirs.set_nonblocking(true).unwrap();
            if !self.unacknowledged {
                let credit = [Record::Credit(u64::from(u32::MAX))];
                assert_eq!(send_records(theirs.as_fd(), &credit).unwrap(), 1);
            }
            self.successor = Some(theirs);
        }
        self.successor.as_ref().unwrap().try_clone().unwrap()
    }

    /// The application reports an event on connection `i`: the handle must accept it exactly
    /// when it is legal from the state the application knows, and then be in `to`.
    fn report(
        &mut self,
        i: u8,
        event: &str,
        from: &[ConnState],
        to: ConnState,
        call: fn(&Conn) -> Result<(), lameduck_core::Error>,
    ) {
        let Some(i) = self.pick(i) else { return };
        let l = &mut self.live[i];
        let legal = from.contains(&l.state);
        let result = call(&l.conn);
        assert_eq!(
            result.is_ok(),
            legal,
            "{event} from {:?}: {result:?}",
            l.state
        );
        if legal {
            l.state = to;
        }
    }

    fn note_begin(&mut self) {
        if self.at_begin.is_none() {
            self.at_begin = Some(counts_of(&self.live));
        }
    }

    fn begin(&mut self) {
        self.note_begin();
        self.shutdown.begin();
    }

    /// What a server does between events: its tasks run; listeners told to stop close
    /// (their backlog is empty here); handlers told to close now drop their connection.
    fn react(&mut self) {
        run_tasks();
        if self.shutdown.is_stopping_accepts() {
            self.listeners.clear();
        }
        self.live.retain(|l| l.conn.notice() != Some(Notice::Close));
        run_tasks();
        for l in &self.live {
            assert_eq!(
                l.conn.state(),
                l.state,
                "the handle's state of {}",
                l.conn.id()
            );
        }
        if let (Some(expected), Some(report)) = (self.at_begin, self.shutdown.report()) {
            assert_eq!(report.at_begin, expected, "counts at begin");
        }
    }
}

libfuzzer_sys::fuzz_target!(|input: Input| {
    TASKS.with(|t| t.borrow_mut().clear());
    let ms = |n: u16| Duration::from_millis(u64::from(n));
    let idle = match input.idle_grace_ms {
        None => IdlePolicy::CloseImmediately,
        Some(grace) => IdlePolicy::AwaitNextRequest { grace: ms(grace) },
    };
    let config = Config::default()
        .with_stale_new(ms(input.stale_new_ms))
        .with_idle_policy(idle)
        .with_deadline(input.deadline_ms.map(ms))
        .with_lame_duck(ms(u16::from(input.lame_duck_ms)))
        .with_spread(ms(input.spread_ms));
    let timers = Timers {
        now,
        sleep_until,
        spawn,
        watch_signals: |_, _| Err(std::io::Error::other("no signals here")),
    };
    let mut harness = Harness {
        shutdown: Shutdown::with_machine(Checked::new(config), timers),
        live: Vec::new(),
        lingering: Vec::new(),
        listeners: Vec::new(),
        at_begin: None,
        successor: None,
        unacknowledged: input.unacknowledged,
        handed_over: 0,
        taken_back: 0,
    };
    for op in input.ops.iter().take(512) {
        harness.apply(op);
        harness.react();
    }
    // The end: shutdown, everything goes away, time passes; the drain must end.
    harness.begin();
    harness.react();
    harness.live.clear();
    harness.lingering.clear();
    harness.listeners.clear();
    ELAPSED.with(|e| e.set(e.get() + Duration::from_secs(3600)));
    harness.react();
    let mut drained = std::pin::pin!(harness.shutdown.drained());
    let mut cx = Context::from_waker(Waker::noop());
    let report = match drained.as_mut().poll(&mut cx) {
        Poll::Ready(report) => report,
        Poll::Pending => panic!(
            "not drained once everything is gone: {:?}",
            harness.shutdown.report()
        ),
    };
    assert_eq!(
        report.at_begin,
        harness.at_begin.unwrap(),
        "counts at begin"
    );
    assert_eq!(report.handed_over, harness.handed_over, "handed over");
    assert_eq!(report.taken_back, harness.taken_back, "taken back");
    TASKS.with(|t| t.borrow_mut().clear());
});
