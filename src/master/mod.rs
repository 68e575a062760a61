//! The master process: the REST API, the Mesophyll hub, and the supervisor
//! of the worker processes.
//!
//! - [`datadir`]: writing the data directory (admin token, `endpoint.json`);
//! - [`shard`]: which worker owns a tenant;
//! - [`catalogue`]: the plugins and filters in force, checked through
//!   [`crate::catalogue`] (the master links no worker runtime);
//! - [`store`]: the store (tenant KV, global KV, tenant states, uploads);
//! - [`db`]: the DB endpoints workers call on the Mesophyll port;
//! - [`supervisor`]: spawning, watching and restarting workers;
//! - [`api`]: the REST API;
//! - [`port`]: what each listening port takes (connection caps, timeouts);
//! - [`audit`]: how long the audit log keeps its entries;
//! - [`timers`]: timers and schedules, fired by the master;
//! - [`webhooks`]: the hooks route, for services that hold no token;
//! - [`nats`]: the NATS bridge;
//! - [`access`]: API tokens, join tokens and the role each route needs;
//! - [`console`]: the live console the dashboard streams;
//! - [`dashboard`]: the dashboard's page and its event stream;
//! - [`emitted`]: events handlers send to other tenants (`POST /db/events`);
//! - [`joins`]: workers that join from other machines with a join token;
//! - [`leadership`]: which of the masters sharing one PostgreSQL leads;
//! - [`standby`]: what a master that does not lead answers;
//! - [`duties`]: what only the leader does, taken up and let go;
//! - [`metrics`]: what `/metrics` exposes;
//! - [`tls`]: the master's own CA and certificate;
//! - [`vars`]: plugin variables, sealed at rest when secret.
//!
//! [`start`] wires them together (and [`serve`] runs it until a signal): it
//! binds both ports (port 0 picks a free one; the chosen addresses land in
//! `endpoint.json`), starts the workers,
//! and runs until its `shutdown` future completes, then stops the workers
//! within the grace period.

pub mod access;
pub mod api;
pub mod audit;
pub mod catalogue;
pub mod console;
pub mod dashboard;
pub mod datadir;
pub mod db;
pub mod duties;
pub mod emitted;
pub mod joins;
pub mod leadership;
pub mod metrics;
pub mod nats;
pub mod port;
pub mod shard;
pub mod standby;
pub mod store;
pub mod supervisor;
pub mod timers;
pub mod tls;
pub mod vars;
pub mod webhooks;

