//! A worker process: connects to the master's hub and runs tenant code.
//!
//! - [`loaded`]: the catalogue as this worker loaded it (plugins compiled,
//!   filters compiled for its engine);
//! - [`filters`]: the wasmtime runtime of WASM filters;
//! - [`services`]: what every tenant and VM of the worker shares;
//! - [`kv`]: the store API scripts see;
//! - [`vm`]: one sandboxed Luau VM, with its memory cap;
//! - [`packing`]: event data and results between MessagePack and Luau;
//! - [`watchdog`]: the deadlines of Luau calls;
//! - [`host`]: the API a script sees;
//! - [`states`]: the tenant states (which events and plugins each runs);
//! - [`tenants`]: one actor per tenant, so that tenants never wait on each
//!   other;
//! - [`egress`]: the egress guard: what `http.fetch` may reach, and how much;
//! - [`events`]: events a handler sends on;
//! - [`invocation`]: the call a tenant's VM is running now;
//! - [`nats`]: the `nats` global;
//! - [`stdlib`]: the host's small standard library for code that talks to
//!   APIs;
//! - [`timers`]: the `timers` global;
//! - [`vars`]: plugin variables in a worker;
//! - `loading`: what a worker loads from the master, retried until a
//!   master answers.
//!
//! The worker knows nothing of the store or of how the master routes: it
//! answers what it is sent. When started by a master it also watches its
//! parent and exits when the parent is gone, so a killed master leaves no
//! orphans.

pub mod egress;
pub mod events;
pub mod filters;
pub mod host;
pub mod invocation;
pub mod kv;
pub mod loaded;
mod loading;
pub mod nats;
pub mod packing;
pub mod services;
pub mod states;
pub mod stdlib;
pub mod tenants;
pub mod timers;
pub mod vars;
pub mod vm;
pub mod watchdog;

use crate::mesophyll::db::CatalogueSnapshot;
use crate::mesophyll::db_client::DbClient;
use crate::mesophyll::message::LoadFigures;
use crate::mesophyll::message::{ErrorKind, Packed, RemoteError, ServerMessage, Tenant};
use crate::mesophyll::uplink::{self, Handler, Outbox, UplinkConfig, UplinkError, Welcome};
use filters::{FilterEngine, FilterError, FilterLimits};
use loaded::LoadedCatalogue;
use loading::{load_vars, retry};
use services::Services;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tenants::{Job, Reply, Tenants, TenantsConfig};
use tokio::time::Instant;

/// The longest deadline a worker accepts for one request; longer ones are
/// cut to this.
pub const MAX_DEADLINE: Duration = Duration::from_secs(600);

/// Requests a worker takes at once (running, queued at their tenants, or
/// waiting for a catalogue reload); past it, requests are `overloaded`.
pub const MAX_IN_FLIGHT: u64 = 16_384;

/// How long one load of the catalogue or the tenant states may take.
const LOAD_DEADLINE: Duration = Duration::from_secs(30);

/// How a worker is started.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Where the master's hub listens, and who this worker is.
    pub uplink: UplinkConfig,
    /// Where compiled filters are cached (`None`: compile every time).
    pub cache_dir: Option<PathBuf>,
    /// Memory and pool size of filter instances.
    pub filter_limits: FilterLimits,
    /// Tenant table sizing and VM limits.
    pub tenants: TenantsConfig,
    /// Exit when the parent process is no longer this pid.
    pub parent_pid: Option<u32>,
    /// Answers `http.fetch` in place of the network: only a plugin's tests
    /// (`meshplay test`) set it.
    pub stand_in: Option<Arc<egress::stand_in::StandIn>>,
}

