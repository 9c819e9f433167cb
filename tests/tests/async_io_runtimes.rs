//! The smol and async-std adapters over real loopback sockets. Both run the same suite: the
//! adapters share their `async-io` code, and each must still prove it on its own runtime.
//!
//! The server is a line echo (`sleep N` answers after N ms) that reports what it sees on a
//! channel, so tests wait on events, not on timing guesses.

use std::future::Future;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::pin::Pin;
use std::time::Duration;

use async_io::{Async, Timer};
use futures_lite::FutureExt;
use futures_lite::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use lameduck_core::{Config, DrainReport, IdlePolicy};
use lameduck_driver::{Runtime, Shutdown, Stream};

/// smol's and async-std's runtimes: the same `async-io` sockets, different spawners.
trait AsyncIoRuntime:
    Runtime<
        TcpListener = Async<TcpListener>,
        TcpStream = Async<TcpStream>,
        UnixStream = Async<std::os::unix::net::UnixStream>,
    >
{
}

impl<
    R: Runtime<
            TcpListener = Async<TcpListener>,
            TcpStream = Async<TcpStream>,
            UnixStream = Async<std::os::unix::net::UnixStream>,
        >,
> AsyncIoRuntime for R
{
}

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

#[derive(Debug, PartialEq)]
enum Seen {
    Accepted,
    Received(String),
    Finished,
}

struct Server {
    shutdown: Shutdown,
    addr: SocketAddr,
    seen: async_channel::Receiver<Seen>,
}

async fn within<T>(secs: u64, what: &str, f: impl Future<Output = T>) -> T {
    f.or(async {
        Timer::after(Duration::from_secs(secs)).await;
        panic!("{what} did not happen within {secs} s");
    })
    .await
}

impl Server {
    async fn expect(&self, want: Seen) {
        let got = within(10, "a server event", self.seen.recv())
            .await
            .unwrap();
        assert_eq!(got, want);
    }

    async fn drained(&self) -> DrainReport {
        within(20, "the drain", self.shutdown.drained()).await
    }
}

async fn handle<R: AsyncIoRuntime>(stream: Stream<R>, seen: async_channel::Sender<Seen>) {
    let notices = stream.conn().notices();
    let mut stream = BufReader::new(stream);
    let serve = async move {
        let mut line = String::new();
        loop {
            line.clear();
            if !matches!(stream.read_line(&mut line).await, Ok(n) if n > 0) {
                return;
            }
            let _ = seen.send(Seen::Received(line.trim().to_owned())).await;
            if let Some(ms) = line.trim().strip_prefix("sleep ") {
                Timer::after(Duration::from_millis(ms.parse().unwrap())).await;
            }
            if stream.get_mut().write_all(line.as_bytes()).await.is_err() {
                return;
            }
            let conn = stream.get_mut().conn_mut();
            conn.request_finished().unwrap();
            let _ = seen.send(Seen::Finished).await;
            if conn.should_close_after_response() {
                let _ = stream.get_mut().close().await;
                return;
            }
        }
    };
    notices.unless_closed(serve).await;
}

/// Starts the echo server; its accept loop waits for `gate` first, if given.
fn serve<R: AsyncIoRuntime>(
    shutdown: &Shutdown,
    listener: TcpListener,
    spawn: fn(Task),
    gate: Option<async_channel::Receiver<()>>,
) -> Server {
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = async_channel::unbounded();
    let mut listener =
        lameduck_driver::Listener::<R>::from_tcp(shutdown, Async::new(listener).unwrap());
    spawn(Box::pin(async move {
        if let Some(gate) = gate {
            let _ = gate.recv().await;
        }
        while let Some(stream) = listener.accept().await {
            let stream: Stream<R> = stream.unwrap();
            let _ = tx.send(Seen::Accepted).await;
            spawn(Box::pin(handle(stream, tx.clone())));
        }
    }));
    Server {
        shutdown: shutdown.clone(),
        addr,
        seen: rx,
    }
}

type Client = BufReader<Async<TcpStream>>;

async fn connect(server: &Server) -> Client {
    BufReader::new(Async::<TcpStream>::connect(server.addr).await.unwrap())
}