use crate::datadir::{DataDir, DataDirError, Endpoint};
use crate::mesophyll::hub::{Hub, HubConfig};
use catalogue::Catalogue;
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
    /// TLS on both ports, and where the certificate comes from; `None`
    /// is plaintext.
    pub tls: Option<tls::CertSource>,
    /// Allows plaintext on addresses other than loopback.
    pub insecure: bool,
    /// What each of the two ports takes: connection caps and timeouts.
    pub ports: port::PortLimits,
    /// How long the audit log keeps an entry ([`audit`]).
    pub audit_retention: Duration,
    /// How timers are capped, delivered and retried ([`timers`]).
    pub timers: timers::TimerConfig,
    /// How webhooks are bounded ([`webhooks`]).
    pub webhooks: webhooks::WebhookConfig,
    /// The NATS bridge, if any ([`nats`]).
    pub nats: Option<nats::NatsConfig>,
    /// Competes with other masters on the same PostgreSQL for the lease
    /// ([`leadership`]), standing by until it wins; `None` leads alone.
    pub leadership: Option<leadership::LeaseConfig>,
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
    /// TLS could not be set up.
    #[error("TLS: {0}")]
    Tls(#[from] tls::ServerTlsError),
    /// The plugin variables' key could not be read or made.
    #[error(transparent)]
    Vars(#[from] vars::VarsError),
    /// The NATS bridge could not be set up.
    #[error(transparent)]
    Nats(#[from] nats::NatsError),
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

/// Writes `endpoint.json`, where the CLI finds this master, and says the
/// master is ready.
fn announce(
    dir: &DataDir,
    config: &MasterConfig,
    api_addr: SocketAddr,
    mesophyll_addr: SocketAddr,
    tls: bool,
) -> Result<(), MasterError> {
    dir.write_endpoint(&Endpoint {
        api_addr,
        mesophyll_addr,
        pid: std::process::id(),
        tls,
    })?;
    tracing::info!(
        api = %api_addr,
        mesophyll = %mesophyll_addr,
        workers = config.workers,
        runtime_threads = tokio::runtime::Handle::current().metrics().num_workers(),
        plugins = %config.plugins_dir.display(),
        data_dir = %dir.path().display(),
        "meshplay master ready"
    );
    Ok(())
}

/// Serves the hub's port: the workers' WebSocket, joins, and the DB
/// endpoints. Nothing stops it but the process's end: joined workers keep
/// talking to it while the API drains.
fn serve_hub(
    hub: &Arc<Hub>,
    joins: &Arc<joins::Joins>,
    db_state: Arc<db::DbState>,
    gate: &leadership::LeaderGate,
    listener: TcpListener,
    tls: Option<&tls::ServerTls>,
    limits: &port::PortLimits,
) {
    let router = hub
        .router()
        .merge(joins.router())
        .merge(db::router(db_state));
    let router = standby::gate_hub(router, gate);
    let _detached = port::serve(
        "Mesophyll hub",
        listener,
        tls,
        router,
        limits.clone(),
        std::future::pending(),
    );
}

/// Serves the REST API's port until the returned sender is used (or
/// dropped).
fn serve_api(
    state: Arc<api::ApiState>,
    gate: &leadership::LeaderGate,
    listener: TcpListener,
    tls: Option<&tls::ServerTls>,
    limits: &port::PortLimits,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = port::serve(
        "REST API",
        listener,
        tls,
        standby::gate_api(api::router(state), gate),
        limits.clone(),
        async {
            let _ = stopped.await;
        },
    );
    (stop, task)
}

/// Plaintext on a non-loopback address needs the operator's word for it.
fn check_exposure(config: &MasterConfig) -> Result<(), MasterError> {
    if config.tls.is_some() || config.insecure {
        return Ok(());
    }
    for (flag, addr) in [
        ("--api-addr", config.api_addr),
        ("--mesophyll-addr", config.mesophyll_addr),
    ] {
        if !addr.ip().is_loopback() {
            return Err(MasterError::Config(format!(
                "refusing to serve plaintext on {addr} ({flag}): anyone on that network could \
                 read tokens and data; add --tls, or --insecure if the network is yours alone"
            )));
        }
    }
    Ok(())
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
    /// The timers (`bench timers` loads them and samples their lateness).
    pub timers: Arc<timers::Timers>,
    dir: DataDir,
    grace: Duration,
    api_stop: tokio::sync::oneshot::Sender<()>,
    api_task: tokio::task::JoinHandle<()>,
    duties: Arc<duties::Duties>,
    leadership: Option<(leadership::Leadership, tokio::task::JoinHandle<()>)>,
}

impl Running {
    /// Stops the API, tells the workers to finish within the grace period,
    /// and waits for them.
    pub async fn stop(self) {
        tracing::info!(grace = ?self.grace, "shutting down");
        self.dir.remove_endpoint(std::process::id());
        let _ = self.api_stop.send(());
        // Deliveries under way are cut; their timers stay in the store and
        // fire again at the next start (or on the standby that takes over).
        self.duties.stop();
        if let Some((leadership, following)) = self.leadership {
            following.abort();
            leadership.stop().await;
        }
        self.supervisor.shutdown(self.grace).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.api_task).await;
        tracing::info!("stopped");
    }
}

/// The hub, knowing the external workers' slots (their tokens written to
/// the data directory) and the master's own addresses, which no fetch may
/// reach whatever networks are opened.
fn hub_for(
    config: &MasterConfig,
    dir: &DataDir,
    own: &[SocketAddr],
) -> Result<Arc<Hub>, MasterError> {
    let mut hub_config = config.hub.clone();
    hub_config.egress.master_addrs = own.to_vec();
    let hub = Hub::new(hub_config);
    for id in config.workers - config.external_workers..config.workers {
        let worker_token = datadir::fresh_token();
        let path = dir.write_worker_token(id, &worker_token)?;
        hub.register_worker(id, &worker_token);
        tracing::info!(worker = id, token_file = %path.display(), "external worker expected");
    }
    Ok(hub)
}

/// Opens the store (sled in the data directory unless `--store` names
/// one); with `--standby`, starts competing for the lease on it.
async fn open_store(
    config: &MasterConfig,
    dir: &DataDir,
    own: (SocketAddr, SocketAddr),
) -> Result<
    (
        store::StoreUrl,
        Arc<dyn Store>,
        Option<leadership::Leadership>,
    ),
    MasterError,
> {
    let store_url = config
        .store
        .clone()
        .unwrap_or_else(|| store::StoreUrl::Sled(dir.path().join("store")));
    let (store, leadership): (Arc<dyn Store>, _) = match (&config.leadership, &store_url) {
        (None, _) => (store_url.open().await?, None),
        (Some(lease), store::StoreUrl::Postgres(url)) => {
            let pg = Arc::new(store::PostgresStore::open(url).await?);
            let me = leadership::candidate(own.0, own.1)?;
            tracing::info!(id = %me.id, "competing for the lease");
            (
                pg.clone(),
                Some(leadership::Leadership::start(pg, me, *lease)),
            )
        }
        (Some(_), store::StoreUrl::Sled(_)) => {
            return Err(MasterError::Config(
                "--standby needs a store the masters share: --store postgres://...".into(),
            ));
        }
    };
    tracing::info!(store = %store_url.redacted(), "store open");
    Ok((store_url, store, leadership))
}

/// The TLS the ports serve with, when the operator asked for it.
fn server_tls(
    config: &MasterConfig,
    dir: &DataDir,
    own: &[SocketAddr],
) -> Result<Option<tls::ServerTls>, MasterError> {
    let Some(source) = &config.tls else {
        return Ok(None);
    };
    let ips: Vec<_> = own.iter().map(|a| a.ip()).collect();
    Ok(Some(tls::ServerTls::prepare(dir, source, &ips)?))
}

/// The catalogue from the folders and the store's uploads; what could not
/// be loaded is logged and left out.
fn load_catalogue(config: &MasterConfig, store: &Arc<dyn Store>) -> Arc<Catalogue> {
    let (catalogue, problems) =
        Catalogue::load(&config.plugins_dir, &config.filters_dir, Arc::clone(store));
    for p in &problems {
        tracing::error!("not loaded: {p}");
    }
    Arc::new(catalogue)
}

/// Joins for the external workers' slots.
fn start_joins(
    config: &MasterConfig,
    access: &Arc<access::Access>,
    hub: &Arc<Hub>,
) -> Arc<joins::Joins> {
    // Away this long, a joined worker's slot may go to another: longer than
    // a few missed heartbeats and the slowest reconnect back-off.
    let lease = (config.hub.heartbeat_timeout * 3).max(Duration::from_secs(30));
    let spawned = config.workers - config.external_workers;
    joins::Joins::start(
        Arc::clone(access),
        Arc::clone(hub),
        spawned..config.workers,
        config.workers,
        lease,
    )
}

/// What wakes tenants besides the API: the timers and the NATS bridge,
/// when configured; neither runs until the leader's duties are taken up.
async fn wakers(
    config: &MasterConfig,
    store: &Arc<dyn Store>,
    hub: &Arc<Hub>,
    metrics: &metrics::Metrics,
) -> Result<(Arc<timers::Timers>, Option<Arc<nats::Bridge>>), MasterError> {
    let timers = timers::Timers::new(
        Arc::clone(store),
        Arc::clone(hub),
        config.workers,
        config.timers.clone(),
        metrics.timers().clone(),
    );
    let nats = match &config.nats {
        Some(c) => Some(nats::Bridge::connect(c.clone(), metrics.nats().clone()).await?),
        None => None,
    };
    Ok((timers, nats))
}

/// A master among standbys holds no workers of its own: they would die
/// with it, and a standby's hub takes none.
fn check_roles(config: &MasterConfig) -> Result<(), MasterError> {
    if config.workers == 0 || config.external_workers > config.workers {
        return Err(MasterError::Config(format!(
            "--workers must be at least 1 and at least --external-workers ({} > {})",
            config.external_workers, config.workers
        )));
    }
    if config.leadership.is_some() && config.external_workers != config.workers {
        return Err(MasterError::Config(format!(
            "with --standby every worker joins (`meshplay worker --join`): \
             --external-workers must be --workers ({} of {})",
            config.external_workers, config.workers
        )));
    }
    Ok(())
}

/// Starts a master: binds both ports, opens the store, loads the catalogue,
/// spawns the workers and serves until [`Running::stop`].
///
/// Fails when the data directory, a port or the worker executable is
/// unusable, or the configuration makes no sense.
pub async fn start(config: MasterConfig) -> Result<Running, MasterError> {
    check_roles(&config)?;
    check_exposure(&config)?;
    let dir = DataDir::create(&config.data_dir)?;
    let token = match &config.api_token {
        Some(t) if !t.is_empty() => t.clone(),
        _ => dir.admin_token_or_create()?,
    };
    let (hub_listener, mesophyll_addr) = bind("Mesophyll hub", config.mesophyll_addr).await?;
    let (api_listener, api_addr) = bind("REST API", config.api_addr).await?;
    let server_tls = server_tls(&config, &dir, &[api_addr, mesophyll_addr])?;

    let hub = hub_for(&config, &dir, &[api_addr, mesophyll_addr])?;
    let spawned = config.workers - config.external_workers;
    let (store_url, store, leadership) =
        open_store(&config, &dir, (api_addr, mesophyll_addr)).await?;
    let gate = leadership
        .as_ref()
        .map_or_else(leadership::LeaderGate::sole, |l| l.gate());
    audit::keep(Arc::clone(&store), config.audit_retention, gate.clone());
    let catalogue = load_catalogue(&config, &store);
    let metrics = Arc::new(metrics::Metrics::new(
        Arc::clone(&hub),
        config.workers,
        config.webhooks.clone(),
        gate.clone(),
    ));
    let access = Arc::new(access::Access::load(token.clone(), Arc::clone(&store))?);
    let joins = start_joins(&config, &access, &hub);
    let vars = Arc::new(vars::Vars::open(&dir, Arc::clone(&store))?);
    let (timers, nats) = wakers(&config, &store, &hub, &metrics).await?;
    let db_state = Arc::new(db::DbState {
        nats: nats.clone(),
        timers: Arc::clone(&timers),
        vars: Arc::clone(&vars),
        max_event_hops: config.hub.max_event_hops,
        hub: Arc::clone(&hub),
        store: Arc::clone(&store),
        workers: config.workers,
        catalogue: Arc::clone(&catalogue),
        metrics: Arc::clone(&metrics),
    });
    serve_hub(
        &hub,
        &joins,
        db_state,
        &gate,
        hub_listener,
        server_tls.as_ref(),
        &config.ports,
    );

    let sup_config = supervisor::own_children(
        &config.supervisor,
        mesophyll_addr,
        dir.path(),
        server_tls.is_some(),
    );
    let supervisor = Supervisor::start(sup_config, Arc::clone(&hub), spawned).await?;
    metrics.watch(Arc::clone(&supervisor));
    let timers_handle = Arc::clone(&timers);

    let webhooks = Arc::clone(metrics.webhooks());
    let state = Arc::new(api::ApiState {
        hub: Arc::clone(&hub),
        supervisor: Arc::clone(&supervisor),
        workers: config.workers,
        access: Arc::clone(&access),
        joins: Arc::clone(&joins),
        store,
        catalogue: Arc::clone(&catalogue),
        state_turns: api::TenantTurns::default(),
        metrics,
        started: std::time::Instant::now(),
        store_url: store_url.redacted(),
        console: Default::default(),
        vars,
        timers: Arc::clone(&timers),
        webhooks,
        nats: nats.clone(),
        leadership: gate.clone(),
    });
    let duties = duties::Duties::new(access, joins, catalogue, timers, nats, Arc::clone(&state));
    let leadership = duties.begin(leadership);
    let (api_stop, api_task) = serve_api(
        state,
        &gate,
        api_listener,
        server_tls.as_ref(),
        &config.ports,
    );

    announce(
        &dir,
        &config,
        api_addr,
        mesophyll_addr,
        server_tls.is_some(),
    )?;

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
        duties,
        leadership,
        timers: timers_handle,
    })
}
