//! TLS with rustls (feature `rustls`): certificates from PEM files, ALPN, and the handshake
//! raced against the lifecycle.
//!
//! A TLS connection is New through its handshake — the handshake's bytes are no request —
//! so the stale-New rule and the deadline end a client that never completes it, and the
//! configuration's [`handshake_timeout`](lameduck_core::Config::handshake_timeout)
//! bounds it while serving. Active begins at the first
//! *decrypted* byte of a request. Closing sends `close_notify`.

use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use hyper::rt::{Read, Write};
#[allow(unused_imports)] // used by the I/O families' implementations
use lameduck_driver::{Decrypted, IoFamily, Runtime, Stream};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::HttpRuntime;

/// A TLS server configuration: rustls's [`ServerConfig`] with ALPN. Cheap to clone. The
/// handshake's timeout is the shutdown's
/// [`Config::handshake_timeout`](lameduck_core::Config::handshake_timeout), with the
/// rest of the timeline.
#[derive(Clone)]
pub struct Tls {
    config: Arc<ServerConfig>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("alpn", &self.alpn())
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// The certificate chain in `cert` and the private key in `key` (PEM files: a chain
    /// leaf first, and a PKCS#8, PKCS#1 or SEC1 key), with ring's crypto, TLS 1.2 and 1.3,
    /// and ALPN offering `h2` and `http/1.1`. Errors name the file and what is wrong with
    /// it: missing or unreadable, no certificate or key in it, or a key that does not
    /// belong to the certificate.
    ///
    /// ```no_run
    /// let tls = lameduck_hyper::Tls::from_pem_files("cert.pem", "key.pem")?;
    /// # Ok::<(), lameduck_hyper::TlsError>(())
    /// ```
    pub fn from_pem_files(cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<Tls, TlsError> {
        let (cert, key) = (cert.as_ref(), key.as_ref());
        let chain = read_pem(cert, |pem| {
            CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>()
        })?;
        if chain.is_empty() {
            return Err(TlsError::NoCertificate(cert.to_owned()));
        }
        let private_key = read_pem(key, |pem| PrivateKeyDer::from_pem_slice(pem).map(Some))
            .or_else(|e| match e {
                TlsError::Pem { .. } => Ok(None),
                other => Err(other),
            })?
            .ok_or_else(|| TlsError::NoKey(key.to_owned()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Rustls)?
            .with_no_client_auth()
            .with_single_cert(chain, private_key)
            .map_err(|e| match e {
                rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
                    cert: cert.to_owned(),
                    key: key.to_owned(),
                },
                other => TlsError::Rustls(other),
            })?;
        Ok(Tls::new(config))
    }

    /// Your own rustls configuration. If it names no ALPN protocols, `h2` and `http/1.1` are
    /// offered (HTTP/2 preferred); otherwise its list is kept.
    pub fn new(mut config: ServerConfig) -> Tls {
        if config.alpn_protocols.is_empty() {
            config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        }
        Tls {
            config: Arc::new(config),
        }
    }

    /// The rustls configuration.
    pub fn config(&self) -> &Arc<ServerConfig> {
        &self.config
    }

    fn alpn(&self) -> Vec<String> {
        self.config
            .alpn_protocols
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect()
    }
}

/// Reads `path` and parses its PEM with `parse`.
fn read_pem<T>(
    path: &Path,
    parse: impl FnOnce(&[u8]) -> Result<T, rustls::pki_types::pem::Error>,
) -> Result<T, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&pem).map_err(|e| TlsError::Pem {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// Why a TLS configuration could not be loaded. Each names the file at fault.
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsError {
    /// The file is missing or unreadable.
    Read {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        source: io::Error,
    },
    /// The file is not valid PEM.
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The certificate file holds no PEM certificate.
    NoCertificate(PathBuf),
    /// The key file holds no PEM private key.
    NoKey(PathBuf),
    /// The private key does not belong to the certificate.
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// rustls refused the certificate, the key or the configuration.
    Rustls(rustls::Error),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Read { path, source } => write!(f, "{}: {source}", path.display()),
            TlsError::Pem { path, reason } => write!(f, "{}: not PEM: {reason}", path.display()),
            TlsError::NoCertificate(path) => {
                write!(f, "{}: no PEM certificate in the file", path.display())
            }
            TlsError::NoKey(path) => {
                write!(f, "{}: no PEM private key in the file", path.display())
            }
            TlsError::KeyMismatch { cert, key } => write!(
                f,
                "{}: the private key does not belong to the certificate in {}",
                key.display(),
                cert.display()
            ),
            TlsError::Rustls(e) => write!(f, "TLS configuration: {e}"),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsError::Read { source, .. } => Some(source),
            TlsError::Rustls(e) => Some(e),
            _ => None,
        }
    }
}

