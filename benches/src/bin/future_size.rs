//! Prints the size of the per-connection futures (what a spawned connection task allocates).
fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let shutdown = lameduck::tokio::shutdown(lameduck::Config::default());
        let conn = shutdown.accept().unwrap();
        let (io, _peer) = tokio::io::duplex(64);
        let svc = hyper::service::service_fn(|_req| async {
            Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                bytes::Bytes::new(),
            )))
        });
        let handle = conn.handle();
        let io = hyper_util::rt::TokioIo::new(lameduck::Tracked::new(io, conn));
        let f = lameduck_hyper::serve_io(io, handle, svc);
        println!(
            "lameduck serve_io future: {} bytes",
            std::mem::size_of_val(&f)
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut listener = lameduck::tokio::Listener::from_tcp(&shutdown, listener);
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let stream = listener.accept().await.unwrap().unwrap();
        let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(std::sync::Arc::new(
            rustls::server::ResolvesServerCertUsingSni::new(),
        ));
        let tls = lameduck_hyper::Tls::new(config);
        println!(
            "TLS I/O: {} bytes",
            std::mem::size_of::<<lameduck::tokio::Tokio as lameduck_hyper::TlsRuntime>::TlsIo>()
        );
        let f = lameduck_hyper::serve_tls_connection(stream, tls, svc);
        println!(
            "lameduck serve_tls_connection future: {} bytes",
            std::mem::size_of_val(&f)
        );
        let (io, _peer) = tokio::io::duplex(64);
        let c = hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(io), svc);
        println!(
            "hyper http1 connection: {} bytes",
            std::mem::size_of_val(&c)
        );
    });
}
