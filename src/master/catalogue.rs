//! The master's catalogue of plugins and filters: what it loaded from
//! `--plugins` and `--filters` at start, plus what was uploaded through the
//! API (kept in the store, so uploads survive restarts).
//!
//! An upload with the name of a folder plugin (or a `--filters` module)
//! replaces it; deleting the upload brings the original back. The folders
//! themselves are read once, at start: they are the shipped defaults, not a
//! live view.
//!
//! Everything is checked before it is accepted, with the workers' own code:
//! a plugin must parse and compile, a filter must compile under wasmtime and
//! follow the ABI. Each change bumps the revision; the caller broadcasts
//! `PluginsChanged` and the workers fetch [`Catalogue::snapshot`].

use crate::master::store::{Store, StoreError};
use crate::mesophyll::db::{CatalogueSnapshot, FilterModule, PluginBundle};
use crate::worker::filters::{FilterEngine, FilterLimits, sha256_hex};
use crate::worker::plugins::{self, Operation, valid_name};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Where a catalogue entry comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The `--plugins` or `--filters` folder.
    Folder,
    /// Uploaded through the API.
    Uploaded,
}

/// A plugin as `GET /api/v1/plugins` shows it: the capability registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginInfo {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// What it is for.
    pub description: String,
    /// The events it handles.
    pub events: Vec<String>,
    /// The operations it offers.
    pub operations: Vec<Operation>,
    /// The filters it applies, in order.
    pub filters: Vec<String>,
    /// Folder or upload.
    pub source: Source,
}

/// A filter as `GET /api/v1/filters` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilterInfo {
    /// Its name.
    pub name: String,
    /// SHA-256 of the module, hex.
    pub sha256: String,
    /// Module size in bytes.
    pub size: usize,
    /// Folder or upload.
    pub source: Source,
}

