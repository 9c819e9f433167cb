//! `bench_server`'s hello-world on smol or async-std, for `benches/instructions.sh`:
//!
//! - `plain`: hyper's HTTP/1 connection over smol-hyper's `FuturesIo`, untracked, exits at
//!   SIGTERM (the baseline on that runtime);
//! - `lameduck`: `lameduck_hyper::serve` on the same runtime, drains on SIGTERM.
//!
//! `async_io_server VARIANT RUNTIME ADDR` — RUNTIME is `smol` or `async-std`. Prints
//! `listening on ADDR` once it accepts. `GET /` answers `hello`.

use std::convert::Infallible;
use std::future::Future;
use std::net::{TcpListener, TcpStream};

use async_io::Async;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use lameduck::signals::Signal;

async fn hello(_req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(b"hello\n"))))
}

fn bind(addr: &str) -> TcpListener {
    let listener = TcpListener::bind(addr).unwrap();
    listener.set_nonblocking(true).unwrap();
    println!("listening on {}", listener.local_addr().unwrap());
    listener
}

/// Resolves at the first SIGTERM.
async fn sigterm() {
    let (socket, _subscription) = lameduck_driver::signal::subscribe(&[Signal::TERM]).unwrap();
    let socket = Async::new(socket).unwrap();
    let _ = socket.readable().await;
}

async fn plain(addr: &str, spawn: fn(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>)) {
    let listener = Async::new(bind(addr)).unwrap();
    let accept = async {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let stream: Async<TcpStream> = stream;
            spawn(Box::pin(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(
                        smol_hyper::rt::FuturesIo::new(stream),
                        hyper::service::service_fn(hello),
                    )
                    .await;
            }));
        }
    };
    futures_lite::future::or(accept, sigterm()).await;
}

async fn with_lameduck<R: lameduck_hyper::HttpRuntime>(addr: &str) {
    let shutdown = lameduck::Shutdown::new(
        lameduck_core::Config::default(),
        lameduck::Timers::of::<R>(),
    );
    lameduck::signals::drain_on_signals(&shutdown).unwrap();
    let listener =
        lameduck::Listener::<R>::track(&shutdown, lameduck::inherit::Listener::Tcp(bind(addr)))
            .unwrap();
    R::spawn(lameduck_hyper::serve(
        listener,
        hyper::service::service_fn(hello),
    ));
    shutdown.drained().await;
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, variant, runtime, addr] = &args[..] else {
        eprintln!("usage: async_io_server plain|lameduck smol|async-std ADDR");
        std::process::exit(2);
    };
    match (variant.as_str(), runtime.as_str()) {
        ("plain", "smol") => smol::block_on(plain(addr, |task| smol::spawn(task).detach())),
        ("plain", "async-std") => async_std::task::block_on(plain(addr, |task| {
            async_std::task::spawn(task);
        })),
        ("lameduck", "smol") => smol::block_on(with_lameduck::<lameduck::smol::Smol>(addr)),
        ("lameduck", "async-std") => {
            async_std::task::block_on(with_lameduck::<lameduck::async_std::AsyncStd>(addr))
        }
        other => panic!("{other:?}: plain|lameduck smol|async-std"),
    }
}
