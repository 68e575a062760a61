//! What `meshplay dev` follows: plugin folders and filter crates, found
//! from its arguments, and which of them a changed path belongs to.

use crate::author::AuthorError;
use crate::author::folders::{self, is_plugin};
use notify::{RecursiveMode, Watcher};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The plugin folders and filter crates followed.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// Folders with a `plugin.toml`.
    pub plugins: Vec<PathBuf>,
    /// Folders with a `Cargo.toml` whose library is a `cdylib`.
    pub crates: Vec<PathBuf>,
}

impl Sources {
    /// The plugin folders and filter crates `args` name: each argument is
    /// one of them or a folder of them; no argument is the current folder
    /// (or `./plugins`, and the filter crates beside it).
    ///
    /// Fails when an argument names neither.
    pub fn find(args: &[PathBuf]) -> Result<Sources, AuthorError> {
        let mut sources = Sources::default();
        let args = if args.is_empty() {
            vec![PathBuf::from(".")]
        } else {
            args.to_vec()
        };
        for arg in &args {
            let before = sources.plugins.len() + sources.crates.len();
            sources.take(arg);
            if let Ok(entries) = std::fs::read_dir(arg) {
                let mut children: Vec<PathBuf> =
                    entries.filter_map(Result::ok).map(|e| e.path()).collect();
                children.sort();
                if !is_plugin(arg) && !is_filter_crate(arg) {
                    for child in &children {
                        sources.take(child);
                    }
                }
            }
            if sources.plugins.len() + sources.crates.len() == before && arg == Path::new(".") {
                sources.plugins = folders::plugin_folders(&[])?;
            }
            if sources.plugins.len() + sources.crates.len() == before {
                return Err(AuthorError::Usage(format!(
                    "{} holds no plugin folder (plugin.toml) and no filter crate (Cargo.toml with a cdylib)",
                    arg.display()
                )));
            }
        }
        Ok(sources)
    }

    fn take(&mut self, dir: &Path) {
        let dir = dir
            .strip_prefix(".")
            .ok()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(dir);
        if is_plugin(dir) {
            self.plugins.push(dir.to_owned());
        } else if is_filter_crate(dir) {
            self.crates.push(dir.to_owned());
        }
    }

    /// Watches every source; each changed path goes to `tx`. The watch
    /// lasts as long as the returned watcher.
    ///
    /// Fails when the system's watcher cannot be made or a folder watched.
    pub fn watch(
        &self,
        tx: tokio::sync::mpsc::UnboundedSender<PathBuf>,
    ) -> Result<notify::RecommendedWatcher, AuthorError> {
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let Ok(event) = event else { return };
                if event.kind.is_access() {
                    return;
                }
                for path in event.paths {
                    let _ = tx.send(path);
                }
            })
            .map_err(|e| AuthorError::Host(format!("cannot watch the sources: {e}")))?;
        for (dir, mode) in self
            .plugins
            .iter()
            .map(|p| (p, RecursiveMode::NonRecursive))
            .chain(self.crates.iter().map(|c| (c, RecursiveMode::Recursive)))
        {
            watcher
                .watch(dir, mode)
                .map_err(|e| AuthorError::Host(format!("cannot watch {}: {e}", dir.display())))?;
        }
        Ok(watcher)
    }

    /// The plugin folders a change to `paths` touched (their `.luau` files
    /// and manifest; not editors' swap files).
    pub fn plugins_of(&self, paths: &BTreeSet<PathBuf>) -> Vec<PathBuf> {
        self.plugins
            .iter()
            .filter(|p| {
                paths
                    .iter()
                    .any(|changed| within(changed, p) && is_plugin_source(changed))
            })
            .cloned()
            .collect()
    }

    /// The filter crates a change to `paths` touched (not their `target/`).
    pub fn crates_of(&self, paths: &BTreeSet<PathBuf>) -> Vec<PathBuf> {
        self.crates
            .iter()
            .filter(|c| {
                let target = absolute(c).join("target");
                paths.iter().any(|changed| {
                    within(changed, c) && !changed.starts_with(&target) && is_crate_source(changed)
                })
            })
            .cloned()
            .collect()
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_owned())
}

fn within(changed: &Path, dir: &Path) -> bool {
    changed.starts_with(absolute(dir)) || changed.starts_with(dir)
}

fn is_plugin_source(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "luau" || e == "toml")
}

fn is_crate_source(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "rs" || e == "toml")
}

/// A folder with a `Cargo.toml` that builds a `cdylib`: a filter crate.
pub(super) fn is_filter_crate(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("Cargo.toml")).is_ok_and(|m| m.contains("cdylib"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_plugins_and_crates_and_maps_changes_to_them() {
        let tmp = tempfile::tempdir().unwrap();
        let hello = crate::author::scaffold::new_plugin(
            tmp.path(),
            "hello",
            crate::author::scaffold::PluginTemplate::Hello,
        )
        .unwrap();
        let cut = crate::author::scaffold::new_filter(
            tmp.path(),
            "cut",
            crate::author::scaffold::FilterAbi::V1,
        )
        .unwrap();
        let sources = Sources::find(&[tmp.path().to_owned()]).unwrap();
        assert_eq!(sources.plugins, vec![hello.clone()]);
        assert_eq!(sources.crates, vec![cut.clone()]);
        let changed = |p: PathBuf| BTreeSet::from([p]);
        assert_eq!(
            sources.plugins_of(&changed(hello.join("init.luau"))),
            vec![hello.clone()]
        );
        assert!(
            sources
                .plugins_of(&changed(hello.join(".init.luau.swp")))
                .is_empty()
        );
        assert_eq!(
            sources.crates_of(&changed(cut.join("src/lib.rs"))),
            vec![cut.clone()]
        );
        assert!(
            sources
                .crates_of(&changed(cut.join("target/release/x.rs")))
                .is_empty()
        );
        assert!(Sources::find(&[tmp.path().join("hello/plugin.toml")]).is_err());
    }
}
