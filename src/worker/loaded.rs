//! The catalogue as one worker has loaded it: every plugin compiled (by
//! [`crate::catalogue::plugin::build`]) and every filter compiled for this
//! worker's engine.
//!
//! A job holds one `Arc<LoadedCatalogue>` from start to end, so a change of
//! catalogue never swaps a plugin or filter under a running event.

use crate::catalogue::folder::read_bundles;
use crate::catalogue::plugin::{Plugin, PluginError, build};
use crate::mesophyll::db::PluginBundle;
use crate::worker::filters::CompiledFilter;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// All the plugins and filters a worker runs, plugins sorted by name.
#[derive(Debug, Default)]
pub struct LoadedCatalogue {
    plugins: Vec<Arc<Plugin>>,
    filters: HashMap<String, Arc<CompiledFilter>>,
    /// The master's revision this catalogue was built from.
    pub revision: u64,
}

impl LoadedCatalogue {
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
        previous: &LoadedCatalogue,
    ) -> (LoadedCatalogue, Vec<PluginError>) {
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
            LoadedCatalogue {
                plugins,
                filters,
                revision,
            },
            errors,
        )
    }

    /// Loads every plugin folder under `dir`, without filters (tests and
    /// tools; workers get theirs from the master).
    pub fn load(dir: &Path) -> (LoadedCatalogue, Vec<PluginError>) {
        let (bundles, mut errors) = read_bundles(dir);
        let (catalogue, more) =
            Self::build(&bundles, HashMap::new(), 0, &LoadedCatalogue::default());
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
        let (cat, errors) = LoadedCatalogue::load(tmp.path());
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
    fn the_shipped_plugins_all_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins");
        let (cat, errors) = LoadedCatalogue::load(&dir);
        assert!(errors.is_empty(), "{errors:?}");
        assert!(cat.handling("echo").any(|p| p.manifest.name == "echo"));
    }
}
