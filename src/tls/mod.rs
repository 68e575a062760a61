//! TLS for every connection Meshplay makes: the CLI's and an application's
//! REST calls, the binary client stream, a worker's uplink and its DB
//! calls. The master's side (its certificates, the listener) is
//! `master::tls`.
//!
//! A client trusts the master in one of two ways ([`Trust`]):
//!
//! - [`Trust::Ca`]: the usual way, from another machine. The master's
//!   certificate must chain to a CA in the file (the `ca.pem` that
//!   `serve --tls` makes, or the operator's own) and name the host the
//!   client dialled.
//! - [`Trust::Pinned`]: the certificate the master serves must be exactly
//!   the one in the file. The master's own children and the CLI on the
//!   master's machine use it with `<data-dir>/tls/cert.pem`, which the
//!   master writes at start: the data directory is already what they
//!   trust (it holds the admin token), and pinning works whatever names the
//!   operator's certificate carries.
//!
//! Everything uses ring through rustls (no aws-lc-rs, which needs cmake),
//! and TLS 1.2 or 1.3.
//!
//! Modules:
//!
//! - `pinned`: the certificate check behind `Trust::Pinned`;
//! - `connection`: one type for a client's connection with or without
//!   TLS, so the WebSocket clients (the uplink, the binary client API) have
//!   one type to run over whichever the master speaks.

mod connection;
mod pinned;

pub use connection::Connection;

use rustls::ClientConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::TcpStream;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read or parsed.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// rustls refused the configuration (a key that does not match its
    /// certificate, most likely).
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    /// A certificate could not be made.
    #[error("cannot make a certificate: {0}")]
    Generate(String),
}

pub(crate) fn file_error(path: &Path, message: impl ToString) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        message: message.to_string(),
    }
}

/// How a client decides the master is the master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// Certificates signed by a CA in this PEM file, for the dialled name.
    Ca(PathBuf),
    /// Exactly the (first) certificate in this PEM file, whatever its names.
    Pinned(PathBuf),
}

/// The certificates of a PEM file; fails when it has none.
pub(crate) fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no PEM certificate in it"));
    }
    Ok(certs)
}

/// The crypto every config here is built with.
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client's TLS settings. Cheap to clone.
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient").finish_non_exhaustive()
    }
}

impl TlsClient {
    /// A client that trusts what `trust` says.
    ///
    /// Fails when the file cannot be read or holds no certificate.
    pub fn new(trust: &Trust) -> Result<Self, TlsError> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?;
        let config = match trust {
            Trust::Ca(path) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in read_certificates(path)? {
                    roots.add(cert).map_err(|e| file_error(path, e))?;
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            Trust::Pinned(path) => {
                let cert = read_certificates(path)?.remove(0);
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(pinned::Pinned::new(cert)))
                    .with_no_client_auth()
            }
        };
        Ok(TlsClient {
            config: Arc::new(config),
        })
    }

    pub(crate) fn config(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.config)
    }

    /// Opens TLS over `tcp` to `host` (the name or address the certificate
    /// must carry, for [`Trust::Ca`]).
    ///
    /// Fails when the handshake does, or the master's certificate is not
    /// trusted (the error says why: unknown issuer, wrong name, ...).
    pub async fn handshake(&self, tcp: TcpStream, host: &str) -> std::io::Result<Connection> {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let connector = tokio_rustls::TlsConnector::from(self.config());
        let tls = connector.connect(name, tcp).await?;
        Ok(Connection::Tls(Box::new(tls)))
    }
}

/// `host` of `host:port` (`[::1]:9082` gives `::1`), for the certificate
/// check.
pub fn host_of(authority: &str) -> &str {
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    };
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Connects to `authority` (`host:port`) with `TCP_NODELAY`, then TLS when
/// `tls` is given.
///
/// Fails when the TCP connection or the handshake does.
pub async fn connect(authority: &str, tls: Option<&TlsClient>) -> std::io::Result<Connection> {
    let tcp = TcpStream::connect(authority).await?;
    tcp.set_nodelay(true)?;
    match tls {
        Some(tls) => tls.handshake(tcp, host_of(authority)).await,
        None => Ok(Connection::Plain(tcp)),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_host_of_an_authority() {
        assert_eq!(super::host_of("example.org:9082"), "example.org");
        assert_eq!(super::host_of("10.0.0.1:1"), "10.0.0.1");
        assert_eq!(super::host_of("[::1]:9082"), "::1");
        assert_eq!(super::host_of("localhost"), "localhost");
    }
}
