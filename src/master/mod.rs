//! The master process: the REST API, the Mesophyll hub, and the supervisor
//! of the worker processes.
//!
//! - [`datadir`]: writing the data directory (admin token, `endpoint.json`);
//! - [`shard`]: which worker owns a tenant;
//! - [`registry`]: the plugins and filters in force, checked through
//!   [`crate::catalogue`] (the master links no worker runtime);
//! - [`store`]: the store (tenant KV, global KV, tenant states, uploads);
//! - [`db`]: the DB endpoints workers call on the Mesophyll port;
//! - [`supervisor`]: spawning, watching and restarting workers;
//! - [`api`]: the REST API.
//!
//! [`start`] wires them together (and [`serve`] runs it until a signal): it
//! binds both ports (port 0 picks a free one; the chosen addresses land in
//! `endpoint.json`), starts the workers,
//! and runs until its `shutdown` future completes, then stops the workers
//! within the grace period.

pub mod access;
pub mod api;
pub mod console;
pub mod dashboard;
pub mod datadir;
pub mod db;
pub mod metrics;
pub mod registry;
pub mod shard;
pub mod store;
pub mod supervisor;

use crate::datadir::{DataDir, DataDirError, Endpoint};
use crate::mesophyll::hub::{Hub, HubConfig};
use axum::serve::ListenerExt;
use registry::Registry;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use store::{Store, StoreError};
use supervisor::{SpawnError, Supervisor, SupervisorConfig};
use tokio::net::TcpListener;

/// Everything `meshplay serve` needs.
#[derive(Debug, Clone)]
pub struct MasterConfig {
    /// The data directory (created if missing).
    pub data_dir: PathBuf,
    /// The store; `None` is sled in `<data-dir>/store`.
    pub store: Option<store::StoreUrl>,
    /// Workers in total: the shard count.
    pub workers: u32,
    /// How many of them (the highest ids) someone else starts. Their tokens
    /// are written to `worker-token-<id>` in the data directory.
    pub external_workers: u32,
    /// Where the REST API listens.
    pub api_addr: SocketAddr,
    /// Where the Mesophyll hub listens.
    pub mesophyll_addr: SocketAddr,
    /// The plugin folder (the shipped defaults; uploads add to it).
    pub plugins_dir: PathBuf,
    /// The filter folder (`<name>.wasm` files).
    pub filters_dir: PathBuf,
    /// The admin token; `None` reads or creates `admin-token`.
    pub api_token: Option<String>,
    /// Heartbeat timing and queue sizes of the hub.
    pub hub: HubConfig,
    /// How the workers are spawned (the executable, extra arguments).
    pub supervisor: SupervisorConfig,
    /// How long workers may take to finish their work on shutdown.
    pub shutdown_grace: Duration,
}

/// Why the master could not start.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    /// The data directory is unusable.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// A port could not be bound.
    #[error("cannot listen on {addr} for the {what}: {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// Where.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The store cannot be opened.
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    /// The worker executable cannot be run.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    /// The configuration makes no sense.
    #[error("{0}")]
    Config(String),
}

/// Small request/response exchanges must not wait for Nagle's algorithm
/// (40 ms per round trip with delayed ACKs).
fn no_delay(tcp: &mut tokio::net::TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::warn!("cannot set TCP_NODELAY: {e}");
    }
}

async fn bind(
    what: &'static str,
    addr: SocketAddr,
) -> Result<(TcpListener, SocketAddr), MasterError> {
    let err = |source| MasterError::Bind { what, addr, source };
    let listener = TcpListener::bind(addr).await.map_err(err)?;
    let local = listener.local_addr().map_err(err)?;
    Ok((listener, local))
}

/// Runs a master until `shutdown` completes.
///
/// Fails before serving when the data directory, a port or the worker
/// executable is unusable; once serving, it only returns on shutdown.
pub async fn serve(
    config: MasterConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), MasterError> {
    let running = start(config).await?;
    shutdown.await;
    running.stop().await;
    Ok(())
}

/// A master that serves, started by [`start`]; [`Running::stop`] ends it.
pub struct Running {
    /// Where the REST API listens.
    pub api_addr: SocketAddr,
    /// Where the Mesophyll hub listens.
    pub mesophyll_addr: SocketAddr,
    /// The admin token.
    pub token: String,
    /// The hub: the master's own path to the workers (benchmarks use it to
    /// dispatch without HTTP in front).
    pub hub: Arc<Hub>,
    /// The supervisor of the spawned workers.
    pub supervisor: Arc<Supervisor>,
    dir: DataDir,
    grace: Duration,
    api_stop: tokio::sync::oneshot::Sender<()>,
    api_task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops the API, tells the workers to finish within the grace period,
    /// and waits for them.
    pub async fn stop(self) {
        tracing::info!(grace = ?self.grace, "shutting down");
        self.dir.remove_endpoint(std::process::id());
        let _ = self.api_stop.send(());
        self.supervisor.shutdown(self.grace).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.api_task).await;
        tracing::info!("stopped");
    }
}

