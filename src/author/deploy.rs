//! `meshplay diff` and `meshplay deploy`: a folder of plugins and filters
//! against what a master runs, and all of it applied as one catalogue
//! change (decK's `diff` then `sync`).
//!
//! The local side is the plugin folders the arguments name (as `meshplay
//! test` finds them) and the `.wasm` files of a filters folder. Each is
//! compared with the master's copy: a plugin by its files (a changed one
//! shows a line diff of its manifest and its `.luau` files), a filter by
//! its SHA-256. With `--prune`, the master's uploads that the folder does
//! not have are removed too; a plugin or filter from the master's own
//! folders cannot be removed through the API and is only reported.
//!
//! The deployment goes in one request ([`ApiClient::deploy`]); the master
//! checks all of it before it stores any of it, so a plugin that does not
//! compile leaves every plugin as it was.

use crate::author::AuthorError;
use crate::catalogue::filter::sha256_hex;
use crate::catalogue::folder::{read_bundle, read_modules};
use crate::client::ApiClient;
use crate::rest::{Deployment, PluginUpload, Source};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// What the folder holds.
#[derive(Debug, Default)]
pub struct Local {
    /// Plugins by the name their manifest gives.
    pub plugins: BTreeMap<String, PluginUpload>,
    /// Filter modules by name.
    pub filters: BTreeMap<String, Vec<u8>>,
}

/// How one plugin or filter compares.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "change", content = "detail", rename_all = "snake_case")]
pub enum Change {
    /// The master does not have it.
    Added,
    /// The master has another version: the line diff (plugins) or the
    /// digests (filters).
    Changed(String),
    /// The same on both sides.
    Same,
    /// An upload the folder does not have (`--prune` removes it).
    Removed,
    /// In the master's own folder and not here: `--prune` cannot remove it.
    KeptFromFolder,
}

/// The comparison, plugins and filters by name.
#[derive(Debug, Default, serde::Serialize)]
pub struct Diff {
    /// Each plugin on either side.
    pub plugins: BTreeMap<String, Change>,
    /// Each filter on either side.
    pub filters: BTreeMap<String, Change>,
}

/// Reads `folders` (plugin folders) and the `.wasm` files of `filters`.
///
/// Fails when a folder cannot be read, a manifest has no name, two
/// folders hold plugins of one name, or a filter file cannot be read.
pub fn read_local(folders: &[PathBuf], filters: Option<&Path>) -> Result<Local, AuthorError> {
    let mut local = Local::default();
    for folder in folders {
        let bundle = read_bundle(folder)?;
        let name = manifest_name(&bundle.manifest).unwrap_or(bundle.name);
        let upload = PluginUpload {
            manifest: bundle.manifest,
            files: bundle.files,
        };
        if local.plugins.insert(name.clone(), upload).is_some() {
            return Err(AuthorError::Usage(format!(
                "two folders hold a plugin named {name}"
            )));
        }
    }
    if let Some(dir) = filters {
        let (modules, problems) = read_modules(dir);
        if let Some(p) = problems.first() {
            return Err(AuthorError::Usage(p.clone()));
        }
        local.filters = modules.into_iter().map(|m| (m.name, m.bytes)).collect();
    }
    Ok(local)
}

fn manifest_name(manifest: &str) -> Option<String> {
    let table: toml::Table = toml::from_str(manifest).ok()?;
    table.get("name")?.as_str().map(str::to_owned)
}