/// The handshake of a runtime's TLS stream.
pub type Handshake<R> =
    Pin<Box<dyn Future<Output = io::Result<<R as TlsRuntime>::TlsIo>> + Send + 'static>>;

mod sealed {
    /// A runtime whose I/O family has a rustls adapter here; unnameable outside this crate.
    pub trait Tls {}
    impl<R: crate::HttpRuntime> Tls for R where R::IoTraits: super::HyperTls<R> {}
}

/// A runtime lameduck serves TLS on: how its tracked stream is wrapped in rustls, with the
/// plaintext read through a [`Decrypted`] (so a request starts at its first decrypted
/// byte). Every [`HttpRuntime`] of an I/O family with a rustls adapter is one (tokio's
/// traits: tokio-rustls; `futures-io`'s: futures-rustls). Sealed, like [`HttpRuntime`].
pub trait TlsRuntime: HttpRuntime + sealed::Tls {
    /// A TLS stream over a tracked stream, as hyper's I/O. Boxed: a rustls stream is
    /// ~1.2 KB, and inline it would be copied into every layer of the connection's task
    /// (measured: a 6.7 KB task).
    type TlsIo: Read + Write + Unpin + Send + 'static;

    /// Runs the server side of the handshake on `stream`.
    fn handshake(config: Arc<ServerConfig>, stream: Stream<Self>) -> Handshake<Self>;
}

impl<R: HttpRuntime> TlsRuntime for R
where
    R::IoTraits: HyperTls<R>,
{
    type TlsIo = <R::IoTraits as HyperTls<R>>::TlsIo;

    fn handshake(config: Arc<ServerConfig>, stream: Stream<Self>) -> Handshake<Self> {
        <R::IoTraits as HyperTls<R>>::handshake(config, stream)
    }
}

/// How rustls wraps a tracked stream of one I/O family, for hyper: written once per family.
/// Sealed, like [`HyperIo`](crate::HyperIo).
pub trait HyperTls<R: Runtime>: IoFamily + crate::runtime::sealed::Family {
    /// The TLS stream as hyper's I/O (boxed, see [`TlsRuntime::TlsIo`]).
    type TlsIo: Read + Write + Unpin + Send + 'static;

    /// Runs the server side of the handshake on `stream`.
    fn handshake(
        config: Arc<ServerConfig>,
        stream: Stream<R>,
    ) -> Pin<Box<dyn Future<Output = io::Result<Self::TlsIo>> + Send + 'static>>;
}

#[cfg(feature = "tokio")]
impl<R: Runtime> HyperTls<R> for lameduck_driver::TokioTraits
where
    Stream<R>: tokio::io::AsyncRead + tokio::io::AsyncWrite,
{
    type TlsIo =
        Box<hyper_util::rt::TokioIo<Decrypted<tokio_rustls::server::TlsStream<Stream<R>>>>>;

    fn handshake(
        config: Arc<ServerConfig>,
        stream: Stream<R>,
    ) -> Pin<Box<dyn Future<Output = io::Result<Self::TlsIo>> + Send + 'static>> {
        let conn = stream.conn().handle();
        let accept = tokio_rustls::TlsAcceptor::from(config).accept(stream);
        Box::pin(async move {
            let tls = accept.await?;
            Ok(Box::new(hyper_util::rt::TokioIo::new(Decrypted::new(
                tls, conn,
            ))))
        })
    }
}

#[cfg(feature = "async-io")]
impl<R: Runtime> HyperTls<R> for lameduck_driver::FuturesTraits
where
    Stream<R>: futures_io::AsyncRead + futures_io::AsyncWrite,
{
    type TlsIo =
        Box<smol_hyper::rt::FuturesIo<Decrypted<futures_rustls::server::TlsStream<Stream<R>>>>>;

    fn handshake(
        config: Arc<ServerConfig>,
        stream: Stream<R>,
    ) -> Pin<Box<dyn Future<Output = io::Result<Self::TlsIo>> + Send + 'static>> {
        let conn = stream.conn().handle();
        let accept = futures_rustls::TlsAcceptor::from(config).accept(stream);
        Box::pin(async move {
            let tls = accept.await?;
            Ok(Box::new(smol_hyper::rt::FuturesIo::new(Decrypted::new(
                tls, conn,
            ))))
        })
    }
}
