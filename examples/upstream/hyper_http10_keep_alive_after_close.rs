//! Reproduces hyper promising keep-alive to an HTTP/1.0 client on a response that says
//! `Connection: close` (docs/upstream/hyper-http10-keep-alive-after-close.md): plain hyper,
//! no lameduck.
//!
//! ```sh
//! cargo run --example upstream_hyper_http10_keep_alive_after_close
//! ```
//!
//! An HTTP/1.0 client asks for keep-alive (`Connection: keep-alive`); the service answers
//! with `Connection: close` (a server draining for a restart does exactly that). hyper
//! writes `Connection: close, keep-alive`, so the client is told both, takes keep-alive,
//! and sends its next request into a socket hyper closes. Exits 1 when it reproduces.

use std::convert::Infallible;

use bytes::Bytes;
use http::header::{CONNECTION, HeaderValue};
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let service = hyper::service::service_fn(|_: Request<hyper::body::Incoming>| async {
            let mut response = Response::new(Full::new(Bytes::from_static(b"hello\n")));
            response
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
            Ok::<_, Infallible>(response)
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(tcp), service)
            .await;
    });
    let mut client = TcpStream::connect(addr).await?;
    client
        .write_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .await?;
    let mut response = Vec::new();
    client.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    println!("{head}\n");
    let connection: Vec<String> = head
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("connection:"))
        .map(|l| l.to_ascii_lowercase())
        .collect();
    let promised = connection.iter().any(|l| l.contains("keep-alive"));
    if promised {
        println!(
            "REPRODUCED: the response says {connection:?}, and the server closed the connection"
        );
        std::process::exit(1);
    }
    println!("not reproduced: no keep-alive promised");
    Ok(())
}
