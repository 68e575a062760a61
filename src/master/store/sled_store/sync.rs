//! What sled's flush leaves undone, done after it: the step from "the
//! kernel has written it" to "it is on the disk".
//!
//! sled 0.34 on Linux ends a flush of its log (`<store>/db`) with
//! `sync_file_range(WAIT_BEFORE | WRITE | WAIT_AFTER)`: the data pages are
//! handed to the device, but neither the file's size and block map (the
//! log grows) nor the device's volatile write cache are flushed, which
//! `fdatasync` does. And values too large for a log segment (over about
//! 128 KiB: large KV values, uploaded modules) are written as files under
//! `<store>/blobs/` with no sync at all. So an acknowledged write always
//! survived a crash of the master (the page cache outlives the process)
//! but not a power cut. After every flush [`FileSync::sync`] calls
//! `fdatasync` on the log and on every blob file it has not yet synced at
//! its present size, and `fsync` on the blob directory when one appeared.

use crate::master::store::StoreError;
use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The files of one sled store, synced after each of its flushes.
pub(super) struct FileSync {
    log: File,
    blobs: PathBuf,
    /// Blob files already synced, with the length they had then: a blob
    /// seen while it was still being written is synced again.
    synced: Mutex<HashMap<OsString, u64>>,
}

impl FileSync {
    /// For the sled store in `dir`, which must be open already (its log
    /// exists).
    ///
    /// Fails when the log cannot be opened.
    pub(super) fn open(dir: &Path) -> Result<Self, StoreError> {
        let io = |e: std::io::Error| StoreError::Backend(format!("sled log: {e}"));
        Ok(FileSync {
            log: File::open(dir.join("db")).map_err(io)?,
            blobs: dir.join("blobs"),
            synced: Mutex::new(HashMap::new()),
        })
    }

    /// Makes everything sled has flushed durable.
    ///
    /// Fails when a sync fails: the writes waiting on it are then not
    /// acknowledged.
    pub(super) fn sync(&self) -> Result<(), StoreError> {
        let io = |what: &str, e: std::io::Error| StoreError::Backend(format!("{what}: {e}"));
        self.log
            .sync_data()
            .map_err(|e| io("fdatasync of the sled log", e))?;
        let Ok(entries) = std::fs::read_dir(&self.blobs) else {
            return Ok(()); // no blob directory yet
        };
        let mut synced = self.synced.lock().unwrap();
        let mut seen = HashMap::with_capacity(synced.len());
        let mut appeared = false;
        for entry in entries {
            let entry = entry.map_err(|e| io("listing sled blobs", e))?;
            let Ok(meta) = entry.metadata() else {
                continue; // removed meanwhile
            };
            let name = entry.file_name();
            if synced.get(&name) != Some(&meta.len()) {
                match File::open(entry.path()) {
                    Ok(f) => f
                        .sync_data()
                        .map_err(|e| io("fdatasync of a sled blob", e))?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io("opening a sled blob", e)),
                }
                appeared |= !synced.contains_key(&name);
            }
            seen.insert(name, meta.len());
        }
        *synced = seen;
        if appeared {
            File::open(&self.blobs)
                .and_then(|d| d.sync_all())
                .map_err(|e| io("fsync of the sled blob directory", e))?;
        }
        Ok(())
    }
}
