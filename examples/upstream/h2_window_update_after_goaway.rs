//! Reproduces h2's PROTOCOL_ERROR on a WINDOW_UPDATE for a stream above the final GOAWAY
//! (docs/upstream/h2-window-update-after-goaway.md): plain hyper, no lameduck.
//!
//! ```sh
//! cargo run --example upstream_h2_window_update_after_goaway
//! ```
//!
//! A hyper HTTP/2 server holds stream 1 open (its handler answers after 300 ms) and begins
//! a graceful shutdown: GOAWAY(2^31-1) and a PING. This raw client answers the PING; h2 then
//! sends the final GOAWAY naming stream 1. The client — as gRPC's C core does — opens
//! stream 3 with a WINDOW_UPDATE right after its HEADERS. RFC 9113 §6.8: frames on streams
//! above the last one are to be ignored. h2 ignores the HEADERS but answers the
//! WINDOW_UPDATE with GOAWAY(PROTOCOL_ERROR), and stream 1 — which it promised to serve —
//! is never answered. Exits 1 when it reproduces, 0 when stream 1 is answered.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const HEADERS: u8 = 1;
const DATA: u8 = 0;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const WINDOW_UPDATE: u8 = 8;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// `GET /` with the static table's entries (:method GET, :scheme http, :path /) and a
/// literal :authority, END_STREAM | END_HEADERS.
fn get(stream: u32) -> Vec<u8> {
    frame(HEADERS, 0x5, stream, &[0x82, 0x86, 0x84, 0x01, 0x01, b'x'])
}

async fn read_frame(client: &mut TcpStream) -> Option<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    client.read_exact(&mut head).await.ok()?;
    let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    client.read_exact(&mut payload).await.ok()?;
    Some((head[3], head[4], stream, payload))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (started, mut first_request) = tokio::sync::mpsc::channel::<()>(4);
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let service = hyper::service::service_fn(move |_: Request<hyper::body::Incoming>| {
            let started = started.clone();
            async move {
                let _ = started.send(()).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hello\n"))))
            }
        });
        let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(tcp), service);
        let mut conn = std::pin::pin!(conn);
        tokio::select! {
            result = conn.as_mut() => return result,
            _ = first_request.recv() => conn.as_mut().graceful_shutdown(),
        }
        conn.await
    });

    let mut client = TcpStream::connect(addr).await?;
    client
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await?;
    client.write_all(&frame(SETTINGS, 0, 0, &[])).await?;
    client.write_all(&get(1)).await?;
    let mut goaways = Vec::new();
    let mut answered = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while let Ok(Some((kind, flags, stream, payload))) =
        tokio::time::timeout_at(deadline, read_frame(&mut client)).await
    {
        match kind {
            SETTINGS if flags & 1 == 0 => client.write_all(&frame(SETTINGS, 1, 0, &[])).await?,
            PING if flags & 1 == 0 => client.write_all(&frame(PING, 1, 0, &payload)).await?,
            GOAWAY => {
                let last = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
                    & 0x7fff_ffff;
                let code = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
                println!("server: GOAWAY last stream {last}, error code {code}");
                goaways.push((last, code));
                if last == 1 && code == 0 {
                    // The final GOAWAY: a stream opened now is one the server ignores.
                    let mut late = get(3);
                    late.extend(frame(WINDOW_UPDATE, 0, 3, &65_535u32.to_be_bytes()));
                    client.write_all(&late).await?;
                    println!("client: HEADERS and WINDOW_UPDATE on stream 3");
                }
            }
            HEADERS | DATA if stream == 1 => {
                if !answered {
                    println!("server: stream 1 answered");
                }
                answered = true;
            }
            _ => {}
        }
    }
    let _ = server.await;
    if !answered && goaways.iter().any(|&(_, code)| code == 1) {
        println!("REPRODUCED: GOAWAY(PROTOCOL_ERROR), stream 1 never answered");
        std::process::exit(1);
    }
    println!("not reproduced: stream 1 was answered");
    Ok(())
}
