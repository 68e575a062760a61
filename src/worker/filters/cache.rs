//! The on-disk cache of compiled filters: machine code keyed by the
//! module's SHA-256 and the engine's compatibility hash, written atomically
//! (temporary file, then rename), so a restarted worker loads in
//! milliseconds what took a compile.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::{Engine, Module};

/// Where the machine code of the module with `sha256` compiled by `engine`
/// lives under `dir`.
pub fn path(dir: &Path, sha256: &str, engine: &Engine) -> PathBuf {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    dir.join(format!("{sha256}-{:016x}.cwasm", h.finish()))
}

/// The cached module at `path`, if there is a usable one; a bad entry is
/// logged and ignored (the caller compiles again and overwrites it).
pub fn load(engine: &Engine, path: &Path, filter: &str) -> Option<Module> {
    if !path.is_file() {
        return None;
    }
    // SAFETY: only Meshplay workers write this directory (inside the
    // operator's data directory), each file atomically by rename, from a
    // module compiled by an engine of the hash the file name carries;
    // wasmtime also checks the engine's compatibility.
    match unsafe { Module::deserialize_file(engine, path) } {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!(filter, "ignoring a bad cache entry: {e:#}");
            None
        }
    }
}

/// Keeps `module`'s machine code at `path`; a failure only costs the next
/// start a compile, so it is logged, not returned.
pub fn store(path: &Path, module: &Module) {
    let write = || -> std::io::Result<()> {
        let bytes = module.serialize().map_err(std::io::Error::other)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        tracing::warn!(path = %path.display(), "cannot cache a compiled filter: {e}");
    }
}
