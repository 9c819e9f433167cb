//! `hello` over HTTPS as operators run it (`HELLO_TLS_CERT`, `HELLO_TLS_KEY`, a socket
//! inherited through `SERVER_STARTER_PORT`): clients that connect and never finish a
//! handshake cannot hold a shutdown open past the stale-New rule, and cannot cost the
//! request in flight beside them; bad certificate settings are an error naming the file.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use lameduck_tests::{TestCertificates, read_response, start_hello};

fn certificates() -> &'static TestCertificates {
    static CERTS: OnceLock<TestCertificates> = OnceLock::new();
    CERTS.get_or_init(|| lameduck_tests::test_certificates("hello"))
}

/// A blocking TLS client that trusts the test CA.
fn connect(addr: SocketAddr) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(&certificates().ca).unwrap();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&ca) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tls =
        rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap()).unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    rustls::StreamOwned::new(tls, tcp)
}

fn tls_vars() -> [(&'static str, &'static str); 2] {
    let certs = certificates();
    [
        ("HELLO_TLS_CERT", certs.cert.to_str().unwrap()),
        ("HELLO_TLS_KEY", certs.key.to_str().unwrap()),
    ]
}

/// 200 clients connect and never finish a handshake (half of them send the start of one),
/// while one https request is in flight. At SIGTERM the request is answered, and hello
/// exits about `LAMEDUCK_STALE_NEW` (2 s) after the signal: not before (the handshakes are
/// New, and get their time), not much after (they cannot hold the drain open).
#[test]
fn unfinished_handshakes_end_at_stale_new_and_the_request_in_flight_is_answered() {
    const STALE_NEW: Duration = Duration::from_secs(2);
    let [cert, key] = tls_vars();
    let (mut child, addr, _watchdog) = start_hello(&[
        cert,
        key,
        ("LAMEDUCK_STALE_NEW", "2s"),
        ("LAMEDUCK_DEADLINE", "20s"),
    ]);

    // The request's connection is served first: hello is up, its handshake done.
    let mut client = connect(addr);
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let (head, _) = read_response(&mut client);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    let silent: Vec<TcpStream> = (0..200)
        .map(|i| {
            let mut tcp = TcpStream::connect(addr).unwrap();
            if i % 2 == 0 {
                // The first bytes of a ClientHello record, then nothing.
                tcp.write_all(&[0x16, 0x03, 0x01, 0x02]).unwrap();
            }
            tcp
        })
        .collect();
    // Every silent connection is accepted (New) before the signal. Under load the accept
    // queue can overflow: the kernel then holds the overflow half-open and hands it over a
    // SYN-ACK retransmission (1 s, 3 s) later, and one still half-open when the listener
    // closes is never accepted, so never counted. Scrape until hello has all 200.
    let all_new = Instant::now() + Duration::from_secs(10);
    loop {
        client
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let (head, metrics) = read_response(&mut client);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        if metrics
            .lines()
            .any(|l| l == "lameduck_connections{state=\"new\"} 200")
        {
            break;
        }
        assert!(
            Instant::now() < all_new,
            "hello has not accepted the 200 silent connections:\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    client
        .write_all(b"GET /sleep?ms=1500 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    client.flush().unwrap();
    let in_flight = std::thread::spawn(move || {
        let (head, body) = read_response(&mut client);
        (head, body, Instant::now())
    });
    let term = Instant::now();
    lameduck_tests::signal_group(child.id(), "TERM");

    let (head, body, answered) = in_flight.join().unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.starts_with("from pid"), "{body}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "answered while draining: {head}"
    );
    let status = child.wait().unwrap();
    let exited = term.elapsed();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        answered.duration_since(term) < STALE_NEW,
        "the request waited for the handshakes: {:?}\n{stderr}",
        answered.duration_since(term)
    );
    assert!(
        exited >= STALE_NEW - Duration::from_millis(100)
            && exited < STALE_NEW + Duration::from_secs(1),
        "hello exited {exited:?} after SIGTERM, stale_new is {STALE_NEW:?}\n{stderr}"
    );
    assert!(stderr.contains("closed_stale: 200,"), "{stderr}");
    // Stale handshakes are closed by the rules, not cut: a clean drain.
    assert!(status.success(), "{status:?}\n{stderr}");
    drop(silent);
}

/// A bad certificate setting stops hello before it serves, naming the file or variable.
#[test]
fn bad_certificate_settings_are_an_error_naming_the_file() {
    let certs = certificates();
    let missing = certs.cert.with_file_name("nowhere.pem");
    let cases: [(Vec<(&str, &str)>, String); 3] = [
        (
            vec![
                ("HELLO_TLS_CERT", missing.to_str().unwrap()),
                ("HELLO_TLS_KEY", certs.key.to_str().unwrap()),
            ],
            missing.display().to_string(),
        ),
        (
            vec![
                ("HELLO_TLS_CERT", certs.cert.to_str().unwrap()),
                ("HELLO_TLS_KEY", certs.other_key.to_str().unwrap()),
            ],
            format!(
                "{}: the private key does not belong",
                certs.other_key.display()
            ),
        ),
        (
            vec![("HELLO_TLS_CERT", certs.cert.to_str().unwrap())],
            "HELLO_TLS_KEY".into(),
        ),
    ];
    for (vars, expected) in cases {
        let (mut child, _addr, _watchdog) = start_hello(&vars);
        let status = child.wait().unwrap();
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        assert_eq!(status.code(), Some(2), "{vars:?}: {stderr}");
        assert!(
            stderr.contains(&expected),
            "{vars:?}: expected {expected:?} in {stderr}"
        );
    }
}