/// Compares `local` with what `client`'s master runs.
///
/// Fails when the master cannot be asked.
pub async fn diff(client: &ApiClient, local: &Local, prune: bool) -> Result<Diff, AuthorError> {
    let mut diff = Diff::default();
    for (name, upload) in &local.plugins {
        let change = match client.plugin_source(name).await? {
            None => Change::Added,
            Some(theirs) if theirs == *upload => Change::Same,
            Some(theirs) => Change::Changed(plugin_diff(&theirs, upload)),
        };
        diff.plugins.insert(name.clone(), change);
    }
    for p in client.plugins().await?.plugins {
        if !local.plugins.contains_key(&p.name) && prune {
            diff.plugins.insert(p.name, gone(p.source));
        }
    }
    let theirs = client.filters().await?.filters;
    for (name, bytes) in &local.filters {
        let ours = sha256_hex(bytes);
        let change = match theirs.iter().find(|f| &f.name == name) {
            None => Change::Added,
            Some(f) if f.sha256 == ours => Change::Same,
            Some(f) => Change::Changed(format!(
                "sha256 {} ({} bytes) -> {} ({} bytes)",
                f.sha256,
                f.size,
                ours,
                bytes.len()
            )),
        };
        diff.filters.insert(name.clone(), change);
    }
    for f in theirs {
        if !local.filters.contains_key(&f.name) && prune {
            diff.filters.insert(f.name, gone(f.source));
        }
    }
    Ok(diff)
}

fn gone(source: Source) -> Change {
    match source {
        Source::Uploaded => Change::Removed,
        Source::Folder => Change::KeptFromFolder,
    }
}

/// The line diff of two plugins' files, `plugin.toml` first.
fn plugin_diff(theirs: &PluginUpload, ours: &PluginUpload) -> String {
    let mut out = String::new();
    let mut files: Vec<(&str, &str, &str)> =
        vec![("plugin.toml", &theirs.manifest, &ours.manifest)];
    let names: std::collections::BTreeSet<&String> =
        theirs.files.keys().chain(ours.files.keys()).collect();
    for name in names {
        let a = theirs.files.get(name).map_or("", String::as_str);
        let b = ours.files.get(name).map_or("", String::as_str);
        files.push((name, a, b));
    }
    for (name, a, b) in files {
        if a == b {
            continue;
        }
        let text = similar::TextDiff::from_lines(a, b);
        let _ = write!(
            out,
            "{}",
            text.unified_diff()
                .context_radius(2)
                .header(&format!("master/{name}"), &format!("local/{name}"))
        );
    }
    out
}

impl Diff {
    /// Whether deploying would change anything.
    pub fn is_empty(&self) -> bool {
        self.plugins
            .values()
            .chain(self.filters.values())
            .all(|c| matches!(c, Change::Same | Change::KeptFromFolder))
    }

    /// The deployment that makes the master match `local`.
    pub fn deployment(&self, local: &Local) -> Deployment {
        let wanted = |c: &Change| matches!(c, Change::Added | Change::Changed(_));
        Deployment {
            plugins: self
                .plugins
                .iter()
                .filter(|(_, c)| wanted(c))
                .map(|(n, _)| (n.clone(), local.plugins[n].clone()))
                .collect(),
            filters: self
                .filters
                .iter()
                .filter(|(_, c)| wanted(c))
                .map(|(n, _)| {
                    (
                        n.clone(),
                        serde_bytes::ByteBuf::from(local.filters[n].clone()),
                    )
                })
                .collect(),
            remove_plugins: removed(&self.plugins),
            remove_filters: removed(&self.filters),
        }
    }

    /// For people: a line a plugin or filter that differs, and the line
    /// diffs of the changed plugins.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (kind, entries) in [("plugin", &self.plugins), ("filter", &self.filters)] {
            for (name, change) in entries {
                let line = match change {
                    Change::Added => format!("+ {kind} {name} (new)"),
                    Change::Changed(_) => format!("~ {kind} {name} (changed)"),
                    Change::Removed => format!("- {kind} {name} (removed)"),
                    Change::KeptFromFolder => {
                        format!("  {kind} {name} (in the master's folder: kept)")
                    }
                    Change::Same => continue,
                };
                let _ = writeln!(out, "{line}");
                if let Change::Changed(detail) = change {
                    for l in detail.lines() {
                        let _ = writeln!(out, "    {l}");
                    }
                }
            }
        }
        if self.is_empty() {
            out.push_str("no changes\n");
        }
        out
    }
}

fn removed(entries: &BTreeMap<String, Change>) -> Vec<String> {
    entries
        .iter()
        .filter(|(_, c)| **c == Change::Removed)
        .map(|(n, _)| n.clone())
        .collect()
}
