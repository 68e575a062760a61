//! Which plugin folders a command's arguments name.
//!
//! An argument is a plugin folder (it holds a `plugin.toml`) or a folder
//! of plugin folders (`plugins/`). No argument is the current folder, or,
//! when that is not a plugin, its `plugins/` subfolder, or its plugin
//! subfolders: what `meshplay test` in a project's root should find.

use crate::author::AuthorError;
use crate::catalogue::folder::read_bundle;
use crate::catalogue::plugin::{Plugin, build};
use std::path::{Path, PathBuf};

/// The plugin folders `args` name, sorted, each once.
///
/// Fails when an argument is neither a plugin folder nor holds one.
pub fn plugin_folders(args: &[PathBuf]) -> Result<Vec<PathBuf>, AuthorError> {
    let mut found = Vec::new();
    if args.is_empty() {
        let here = Path::new(".");
        let start = if is_plugin(here) || !Path::new("plugins").is_dir() {
            here
        } else {
            Path::new("plugins")
        };
        found.extend(in_folder(start)?);
    }
    for arg in args {
        found.extend(in_folder(arg)?);
    }
    // `./greeter` reads better as `greeter` in every line that names it.
    for f in &mut found {
        if let Ok(bare) = f.strip_prefix(".")
            && !bare.as_os_str().is_empty()
        {
            *f = bare.to_owned();
        }
    }
    found.sort();
    found.dedup();
    Ok(found)
}

/// `dir` if it is a plugin, else its plugin subfolders.
fn in_folder(dir: &Path) -> Result<Vec<PathBuf>, AuthorError> {
    if is_plugin(dir) {
        return Ok(vec![dir.to_owned()]);
    }
    let entries = std::fs::read_dir(dir)
        .map_err(|e| AuthorError::Usage(format!("{}: {e}", dir.display())))?;
    let mut plugins: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| is_plugin(p))
        .collect();
    if plugins.is_empty() {
        return Err(AuthorError::Usage(format!(
            "{} holds no plugin: a plugin folder has a plugin.toml (meshplay new plugin NAME makes one)",
            dir.display()
        )));
    }
    plugins.sort();
    Ok(plugins)
}

/// Whether `dir` is a plugin folder (it holds a `plugin.toml`).
pub(crate) fn is_plugin(dir: &Path) -> bool {
    dir.join("plugin.toml").is_file()
}

/// Reads and checks the plugin in `dir` as the master would (manifest,
/// names, the Luau compile of every file).
///
/// Fails with the master's own [`crate::catalogue::plugin::PluginError`]:
/// the file and the line of a syntax error, the key of a bad manifest.
pub fn check(dir: &Path) -> Result<Plugin, AuthorError> {
    Ok(build(&read_bundle(dir)?)?)
}

/// Where filters are by default: `./filters/dist`, when there is one.
pub fn default_filters() -> Option<PathBuf> {
    let dist = PathBuf::from("filters/dist");
    dist.is_dir().then_some(dist)
}

/// Where the author's commands keep compiled filters between runs:
/// `$XDG_CACHE_HOME/meshplay/filters`, else `~/.cache/meshplay/filters`
/// (`None` without a home: each run then compiles again). Only this
/// user's Meshplay commands write there, which is what the worker's cache
/// asks of its directory.
pub fn filter_cache() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("meshplay").join("filters"))
}
