//! Many plugins and filters as one catalogue change (`meshplay deploy`).
//!
//! Everything is checked before anything is stored: each plugin builds,
//! each filter compiles and follows its ABI, each removal names an
//! upload, and every plugin of the catalogue that results finds its
//! filters in it. The store then takes all of it in one atomic write
//! ([`Store::catalogue_apply`](crate::master::store::Store::catalogue_apply))
//! and the revision moves once, so a worker that reloads sees the whole
//! deployment or none of it. A refusal lists every problem found, not the
//! first.

use super::{Catalogue, CatalogueError, FILTER, PLUGIN, named_plugin, webhooks_of};
use crate::catalogue::plugin;
use crate::mesophyll::db::PluginBundle;
use crate::rest::{Deployed, Deployment, PluginUpload};
use std::collections::BTreeSet;

impl Catalogue {
    /// Applies `deployment` whole, or nothing of it; returns the new
    /// revision and what changed.
    ///
    /// Fails with [`CatalogueError::Invalid`] naming every plugin that does
    /// not build, filter that does not check, removal of something that is
    /// not an upload, and plugin left without a filter it uses; with
    /// [`CatalogueError::Store`] when the store fails (nothing is then
    /// applied).
    pub async fn deploy(&self, deployment: Deployment) -> Result<Deployed, CatalogueError> {
        let mut problems = Vec::new();
        let bundles = self.built(&deployment, &mut problems);
        self.checked_filters(&deployment, &mut problems).await;
        for name in deployment
            .plugins
            .keys()
            .filter(|n| deployment.remove_plugins.contains(n))
        {
            problems.push(format!("plugin {name:?} is both put and removed"));
        }
        for name in deployment
            .filters
            .keys()
            .filter(|n| deployment.remove_filters.contains(n))
        {
            problems.push(format!("filter {name:?} is both put and removed"));
        }
        let _one_change_at_a_time = self.changes.lock().await;
        let (snapshot, uploaded) = self.merged()?;
        for name in &deployment.remove_plugins {
            if !uploaded.plugins.contains(name) {
                problems.push(format!(
                    "plugin {name:?} is not an upload, so it cannot be removed"
                ));
            }
        }
        for name in &deployment.remove_filters {
            if !uploaded.filters.contains(name) {
                problems.push(format!(
                    "filter {name:?} is not an upload, so it cannot be removed"
                ));
            }
        }
        // The catalogue as it would be: plugins and filter names.
        let mut filters: BTreeSet<String> =
            snapshot.filters.iter().map(|f| f.name.clone()).collect();
        for name in &deployment.remove_filters {
            if !self.folder_filters.iter().any(|f| &f.name == name) {
                filters.remove(name);
            }
        }
        filters.extend(deployment.filters.keys().cloned());
        // A removed upload brings back the folder plugin it shadowed.
        let removed = |name: &String| deployment.remove_plugins.contains(name);
        let put = |name: &String| bundles.iter().any(|b| &b.name == name);
        let mut plugins: Vec<PluginBundle> = snapshot
            .plugins
            .into_iter()
            .filter(|b| !put(&b.name) && !removed(&b.name))
            .collect();
        plugins.extend(
            self.folder_plugins
                .iter()
                .filter(|f| removed(&f.name) && !put(&f.name))
                .cloned(),
        );
        plugins.extend(bundles.iter().cloned());
        for bundle in &plugins {
            let Ok(p) = plugin::build(bundle) else {
                continue;
            };
            for f in p
                .manifest
                .filters
                .iter()
                .filter(|f| !filters.contains(&f.name))
            {
                problems.push(format!(
                    "plugin {} uses filter {:?}, which the catalogue would not have",
                    bundle.name, f.name
                ));
            }
        }
        if !problems.is_empty() {
            return Err(CatalogueError::Invalid(problems.join("; ")));
        }
        self.apply(deployment, bundles, plugins).await
    }

    /// The deployment's plugins, each built as the workers will; a
    /// problem for each that does not.
    fn built(&self, deployment: &Deployment, problems: &mut Vec<String>) -> Vec<PluginBundle> {
        let mut bundles = Vec::new();
        for (name, PluginUpload { manifest, files }) in &deployment.plugins {
            match named_plugin(name, manifest.clone(), files.clone()) {
                Ok((bundle, _)) => bundles.push(bundle),
                Err(e) => problems.push(e),
            }
        }
        bundles
    }

    /// A problem for each filter that does not compile or follow its ABI.
    async fn checked_filters(&self, deployment: &Deployment, problems: &mut Vec<String>) {
        for (name, bytes) in &deployment.filters {
            if let Err(e) = crate::catalogue::name::check_name(name) {
                problems.push(format!("filter {name:?}: {e}"));
                continue;
            }
            let checker = self.checker.clone();
            let bytes = bytes.to_vec();
            match tokio::task::spawn_blocking(move || checker.check(&bytes)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => problems.push(format!("filter {name}: {e}")),
                Err(e) => problems.push(format!("filter {name}: validation failed: {e}")),
            }
        }
    }

    /// Stores the checked deployment in one write and moves the revision
    /// once.
    async fn apply(
        &self,
        deployment: Deployment,
        bundles: Vec<PluginBundle>,
        in_force: Vec<PluginBundle>,
    ) -> Result<Deployed, CatalogueError> {
        let mut puts = Vec::new();
        for b in &bundles {
            puts.push((
                format!("{PLUGIN}{}", b.name),
                rmp_serde::to_vec_named(b).expect("bundles encode"),
            ));
        }
        for (name, bytes) in &deployment.filters {
            puts.push((format!("{FILTER}{name}"), bytes.to_vec()));
        }
        let deletes = deployment
            .remove_plugins
            .iter()
            .map(|n| format!("{PLUGIN}{n}"))
            .chain(
                deployment
                    .remove_filters
                    .iter()
                    .map(|n| format!("{FILTER}{n}")),
            )
            .collect();
        self.store.catalogue_apply(puts, deletes).await?;
        *self.plugin_names.write().unwrap() = in_force
            .iter()
            .map(|b| (b.name.clone(), webhooks_of(b)))
            .collect();
        Ok(Deployed {
            revision: self.bump(),
            plugins: bundles.into_iter().map(|b| b.name).collect(),
            filters: deployment.filters.into_keys().collect(),
            removed_plugins: deployment.remove_plugins,
            removed_filters: deployment.remove_filters,
        })
    }

    /// The files of plugin `name` in force, as an upload would send them.
    pub fn source_of(
        &self,
        name: &str,
    ) -> Result<Option<PluginUpload>, crate::master::store::StoreError> {
        Ok(self
            .snapshot()?
            .plugins
            .into_iter()
            .find(|b| b.name == name)
            .map(|b| PluginUpload {
                manifest: b.manifest,
                files: b.files,
            }))
    }
}
