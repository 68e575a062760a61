//! How the master creates and writes its data directory (the layout, and
//! how clients read it, is [`crate::datadir`]). Writes go through a
//! temporary file and a rename, so a reader never sees half a file, and a
//! secret is created with its final mode, never readable by others, not
//! even for an instant.

use crate::datadir::{
    ADMIN_TOKEN, DataDir, DataDirError, ENDPOINT, Endpoint, io, worker_token_file,
};
use rand::distr::{Alphanumeric, SampleString};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

/// Length of every generated token.
pub const TOKEN_LEN: usize = 64;

/// A fresh random token of [`TOKEN_LEN`] alphanumeric characters.
pub fn fresh_token() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), TOKEN_LEN)
}

impl DataDir {
    /// Creates `path` (mode 0700) if needed and uses it (for the master).
    pub fn create(path: impl Into<PathBuf>) -> Result<Self, DataDirError> {
        let path = path.into();
        fs::create_dir_all(&path).map_err(io("create", &path))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o700))
            .map_err(io("set permissions of", &path))?;
        Ok(DataDir::at(path))
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
        self.write_secret(&worker_token_file(id), token)
    }

    /// Records where the running master listens.
    pub fn write_endpoint(&self, endpoint: &Endpoint) -> Result<(), DataDirError> {
        let json = serde_json::to_vec_pretty(endpoint).expect("an endpoint always serialises");
        self.write_atomic(ENDPOINT, &json, 0o644)
    }

    /// Removes `endpoint.json` if it still names `pid` (a newer master may
    /// have replaced it).
    pub fn remove_endpoint(&self, pid: u32) {
        if self.endpoint().is_ok_and(|e| e.pid == pid) {
            let _ = fs::remove_file(self.path().join(ENDPOINT));
        }
    }

    fn write_secret(&self, name: &str, value: &str) -> Result<PathBuf, DataDirError> {
        self.write_atomic(name, value.as_bytes(), 0o600)?;
        Ok(self.path().join(name))
    }

    /// Writes `name` (a path under the directory) whole or not at all, with
    /// `mode` from its first byte on.
    pub(crate) fn write_atomic(
        &self,
        name: &str,
        bytes: &[u8],
        mode: u32,
    ) -> Result<(), DataDirError> {
        let path = self.path().join(name);
        let file_name = path.file_name().unwrap_or_default().to_string_lossy();
        let tmp = path.with_file_name(format!(".{file_name}.{}", std::process::id()));
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
            tls: false,
        };
        dir.write_endpoint(&e).unwrap();
        assert_eq!(dir.endpoint().unwrap(), e);
        dir.remove_endpoint(8);
        assert!(dir.endpoint().is_ok());
        dir.remove_endpoint(7);
        assert!(dir.endpoint().is_err());
    }
}
