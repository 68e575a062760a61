//! The plugin catalogue as a worker sees it: manifests and compiled Luau.
//!
//! A plugin is a folder `plugins/<name>/` with a `plugin.toml`:
//!
//! ```toml
//! name = "echo"             # [a-z0-9_-]{1,64}, unique
//! version = "1.0.0"
//! description = "Answers with what it was sent"
//! events = ["echo"]         # event names it handles
//! entry = "init.luau"       # optional, default init.luau
//! [limits]
//! timeout_ms = 2000         # optional cap on one handler call
//! ```
//!
//! and its entry file, a chunk that returns a table of handlers keyed by
//! event name. Sources are compiled to Luau bytecode once, here, so a syntax
//! error is found at load (the plugin is skipped and the error logged) and
//! creating a tenant VM costs no compilation.

use mlua::chunk::Compiler;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What `plugin.toml` declares.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Unique name, `[a-z0-9_-]{1,64}`.
    pub name: String,
    /// Free-form version string.
    pub version: String,
    /// One line for people.
    #[serde(default)]
    pub description: String,
    /// Event names this plugin handles.
    pub events: Vec<String>,
    /// The entry file, relative to the plugin's folder.
    #[serde(default = "default_entry")]
    pub entry: String,
    /// Per-plugin limits.
    #[serde(default)]
    pub limits: PluginLimits,
}

fn default_entry() -> String {
    "init.luau".into()
}

/// Limits a plugin asks for; the worker's own limits still apply on top.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginLimits {
    /// Cap on one handler call, in milliseconds.
    pub timeout_ms: Option<u64>,
}

/// A loaded plugin: its manifest and its entry chunk as bytecode.
#[derive(Debug)]
pub struct Plugin {
    /// The manifest.
    pub manifest: Manifest,
    /// Luau bytecode of the entry file.
    pub bytecode: Vec<u8>,
    /// Where it was loaded from.
    pub dir: PathBuf,
}

impl Plugin {
    /// Whether this plugin handles events named `event`.
    pub fn handles(&self, event: &str) -> bool {
        self.manifest.events.iter().any(|e| e == event)
    }
}

/// Why one plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// `plugin.toml` is not a valid manifest.
    #[error("{path}: {source}")]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong with it.
        source: toml::de::Error,
    },
    /// The manifest parses but says something impossible.
    #[error("{path}: {message}")]
    Invalid {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The entry file does not compile.
    #[error("{path}: {message}")]
    Syntax {
        /// The entry file.
        path: PathBuf,
        /// The compiler's message.
        message: String,
    },
}

/// All the plugins a worker runs, sorted by name.
#[derive(Debug, Default)]
pub struct Catalogue {
    plugins: Vec<Arc<Plugin>>,
}

impl Catalogue {
    /// Loads every plugin folder under `dir`. A broken plugin is reported in
    /// the second value and left out; the others still load. A missing `dir`
    /// is an empty catalogue.
    pub fn load(dir: &Path) -> (Catalogue, Vec<PluginError>) {
        let mut plugins = Vec::new();
        let mut errors = Vec::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return (Catalogue::default(), errors);
            }
            Err(source) => {
                errors.push(PluginError::Io {
                    path: dir.to_path_buf(),
                    source,
                });
                return (Catalogue::default(), errors);
            }
        };
        let mut dirs: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.join("plugin.toml").is_file())
            .collect();
        dirs.sort();
        for dir in dirs {
            match load_one(&dir) {
                Ok(p)
                    if plugins
                        .iter()
                        .any(|q: &Arc<Plugin>| q.manifest.name == p.manifest.name) =>
                {
                    errors.push(PluginError::Invalid {
                        path: dir.join("plugin.toml"),
                        message: format!("duplicate plugin name {:?}", p.manifest.name),
                    })
                }
                Ok(p) => plugins.push(Arc::new(p)),
                Err(e) => errors.push(e),
            }
        }
        plugins.sort_by(|a, b| a.manifest.name.cmp(&b.manifest.name));
        (Catalogue { plugins }, errors)
    }

    /// The plugins that handle `event`, in name order.
    pub fn handling<'a>(&'a self, event: &'a str) -> impl Iterator<Item = &'a Arc<Plugin>> + 'a {
        self.plugins.iter().filter(move |p| p.handles(event))
    }

    /// Every plugin, in name order.
    pub fn all(&self) -> &[Arc<Plugin>] {
        &self.plugins
    }
}

