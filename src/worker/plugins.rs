//! The plugin catalogue as a worker sees it: manifests, compiled Luau, and
//! the compiled filters the plugins apply.
//!
//! A plugin is a folder `plugins/<name>/` with a `plugin.toml`:
//!
//! ```toml
//! name = "guestbook"        # [a-z0-9_-]{1,64}, unique
//! version = "1.0.0"
//! description = "What it does, in one line"
//! events = ["sign"]         # event names it handles
//! entry = "init.luau"       # optional, default init.luau
//! operations = [            # optional: what it offers, for the
//!   { name = "sign", description = "Sign the guestbook" },  # capability registry
//! ]
//! [limits]
//! timeout_ms = 2000         # optional cap on one handler call
//! [[filters]]               # optional, run in order before the handlers
//! name = "redact"
//! config = { min_digits = 8 }   # passed to the filter as its config
//! on_error = "reject"       # or "continue": what a failing filter means
//! timeout_ms = 50           # optional, the filter's deadline
//! events = ["sign"]         # optional, the events it applies to (all)
//! ```
//!
//! and its `.luau` files; the entry is a chunk that returns a table of
//! handlers keyed by event name. Plugins travel from the master to the
//! workers as [`PluginBundle`]s (manifest and files as text); here they are
//! checked and compiled to Luau bytecode once, so a syntax error is found
//! at load (the plugin is skipped and the error logged) and creating a
//! tenant VM costs no compilation.

use crate::mesophyll::db::PluginBundle;
use crate::worker::filters::CompiledFilter;
use mlua::chunk::Compiler;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What `plugin.toml` declares.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// The entry file, among the plugin's files.
    #[serde(default = "default_entry")]
    pub entry: String,
    /// What the plugin offers, for the master's capability registry.
    #[serde(default)]
    pub operations: Vec<Operation>,
    /// Filters that run, in order, before the handlers.
    #[serde(default)]
    pub filters: Vec<FilterUse>,
    /// Per-plugin limits.
    #[serde(default)]
    pub limits: PluginLimits,
}

fn default_entry() -> String {
    "init.luau".into()
}

/// One operation a plugin offers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operation {
    /// Its name.
    pub name: String,
    /// What it does.
    #[serde(default)]
    pub description: String,
}

/// What a failing filter (trap, timeout, bad verdict) means for the plugin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// The plugin does not run; its result is the filter's error.
    #[default]
    Reject,
    /// The error is logged and the event goes on as it was.
    Continue,
}

/// One filter a plugin applies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterUse {
    /// The filter's name in the catalogue.
    pub name: String,
    /// Its configuration.
    #[serde(default)]
    pub config: serde_json::Value,
    /// What its failure means.
    #[serde(default)]
    pub on_error: OnError,
    /// Its deadline ([`crate::worker::filters::DEFAULT_TIMEOUT`] when
    /// absent).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// The events it applies to; all the plugin's events when absent.
    #[serde(default)]
    pub events: Option<Vec<String>>,
}

impl FilterUse {
    /// Whether this filter runs before events named `event`.
    pub fn applies_to(&self, event: &str) -> bool {
        self.events
            .as_ref()
            .is_none_or(|events| events.iter().any(|e| e == event))
    }
}

/// Limits a plugin asks for; the worker's own limits still apply on top.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
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
    /// What it was built from, to tell an unchanged plugin on reload.
    pub bundle: PluginBundle,
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
    /// The plugin is not valid; `plugin` names it (folder or upload).
    #[error("plugin {plugin}: {message}")]
    Invalid {
        /// Which plugin.
        plugin: String,
        /// What is wrong.
        message: String,
    },
}

/// All the plugins and filters a worker runs, plugins sorted by name. A job
/// holds one `Arc<Catalogue>` from start to end, so a change of catalogue
/// never swaps a plugin or filter under a running event.
#[derive(Debug, Default)]
pub struct Catalogue {
    plugins: Vec<Arc<Plugin>>,
    filters: HashMap<String, Arc<CompiledFilter>>,
    /// The master's revision this catalogue was built from.
    pub revision: u64,
}

