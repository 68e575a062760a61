//! A host for one author: a real master and one worker in this process,
//! on loopback ports picked at run time, with a scratch store.
//!
//! `meshplay call` and `meshplay test` run plugins here rather than in a
//! fleet: the master is [`master::start`] with its one worker slot left to
//! someone else, and that someone is [`worker::run`] on this runtime,
//! joined with the token the master wrote. Events therefore take the
//! production path (REST, the hub, filters, limits, the error codes) and
//! the store is sled in a temporary directory (or the one `--store`
//! names). What differs is the outside world: a [`StandIn`] can answer
//! `http.fetch`, and [`crate::clock`] can be frozen and moved.

use crate::author::AuthorError;
use crate::client::ApiClient;
use crate::datadir::DataDir;
use crate::master::{self, MasterConfig};
use crate::mesophyll::hub::HubConfig;
use crate::mesophyll::uplink::{CONNECT_TIMEOUT, UplinkConfig};
use crate::worker::egress::stand_in::StandIn;
use crate::worker::filters::FilterLimits;
use crate::worker::tenants::TenantsConfig;
use crate::worker::{self, WorkerConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How long the worker may take to load the catalogue and join.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// What a local host runs.
#[derive(Debug, Clone, Default)]
pub struct HostPlan {
    /// Plugin folders (each with a `plugin.toml`).
    pub plugins: Vec<PathBuf>,
    /// Where the `<name>.wasm` filters are, if anywhere.
    pub filters: Option<PathBuf>,
    /// A sled directory kept between runs; `None` is a scratch one.
    pub store: Option<PathBuf>,
    /// Networks `http.fetch` may reach beside the public internet.
    pub open_networks: Vec<ipnet::IpNet>,
    /// Answers `http.fetch` in place of the network.
    pub stand_in: Option<Arc<StandIn>>,
    /// Where compiled filters are cached between hosts.
    pub filter_cache: Option<PathBuf>,
    /// The master's data directory, kept (its store, its admin token, its
    /// `endpoint.json`, for the CLI to find it); `None` is a scratch one.
    pub data_dir: Option<PathBuf>,
    /// Where the REST API listens; `None` is a free loopback port.
    pub api_addr: Option<std::net::SocketAddr>,
}

/// A master and its one worker, serving until [`LocalHost::stop`].
pub struct LocalHost {
    master: master::Running,
    worker: tokio::task::JoinHandle<Result<(), worker::WorkerError>>,
    client: ApiClient,
    _dir: tempfile::TempDir,
}

impl LocalHost {
    /// Starts a master on `plan`'s plugins and filters, and its worker.
    ///
    /// Fails when a folder cannot be linked in, the master cannot start
    /// (its store, its ports), or the worker does not join within 30 s.
    /// A plugin that does not compile does not fail the start: the master
    /// skips it, as `serve` does, and its events answer `not_found`;
    /// [`crate::author::folders::check`] is what reports it.
    pub async fn start(plan: &HostPlan) -> Result<LocalHost, AuthorError> {
        let dir = tempfile::Builder::new()
            .prefix("meshplay-author")
            .tempdir()?;
        let plugins = dir.path().join("plugins");
        link_plugins(&plugins, &plan.plugins)?;
        let filters = dir.path().join("filters");
        link_filters(&filters, plan)?;
        let data = plan
            .data_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("data"));
        let master = master::start(master_config(plan, &data, plugins, filters)).await?;
        let token = DataDir::at(&data)
            .worker_token(0)
            .map_err(AuthorError::host)?;
        let worker = tokio::spawn(worker::run(worker_config(plan, &master, token)));
        let client = ApiClient::new(master.api_addr, master.token.clone());
        let until = tokio::time::Instant::now() + READY_WITHIN;
        while !master.hub.is_connected(0) {
            if worker.is_finished() || tokio::time::Instant::now() > until {
                master.stop().await;
                return Err(AuthorError::Host(format!(
                    "the worker did not join within {} s",
                    READY_WITHIN.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(LocalHost {
            master,
            worker,
            client,
            _dir: dir,
        })
    }

    /// The REST client of its master (admin).
    pub fn client(&self) -> &ApiClient {
        &self.client
    }

    /// Where its master's REST API listens.
    pub fn api_addr(&self) -> std::net::SocketAddr {
        self.master.api_addr
    }

    /// Its master's timers (a test that moved the clock wakes them).
    pub fn timers(&self) -> &Arc<master::timers::Timers> {
        &self.master.timers
    }

    /// Stops master and worker, and removes the scratch directory.
    pub async fn stop(self) {
        self.master.stop().await;
        // The master tells only the workers it spawned to stop; this one
        // would keep trying to reconnect.
        self.worker.abort();
        let _ = self.worker.await;
    }
}

/// `plugins/<folder name>` links to each folder, as the master reads a
/// plugin folder.
fn link_plugins(into: &Path, folders: &[PathBuf]) -> Result<(), AuthorError> {
    std::fs::create_dir_all(into)?;
    for folder in folders {
        let folder = std::path::absolute(folder)?;
        let name = folder
            .file_name()
            .ok_or_else(|| AuthorError::Usage(format!("{} is not a folder", folder.display())))?;
        let link = into.join(name);
        if link.exists() {
            return Err(AuthorError::Usage(format!(
                "two plugin folders are called {}: rename one",
                name.to_string_lossy()
            )));
        }
        std::os::unix::fs::symlink(&folder, &link)?;
    }
    Ok(())
}

/// `filters/<name>.wasm` links to the filters the plugins name, from
/// `plan.filters`: the master hands its worker every filter it has, and
/// compiling the unused ones would be most of a start.
fn link_filters(into: &Path, plan: &HostPlan) -> Result<(), AuthorError> {
    std::fs::create_dir_all(into)?;
    let Some(from) = &plan.filters else {
        return Ok(());
    };
    let mut wanted = std::collections::BTreeSet::new();
    // The manifest is all it takes: the plugin's code is compiled by the
    // master, and by whoever checked the folder before.
    for folder in &plan.plugins {
        let manifest = std::fs::read_to_string(folder.join("plugin.toml"))
            .ok()
            .and_then(|text| toml::from_str::<crate::catalogue::manifest::Manifest>(&text).ok());
        if let Some(manifest) = manifest {
            wanted.extend(manifest.filters.into_iter().map(|f| f.name));
        }
    }
    for name in wanted {
        let file = std::path::absolute(from.join(format!("{name}.wasm")))?;
        if file.is_file() {
            std::os::unix::fs::symlink(&file, into.join(format!("{name}.wasm")))?;
        }
    }
    Ok(())
}

fn master_config(plan: &HostPlan, data: &Path, plugins: PathBuf, filters: PathBuf) -> MasterConfig {
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let mut hub = HubConfig::default();
    hub.egress.open_networks = plan.open_networks.iter().map(ToString::to_string).collect();
    // Its one worker slot is served by this process, not spawned.
    let supervisor =
        master::supervisor::SupervisorConfig::new(PathBuf::new(), String::new(), PathBuf::new());
    MasterConfig {
        data_dir: data.to_owned(),
        store: plan.store.clone().map(master::store::StoreUrl::Sled),
        workers: 1,
        external_workers: 1,
        api_addr: plan.api_addr.unwrap_or(loopback),
        mesophyll_addr: loopback,
        plugins_dir: plugins,
        filters_dir: filters,
        api_token: None,
        hub,
        supervisor,
        shutdown_grace: Duration::from_secs(2),
        tls: None,
        insecure: false,
        ports: master::port::PortLimits::default(),
        audit_retention: Duration::from_secs(86_400),
        timers: master::timers::TimerConfig::default(),
        webhooks: master::webhooks::WebhookConfig::default(),
        nats: None,
        leadership: None,
    }
}

fn worker_config(plan: &HostPlan, master: &master::Running, token: String) -> WorkerConfig {
    WorkerConfig {
        uplink: UplinkConfig {
            masters: crate::mesophyll::addresses::Addresses::one(master.mesophyll_addr.to_string()),
            worker_id: 0,
            token,
            connect_timeout: CONNECT_TIMEOUT,
            tls: None,
        },
        cache_dir: plan.filter_cache.clone(),
        filter_limits: FilterLimits::default(),
        tenants: TenantsConfig::default(),
        parent_pid: None,
        stand_in: plan.stand_in.clone(),
    }
}