/// Why a worker stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The master refused it, or speaks another protocol.
    #[error(transparent)]
    Client(#[from] UplinkError),
    /// The filter runtime could not start.
    #[error("cannot start the filter runtime: {0}")]
    Filters(#[from] FilterError),
}

/// Runs a worker until the master refuses it or tells it to shut down.
///
/// Before it takes any request it loads, from the master, the catalogue
/// (plugins and filters) and the states of its shard's tenants, retrying
/// until the master answers. Fails when the master refuses this worker's
/// credentials or the filter runtime cannot start.
pub async fn run(config: WorkerConfig) -> Result<(), WorkerError> {
    if let Some(parent) = config.parent_pid {
        tokio::spawn(watch_parent(parent));
    }
    let worker_id = config.uplink.worker_id;
    let runtime = tokio::runtime::Handle::current();
    tracing::info!(
        runtime_threads = runtime.metrics().num_workers(),
        multi_thread = runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread,
        "worker started"
    );
    let db = DbClient::new(
        &config.uplink.masters,
        worker_id,
        &config.uplink.token,
        config.uplink.tls.as_ref(),
    );
    let engine = FilterEngine::new(config.cache_dir.clone(), config.filter_limits.clone())?;
    let snapshot = retry("the catalogue", &config.uplink.masters, || {
        db.catalogue(LOAD_DEADLINE)
    })
    .await?;
    let catalogue = build_catalogue(&engine, snapshot, &LoadedCatalogue::default()).await;
    // States too before the first event: an event must never run before
    // its tenant's state is known.
    let states = retry("the tenant states", &config.uplink.masters, || {
        db.tenant_states(LOAD_DEADLINE)
    })
    .await?;
    tracing::info!(tenants = states.len(), "tenant states loaded");
    let revision = catalogue.revision;
    let services = Services::new(worker_id, Some(db.clone()), Some(engine), catalogue);
    if let Some(stand_in) = &config.stand_in {
        services.egress.use_stand_in(Arc::clone(stand_in));
    }
    services.vars.replace(
        retry("the plugin variables", &config.uplink.masters, || {
            db.vars(LOAD_DEADLINE)
        })
        .await?,
    );
    let tenants = Tenants::new(config.tenants.clone(), Arc::clone(&services));
    let reload = tenants.states().begin_reload();
    tenants.states().finish_reload(reload, states);
    let worker = Arc::new(Worker {
        db,
        services,
        reloading: Arc::new(tokio::sync::Mutex::new(())),
        wanted: Arc::new(AtomicU64::new(revision)),
        settled: Arc::new(tokio::sync::watch::Sender::new(revision)),
        first_connect: AtomicBool::new(true),
        tenants,
        in_flight: Arc::new(AtomicU64::new(0)),
        stopping: AtomicBool::new(false),
    });
    Ok(uplink::run(config.uplink, worker).await?)
}

/// Compiles a catalogue snapshot, reusing the filters of `previous` whose
/// bytes did not change. Broken plugins and filters are logged and left out.
async fn build_catalogue(
    engine: &FilterEngine,
    snapshot: CatalogueSnapshot,
    previous: &LoadedCatalogue,
) -> LoadedCatalogue {
    let mut filters = HashMap::new();
    for module in snapshot.filters {
        if let Some(old) = previous.filter(&module.name)
            && old.sha256 == crate::catalogue::filter::sha256_hex(&module.bytes)
        {
            filters.insert(module.name, Arc::clone(old));
            continue;
        }
        let engine = engine.clone();
        let name = module.name.clone();
        // Compiling takes a while: off the async threads.
        let compiled =
            tokio::task::spawn_blocking(move || engine.compile(&module.name, &module.bytes)).await;
        match compiled {
            Ok(Ok(f)) => {
                tracing::info!(filter = %name, abi = %f.abi, cached = f.from_cache, sha256 = %f.sha256, "filter loaded");
                filters.insert(name, Arc::new(f));
            }
            Ok(Err(e)) => tracing::error!(filter = %name, "filter not loaded: {e}"),
            Err(e) => tracing::error!(filter = %name, "filter compilation panicked: {e}"),
        }
    }
    let (catalogue, errors) =
        LoadedCatalogue::build(&snapshot.plugins, filters, snapshot.revision, previous);
    for e in &errors {
        tracing::error!("plugin not loaded: {e}");
    }
    tracing::info!(
        revision = snapshot.revision,
        plugins = catalogue.all().len(),
        filters = catalogue.filters().len(),
        "catalogue loaded"
    );
    // Compiling filters peaks at tens of megabytes that glibc keeps in its
    // arenas afterwards; give them back, or every worker carries them idle.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator.
    unsafe {
        libc::malloc_trim(0);
    }
    catalogue
}

async fn watch_parent(parent: u32) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        // SAFETY: getppid has no preconditions and cannot fail.
        let now = unsafe { libc::getppid() } as u32;
        if now != parent {
            tracing::warn!(parent, "the master is gone; exiting");
            std::process::exit(0);
        }
    }
}

struct Worker {
    db: DbClient,
    services: Arc<Services>,
    /// One catalogue reload at a time, so an older snapshot never lands
    /// after a newer one.
    reloading: Arc<tokio::sync::Mutex<()>>,
    /// The newest revision the master announced. Requests that arrive
    /// after an announcement wait until a reload has settled at least that
    /// revision, so that whoever changed the catalogue sees the change in
    /// their next event; requests already running keep their catalogue.
    wanted: Arc<AtomicU64>,
    /// The newest revision a reload settled (loaded, or gave up on: a
    /// failed reload must not hold events forever).
    settled: Arc<tokio::sync::watch::Sender<u64>>,
    /// The states were loaded just before the first connection; reload
    /// only on later ones.
    first_connect: AtomicBool,
    tenants: Arc<Tenants>,
    in_flight: Arc<AtomicU64>,
    stopping: AtomicBool,
}

