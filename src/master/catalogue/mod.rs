//! The catalogue in force: the master's authority over which plugins and
//! filters run, and what the API lists of them. It holds what was
//! read from `--plugins` and `--filters` at start, plus what was uploaded
//! through the API (kept in the store, so uploads survive restarts).
//!
//! An upload with the name of a folder plugin (or a `--filters` module)
//! replaces it; deleting the upload brings the original back. The folders
//! themselves are read once, at start: they are the shipped defaults, not a
//! live view.
//!
//! Everything is checked before it is accepted, by the same
//! [`crate::catalogue`] checks the workers run: a plugin must parse and
//! compile, a filter must compile (on a plain engine that never runs it)
//! and follow the ABI. Each change bumps the revision; the caller
//! broadcasts `CatalogueChanged` and the workers fetch
//! [`Catalogue::snapshot`].
//!
//! Modules:
//!
//! - `deploy`: many plugins and filters as one catalogue change (`meshplay
//!   deploy`).

mod deploy;

use crate::catalogue::filter::{ModuleChecker, sha256_hex};
use crate::catalogue::manifest::Manifest;
use crate::catalogue::name::check_name;
use crate::catalogue::{folder, plugin};
use crate::master::store::{Store, StoreError};
use crate::mesophyll::db::{CatalogueSnapshot, FilterModule, PluginBundle};
use crate::rest::{FilterInfo, OperationInfo, PluginInfo, Source};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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

/// The plugins and filters in force, and the one place that changes them.
pub struct Catalogue {
    folder_plugins: Vec<PluginBundle>,
    folder_filters: Vec<FilterModule>,
    store: Arc<dyn Store>,
    checker: ModuleChecker,
    revision: AtomicU64,
    changes: tokio::sync::Mutex<()>,
    /// The plugins in force by name, with the webhooks each takes, kept
    /// beside the store so that the metrics can tell a plugin from a name a
    /// worker made up, and the hooks route a declared webhook from any
    /// other path, without reading the store per request.
    plugin_names: std::sync::RwLock<BTreeMap<String, Vec<String>>>,
}

/// Plugin `name` from its manifest and files, built as the workers will
/// build it: the name valid, the code compiling, the manifest naming the
/// same plugin. The error says which, naming the plugin.
pub(super) fn named_plugin(
    name: &str,
    manifest: String,
    files: BTreeMap<String, String>,
) -> Result<(PluginBundle, plugin::Plugin), String> {
    check_name(name)?;
    let bundle = PluginBundle {
        name: name.to_owned(),
        manifest,
        files,
    };
    let plugin = plugin::build(&bundle).map_err(|e| e.to_string())?;
    if plugin.manifest.name != name {
        return Err(format!(
            "plugin {name:?}: its manifest says {:?}",
            plugin.manifest.name
        ));
    }
    Ok((bundle, plugin))
}

/// The webhooks a bundle's manifest declares (none when it does not
/// parse: such a bundle is not in force anyway).
fn webhooks_of(bundle: &PluginBundle) -> Vec<String> {
    toml::from_str::<Manifest>(&bundle.manifest)
        .map(|m| m.webhooks)
        .unwrap_or_default()
}

impl Catalogue {
    /// Reads the folders (a broken plugin or filter is skipped and reported
    /// in the second value) and starts at a revision above any earlier run's.
    pub fn load(
        plugins_dir: &Path,
        filters_dir: &Path,
        store: Arc<dyn Store>,
    ) -> (Self, Vec<String>) {
        let checker = ModuleChecker::default();
        let (bundles, errors) = folder::read_bundles(plugins_dir);
        let mut problems: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let mut folder_plugins = Vec::new();
        for b in bundles {
            match plugin::build(&b) {
                Ok(_) => folder_plugins.push(b),
                Err(e) => problems.push(e.to_string()),
            }
        }
        let (modules, unread) = folder::read_modules(filters_dir);
        problems.extend(unread);
        let mut folder_filters = Vec::new();
        for m in modules {
            match checker.check(&m.bytes) {
                Ok(_) => folder_filters.push(m),
                Err(e) => problems.push(format!("filter {}: {e}", m.name)),
            }
        }
        let catalogue = Catalogue {
            folder_plugins,
            folder_filters,
            store,
            checker,
            revision: AtomicU64::new(crate::clock::unix_millis().max(1) as u64),
            changes: tokio::sync::Mutex::new(()),
            plugin_names: Default::default(),
        };
        if let Err(e) = catalogue.read_names() {
            problems.push(format!("cannot read the uploaded plugins: {e}"));
        }
        (catalogue, problems)
    }

