//! Long-lived connections that leave on cue: an axum server with a WebSocket echo and a
//! server-sent event stream, drained by lameduck.
//!
//! - `GET /ws` upgrades to a WebSocket and echoes every text message. At its ask to leave
//!   (the shutdown's begin, or its own moment in `LAMEDUCK_SPREAD`'s window) the server
//!   sends a Close frame with code 1001 (Going Away) and completes the close handshake.
//!   `GET /ws?ignore_asks` echoes too but never asks: the deadline cuts it at the socket,
//!   and the report counts it.
//! - `GET /events` is an event stream, one event every 50 ms, each `from pid N`; at its
//!   connection's ask lameduck ends it with the chunked body's last chunk — a complete
//!   response; the client reconnects after its `retry` (100 ms). The handler does nothing
//!   for that: every `text/event-stream` response ends at its ask.
//! - `GET /ready` is the readiness probe.
//!
//! The WebSocket handler gets its connection's asks from the [`ConnHandle`] lameduck puts in
//! the request's extensions (axum's `Extension` extractor).
//!
//! It serves the socket from `SERVER_STARTER_PORT` or `LISTEN_FDS`, else the address given
//! (default `127.0.0.1:8080`); `LAMEDUCK_*` tune the drain. It exits 0 when every connection
//! left on its own, 1 when the deadline cut some, 2 on bad settings.
//!
//! ```text
//! cargo run --example websocket -- 127.0.0.1:8080
//! curl -N http://127.0.0.1:8080/events
//! ```
#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Extension, RawQuery};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::{Router, body::Body, routing::get};
use lameduck::{
    Config, ConnHandle, Notices,
    env::ConfigFromEnv,
    tokio::{Listener, shutdown},
};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match serve().await {
        Ok(report) if report.is_clean() => std::process::ExitCode::SUCCESS,
        Ok(_) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("websocket: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn serve() -> Result<lameduck::DrainReport, Box<dyn std::error::Error>> {
    let shutdown = shutdown(Config::from_env()?);
    let app = Router::new()
        .route("/ws", get(ws))
        .route("/events", get(events))
        .route(
            "/ready",
            get({
                let shutdown = shutdown.clone();
                move || async move { lameduck::hyper::readiness(&shutdown) }
            }),
        );
    let addr = std::env::args().nth(1);
    lameduck::signals::drain_on_signals(&shutdown)?;
    let listener =
        Listener::bind_or_inherit(&shutdown, addr.as_deref().unwrap_or("127.0.0.1:8080"))?;
    eprintln!("websocket: serving");
    lameduck::hyper::serve_tower(listener, app).await;
    let report = shutdown.drained().await;
    eprintln!("websocket {}: drained: {report:?}", std::process::id());
    Ok(report)
}

/// The upgrade: the request carries its connection's handle (every upgrade request does).
async fn ws(
    upgrade: WebSocketUpgrade,
    Extension(conn): Extension<ConnHandle>,
    RawQuery(query): RawQuery,
) -> Response {
    let heeds_asks = query.is_none_or(|q| !q.split('&').any(|p| p == "ignore_asks"));
    upgrade.on_upgrade(move |socket| echo(socket, conn.notices(), heeds_asks))
}

/// Echoes text until the client leaves or the drain asks: then a Close with 1001, and the
/// close handshake finished (the client's Close read) before the connection goes.
async fn echo(mut socket: WebSocket, notices: Notices, heeds_asks: bool) {
    let asked = async {
        if heeds_asks {
            notices.wait_notice().await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let mut asked = std::pin::pin!(asked);
    loop {
        tokio::select! {
            message = socket.recv() => match message {
                Some(Ok(Message::Text(text))) => {
                    if socket.send(Message::Text(text)).await.is_err() {
                        return;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
            () = &mut asked => break,
        }
    }
    let close = CloseFrame {
        code: close_code::AWAY,
        reason: "server restarting".into(),
    };
    if socket.send(Message::Close(Some(close))).await.is_err() {
        return;
    }
    // The handshake: read until the client's Close (messages it sent meanwhile are not
    // echoed; the client resends what it did not get back, to the successor).
    while let Some(Ok(message)) = socket.recv().await {
        if let Message::Close(_) = message {
            break;
        }
    }
}

/// An event stream, one event every 50 ms. Nothing here watches the shutdown: lameduck
/// ends a `text/event-stream` body at its connection's ask, with its last chunk.
async fn events() -> Response {
    let pid = std::process::id();
    let ticks = futures_lite::stream::unfold(0u64, move |n| async move {
        let event = if n == 0 {
            format!("retry: 100\nid: 0\ndata: from pid {pid}\n\n")
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            format!("id: {n}\ndata: from pid {pid}\n\n")
        };
        Some((Ok::<_, Infallible>(event), n + 1))
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(ticks),
    )
        .into_response()
}
