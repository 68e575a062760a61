//! Plugins and filters as they ship: plugin folders (a `plugin.toml` and
//! `.luau` files) and `.wasm` files in a folder. The master reads its
//! `--plugins` and `--filters` folders here at start; tools read a folder
//! here before they upload it.

use crate::catalogue::name::check_name;
use crate::catalogue::plugin::PluginError;
use crate::mesophyll::db::{FilterModule, PluginBundle};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Reads every folder under `dir` that holds a `plugin.toml`: the manifest
/// and the `.luau` files next to it. A missing `dir` has no plugins.
pub fn read_bundles(dir: &Path) -> (Vec<PluginBundle>, Vec<PluginError>) {
    let mut bundles = Vec::new();
    let mut errors = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (bundles, errors),
        Err(source) => {
            errors.push(PluginError::Io {
                path: dir.to_path_buf(),
                source,
            });
            return (bundles, errors);
        }
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("plugin.toml").is_file())
        .collect();
    dirs.sort();
    for dir in dirs {
        match read_bundle(&dir) {
            Ok(b) => bundles.push(b),
            Err(e) => errors.push(e),
        }
    }
    (bundles, errors)
}

/// How a plugin's test files end (`meshplay test`): they stay with the
/// author and do not ship with the plugin.
pub const TEST_SUFFIX: &str = ".test.luau";

/// Reads one plugin folder: its manifest and its `.luau` files, without
/// the tests ([`TEST_SUFFIX`]).
pub fn read_bundle(dir: &Path) -> Result<PluginBundle, PluginError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PluginError::Io { path, source }
    };
    let manifest_path = dir.join("plugin.toml");
    let manifest = std::fs::read_to_string(&manifest_path).map_err(io(&manifest_path))?;
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        if path.extension().is_some_and(|e| e == "luau") && path.is_file() {
            let name = path
                .file_name()
                .expect("a file has a name")
                .to_string_lossy()
                .into_owned();
            if name.ends_with(TEST_SUFFIX) {
                continue;
            }
            files.insert(name, std::fs::read_to_string(&path).map_err(io(&path))?);
        }
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(PluginBundle {
        name,
        manifest,
        files,
    })
}

/// Reads every `*.wasm` file in `dir` as a filter named by the file's stem,
/// in name order. A file that cannot be read or whose stem is not a valid
/// name is reported in the second value; a missing `dir` has no filters.
pub fn read_modules(dir: &Path) -> (Vec<FilterModule>, Vec<String>) {
    let mut modules = Vec::new();
    let mut problems = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (modules, problems);
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
        .collect();
    paths.sort();
    for path in paths {
        let name = path
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        match check_name(&name).and_then(|()| std::fs::read(&path).map_err(|e| e.to_string())) {
            Ok(bytes) => modules.push(FilterModule { name, bytes }),
            Err(e) => problems.push(format!("filter {}: {e}", path.display())),
        }
    }
    (modules, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_folders_read_whole() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let (bundles, errors) = read_bundles(&root.join("plugins"));
        assert!(errors.is_empty(), "{errors:?}");
        assert!(bundles.iter().any(|b| b.name == "echo"));
        let (modules, problems) = read_modules(&root.join("filters/dist"));
        assert!(problems.is_empty(), "{problems:?}");
        assert!(modules.iter().any(|m| m.name == "redact"));
        assert!(read_bundles(&root.join("no-such-dir")).0.is_empty());
    }
}
