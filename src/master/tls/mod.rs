//! The master's TLS: the certificate both ports serve, and the listener
//! that speaks TLS in front of them ([`listener`]).
//!
//! With `serve --tls` and no certificate of the operator's, the master is
//! its own CA:
//!
//! ```text
//! <data-dir>/tls/             mode 0700
//!   ca.pem                    the CA: what workers and clients on other
//!                             machines need (`--ca-file`); made once
//!   ca-key.pem                its key, mode 0600; never leaves this place
//!   cert.pem, key.pem         the certificate served, signed by the CA,
//!                             made again at every start
//! ```
//!
//! The served certificate is made at every start because the names it must
//! carry follow the flags: `localhost`, `127.0.0.1`, `::1`, this machine's
//! hostname, the address of each port when it is a specific one, and every
//! `--tls-name`. Clients pin the CA, so a new certificate changes nothing
//! for them; the CA itself is kept as long as its files are.
//!
//! With `--tls-cert`/`--tls-key` the operator's chain is served as it is,
//! and `cert.pem` is a copy of it: the master's own children and the CLI on
//! this machine pin it ([`crate::tls::Trust::Pinned`]), whatever names it
//! carries.

pub mod listener;

use crate::datadir::DataDir;
use crate::datadir::DataDirError;
use crate::tls::{TlsError, file_error, provider, read_certificates};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The folder under the data directory.
pub const TLS_DIR: &str = "tls";
pub use crate::datadir::{TLS_CA as CA_FILE, TLS_CERT as CERT_FILE};
const CA_KEY_FILE: &str = "tls/ca-key.pem";
const KEY_FILE: &str = "tls/key.pem";

/// Where the served certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertSource {
    /// Made by the master's own CA, with these names besides the ones it
    /// always carries.
    Generate {
        /// `--tls-name`: host names and addresses others dial.
        names: Vec<String>,
    },
    /// The operator's chain and key (PEM).
    Files {
        /// The certificate chain, leaf first.
        cert: PathBuf,
        /// Its private key.
        key: PathBuf,
    },
}

/// Why TLS could not be set up for serving.
#[derive(Debug, thiserror::Error)]
pub enum ServerTlsError {
    /// A certificate or key is unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// `<data-dir>/tls/` could not be written.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
}

/// What both ports serve. Cheap to clone.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
    /// The names the generated certificate carries (empty for the
    /// operator's).
    pub names: Vec<String>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("names", &self.names)
            .finish()
    }
}

impl ServerTls {
    /// Makes (or reads) the certificate, writes `tls/` in `dir`, and builds
    /// the server configuration. `bound` are the addresses the ports are
    /// bound to (unspecified ones are left out of the names).
    ///
    /// Fails when a file cannot be read, parsed or written, or the key does
    /// not match the certificate.
    pub fn prepare(
        dir: &DataDir,
        source: &CertSource,
        bound: &[IpAddr],
    ) -> Result<Self, ServerTlsError> {
        let tls_dir = dir.path().join(TLS_DIR);
        std::fs::create_dir_all(&tls_dir).map_err(crate::datadir::io("create", &tls_dir))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tls_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(crate::datadir::io("set permissions of", &tls_dir))?;
        let (chain_pem, key_pem, names) = match source {
            CertSource::Generate { names } => {
                let names = served_names(names, bound);
                let (cert, key) = generate(dir, &names)?;
                dir.write_atomic(KEY_FILE, key.as_bytes(), 0o600)?;
                (cert, key, names)
            }
            CertSource::Files { cert, key } => {
                let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| file_error(p, e));
                (read(cert)?, read(key)?, Vec::new())
            }
        };
        dir.write_atomic(CERT_FILE, chain_pem.as_bytes(), 0o644)?;
        let cert_path = dir.path().join(CERT_FILE);
        let chain = read_certificates(&cert_path)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| file_error(&dir.path().join(KEY_FILE), e))?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
            .map_err(TlsError::from)?;
        // `h2` for the workers' DB client, `http/1.1` for WebSockets and
        // REST: both ports serve both.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(ServerTls {
            config: Arc::new(config),
            names,
        })
    }

    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(Arc::clone(&self.config))
    }
}