    /// Reads the names of the plugins in force (and their webhooks) from
    /// the folders and the store's uploads.
    fn read_names(&self) -> Result<(), StoreError> {
        let (snapshot, _) = self.merged()?;
        *self.plugin_names.write().unwrap() = snapshot
            .plugins
            .into_iter()
            .map(|b| {
                let hooks = webhooks_of(&b);
                (b.name, hooks)
            })
            .collect();
        Ok(())
    }

    /// Catches up with the store when this master takes the lease over:
    /// the last leader may have deployed. The revision moves above both
    /// its own and any this master could have seen from the last leader
    /// (revisions start at a start's Unix milliseconds), so every worker
    /// loads the catalogue again.
    ///
    /// Fails when the store cannot be read.
    pub fn refresh(&self) -> Result<u64, StoreError> {
        self.read_names()?;
        let now = crate::clock::unix_millis().max(1) as u64;
        let revision = self.revision.fetch_max(now, Ordering::SeqCst).max(now) + 1;
        self.revision.store(revision, Ordering::SeqCst);
        Ok(revision)
    }

    /// Runs the read `f` on a blocking thread: listings read every upload
    /// from the store, and `plugins` compiles every plugin's Luau.
    pub async fn blocking<T: Send + 'static>(
        catalogue: &Arc<Catalogue>,
        f: impl FnOnce(&Catalogue) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let catalogue = Arc::clone(catalogue);
        tokio::task::spawn_blocking(move || f(&catalogue))
            .await
            .map_err(|e| StoreError::Backend(format!("catalogue task: {e}")))?
    }

    /// Whether plugin `name` is in force.
    pub fn has_plugin(&self, name: &str) -> bool {
        self.plugin_names.read().unwrap().contains_key(name)
    }

    /// Whether some plugin in force takes `event` as a webhook.
    pub fn takes_webhook(&self, event: &str) -> bool {
        self.plugin_names
            .read()
            .unwrap()
            .values()
            .any(|hooks| hooks.iter().any(|h| h == event))
    }

    /// The manifest of plugin `name` in force, if there is one.
    pub fn manifest(&self, name: &str) -> Result<Option<Manifest>, StoreError> {
        let snapshot = self.snapshot()?;
        Ok(snapshot
            .plugins
            .iter()
            .find(|b| b.name == name)
            .and_then(|b| toml::from_str(&b.manifest).ok()))
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
            .filter_map(|b| plugin::build(b).ok().map(|p| (b, p)))
            .map(|(b, p)| PluginInfo {
                name: b.name.clone(),
                version: p.manifest.version,
                description: p.manifest.description,
                events: p.manifest.events,
                operations: p
                    .manifest
                    .operations
                    .into_iter()
                    .map(|o| OperationInfo {
                        name: o.name,
                        description: o.description,
                    })
                    .collect(),
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
        let (bundle, plugin) =
            named_plugin(name, manifest, files).map_err(CatalogueError::Invalid)?;
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
        self.plugin_names
            .write()
            .unwrap()
            .insert(name.to_owned(), plugin.manifest.webhooks.clone());
        Ok(self.bump())
    }

    /// Accepts filter `name` if it compiles and follows the ABI; returns the
    /// new revision.
    pub async fn put_filter(&self, name: &str, bytes: Vec<u8>) -> Result<u64, CatalogueError> {
        check_name(name).map_err(CatalogueError::Invalid)?;
        let checker = self.checker.clone();
        let (checked, bytes) = tokio::task::spawn_blocking(move || (checker.check(&bytes), bytes))
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
        let revision = self.delete(PLUGIN, "plugin", name, in_folder).await?;
        if !in_folder {
            self.plugin_names.write().unwrap().remove(name);
        }
        Ok(revision)
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