/// Counts a request as in flight for as long as it lives.
struct InFlight(Arc<AtomicU64>);

impl InFlight {
    fn new(counter: &Arc<AtomicU64>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(counter))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn deadline(ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(ms).min(MAX_DEADLINE)
}

impl Worker {
    /// Fetches the catalogue and swaps it in if it is newer than ours.
    fn reload_catalogue(&self) {
        let db = self.db.clone();
        let services = Arc::clone(&self.services);
        let lock = Arc::clone(&self.reloading);
        let wanted = Arc::clone(&self.wanted);
        let settled = Arc::clone(&self.settled);
        tokio::spawn(async move {
            let _one_at_a_time = lock.lock().await;
            // Read before fetching: the snapshot is at least this new.
            let target = wanted.load(Ordering::SeqCst);
            match db.catalogue(LOAD_DEADLINE).await {
                Ok(snapshot) => {
                    let current = services.catalogue();
                    if snapshot.revision > current.revision
                        && let Some(engine) = services.engine.as_ref()
                    {
                        let next = build_catalogue(engine, snapshot, &current).await;
                        services.set_catalogue(next);
                    }
                }
                Err(e) => tracing::error!(
                    revision = target,
                    "cannot reload the catalogue, events go on with the old one: {e}"
                ),
            }
            settled.send_modify(|s| *s = (*s).max(target));
        });
    }

    /// `None` when the catalogue announced before now is in force, else a
    /// future that resolves once it is.
    fn catalogue_pending(&self) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        let wanted = self.wanted.load(Ordering::SeqCst);
        let mut settled = self.settled.subscribe();
        if *settled.borrow() >= wanted {
            return None;
        }
        Some(async move {
            // An error means the runtime is going away: nothing to wait for.
            let _ = settled.wait_for(|s| *s >= wanted).await;
        })
    }

    fn answer(
        &self,
        req_id: u64,
        tenant: crate::mesophyll::message::Tenant,
        job: Job,
        outbox: Outbox,
    ) {
        // Requests wait here (for a catalogue reload) before they reach a
        // tenant's bounded queue: past this many, refuse rather than pile
        // up tasks.
        if self.in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT {
            outbox.try_reply(
                req_id,
                Err(RemoteError::new(
                    ErrorKind::Overloaded,
                    format!("the worker has {MAX_IN_FLIGHT} requests in flight"),
                )),
            );
            return;
        }
        let reply = Reply::Master {
            req_id,
            outbox,
            in_flight: Box::new(InFlight::new(&self.in_flight)),
        };
        // The tenant's task answers the master itself; only a request that
        // must wait for a catalogue reload gets a task of its own.
        match self.catalogue_pending() {
            None => self.tenants.submit_answering(tenant, job, reply),
            Some(reload) => {
                let tenants = Arc::clone(&self.tenants);
                tokio::spawn(async move {
                    reload.await;
                    tenants.submit_answering(tenant, job, reply);
                });
            }
        }
    }

    /// Runs a fire-and-forget event. Waiting only when a reload is under
    /// way keeps a tenant's fire-and-forget events in order otherwise.
    fn detached(&self, tenant: Tenant, job: Job) {
        let tenants = Arc::clone(&self.tenants);
        let submit = move || {
            if let Err(e) = tenants.submit_detached(tenant.clone(), job) {
                tracing::warn!(%tenant, "fire-and-forget event dropped: {e}");
            }
        };
        match self.catalogue_pending() {
            None => submit(),
            Some(reload) => {
                tokio::spawn(async move {
                    reload.await;
                    submit();
                });
            }
        }
    }

    /// Reloads the plugin variables; answers `req_id` once they are in
    /// force.
    fn reload_vars(&self, req_id: Option<u64>, outbox: Outbox) {
        let (db, services) = (self.db.clone(), Arc::clone(&self.services));
        tokio::spawn(async move {
            let loaded = load_vars(&db, &services).await;
            if let Some(req_id) = req_id {
                let done = Packed::from_value(&serde_json::Value::Bool(true));
                outbox.try_reply(req_id, loaded.map(|()| done));
            }
        });
    }

    /// Finishes what runs (up to `grace_ms`), closes the connection after
    /// the answers already queued, and exits.
    fn shut_down(&self, grace_ms: u64, outbox: Outbox) {
        self.stopping.store(true, Ordering::Relaxed);
        let in_flight = Arc::clone(&self.in_flight);
        tokio::spawn(async move {
            let until = Instant::now() + Duration::from_millis(grace_ms);
            while in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            tracing::info!("shutting down");
            // Answers already queued go out before the close frame;
            // then `run` returns and the process ends.
            outbox.close().await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            tracing::warn!("the connection did not close in time; exiting anyway");
            std::process::exit(0);
        });
    }
}