/// The names a generated certificate carries.
fn served_names(extra: &[String], bound: &[IpAddr]) -> Vec<String> {
    let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    names.extend(crate::hostname::hostname());
    names.extend(
        bound
            .iter()
            .filter(|ip| !ip.is_unspecified())
            .map(|ip| ip.to_string()),
    );
    names.extend(extra.iter().cloned());
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

fn rcgen_error(e: rcgen::Error) -> TlsError {
    TlsError::Generate(e.to_string())
}

/// The CA's parameters, made from its key alone, so the CA can sign again
/// without parsing its certificate: a certificate names its issuer by this
/// distinguished name and is checked with this key. The name carries a
/// digest of the key, so two masters' CAs never share a name (a client
/// trusting the wrong one is told "unknown issuer", not "bad signature").
fn ca_params(key: &KeyPair) -> CertificateParams {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(key.public_key_raw());
    let id: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Meshplay");
    dn.push(DnType::CommonName, format!("Meshplay master CA {id}"));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2045, 1, 1);
    params
}

/// The CA's key: read, or made with `ca.pem` on first use.
fn ca_key(dir: &DataDir) -> Result<KeyPair, ServerTlsError> {
    let key_path = dir.path().join(CA_KEY_FILE);
    match std::fs::read_to_string(&key_path) {
        Ok(pem) => Ok(KeyPair::from_pem(&pem).map_err(|e| file_error(&key_path, e))?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = KeyPair::generate().map_err(rcgen_error)?;
            let cert = ca_params(&key).self_signed(&key).map_err(rcgen_error)?;
            dir.write_atomic(CA_KEY_FILE, key.serialize_pem().as_bytes(), 0o600)?;
            dir.write_atomic(CA_FILE, cert.pem().as_bytes(), 0o644)?;
            tracing::info!(ca = %dir.path().join(CA_FILE).display(), "made a CA for this master");
            Ok(key)
        }
        Err(e) => Err(file_error(&key_path, e).into()),
    }
}

/// A certificate for `names`, signed by the CA; its PEM and its key's.
fn generate(dir: &DataDir, names: &[String]) -> Result<(String, String), ServerTlsError> {
    let ca_key = ca_key(dir)?;
    if !dir.path().join(CA_FILE).exists() {
        // The key without its certificate: make the certificate again (the
        // same name and key, so it signs what the lost one did).
        let cert = ca_params(&ca_key)
            .self_signed(&ca_key)
            .map_err(rcgen_error)?;
        dir.write_atomic(CA_FILE, cert.pem().as_bytes(), 0o644)?;
    }
    let issuer = Issuer::new(ca_params(&ca_key), ca_key);
    let mut params = CertificateParams::new(names.to_vec()).map_err(rcgen_error)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "meshplay master");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2045, 1, 1);
    let key = KeyPair::generate().map_err(rcgen_error)?;
    let cert = params.signed_by(&key, &issuer).map_err(rcgen_error)?;
    Ok((cert.pem(), key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_certificate_carries_the_bound_names_and_keeps_its_ca() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::create(tmp.path().join("d")).unwrap();
        let source = CertSource::Generate {
            names: vec!["master.example".into()],
        };
        let bound = ["10.1.2.3".parse().unwrap(), "0.0.0.0".parse().unwrap()];
        let tls = ServerTls::prepare(&dir, &source, &bound).unwrap();
        assert!(tls.names.contains(&"10.1.2.3".to_string()));
        assert!(tls.names.contains(&"master.example".to_string()));
        assert!(!tls.names.contains(&"0.0.0.0".to_string()));
        let ca = std::fs::read(dir.path().join(CA_FILE)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        for secret in [CA_KEY_FILE, KEY_FILE] {
            let mode = std::fs::metadata(dir.path().join(secret))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{secret}");
        }
        let first = std::fs::read(dir.path().join(CERT_FILE)).unwrap();
        ServerTls::prepare(&dir, &source, &bound).unwrap();
        assert_eq!(std::fs::read(dir.path().join(CA_FILE)).unwrap(), ca);
        assert_ne!(std::fs::read(dir.path().join(CERT_FILE)).unwrap(), first);
    }

    #[test]
    fn a_key_that_is_not_pem_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::create(tmp.path().join("d")).unwrap();
        let cert = tmp.path().join("c.pem");
        let key = tmp.path().join("k.pem");
        std::fs::write(&cert, "not a certificate").unwrap();
        std::fs::write(&key, "nor a key").unwrap();
        let e = ServerTls::prepare(&dir, &CertSource::Files { cert, key }, &[]).unwrap_err();
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
    }
}
