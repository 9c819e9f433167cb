//! A gRPC client for the `grpc` example, on tonic's own transport — what the tests run.
//!
//! ```text
//! grpc_client say-hello URL                 # one unary call; prints the reply
//! grpc_client health URL [SERVICE]          # prints SERVING / NOT_SERVING
//! grpc_client watch URL [SERVICE]           # Health/Watch: prints each status as it comes
//! grpc_client load URL SECONDS CHANNELS     # unary calls over persistent channels
//! grpc_client stream URL listen|ignore      # SayHellos; prints each reply, then how it ended
//! ```
//!
//! `load` prints `calls N failed M stuck S` and exits 1 if any call failed. A call that never
//! left the client — refused by the server's GOAWAY, or queued for a connection that closed
//! before sending it — is retried on the reconnected channel (at most 3 times), as gRPC's
//! transparent retry does; every other error counts, and so does a call still unanswered at
//! its deadline ([`DEADLINE`]; `stuck` counts those: without a deadline, one call hung for
//! over a minute once in CI). The seed experiment runs this load and the same with gRPC's C
//! core (`tests/clients/grpc_load.py`).
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

pub mod helloworld {
    tonic::include_proto!("helloworld");
}

use helloworld::greeter_client::GreeterClient;
use helloworld::{HelloRequest, HellosRequest};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["say-hello", url] => say_hello(url).await,
        ["health", url] => health(url, "").await,
        ["health", url, service] => health(url, service).await,
        ["watch", url] => watch(url, "").await,
        ["watch", url, service] => watch(url, service).await,
        ["load", url, seconds, channels] => {
            load(
                url,
                seconds.parse().unwrap_or(5),
                channels.parse().unwrap_or(4),
            )
            .await
        }
        ["stream", url, mode @ ("listen" | "ignore")] => stream(url, mode == "listen").await,
        _ => Err("usage: grpc_client say-hello|health|load|stream URL ...".into()),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("grpc_client: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

type Error = Box<dyn std::error::Error>;

/// How long `load` waits for a call, as a production client's deadline: the server answers
/// at once, and a restart delays a call by milliseconds.
const DEADLINE: Duration = Duration::from_secs(10);

async fn channel(url: &str) -> Result<Channel, Error> {
    Ok(Endpoint::from_shared(url.to_owned())?.connect().await?)
}

async fn say_hello(url: &str) -> Result<(), Error> {
    let mut client = GreeterClient::new(channel(url).await?);
    let reply = client
        .say_hello(HelloRequest { name: "you".into() })
        .await?;
    println!("{}", reply.into_inner().message);
    Ok(())
}

async fn health(url: &str, service: &str) -> Result<(), Error> {
    let mut client = HealthClient::new(channel(url).await?);
    let reply = client
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await?;
    let status = tonic_health::pb::health_check_response::ServingStatus::try_from(
        reply.into_inner().status,
    )?;
    println!("{}", status.as_str_name());
    Ok(())
}

async fn watch(url: &str, service: &str) -> Result<(), Error> {
    use std::io::Write;
    let mut client = HealthClient::new(channel(url).await?);
    let mut statuses = client
        .watch(HealthCheckRequest {
            service: service.into(),
        })
        .await?
        .into_inner();
    while let Some(reply) = statuses.message().await? {
        let status =
            tonic_health::pb::health_check_response::ServingStatus::try_from(reply.status)?;
        // Flushed at once: whoever reads this waits for each line.
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{}", status.as_str_name())?;
        stdout.flush()?;
    }
    Ok(())
}

/// Whether a failed call never left the client, so retrying it cannot run it twice: its
/// stream was refused by the server's GOAWAY (RFC 9113 §6.8: unprocessed), or it was still
/// queued for a connection that closed before sending it (hyper hands such a request back
/// unsent, as `Canceled: connection closed`). gRPC's own clients retry both transparently;
/// tonic does not.
fn never_sent(status: &tonic::Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(status);
    while let Some(e) = source {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return h2.is_go_away() && h2.is_remote() && h2.reason() == Some(h2::Reason::NO_ERROR)
                || h2.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        if let Some(hyper) = e.downcast_ref::<hyper::Error>() {
            if hyper.is_canceled() {
                return true;
            }
        }
        source = e.source();
    }
    false
}

async fn load(url: &str, seconds: u64, channels: usize) -> Result<(), Error> {
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..channels {
        let mut client = GreeterClient::new(channel(url).await?);
        tasks.push(tokio::spawn(async move {
            let (mut calls, mut failed, mut stuck) = (0u64, 0u64, 0u64);
            while Instant::now() < until {
                calls += 1;
                let call = async {
                    let request = || HelloRequest {
                        name: "load".into(),
                    };
                    let mut result = client.say_hello(request()).await;
                    // At most a few times, so a server that refuses everything still fails.
                    for _ in 0..3 {
                        match &result {
                            Err(status) if never_sent(status) => {
                                result = client.say_hello(request()).await;
                            }
                            _ => break,
                        }
                    }
                    result
                };
                let result = match tokio::time::timeout(DEADLINE, call).await {
                    Ok(result) => result,
                    Err(_) => {
                        stuck += 1;
                        Err(tonic::Status::deadline_exceeded(format!(
                            "no answer within {DEADLINE:?}"
                        )))
                    }
                };
                if let Err(status) = result {
                    if failed < 3 {
                        eprintln!("grpc_client: call failed: {status:?}");
                    }
                    failed += 1;
                }
            }
            (calls, failed, stuck)
        }));
    }
    let (mut calls, mut failed, mut stuck) = (0, 0, 0);
    for task in tasks {
        let (c, f, s) = task.await?;
        calls += c;
        failed += f;
        stuck += s;
    }
    println!("calls {calls} failed {failed} stuck {stuck}");
    if failed > 0 {
        return Err(format!("{failed} of {calls} calls failed").into());
    }
    Ok(())
}

async fn stream(url: &str, listen: bool) -> Result<(), Error> {
    let mut client = GreeterClient::new(channel(url).await?);
    let request = HellosRequest {
        name: "stream".into(),
        interval_ms: 50,
        ends_on_shutdown: listen,
    };
    let mut replies = client.say_hellos(request).await?.into_inner();
    loop {
        match replies.message().await {
            Ok(Some(reply)) => {
                use std::io::Write;
                let mut stdout = std::io::stdout().lock();
                writeln!(stdout, "{}", reply.message)?;
                stdout.flush()?;
            }
            Ok(None) => {
                println!("ended: ok");
                return Ok(());
            }
            Err(status) => {
                println!("ended: {:?}", status.code());
                return Ok(());
            }
        }
    }
}