async fn exchange(client: &mut Client, line: &str) -> String {
    let line = format!("{line}\n");
    client.get_mut().write_all(line.as_bytes()).await.unwrap();
    let mut answer = String::new();
    client.read_line(&mut answer).await.unwrap();
    answer.trim().to_owned()
}

async fn read_to_close(client: &mut Client) -> String {
    let mut rest = String::new();
    within(10, "the close", client.read_to_string(&mut rest))
        .await
        .expect("closed cleanly, not reset");
    rest
}

fn config() -> Config {
    Config::default().with_deadline(None)
}

macro_rules! suite {
    ($runtime:ident, $rt:ty, $shutdown:path, $block_on:path, $spawn:expr) => {
        mod $runtime {
            use super::*;

            fn spawn(task: Task) {
                ($spawn)(task)
            }

            fn start(config: Config) -> Server {
                let shutdown = $shutdown(config);
                serve::<$rt>(
                    &shutdown,
                    TcpListener::bind("127.0.0.1:0").unwrap(),
                    spawn,
                    None,
                )
            }

            #[test]
            fn closing_a_tracked_stream_ends_it_for_the_peer() {
                $block_on(async {
                    let shutdown = $shutdown(config());
                    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                    let addr = listener.local_addr().unwrap();
                    let mut listener = lameduck_driver::Listener::<$rt>::from_tcp(
                        &shutdown,
                        Async::new(listener).unwrap(),
                    );
                    let mut client = Async::<TcpStream>::connect(addr).await.unwrap();
                    let mut server = listener.accept().await.unwrap().unwrap();
                    server.close().await.unwrap();
                    // The server still holds its socket: only a shutdown of its write side
                    // ends the stream for the client (async-io's own close only flushes).
                    let mut byte = [0u8; 1];
                    let read = within(5, "EOF after the server's close", client.read(&mut byte));
                    assert_eq!(read.await.unwrap(), 0);
                    drop(server);
                })
            }

            #[test]
            fn an_in_flight_exchange_completes_across_shutdown() {
                $block_on(async {
                    let server = start(config());
                    let mut client = connect(&server).await;
                    client.get_mut().write_all(b"sleep 300\n").await.unwrap();
                    server.expect(Seen::Accepted).await;
                    server.expect(Seen::Received("sleep 300".into())).await;
                    assert!(server.shutdown.begin());
                    assert_eq!(read_to_close(&mut client).await, "sleep 300\n");
                    let report = server.drained().await;
                    assert_eq!((report.at_begin.active, report.finished), (1, 1));
                    assert!(report.is_clean());
                })
            }

            #[test]
            fn idle_connections_are_closed_under_close_immediately() {
                $block_on(async {
                    let server = start(config().with_idle_policy(IdlePolicy::CloseImmediately));
                    let mut client = connect(&server).await;
                    assert_eq!(exchange(&mut client, "hi").await, "hi");
                    server.expect(Seen::Accepted).await;
                    server.expect(Seen::Received("hi".into())).await;
                    server.expect(Seen::Finished).await;
                    server.shutdown.begin();
                    assert_eq!(read_to_close(&mut client).await, "");
                    assert_eq!(server.drained().await.closed_idle, 1);
                })
            }

            #[test]
            fn idle_connections_are_served_then_closed_under_await_next_request() {
                $block_on(async {
                    let grace = Duration::from_secs(30);
                    let server =
                        start(config().with_idle_policy(IdlePolicy::AwaitNextRequest { grace }));
                    let mut client = connect(&server).await;
                    assert_eq!(exchange(&mut client, "first").await, "first");
                    server.expect(Seen::Accepted).await;
                    server.expect(Seen::Received("first".into())).await;
                    server.expect(Seen::Finished).await;
                    server.shutdown.begin();
                    assert_eq!(exchange(&mut client, "second").await, "second");
                    assert_eq!(read_to_close(&mut client).await, "");
                    let report = server.drained().await;
                    assert_eq!((report.finished, report.closed_idle), (1, 0));
                })
            }

            #[test]
            fn a_connection_that_never_sends_is_closed_once_stale() {
                $block_on(async {
                    let server = start(config().with_stale_new(Duration::from_millis(150)));
                    let mut client = connect(&server).await;
                    server.expect(Seen::Accepted).await;
                    server.shutdown.begin();
                    assert_eq!(read_to_close(&mut client).await, "");
                    let report = server.drained().await;
                    assert_eq!(report.closed_stale, 1);
                })
            }

            #[test]
            fn the_backlog_is_served_before_the_listener_closes() {
                $block_on(async {
                    const N: usize = 30;
                    let shutdown = $shutdown(config());
                    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                    let addr = listener.local_addr().unwrap();
                    // The accept loop is held: handshakes complete into the backlog.
                    let (gate_tx, gate_rx) = async_channel::bounded(1);
                    let server = serve::<$rt>(&shutdown, listener, spawn, Some(gate_rx));
                    let mut clients = Vec::new();
                    for i in 0..N {
                        let mut client =
                            BufReader::new(Async::<TcpStream>::connect(addr).await.unwrap());
                        let line = format!("backlog {i}\n");
                        client.get_mut().write_all(line.as_bytes()).await.unwrap();
                        clients.push(client);
                    }
                    shutdown.begin();
                    gate_tx.send(()).await.unwrap();
                    for (i, client) in clients.iter_mut().enumerate() {
                        assert_eq!(read_to_close(client).await, format!("backlog {i}\n"));
                    }
                    let report = server.drained().await;
                    assert_eq!((report.accepted_during, report.finished), (N, N));
                })
            }

            #[test]
            fn the_deadline_cuts_a_never_ending_exchange_and_says_so() {
                $block_on(async {
                    let server = start(config().with_deadline(Some(Duration::from_millis(200))));
                    let mut client = connect(&server).await;
                    client.get_mut().write_all(b"sleep 600000\n").await.unwrap();
                    server.expect(Seen::Accepted).await;
                    server.expect(Seen::Received("sleep 600000".into())).await;
                    server.shutdown.begin();
                    assert_eq!(read_to_close(&mut client).await, "");
                    let report = server.drained().await;
                    assert!(report.deadline_hit);
                    assert_eq!(report.cut.active, 1);
                })
            }

            #[test]
            fn accepts_racing_shutdown_are_all_answered_across_a_handover() {
                $block_on(async {
                    let socket = TcpListener::bind("127.0.0.1:0").unwrap();
                    let addr = socket.local_addr().unwrap();
                    let old = $shutdown(config());
                    let old_server = serve::<$rt>(&old, socket.try_clone().unwrap(), spawn, None);
                    let (switch_tx, switch_rx) = async_channel::bounded::<()>(1);
                    let (done_tx, done_rx) = async_channel::bounded::<usize>(1);
                    spawn(Box::pin(async move {
                        let mut answers = Vec::new();
                        for i in 0..300u32 {
                            if i == 100 {
                                switch_tx.send(()).await.unwrap();
                            }
                            let (tx, rx) = async_channel::bounded(1);
                            spawn(Box::pin(async move {
                                let stream = Async::<TcpStream>::connect(addr).await.unwrap();
                                let mut client = BufReader::new(stream);
                                let answer = exchange(&mut client, &format!("client {i}")).await;
                                tx.send(answer).await.unwrap();
                            }));
                            answers.push(rx);
                            Timer::after(Duration::from_micros(500)).await;
                        }
                        let mut ok = 0;
                        for (i, rx) in answers.into_iter().enumerate() {
                            assert_eq!(rx.recv().await.unwrap(), format!("client {i}"));
                            ok += 1;
                        }
                        done_tx.send(ok).await.unwrap();
                    }));
                    switch_rx.recv().await.unwrap();
                    let new = $shutdown(config());
                    let _new_server = serve::<$rt>(&new, socket, spawn, None);
                    old.begin();
                    assert!(old_server.drained().await.is_clean());
                    assert_eq!(
                        within(20, "all answers", done_rx.recv()).await.unwrap(),
                        300
                    );
                })
            }
        }
    };
}

suite!(
    smol_runtime,
    lameduck::smol::Smol,
    lameduck::smol::shutdown,
    smol::block_on,
    |task: Task| smol::spawn(task).detach()
);

suite!(
    async_std_runtime,
    lameduck::async_std::AsyncStd,
    lameduck::async_std::shutdown,
    async_std::task::block_on,
    |task: Task| {
        async_std::task::spawn(task);
    }
);
