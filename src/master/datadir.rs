//! The master's data directory: where it keeps its secrets and tells clients
//! where it listens.
//!
//! ```text
//! <data-dir>/                 mode 0700
//!   admin-token               the REST API's bearer token, mode 0600,
//!                             created on first start
//!   endpoint.json             {"api_addr", "mesophyll_addr", "pid"} of the
//!                             running master; written once it listens,
//!                             removed when it stops
//!   worker-token-<id>         the token of an external worker
//!                             (`--external-workers`), mode 0600
//!   store/                    the sled store (see `master::store`)
//! ```
//!
//! The CLI reads `endpoint.json` and `admin-token` so that `meshplay
//! dispatch ...` finds a running master without flags. Writes go through a
//! temporary file and a rename, so a reader never sees half a file.

use rand::distr::{Alphanumeric, SampleString};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Length of every generated token.
pub const TOKEN_LEN: usize = 64;

const ADMIN_TOKEN: &str = "admin-token";
const ENDPOINT: &str = "endpoint.json";

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
}

/// The data directory of one master.
#[derive(Debug, Clone)]
pub struct DataDir {
    path: PathBuf,
}

/// `$HOME/.meshplay`, or `./.meshplay` when `HOME` is unset.
pub fn default_path() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".meshplay")
}

/// A fresh random token of [`TOKEN_LEN`] alphanumeric characters.
pub fn fresh_token() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), TOKEN_LEN)
}

impl DataDir {
    /// Uses `path` without touching the disk (for clients).
    pub fn at(path: impl Into<PathBuf>) -> Self {
        DataDir { path: path.into() }
    }

    /// Creates `path` (mode 0700) if needed and uses it (for the master).
    pub fn create(path: impl Into<PathBuf>) -> Result<Self, DataDirError> {
        let path = path.into();
        fs::create_dir_all(&path).map_err(io("create", &path))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o700))
            .map_err(io("set permissions of", &path))?;
        Ok(DataDir { path })
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

    /// Reads the admin token, creating it (mode 0600) on first start.
    pub fn admin_token_or_create(&self) -> Result<String, DataDirError> {
        match self.admin_token() {
            Err(DataDirError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                let token = fresh_token();
                self.write_secret(ADMIN_TOKEN, &token)?;
                Ok(token)
            }
            other => other,
        }
    }

    /// Writes an external worker's token (mode 0600).
    pub fn write_worker_token(&self, id: u32, token: &str) -> Result<PathBuf, DataDirError> {
        self.write_secret(&format!("worker-token-{id}"), token)
    }

    /// Reads an external worker's token.
    pub fn worker_token(&self, id: u32) -> Result<String, DataDirError> {
        let path = self.path.join(format!("worker-token-{id}"));
        fs::read_to_string(&path)
            .map(|t| t.trim().to_owned())
            .map_err(io("read", &path))
    }

    /// Records where the running master listens.
    pub fn write_endpoint(&self, endpoint: &Endpoint) -> Result<(), DataDirError> {
        let json = serde_json::to_vec_pretty(endpoint).expect("an endpoint always serialises");
        self.write_atomic(ENDPOINT, &json, 0o644)
    }

    /// Where the running master listens.
    pub fn endpoint(&self) -> Result<Endpoint, DataDirError> {
        let path = self.path.join(ENDPOINT);
        let bytes = fs::read(&path).map_err(io("read", &path))?;
        serde_json::from_slice(&bytes).map_err(|source| DataDirError::BadEndpoint { path, source })
    }

    /// Removes `endpoint.json` if it still names `pid` (a newer master may
    /// have replaced it).
    pub fn remove_endpoint(&self, pid: u32) {
        if self.endpoint().is_ok_and(|e| e.pid == pid) {
            let _ = fs::remove_file(self.path.join(ENDPOINT));
        }
    }

    fn write_secret(&self, name: &str, value: &str) -> Result<PathBuf, DataDirError> {
        self.write_atomic(name, value.as_bytes(), 0o600)?;
        Ok(self.path.join(name))
    }

    fn write_atomic(&self, name: &str, bytes: &[u8], mode: u32) -> Result<(), DataDirError> {
        let path = self.path.join(name);
        let tmp = self.path.join(format!(".{name}.{}", std::process::id()));
        // The mode is set at creation, so a secret is never readable by
        // others, not even for an instant.
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io("create", &tmp))?;
        file.write_all(bytes).map_err(io("write", &tmp))?;
        file.sync_all().map_err(io("sync", &tmp))?;
        fs::rename(&tmp, &path).map_err(io("rename to", &path))
    }
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DataDirError {
    let path = path.to_owned();
    move |source| DataDirError::Io {
        action,
        path,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_token_is_created_once_and_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::create(tmp.path().join("d")).unwrap();
        let first = dir.admin_token_or_create().unwrap();
        assert_eq!(first.len(), TOKEN_LEN);
        assert_eq!(dir.admin_token_or_create().unwrap(), first);
        let mode = fs::metadata(dir.admin_token_path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn endpoints_round_trip_and_are_only_removed_by_their_owner() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::create(tmp.path()).unwrap();
        let e = Endpoint {
            api_addr: "127.0.0.1:1".parse().unwrap(),
            mesophyll_addr: "127.0.0.1:2".parse().unwrap(),
            pid: 7,
        };
        dir.write_endpoint(&e).unwrap();
        assert_eq!(dir.endpoint().unwrap(), e);
        dir.remove_endpoint(8);
        assert!(dir.endpoint().is_ok());
        dir.remove_endpoint(7);
        assert!(dir.endpoint().is_err());
    }
}