/// Whether `name` is a valid plugin name.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn load_one(dir: &Path) -> Result<Plugin, PluginError> {
    let manifest_path = dir.join("plugin.toml");
    let text = std::fs::read_to_string(&manifest_path).map_err(|source| PluginError::Io {
        path: manifest_path.clone(),
        source,
    })?;
    let manifest: Manifest = toml::from_str(&text).map_err(|source| PluginError::Manifest {
        path: manifest_path.clone(),
        source,
    })?;
    let invalid = |message: String| PluginError::Invalid {
        path: manifest_path.clone(),
        message,
    };
    if !valid_name(&manifest.name) {
        return Err(invalid(format!(
            "name {:?} is not [a-z0-9_-]{{1,64}}",
            manifest.name
        )));
    }
    if manifest.events.is_empty() {
        return Err(invalid("handles no events".into()));
    }
    let entry = Path::new(&manifest.entry);
    if entry.is_absolute() || entry.components().any(|c| c.as_os_str() == "..") {
        return Err(invalid(format!(
            "entry {:?} leaves the plugin folder",
            manifest.entry
        )));
    }
    let entry_path = dir.join(entry);
    let source = std::fs::read(&entry_path).map_err(|source| PluginError::Io {
        path: entry_path.clone(),
        source,
    })?;
    let bytecode = compile(&source).map_err(|message| PluginError::Syntax {
        path: entry_path,
        message,
    })?;
    Ok(Plugin {
        manifest,
        bytecode,
        dir: dir.to_path_buf(),
    })
}

/// Compiles Luau source to bytecode; the error is the compiler's message.
pub fn compile(source: &[u8]) -> Result<Vec<u8>, String> {
    Compiler::new()
        .set_optimization_level(1)
        .compile(source)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, manifest: &str, code: &str) {
        let p = dir.join(name);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("plugin.toml"), manifest).unwrap();
        std::fs::write(p.join("init.luau"), code).unwrap();
    }

    #[test]
    fn good_plugins_load_and_broken_ones_are_reported() {
        let tmp = tempfile::tempdir().unwrap();
        write(
            tmp.path(),
            "a",
            "name='a'\nversion='1'\nevents=['x','y']",
            "return {}",
        );
        write(
            tmp.path(),
            "b",
            "name='b'\nversion='1'\nevents=['y']",
            "return {",
        );
        write(
            tmp.path(),
            "c",
            "name='C!'\nversion='1'\nevents=['y']",
            "return {}",
        );
        write(
            tmp.path(),
            "d",
            "name='d'\nversion=1\nevents=['y']",
            "return {}",
        );
        let (cat, errors) = Catalogue::load(tmp.path());
        assert_eq!(cat.all().len(), 1);
        assert_eq!(cat.handling("y").count(), 1);
        assert_eq!(cat.handling("z").count(), 0);
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(
            errors
                .iter()
                .any(|e| matches!(e, PluginError::Syntax { .. }))
        );
    }

    #[test]
    fn an_entry_outside_the_folder_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        write(
            tmp.path(),
            "a",
            "name='a'\nversion='1'\nevents=['x']\nentry='../../etc/passwd'",
            "",
        );
        let (cat, errors) = Catalogue::load(tmp.path());
        assert!(cat.all().is_empty());
        assert!(errors[0].to_string().contains("leaves the plugin folder"));
    }

    #[test]
    fn the_shipped_plugins_all_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins");
        let (cat, errors) = Catalogue::load(&dir);
        assert!(errors.is_empty(), "{errors:?}");
        assert!(cat.handling("echo").any(|p| p.manifest.name == "echo"));
    }
}
