//! HTTPS through rustls, seen from a real TLS client over loopback: certificates from PEM
//! files with errors that name the file, a handshake that is New (stale-New and the
//! handshake timeout end a client that never completes it), Active from the first
//! *decrypted* byte, ALPN for HTTP/2, and `close_notify` on close.

mod common;

use common::until;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use lameduck::{Config, Shutdown};
use lameduck_hyper::{Tls, TlsError};
use lameduck_tests::TestCertificates;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

fn certificates() -> &'static TestCertificates {
    static CERTS: OnceLock<TestCertificates> = OnceLock::new();
    CERTS.get_or_init(|| lameduck_tests::test_certificates("hyper"))
}

async fn app(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = format!("{} {:?}\n", req.uri().path(), req.version());
    Ok(Response::new(Full::new(Bytes::from(body))))
}

async fn start(config: Config, tls: Tls) -> (Shutdown, SocketAddr) {
    let (shutdown, listener, addr) = common::listen(config).await;
    tokio::spawn(lameduck_hyper::serve_tls(
        listener,
        tls,
        hyper::service::service_fn(app),
    ));
    (shutdown, addr)
}

fn tls() -> Tls {
    let certs = certificates();
    Tls::from_pem_files(&certs.cert, &certs.key).unwrap()
}

/// A client that trusts the test CA and offers `alpn`.
async fn connect(addr: SocketAddr, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(&certificates().ca).unwrap();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&ca) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .expect("the handshake completes")
}

#[test]
fn certificate_errors_name_the_file_and_what_is_wrong() {
    let certs = certificates();
    let dir = certs.cert.parent().unwrap();
    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let missing = dir.join("missing.pem");
    let message = |cert: &std::path::Path, key: &std::path::Path| {
        let e = Tls::from_pem_files(cert, key).unwrap_err();
        (e.to_string(), e)
    };

    let (text, e) = message(&missing, &certs.key);
    assert!(matches!(e, TlsError::Read { .. }), "{e:?}");
    assert!(
        text.starts_with(&format!("{}: ", missing.display())),
        "{text}"
    );

    let (text, e) = message(&junk, &certs.key);
    assert!(matches!(e, TlsError::NoCertificate(_)), "{e:?}");
    assert!(text.contains(&junk.display().to_string()), "{text}");

    let (text, e) = message(&certs.cert, &junk);
    assert!(matches!(e, TlsError::NoKey(_)), "{e:?}");
    assert!(text.contains(&junk.display().to_string()), "{text}");

    // The key where the certificate belongs, and the other way round.
    let (_, e) = message(&certs.key, &certs.cert);
    assert!(matches!(e, TlsError::NoCertificate(_)), "{e:?}");

    let (text, e) = message(&certs.cert, &certs.other_key);
    assert!(matches!(e, TlsError::KeyMismatch { .. }), "{e:?}");
    assert!(
        text.contains(&certs.other_key.display().to_string())
            && text.contains(&certs.cert.display().to_string())
            && text.contains("does not belong"),
        "{text}"
    );
    assert!(Tls::from_pem_files(&certs.cert, &certs.key).is_ok());
}

#[tokio::test]
async fn a_handshake_is_new_and_a_request_starts_at_its_first_decrypted_byte() {
    let (shutdown, addr) = start(Config::default(), tls()).await;
    let mut client = connect(addr, &[b"http/1.1"]).await;
    assert_eq!(client.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    // The whole handshake was read and answered: records, not a request.
    until(&shutdown, "accepted", |c| c.new == 1).await;
    assert_eq!(shutdown.counts().active, 0, "{:?}", shutdown.counts());

    client.write_all(b"G").await.unwrap();
    client.flush().await.unwrap();
    until(&shutdown, "Active at the first decrypted byte", |c| {
        c.active == 1
    })
    .await;

    client
        .write_all(b"ET /tls HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = client.read(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(
        text.starts_with("HTTP/1.1 200") && text.ends_with("/tls HTTP/1.1\n"),
        "{text}"
    );
    until(&shutdown, "Idle after the response", |c| c.idle == 1).await;
}

#[tokio::test]
async fn alpn_h2_serves_http2() {
    let (_shutdown, addr) = start(Config::default(), tls()).await;
    let client = connect(addr, &[b"h2", b"http/1.1"]).await;
    assert_eq!(client.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(client),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let request = Request::get("https://localhost/h2")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(&body[..], b"/h2 HTTP/2.0\n");
}

#[tokio::test]
async fn closing_sends_close_notify() {
    let (_shutdown, addr) = start(Config::default(), tls()).await;
    let mut client = connect(addr, &[b"http/1.1"]).await;
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    // rustls reports a TCP end without close_notify as UnexpectedEof (a truncation attack
    // would look the same); a clean end is Ok.
    let mut response = String::new();
    let read = client.read_to_string(&mut response).await;
    assert!(read.is_ok(), "{read:?} after {response:?}");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

#[tokio::test]
async fn a_client_that_never_completes_its_handshake_is_closed_by_the_timeout_while_serving() {
    let config = Config::default().with_handshake_timeout(Duration::from_millis(300));
    let (shutdown, addr) = start(config, tls()).await;
    let mut silent = TcpStream::connect(addr).await.unwrap();
    // Half a ClientHello's record header, then nothing.
    silent.write_all(&[0x16, 0x03]).await.unwrap();
    until(&shutdown, "accepted", |c| c.new == 1).await;
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
        .await
        .expect("the server closes a handshake that never completes");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    until(&shutdown, "closed", |c| c.total() == 0).await;
    // Still serving: a client that completes its handshake is served.
    let mut client = connect(addr, &[b"http/1.1"]).await;
    client
        .write_all(b"GET /after HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    client.read_to_string(&mut response).await.unwrap();
    assert!(response.contains("/after"), "{response}");
}

#[tokio::test]
async fn an_unfinished_handshake_at_shutdown_is_closed_as_stale() {
    let config = Config::default()
        .with_stale_new(Duration::from_millis(300))
        .with_deadline(Some(Duration::from_secs(10)));
    let (shutdown, addr) = start(config, tls()).await;
    let mut silent = TcpStream::connect(addr).await.unwrap();
    until(&shutdown, "accepted", |c| c.new == 1).await;
    shutdown.begin();
    let report = tokio::time::timeout(Duration::from_secs(5), shutdown.drained())
        .await
        .expect("the stale-New rule ends the drain");
    assert_eq!(report.closed_stale, 1, "{report:?}");
    assert!(report.is_clean(), "{report:?}");
    let mut buf = [0u8; 8];
    assert!(matches!(silent.read(&mut buf).await, Ok(0) | Err(_)));
}