/// Why a catalogue change was refused.
#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    /// The upload is not acceptable; the message says why.
    #[error("{0}")]
    Invalid(String),
    /// No such plugin or filter.
    #[error("{0}")]
    NotFound(String),
    /// It comes from a folder and cannot be deleted through the API.
    #[error("{0}")]
    FromFolder(String),
    /// A plugin still uses the filter.
    #[error("{0}")]
    InUse(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

const PLUGIN: &str = "plugin/";
const FILTER: &str = "filter/";

/// What the store holds: uploaded plugins and filter modules by name.
struct Uploads {
    plugins: BTreeMap<String, PluginBundle>,
    filters: BTreeMap<String, Vec<u8>>,
}

/// The names of the uploads among a snapshot's entries.
struct Uploaded {
    plugins: BTreeSet<String>,
    filters: BTreeSet<String>,
}

/// The catalogue.
pub struct Catalogue {
    folder_plugins: Vec<PluginBundle>,
    folder_filters: Vec<FilterModule>,
    store: Arc<dyn Store>,
    engine: FilterEngine,
    revision: AtomicU64,
    changes: tokio::sync::Mutex<()>,
}

impl Catalogue {
    /// Reads the folders (a broken plugin or filter is skipped and reported
    /// in the second value) and starts at a revision above any earlier run's.
    ///
    /// Fails only when the filter engine cannot start.
    pub fn load(
        plugins_dir: &Path,
        filters_dir: &Path,
        store: Arc<dyn Store>,
    ) -> Result<(Self, Vec<String>), crate::worker::filters::FilterError> {
        let engine = FilterEngine::new(None, FilterLimits::default())?;
        let mut problems = Vec::new();
        let (bundles, errors) = plugins::read_bundles(plugins_dir);
        problems.extend(errors.iter().map(ToString::to_string));
        let mut folder_plugins = Vec::new();
        for b in bundles {
            match plugins::build(&b) {
                Ok(_) => folder_plugins.push(b),
                Err(e) => problems.push(e.to_string()),
            }
        }
        let mut folder_filters = Vec::new();
        if let Ok(entries) = std::fs::read_dir(filters_dir) {
            let mut paths: Vec<_> = entries
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
                let checked = std::fs::read(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|bytes| {
                        if !valid_name(&name) {
                            return Err(format!("name {name:?} is not [a-z0-9_-]{{1,64}}"));
                        }
                        engine
                            .validate(&bytes)
                            .map(|()| bytes)
                            .map_err(|e| e.to_string())
                    });
                match checked {
                    Ok(bytes) => folder_filters.push(FilterModule { name, bytes }),
                    Err(e) => problems.push(format!("filter {}: {e}", path.display())),
                }
            }
        }
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(1);
        Ok((
            Catalogue {
                folder_plugins,
                folder_filters,
                store,
                engine,
                revision: AtomicU64::new(start),
                changes: tokio::sync::Mutex::new(()),
            },
            problems,
        ))
    }

    /// The revision now.
    pub fn revision(&self) -> u64 {
        self.revision.load(Ordering::SeqCst)
    }

    fn uploads(&self) -> Result<Uploads, StoreError> {
        let mut plugins = BTreeMap::new();
        let mut filters = BTreeMap::new();
        for (key, bytes) in self.store.catalogue_entries()? {
            if let Some(name) = key.strip_prefix(PLUGIN) {
                let bundle = rmp_serde::from_slice(&bytes)
                    .map_err(|e| StoreError::Corrupt(format!("{key}: {e}")))?;
                plugins.insert(name.to_owned(), bundle);
            } else if let Some(name) = key.strip_prefix(FILTER) {
                filters.insert(name.to_owned(), bytes);
            }
        }
        Ok(Uploads { plugins, filters })
    }

    /// Every plugin and filter in force, uploads over folders.
    pub fn snapshot(&self) -> Result<CatalogueSnapshot, StoreError> {
        self.merged().map(|(snapshot, _)| snapshot)
    }

    /// The snapshot, and which of its names are uploads: one read of the
    /// store for both.
    fn merged(&self) -> Result<(CatalogueSnapshot, Uploaded), StoreError> {
        let revision = self.revision();
        let Uploads {
            plugins: mut up_plugins,
            filters: mut up_filters,
        } = self.uploads()?;
        let uploaded = Uploaded {
            plugins: up_plugins.keys().cloned().collect(),
            filters: up_filters.keys().cloned().collect(),
        };
        let mut plugins: Vec<PluginBundle> = self
            .folder_plugins
            .iter()
            .map(|b| up_plugins.remove(&b.name).unwrap_or_else(|| b.clone()))
            .collect();
        plugins.extend(up_plugins.into_values());
        let mut filters: Vec<FilterModule> = self
            .folder_filters
            .iter()
            .map(|f| match up_filters.remove(&f.name) {
                Some(bytes) => FilterModule {
                    name: f.name.clone(),
                    bytes,
                },
                None => f.clone(),
            })
            .collect();
        filters.extend(
            up_filters
                .into_iter()
                .map(|(name, bytes)| FilterModule { name, bytes }),
        );
        Ok((
            CatalogueSnapshot {
                revision,
                plugins,
                filters,
            },
            uploaded,
        ))
    }

    fn source(&self, uploaded: bool) -> Source {
        if uploaded {
            Source::Uploaded
        } else {
            Source::Folder
        }
    }

    /// The plugins in force, with their operations.
    pub fn plugins(&self) -> Result<Vec<PluginInfo>, StoreError> {
        let (snapshot, uploaded) = self.merged()?;
        let mut out: Vec<PluginInfo> = snapshot
            .plugins
            .iter()
            .filter_map(|b| plugins::build(b).ok().map(|p| (b, p)))
            .map(|(b, p)| PluginInfo {
                name: b.name.clone(),
                version: p.manifest.version,
                description: p.manifest.description,
                events: p.manifest.events,
                operations: p.manifest.operations,
                filters: p.manifest.filters.into_iter().map(|f| f.name).collect(),
                source: self.source(uploaded.plugins.contains(&b.name)),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The filters in force.
    pub fn filters(&self) -> Result<Vec<FilterInfo>, StoreError> {
        let (snapshot, uploaded) = self.merged()?;
        let mut out: Vec<FilterInfo> = snapshot
            .filters
            .into_iter()
            .map(|f| FilterInfo {
                sha256: sha256_hex(&f.bytes),
                size: f.bytes.len(),
                source: self.source(uploaded.filters.contains(&f.name)),
                name: f.name,
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn bump(&self) -> u64 {
        self.revision.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Accepts plugin `name` if it parses and compiles; returns the new
    /// revision.
    pub async fn put_plugin(
        &self,
        name: &str,
        manifest: String,
        files: BTreeMap<String, String>,
    ) -> Result<u64, CatalogueError> {
        if !valid_name(name) {
            return Err(CatalogueError::Invalid(format!(
                "name {name:?} is not [a-z0-9_-]{{1,64}}"
            )));
        }
        let bundle = PluginBundle {
            name: name.to_owned(),
            manifest,
            files,
        };
        let plugin = plugins::build(&bundle).map_err(|e| CatalogueError::Invalid(e.to_string()))?;
        if plugin.manifest.name != name {
            return Err(CatalogueError::Invalid(format!(
                "the manifest says {:?}, the URL {name:?}",
                plugin.manifest.name
            )));
        }
        let _one_change_at_a_time = self.changes.lock().await;
        // A plugin whose filter is missing would fail every event it gets;
        // better to say so now, to the one who uploads it.
        let snapshot = self.snapshot()?;
        if let Some(missing) = plugin
            .manifest
            .filters
            .iter()
            .find(|f| !snapshot.filters.iter().any(|m| m.name == f.name))
        {
            return Err(CatalogueError::Invalid(format!(
                "the plugin uses filter {:?}, which is not in the catalogue; upload it first",
                missing.name
            )));
        }
        let bytes = rmp_serde::to_vec_named(&bundle).expect("bundles encode");
        self.store
            .catalogue_put(&format!("{PLUGIN}{name}"), bytes)
            .await?;
        Ok(self.bump())
    }

    /// Accepts filter `name` if it compiles and follows the ABI; returns the
    /// new revision.
    pub async fn put_filter(&self, name: &str, bytes: Vec<u8>) -> Result<u64, CatalogueError> {
        if !valid_name(name) {
            return Err(CatalogueError::Invalid(format!(
                "name {name:?} is not [a-z0-9_-]{{1,64}}"
            )));
        }
        let engine = self.engine.clone();
        let (checked, bytes) =
            tokio::task::spawn_blocking(move || (engine.validate(&bytes), bytes))
                .await
                .map_err(|e| CatalogueError::Invalid(format!("validation failed: {e}")))?;
        checked.map_err(|e| CatalogueError::Invalid(e.to_string()))?;
        let _one_change_at_a_time = self.changes.lock().await;
        self.store
            .catalogue_put(&format!("{FILTER}{name}"), bytes)
            .await?;
        Ok(self.bump())
    }

    async fn delete(
        &self,
        prefix: &str,
        what: &str,
        name: &str,
        in_folder: bool,
    ) -> Result<u64, CatalogueError> {
        if self
            .store
            .catalogue_delete(&format!("{prefix}{name}"))
            .await?
        {
            return Ok(self.bump());
        }
        if in_folder {
            return Err(CatalogueError::FromFolder(format!(
                "{what} {name:?} comes from the {what}s folder; remove it there"
            )));
        }
        Err(CatalogueError::NotFound(format!("no {what} {name:?}")))
    }

    /// Removes uploaded plugin `name`; returns the new revision.
    pub async fn delete_plugin(&self, name: &str) -> Result<u64, CatalogueError> {
        let in_folder = self.folder_plugins.iter().any(|b| b.name == name);
        let _one_change_at_a_time = self.changes.lock().await;
        self.delete(PLUGIN, "plugin", name, in_folder).await
    }

    /// Removes uploaded filter `name`; returns the new revision.
    pub async fn delete_filter(&self, name: &str) -> Result<u64, CatalogueError> {
        let in_folder = self.folder_filters.iter().any(|f| f.name == name);
        let _one_change_at_a_time = self.changes.lock().await;
        // Deleting an upload that shadows a folder filter brings the folder
        // one back, so only a filter that would vanish can strand a plugin.
        if !in_folder {
            let users: Vec<String> = self
                .plugins()?
                .into_iter()
                .filter(|p| p.filters.iter().any(|f| f == name))
                .map(|p| p.name)
                .collect();
            if !users.is_empty() {
                return Err(CatalogueError::InUse(format!(
                    "filter {name:?} is used by plugin(s) {}; change or remove them first",
                    users.join(", ")
                )));
            }
        }
        self.delete(FILTER, "filter", name, in_folder).await
    }
}
