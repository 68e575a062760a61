//! The data directory's layout, and what clients read from it to find a
//! running master without flags.
//!
//! ```text
//! <data-dir>/                 mode 0700
//!   admin-token               the REST API's bearer token, mode 0600,
//!                             created on first start
//!   endpoint.json             {"api_addr", "mesophyll_addr", "pid", "tls"}
//!                             of the running master; written once it
//!                             listens, removed when it stops
//!   tls/                      with `serve --tls`: the CA and the served
//!                             certificate (see `master::tls`)
//!   worker-token-<id>         the token of an external worker
//!                             (`--external-workers`), mode 0600
//!   store/                    the sled store
//!   cache/filters/            compiled filters, by hash
//! ```
//!
//! Only the master writes here (`master::datadir` has how); the CLI, the
//! examples and external workers read.

use serde::{Deserialize, Serialize};
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub(crate) const ADMIN_TOKEN: &str = "admin-token";
pub(crate) const ENDPOINT: &str = "endpoint.json";
/// With `serve --tls`: the master's own CA, what other machines trust.
pub const TLS_CA: &str = "tls/ca.pem";
/// With `serve --tls`: the certificate the master serves, what local
/// clients pin.
pub const TLS_CERT: &str = "tls/cert.pem";

/// The name of worker `id`'s token file.
pub(crate) fn worker_token_file(id: u32) -> String {
    format!("worker-token-{id}")
}

/// A failure to read or write the data directory.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// A file operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What we were doing.
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// `endpoint.json` exists but is not what a master writes.
    #[error("{path} is not a valid endpoint file: {source}")]
    BadEndpoint {
        /// The file.
        path: PathBuf,
        /// Why it does not parse.
        source: serde_json::Error,
    },
    /// The admin token file exists but is empty.
    #[error("{0} is empty; delete it to get a new token")]
    EmptyToken(PathBuf),
}

/// Where a running master listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The REST API.
    pub api_addr: SocketAddr,
    /// The Mesophyll hub.
    pub mesophyll_addr: SocketAddr,
    /// The master's process id.
    pub pid: u32,
    /// Whether both ports speak TLS (clients then pin `tls/cert.pem`).
    #[serde(default)]
    pub tls: bool,
}

/// The data directory of one master.
#[derive(Debug, Clone)]
pub struct DataDir {
    path: PathBuf,
}

/// `MESHPLAY_DATA_DIR` when it is set, else [`default_path`]: where a
/// program that is not the CLI (an example, a tool) finds the master, as
/// the CLI does.
pub fn path_from_env() -> PathBuf {
    std::env::var_os("MESHPLAY_DATA_DIR").map_or_else(default_path, PathBuf::from)
}

/// `$HOME/.meshplay`, or `./.meshplay` when `HOME` is unset.
pub fn default_path() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".meshplay")
}

impl DataDir {
    /// Uses `path` without touching the disk (for clients).
    pub fn at(path: impl Into<PathBuf>) -> Self {
        DataDir { path: path.into() }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The admin token file's path.
    pub fn admin_token_path(&self) -> PathBuf {
        self.path.join(ADMIN_TOKEN)
    }

    /// Reads the admin token.
    pub fn admin_token(&self) -> Result<String, DataDirError> {
        let path = self.admin_token_path();
        let token = fs::read_to_string(&path).map_err(io("read", &path))?;
        let token = token.trim().to_owned();
        if token.is_empty() {
            return Err(DataDirError::EmptyToken(path));
        }
        Ok(token)
    }

    /// Reads an external worker's token.
    pub fn worker_token(&self, id: u32) -> Result<String, DataDirError> {
        let path = self.path.join(worker_token_file(id));
        fs::read_to_string(&path)
            .map(|t| t.trim().to_owned())
            .map_err(io("read", &path))
    }

    /// Where the running master listens.
    pub fn endpoint(&self) -> Result<Endpoint, DataDirError> {
        let path = self.path.join(ENDPOINT);
        let bytes = fs::read(&path).map_err(io("read", &path))?;
        serde_json::from_slice(&bytes).map_err(|source| DataDirError::BadEndpoint { path, source })
    }
}

pub(crate) fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DataDirError {
    let path = path.to_owned();
    move |source| DataDirError::Io {
        action,
        path,
        source,
    }
}
