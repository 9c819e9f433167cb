//! The tokio adapter over real loopback sockets: every rule of the shutdown protocol, seen
//! from a client.
//!
//! The server under test is a line echo: each line is one request; `sleep N` answers after
//! N ms; after a response, a connection told to finish-then-close is closed. The server
//! reports what it does on a channel, so tests wait on events, never on guesses of timing.

use std::net::SocketAddr;
use std::time::Duration;

use lameduck::{Config, DrainReport, IdlePolicy, Shutdown};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc, oneshot};

#[derive(Debug, PartialEq)]
enum Seen {
    Accepted,
    Received(String),
    Finished,
}

struct Server {
    shutdown: Shutdown,
    addr: SocketAddr,
    seen: mpsc::UnboundedReceiver<Seen>,
}

impl Server {
    async fn expect(&mut self, want: Seen) {
        let got = tokio::time::timeout(Duration::from_secs(10), self.seen.recv())
            .await
            .expect("server event within 10 s")
            .expect("server running");
        assert_eq!(got, want);
    }

    async fn drained(&self) -> DrainReport {
        tokio::time::timeout(Duration::from_secs(20), self.shutdown.drained())
            .await
            .expect("drained within 20 s")
    }
}

async fn handle<S>(stream: S, seen: mpsc::UnboundedSender<Seen>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + TrackedConn,
{
    let notices = stream.conn().notices();
    let mut stream = BufReader::new(stream);
    let serve = async move {
        let mut line = String::new();
        loop {
            line.clear();
            if !matches!(stream.read_line(&mut line).await, Ok(n) if n > 0) {
                return;
            }
            let _ = seen.send(Seen::Received(line.trim().to_owned()));
            if let Some(ms) = line.trim().strip_prefix("sleep ") {
                tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
            }
            if stream.write_all(line.as_bytes()).await.is_err() {
                return;
            }
            let conn = stream.get_mut().conn_mut();
            conn.request_finished().unwrap();
            let _ = seen.send(Seen::Finished);
            if conn.should_close_after_response() {
                let _ = stream.shutdown().await;
                return;
            }
        }
    };
    // Cut at once when the lifecycle says so (stale New, idle grace, deadline), even in the
    // middle of a request; dropping the stream reports it Closed.
    notices.unless_closed(serve).await;
}

/// Both tracked stream types expose their connection.
trait TrackedConn {
    fn conn(&self) -> &lameduck::Conn;
    fn conn_mut(&mut self) -> &mut lameduck::Conn;
}

impl TrackedConn for lameduck::tokio::Stream {
    fn conn(&self) -> &lameduck::Conn {
        lameduck::tokio::Stream::conn(self)
    }
    fn conn_mut(&mut self) -> &mut lameduck::Conn {
        lameduck::tokio::Stream::conn_mut(self)
    }
}

impl<S> TrackedConn for lameduck::Tracked<S> {
    fn conn(&self) -> &lameduck::Conn {
        lameduck::Tracked::conn(self)
    }
    fn conn_mut(&mut self) -> &mut lameduck::Conn {
        lameduck::Tracked::conn_mut(self)
    }
}

/// Starts the echo server on `listener`; its accept loop waits for `gate` first, if given.
fn serve(
    shutdown: &Shutdown,
    listener: tokio::net::TcpListener,
    gate: Option<std::sync::Arc<Notify>>,
) -> Server {
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let mut listener = lameduck::tokio::Listener::from_tcp(shutdown, listener);
    tokio::spawn(async move {
        if let Some(gate) = gate {
            gate.notified().await;
        }
        while let Some(stream) = listener.accept().await {
            let stream = stream.unwrap();
            let _ = tx.send(Seen::Accepted);
            tokio::spawn(handle(stream, tx.clone()));
        }
    });
    Server {
        shutdown: shutdown.clone(),
        addr,
        seen: rx,
    }
}

async fn start(config: Config) -> Server {
    let shutdown = lameduck::tokio::shutdown(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    serve(&shutdown, listener, None)
}

fn config() -> Config {
    Config::default().with_deadline(None)
}

/// Sends one line and reads the answer line.
async fn exchange(client: &mut BufReader<TcpStream>, line: &str) -> String {
    client
        .get_mut()
        .write_all(format!("{line}\n").as_bytes())
        .await
        .unwrap();
    let mut answer = String::new();
    client.read_line(&mut answer).await.unwrap();
    answer.trim().to_owned()
}

/// Reads until the server closes; returns what came before the close.
async fn read_to_close(client: &mut BufReader<TcpStream>) -> String {
    let mut rest = String::new();
    tokio::time::timeout(Duration::from_secs(10), client.read_to_string(&mut rest))
        .await
        .expect("closed within 10 s")
        .expect("closed cleanly, not reset");
    rest
}

async fn connect(server: &Server) -> BufReader<TcpStream> {
    BufReader::new(TcpStream::connect(server.addr).await.unwrap())
}

#[tokio::test]
async fn an_in_flight_exchange_completes_across_shutdown() {
    let mut server = start(config()).await;
    let mut client = connect(&server).await;
    client.get_mut().write_all(b"sleep 300\n").await.unwrap();
    server.expect(Seen::Accepted).await;
    server.expect(Seen::Received("sleep 300".into())).await;

    assert!(server.shutdown.begin());
    let answer = read_to_close(&mut client).await;
    assert_eq!(answer, "sleep 300\n", "answered, then closed");

    let report = server.drained().await;
    assert_eq!(report.at_begin.active, 1);
    assert_eq!(report.finished, 1);
    assert!(report.is_clean());
    assert_eq!(server.shutdown.counts().total(), 0);
}

#[tokio::test]
async fn idle_connections_are_closed_under_close_immediately() {
    let mut server = start(config().with_idle_policy(IdlePolicy::CloseImmediately)).await;
    let mut client = connect(&server).await;
    assert_eq!(exchange(&mut client, "hello").await, "hello");
    server.expect(Seen::Accepted).await;
    server.expect(Seen::Received("hello".into())).await;
    server.expect(Seen::Finished).await;

    server.shutdown.begin();
    assert_eq!(read_to_close(&mut client).await, "");
    let report = server.drained().await;
    assert_eq!((report.at_begin.idle, report.closed_idle), (1, 1));
}

#[tokio::test]
async fn idle_connections_are_served_then_closed_under_await_next_request() {
    let grace = IdlePolicy::AwaitNextRequest {
        grace: Duration::from_secs(30),
    };
    let mut server = start(config().with_idle_policy(grace)).await;
    let mut client = connect(&server).await;
    assert_eq!(exchange(&mut client, "first").await, "first");
    server.expect(Seen::Accepted).await;
    server.expect(Seen::Received("first".into())).await;
    server.expect(Seen::Finished).await;

    server.shutdown.begin();
    // The client's next request races the shutdown: it is served, then the connection closes.
    assert_eq!(exchange(&mut client, "second").await, "second");
    assert_eq!(read_to_close(&mut client).await, "");
    let report = server.drained().await;
    assert_eq!((report.finished, report.closed_idle), (1, 0));
}

#[tokio::test]
async fn a_silent_idle_connection_is_closed_after_the_grace() {
    let grace = IdlePolicy::AwaitNextRequest {
        grace: Duration::from_millis(100),
    };
    let mut server = start(config().with_idle_policy(grace)).await;
    let mut client = connect(&server).await;
    assert_eq!(exchange(&mut client, "only").await, "only");
    server.expect(Seen::Accepted).await;
    server.expect(Seen::Received("only".into())).await;
    server.expect(Seen::Finished).await;

    server.shutdown.begin();
    assert_eq!(read_to_close(&mut client).await, "");
    let report = server.drained().await;
    assert_eq!(report.closed_idle, 1);
    let took = report
        .drained_at
        .unwrap()
        .saturating_duration_since(report.began_at);
    assert!(
        took >= Duration::from_millis(100),
        "closed after the grace, not before: {took:?}"
    );
}

#[tokio::test]
async fn a_connection_that_never_sends_is_closed_once_stale() {
    let mut server = start(config().with_stale_new(Duration::from_millis(150))).await;
    let mut client = connect(&server).await;
    server.expect(Seen::Accepted).await;
    server.shutdown.begin();
    assert_eq!(
        read_to_close(&mut client).await,
        "",
        "no response it did not ask for"
    );
    let report = server.drained().await;
    assert_eq!(report.closed_stale, 1);
    assert!(report.is_clean());
}

/// The real 5 s default, on tokio's paused clock: the drain ends exactly when the silent
/// connection turns five seconds old, and not a nanosecond earlier.
#[tokio::test(start_paused = true)]
async fn the_default_stale_new_is_five_seconds() {
    let mut server = start(Config::default()).await;
    let client = connect(&server).await;
    server.expect(Seen::Accepted).await;
    let accepted = tokio::time::Instant::now();
    server.shutdown.begin();
    let report = server.drained().await;
    assert_eq!(report.closed_stale, 1);
    assert_eq!(
        tokio::time::Instant::now() - accepted,
        Duration::from_secs(5)
    );
    drop(client);
}

#[tokio::test]
async fn the_backlog_is_served_before_the_listener_closes() {
    const N: usize = 50;
    let shutdown = lameduck::tokio::shutdown(config());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gate = std::sync::Arc::new(Notify::new());
    let mut server = serve(&shutdown, listener, Some(gate.clone()));
    // The accept loop is held: every handshake completes into the kernel's backlog.
    let mut clients = Vec::new();
    for i in 0..N {
        let mut client = connect(&server).await;
        client
            .get_mut()
            .write_all(format!("backlog {i}\n").as_bytes())
            .await
            .unwrap();
        clients.push(client);
    }
    server.shutdown.begin();
    gate.notify_one();
    for (i, client) in clients.iter_mut().enumerate() {
        assert_eq!(read_to_close(client).await, format!("backlog {i}\n"));
    }
    let report = server.drained().await;
    assert_eq!(report.accepted_during, N);
    assert_eq!(report.finished, N);
    assert!(report.is_clean());
    while let Ok(seen) = server.seen.try_recv() {
        drop(seen);
    }
}

/// A restart in one process: the old server and the new one share the kernel's listening
/// socket (as workers under `start_server` do). Clients connect continuously while the old
/// one shuts down and the new one takes over; every client whose connect succeeded and
/// whose request was sent gets its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepts_racing_shutdown_are_all_answered_across_a_handover() {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    socket.set_nonblocking(true).unwrap();
    let addr = socket.local_addr().unwrap();
    let old = lameduck::tokio::shutdown(config());
    let old_server = serve(
        &old,
        tokio::net::TcpListener::from_std(socket.try_clone().unwrap()).unwrap(),
        None,
    );
    let (switch_tx, switch_rx) = oneshot::channel::<()>();
    let clients = tokio::spawn(async move {
        let mut tasks = Vec::new();
        let mut switch = Some(switch_tx);
        for i in 0..400u32 {
            if i == 150 {
                let _ = switch.take().unwrap().send(());
            }
            tasks.push(tokio::spawn(async move {
                let stream = TcpStream::connect(addr).await.expect("connect");
                let mut client = BufReader::new(stream);
                exchange(&mut client, &format!("client {i}")).await
            }));
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        let mut answered = 0;
        for (i, task) in tasks.into_iter().enumerate() {
            assert_eq!(task.await.unwrap(), format!("client {i}"));
            answered += 1;
        }
        answered
    });
    switch_rx.await.unwrap();
    // The new worker starts accepting on the shared socket, then the old one drains.
    let new = lameduck::tokio::shutdown(config());
    let _new_server = serve(
        &new,
        tokio::net::TcpListener::from_std(socket).unwrap(),
        None,
    );
    old.begin();
    let report = old_server.drained().await;
    assert!(report.is_clean());
    assert_eq!(clients.await.unwrap(), 400);
}

#[tokio::test]
async fn the_deadline_cuts_a_never_ending_exchange_and_says_so() {
    let mut server = start(config().with_deadline(Some(Duration::from_millis(200)))).await;
    let mut client = connect(&server).await;
    client.get_mut().write_all(b"sleep 600000\n").await.unwrap();
    server.expect(Seen::Accepted).await;
    server.expect(Seen::Received("sleep 600000".into())).await;
    server.shutdown.begin();
    assert_eq!(read_to_close(&mut client).await, "", "cut: no answer");
    let report = server.drained().await;
    assert!(report.deadline_hit);
    assert_eq!(report.cut.active, 1);
    assert!(!report.is_clean());
}

#[tokio::test]
async fn unix_listeners_drain_too() {
    let path = std::env::temp_dir().join(format!("lameduck-tokio-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let shutdown = lameduck::tokio::shutdown(config());
    let mut listener = lameduck::tokio::Listener::from_unix(
        &shutdown,
        tokio::net::UnixListener::bind(&path).unwrap(),
    );
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(stream) = listener.accept().await {
            tokio::spawn(handle(stream.unwrap(), tx.clone()));
        }
    });
    let mut client = BufReader::new(tokio::net::UnixStream::connect(&path).await.unwrap());
    client.get_mut().write_all(b"sleep 100\n").await.unwrap();
    assert_eq!(rx.recv().await, Some(Seen::Received("sleep 100".into())));
    shutdown.begin();
    let mut rest = String::new();
    client.read_to_string(&mut rest).await.unwrap();
    assert_eq!(rest, "sleep 100\n");
    let report = shutdown.drained().await;
    assert_eq!(report.finished, 1);
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn a_panicking_handler_closes_only_its_connection() {
    let shutdown = lameduck::tokio::shutdown(config());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut listener = lameduck::tokio::Listener::from_tcp(&shutdown, listener);
    let accepted = tokio::spawn(async move {
        let mut stream = listener.accept().await.unwrap().unwrap();
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.unwrap();
        let task = tokio::spawn(async move {
            let _keep = stream;
            panic!("handler bug");
        });
        assert!(task.await.unwrap_err().is_panic());
        listener
    });
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(b"x").await.unwrap();
    let _listener = accepted.await.unwrap();
    assert_eq!(shutdown.counts().total(), 0, "the panic reported it Closed");
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
}

#[tokio::test]
async fn several_listeners_share_one_lifecycle_and_drained_waits_for_all() {
    let shutdown = lameduck::tokio::shutdown(config());
    let mut first = lameduck::tokio::Listener::from_tcp(
        &shutdown,
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    );
    let mut second = lameduck::tokio::Listener::from_tcp(
        &shutdown,
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    );
    let (first_done_tx, first_done) = oneshot::channel();
    tokio::spawn(async move {
        while first.accept().await.is_some() {}
        first_done_tx.send(()).unwrap();
    });
    shutdown.begin();
    first_done.await.unwrap();
    // One listener is closed, the other has not drained its backlog yet: not drained.
    assert_eq!(shutdown.phase(), lameduck::Phase::Draining);
    assert!(second.accept().await.is_none());
    let report = tokio::time::timeout(Duration::from_secs(5), shutdown.drained())
        .await
        .expect("drained once both listeners closed");
    assert!(report.is_clean());
}
