//! The repository's example filters and misbehaving modules, for unit
//! tests (`.wat` fixtures are assembled on the fly).

use std::path::Path;

/// A shipped filter from `filters/dist`.
pub(crate) fn dist(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("filters/dist")
        .join(format!("{name}.wasm"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e} (run filters/build.sh)", p.display()))
}

/// A module from `filters/fixtures`.
pub(crate) fn fixture(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("filters/fixtures")
        .join(name);
    if name.ends_with(".wat") {
        wat::parse_file(&p).unwrap()
    } else {
        std::fs::read(&p).unwrap()
    }
}
