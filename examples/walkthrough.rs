//! A guided shutdown: a simulated server with clients in every state receives SIGTERM, and
//! the lifecycle decides what happens to each one. Prints the timeline and the drain report.
//!
//! `cargo run --example walkthrough`
//!
//! The clock is simulated (the core never reads one), so the run is instant and the same
//! every time; the adapters drive the very same calls from real sockets and timers.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use lameduck::core::{Action, Config, ConnId, Event, IdlePolicy, Instant, Lifecycle};

/// A simulated event loop: the lifecycle, a clock, and names for the connections.
struct Server {
    lc: Lifecycle,
    now: Instant,
    names: BTreeMap<ConnId, &'static str>,
    /// Clients whose handshake the kernel completed but the server has not accepted yet.
    backlog: Vec<&'static str>,
    /// Connections told to finish-then-close: their next response says `Connection: close`.
    finishing: Vec<ConnId>,
}

impl Server {
    fn at(&mut self, ms: u64) -> Instant {
        self.now = Instant::from_nanos(ms * 1_000_000);
        self.now
    }

    fn say(&self, what: impl std::fmt::Display) {
        println!("{:>6} ms  {what}", self.now.as_duration().as_millis());
    }

    fn name(&self, id: ConnId) -> &'static str {
        self.names.get(&id).copied().unwrap_or("?")
    }

    fn id_of(&self, name: &str) -> ConnId {
        let found = self.names.iter().find(|(_, n)| **n == name);
        *found.expect("accepted").0
    }

    fn accept(&mut self, name: &'static str) -> ConnId {
        let id = self.lc.accept(self.now).expect("accepting");
        self.names.insert(id, name);
        self.say(format_args!("{:<16} {name}  (New)", "accept"));
        id
    }

    /// Reports a connection event at `ms`, printing it.
    fn event(&mut self, ms: u64, id: ConnId, event: Event) -> Result<(), lameduck::core::Error> {
        let now = self.at(ms);
        match event {
            Event::RequestStarted => self.lc.request_started(id, now)?,
            Event::RequestFinished => self.lc.request_finished(id, now)?,
            Event::Upgraded => self.lc.upgraded(id, now)?,
            Event::CatchUp(to) => self.lc.catch_up(id, to)?,
            Event::HandedOver => self.lc.handed_over(id, now)?,
            Event::TransferStarted => self.lc.transfer_started(id, now)?,
            Event::TakenBack => self.lc.taken_back(id, now)?,
        }
        let state = self.lc.state(id)?;
        self.say(format_args!("{event:<16} {}  ({state})", self.name(id)));
        if event == Event::RequestFinished && self.finishing.contains(&id) {
            // That response said `Connection: close`: the server closes the connection.
            self.lc.closed(id, now)?;
            self.say(format_args!(
                "{:<16} {}  (after `Connection: close`)",
                "close",
                self.name(id)
            ));
        }
        Ok(())
    }

    /// Reports that a peer closed its connection at `ms`.
    fn peer_closed(&mut self, ms: u64, id: ConnId) -> Result<(), lameduck::core::Error> {
        let now = self.at(ms);
        self.lc.closed(id, now)?;
        self.say(format_args!("{:<16} {}", "peer closed", self.name(id)));
        Ok(())
    }

    /// Pulls every action and carries out the ones a driver owes.
    fn obey(&mut self) {
        while let Some(action) = self.lc.poll_action() {
            match action {
                Action::StopAccepting => {
                    self.say("lifecycle:  stop accepting — drain the backlog, close the listener");
                    for name in std::mem::take(&mut self.backlog) {
                        self.accept(name);
                    }
                    let _ = self.lc.listener_closed(self.now);
                }
                Action::FinishThenClose(id) => {
                    self.finishing.push(id);
                    self.say(format_args!(
                        "lifecycle:  {} — finish, answer with `Connection: close`, then close",
                        self.name(id)
                    ))
                }
                Action::AskToLeave(id) => {
                    self.say(format_args!("lifecycle:  {} — go away", self.name(id)))
                }
                Action::Close(id, reason) => {
                    self.say(format_args!(
                        "lifecycle:  close {} ({reason:?})",
                        self.name(id)
                    ));
                    self.lc.closed(id, self.now).expect("live");
                }
                Action::Drained => self.say("lifecycle:  DRAINED"),
            }
        }
    }

    /// Sleeps until the lifecycle's next timer and fires it.
    fn sleep_until_timeout(&mut self) {
        if let Some(t) = self.lc.poll_timeout() {
            self.now = t;
            self.say("timer");
            self.lc.handle_timeout(t);
        }
    }
}

fn main() -> Result<(), lameduck::core::Error> {
    let config = Config::default()
        .with_stale_new(Duration::from_secs(5))
        .with_idle_policy(IdlePolicy::AwaitNextRequest {
            grace: Duration::from_secs(1),
        })
        .with_deadline(Some(Duration::from_secs(30)));
    println!("config: {config:?}\n");
    let mut s = Server {
        lc: {
            let mut lc = Lifecycle::new(config);
            lc.listener_opened().expect("a new lifecycle accepts");
            lc
        },
        now: Instant::ZERO,
        names: BTreeMap::new(),
        backlog: Vec::new(),
        finishing: Vec::new(),
    };

    use Event::*;
    s.at(0);
    let busy = s.accept("busy     ");
    let keepalive = s.accept("keepalive");
    let _silent = s.accept("silent   ");
    let websocket = s.accept("websocket");
    s.event(5, busy, RequestStarted)?;
    s.event(10, keepalive, RequestStarted)?;
    s.event(20, keepalive, RequestFinished)?;
    s.event(30, websocket, RequestStarted)?;
    s.event(31, websocket, Upgraded)?;

    s.at(1_000);
    s.say("a client connects; SIGTERM arrives before the server accepts it");
    s.backlog.push("late     ");
    s.lc.begin_shutdown(s.now)?;
    s.obey();
    let late = s.id_of("late     ");

    s.at(1_600);
    s.say("keepalive's next request arrives within the idle grace");
    s.event(1_600, keepalive, RequestStarted)?;
    s.event(1_610, keepalive, RequestFinished)?;
    s.obey();

    s.event(1_700, late, RequestStarted)?;
    s.event(1_710, late, RequestFinished)?;
    s.obey();

    s.peer_closed(2_000, websocket)?;
    s.obey();

    s.event(3_500, busy, RequestFinished)?;
    s.obey();

    while s.lc.phase() != lameduck::core::Phase::Drained {
        s.sleep_until_timeout();
        s.obey();
    }

    let report = s.lc.report().expect("shutdown began");
    println!("\n{report:#?}");
    println!(
        "\n{} connections: {} finished, {} closed idle, {} closed stale, {} cut — {}",
        report.total(),
        report.finished,
        report.closed_idle,
        report.closed_stale,
        report.cut.total(),
        if report.is_clean() {
            "no request lost"
        } else {
            "requests were cut at the deadline"
        }
    );
    Ok(())
}