/// Starts a master: binds both ports, opens the store, loads the catalogue,
/// spawns the workers and serves until [`Running::stop`].
///
/// Fails when the data directory, a port or the worker executable is
/// unusable, or the configuration makes no sense.
pub async fn start(config: MasterConfig) -> Result<Running, MasterError> {
    if config.workers == 0 || config.external_workers > config.workers {
        return Err(MasterError::Config(format!(
            "--workers must be at least 1 and at least --external-workers ({} > {})",
            config.external_workers, config.workers
        )));
    }
    let dir = DataDir::create(&config.data_dir)?;
    let token = match &config.api_token {
        Some(t) if !t.is_empty() => t.clone(),
        _ => dir.admin_token_or_create()?,
    };
    let (hub_listener, mesophyll_addr) = bind("Mesophyll hub", config.mesophyll_addr).await?;
    let (api_listener, api_addr) = bind("REST API", config.api_addr).await?;

    let hub = Hub::new(config.hub.clone());
    let spawned = config.workers - config.external_workers;
    for id in spawned..config.workers {
        let worker_token = datadir::fresh_token();
        let path = dir.write_worker_token(id, &worker_token)?;
        hub.register_worker(id, &worker_token);
        tracing::info!(worker = id, token_file = %path.display(), "external worker expected");
    }
    let store_url = config
        .store
        .clone()
        .unwrap_or_else(|| store::StoreUrl::Sled(dir.path().join("store")));
    let store: Arc<dyn Store> = store_url.open().await?;
    tracing::info!(store = %store_url.redacted(), "store open");
    let (registry, problems) =
        Registry::load(&config.plugins_dir, &config.filters_dir, Arc::clone(&store));
    for p in &problems {
        tracing::error!("not loaded: {p}");
    }
    let registry = Arc::new(registry);
    let metrics = Arc::new(metrics::Metrics::new(Arc::clone(&hub), config.workers));
    let hub_router = hub.router().merge(db::router(Arc::new(db::DbState {
        hub: Arc::clone(&hub),
        store: Arc::clone(&store),
        workers: config.workers,
        registry: Arc::clone(&registry),
        metrics: Arc::clone(&metrics),
    })));
    tokio::spawn(async move {
        // The peer's address is what `workers` shows as a worker's host.
        let hub_service = hub_router.into_make_service_with_connect_info::<std::net::SocketAddr>();
        if let Err(e) = axum::serve(hub_listener.tap_io(no_delay), hub_service).await {
            tracing::error!("the Mesophyll hub stopped: {e}");
        }
    });

    let mut sup_config = config.supervisor.clone();
    sup_config.master = mesophyll_addr.to_string();
    sup_config.cache_dir = dir.path().join("cache").join("filters");
    let supervisor = Supervisor::start(sup_config, Arc::clone(&hub), spawned).await?;
    metrics.watch(Arc::clone(&supervisor));

    let state = Arc::new(api::ApiState {
        hub: Arc::clone(&hub),
        supervisor: Arc::clone(&supervisor),
        workers: config.workers,
        access: Arc::new(access::Access::load(token.clone(), Arc::clone(&store))?),
        store,
        registry,
        state_turns: api::TenantTurns::default(),
        metrics,
        started: std::time::Instant::now(),
        store_url: store_url.redacted(),
        console: Default::default(),
    });
    let app = api::router(state);
    let (api_stop, api_stopped) = tokio::sync::oneshot::channel::<()>();
    let api_task = tokio::spawn(async move {
        let serve = axum::serve(api_listener.tap_io(no_delay), app).with_graceful_shutdown(async {
            let _ = api_stopped.await;
        });
        if let Err(e) = serve.await {
            tracing::error!("the REST API stopped: {e}");
        }
    });

    let pid = std::process::id();
    dir.write_endpoint(&Endpoint {
        api_addr,
        mesophyll_addr,
        pid,
    })?;
    tracing::info!(
        api = %api_addr,
        mesophyll = %mesophyll_addr,
        workers = config.workers,
        plugins = %config.plugins_dir.display(),
        data_dir = %dir.path().display(),
        "meshplay master ready"
    );

    Ok(Running {
        api_addr,
        mesophyll_addr,
        token,
        hub,
        supervisor,
        dir,
        grace: config.shutdown_grace,
        api_stop,
        api_task,
    })
}