impl Handler for Worker {
    fn handle(&self, msg: ServerMessage, outbox: Outbox) {
        if self.stopping.load(Ordering::Relaxed) {
            if let Some(req_id) = request_id(&msg) {
                outbox.try_reply(
                    req_id,
                    Err(RemoteError::new(
                        ErrorKind::Unavailable,
                        "worker shutting down",
                    )),
                );
            }
            return;
        }
        match msg {
            ServerMessage::DispatchEvent {
                req_id,
                tenant,
                event,
                deadline_ms,
            } => {
                let job = Job::Event {
                    event,
                    deadline: deadline(deadline_ms),
                    request: req_id,
                };
                match req_id {
                    Some(req_id) => self.answer(req_id, tenant, job, outbox),
                    None => self.detached(tenant, job),
                }
            }
            ServerMessage::RunScript {
                req_id,
                tenant,
                name,
                code,
                event,
                deadline_ms,
            } => {
                let job = Job::Script {
                    name,
                    code,
                    event,
                    deadline: deadline(deadline_ms),
                    request: Some(req_id),
                };
                self.answer(req_id, tenant, job, outbox);
            }
            ServerMessage::DropTenant { req_id, tenant } => {
                self.answer(req_id, tenant, Job::Drop, outbox);
            }
            ServerMessage::ListTenants { req_id, limit } => {
                let live = self.tenants.list(limit as usize);
                let answer = Packed::encode(&live).map_err(|e| {
                    RemoteError::new(ErrorKind::Internal, format!("cannot list tenants: {e}"))
                });
                outbox.try_reply(req_id, answer);
            }
            ServerMessage::TenantStateChanged {
                req_id,
                tenant,
                state,
            } => {
                tracing::debug!(%tenant, "tenant state changed");
                self.tenants.states().set(tenant, state);
                if let Some(req_id) = req_id {
                    outbox.try_reply(
                        req_id,
                        Ok(Packed::from_value(&serde_json::Value::Bool(true))),
                    );
                }
            }
            ServerMessage::VarsChanged { req_id, plugin } => {
                tracing::info!(%plugin, "plugin variables changed");
                self.reload_vars(req_id, outbox);
            }
            ServerMessage::CatalogueChanged { revision } => {
                tracing::info!(revision, "the catalogue changed");
                self.wanted.fetch_max(revision, Ordering::SeqCst);
                self.reload_catalogue();
            }
            ServerMessage::Shutdown { grace_ms } => self.shut_down(grace_ms, outbox),
            ServerMessage::Hello { .. } => {}
        }
    }

    fn connected(&self, welcome: &Welcome) {
        self.services.egress.set_policy(&welcome.egress);
        self.services.set_max_event_hops(welcome.max_event_hops);
        if self.first_connect.swap(false, Ordering::Relaxed) {
            return;
        }
        // Whatever changed while we were away.
        self.reload_catalogue();
        let (db, services) = (self.db.clone(), Arc::clone(&self.services));
        tokio::spawn(async move { load_vars(&db, &services).await });
        let db = self.db.clone();
        let tenants = Arc::clone(&self.tenants);
        tokio::spawn(async move {
            match db.tenant_states(LOAD_DEADLINE).await {
                Ok(states) => {
                    tracing::info!(tenants = states.len(), "tenant states reloaded");
                    let reload = tenants.states().begin_reload();
                    tenants.states().finish_reload(reload, states);
                }
                Err(e) => tracing::error!("cannot reload tenant states: {e}"),
            }
        });
    }

    fn load(&self) -> LoadFigures {
        LoadFigures {
            in_flight: self.in_flight.load(Ordering::Relaxed),
            vms: self.tenants.vms(),
            rss_bytes: rss_bytes(),
            // The uplink counts its own bad frames.
            bad_frames: 0,
            filters: self.services.filter_calls(),
            filter_metrics: self.services.filter_metrics(),
            egress: self.services.egress.calls(),
            hop_limited: self.services.hop_limited(),
        }
    }
}

fn request_id(msg: &ServerMessage) -> Option<u64> {
    match msg {
        ServerMessage::DispatchEvent { req_id, .. }
        | ServerMessage::TenantStateChanged { req_id, .. }
        | ServerMessage::VarsChanged { req_id, .. } => *req_id,
        ServerMessage::RunScript { req_id, .. }
        | ServerMessage::DropTenant { req_id, .. }
        | ServerMessage::ListTenants { req_id, .. } => Some(*req_id),
        _ => None,
    }
}

/// This process's resident set size, from `/proc/self/statm` (0 elsewhere).
pub fn rss_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * page.max(0) as u64
}