impl Catalogue {
    /// Builds a catalogue from `bundles` and already compiled `filters`. A
    /// broken plugin is reported in the second value and left out.
    ///
    /// A plugin whose bundle is the same as in `previous` keeps its very
    /// `Arc`: tenant VMs key their loaded handlers by it, so an unrelated
    /// change does not reset a plugin's state in every VM.
    pub fn build(
        bundles: &[PluginBundle],
        filters: HashMap<String, Arc<CompiledFilter>>,
        revision: u64,
        previous: &Catalogue,
    ) -> (Catalogue, Vec<PluginError>) {
        let mut plugins: Vec<Arc<Plugin>> = Vec::new();
        let mut errors = Vec::new();
        for b in bundles {
            if let Some(same) = previous.plugins.iter().find(|p| p.bundle == *b) {
                plugins.push(Arc::clone(same));
                continue;
            }
            match build(b) {
                Ok(p) if plugins.iter().any(|q| q.manifest.name == p.manifest.name) => {
                    errors.push(PluginError::Invalid {
                        plugin: b.name.clone(),
                        message: format!("duplicate plugin name {:?}", p.manifest.name),
                    })
                }
                Ok(p) => plugins.push(Arc::new(p)),
                Err(e) => errors.push(e),
            }
        }
        plugins.sort_by(|a, b| a.manifest.name.cmp(&b.manifest.name));
        (
            Catalogue {
                plugins,
                filters,
                revision,
            },
            errors,
        )
    }

    /// Loads every plugin folder under `dir`, without filters (tests and
    /// tools; workers get theirs from the master).
    pub fn load(dir: &Path) -> (Catalogue, Vec<PluginError>) {
        let (bundles, mut errors) = read_bundles(dir);
        let (catalogue, more) = Self::build(&bundles, HashMap::new(), 0, &Catalogue::default());
        errors.extend(more);
        (catalogue, errors)
    }

    /// The plugins that handle `event`, in name order.
    pub fn handling<'a>(&'a self, event: &'a str) -> impl Iterator<Item = &'a Arc<Plugin>> + 'a {
        self.plugins.iter().filter(move |p| p.handles(event))
    }

    /// Every plugin, in name order.
    pub fn all(&self) -> &[Arc<Plugin>] {
        &self.plugins
    }

    /// The filter called `name`.
    pub fn filter(&self, name: &str) -> Option<&Arc<CompiledFilter>> {
        self.filters.get(name)
    }

    /// Every filter, by name.
    pub fn filters(&self) -> &HashMap<String, Arc<CompiledFilter>> {
        &self.filters
    }
}

/// Whether `name` is a valid plugin or filter name.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

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

/// Reads one plugin folder.
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

/// Checks and compiles one bundle.
pub fn build(bundle: &PluginBundle) -> Result<Plugin, PluginError> {
    let invalid = |message: String| PluginError::Invalid {
        plugin: bundle.name.clone(),
        message,
    };
    let manifest: Manifest = toml::from_str(&bundle.manifest)
        .map_err(|e| invalid(format!("plugin.toml: {}", e.message())))?;
    if !valid_name(&manifest.name) {
        return Err(invalid(format!(
            "name {:?} is not [a-z0-9_-]{{1,64}}",
            manifest.name
        )));
    }
    if manifest.events.is_empty() {
        return Err(invalid("handles no events".into()));
    }
    for f in &manifest.filters {
        if !valid_name(&f.name) {
            return Err(invalid(format!("filter name {:?} is not valid", f.name)));
        }
    }
    let source = bundle.files.get(&manifest.entry).ok_or_else(|| {
        invalid(format!(
            "no entry file {:?} among its files",
            manifest.entry
        ))
    })?;
    let bytecode = compile(source.as_bytes())
        .map_err(|message| invalid(format!("{}: {message}", manifest.entry)))?;
    Ok(Plugin {
        manifest,
        bytecode,
        bundle: bundle.clone(),
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
                .any(|e| e.to_string().contains("plugin b: init.luau:")),
            "{errors:?}"
        );
    }

    #[test]
    fn an_entry_that_is_not_among_the_files_is_refused() {
        let bundle = PluginBundle {
            name: "a".into(),
            manifest: "name='a'\nversion='1'\nevents=['x']\nentry='../../etc/passwd'".into(),
            files: BTreeMap::new(),
        };
        let err = build(&bundle).unwrap_err();
        assert!(err.to_string().contains("no entry file"), "{err}");
    }

    #[test]
    fn manifests_declare_filters_and_operations() {
        let bundle = PluginBundle {
            name: "g".into(),
            manifest: r#"
                name = "g"
                version = "1"
                events = ["sign"]
                operations = [{ name = "sign", description = "Sign it" }]
                [[filters]]
                name = "redact"
                config = { min_digits = 8 }
                on_error = "continue"
            "#
            .into(),
            files: BTreeMap::from([("init.luau".to_string(), "return {}".to_string())]),
        };
        let p = build(&bundle).unwrap();
        assert_eq!(p.manifest.operations[0].name, "sign");
        assert_eq!(
            p.manifest.filters[0].config,
            serde_json::json!({"min_digits": 8})
        );
        assert_eq!(p.manifest.filters[0].on_error, OnError::Continue);
    }

    #[test]
    fn the_shipped_plugins_all_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins");
        let (cat, errors) = Catalogue::load(&dir);
        assert!(errors.is_empty(), "{errors:?}");
        assert!(cat.handling("echo").any(|p| p.manifest.name == "echo"));
    }
}
