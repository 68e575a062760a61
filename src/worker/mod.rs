//! A worker process: connects to the master's hub and runs tenant code.
//!
//! - [`plugins`]: the catalogue of Luau adapters, compiled once;
//! - [`vm`]: one sandboxed Luau VM, with its memory cap and deadlines;
//! - [`host`]: the API a script sees;
//! - [`tenants`]: one actor per tenant, so that tenants never wait on each
//!   other.
//!
//! The worker knows nothing of the store or of how the master routes: it
//! answers what it is sent. When started by a master it also watches its
//! parent and exits when the parent is gone, so a killed master leaves no
//! orphans.

pub mod filters;
pub mod host;
pub mod kv;
pub mod plugins;
pub mod tenants;
pub mod vm;

use crate::mesophyll::backoff::Backoff;
use crate::mesophyll::client::{self, ClientConfig, ClientError, Handler, LoadFigures, Outbox};
use crate::mesophyll::db::TenantStateEntry;
use crate::mesophyll::db_client::{DbClient, DbError};
use crate::mesophyll::message::{ErrorKind, RemoteError, ServerMessage};
use plugins::Catalogue;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tenants::{Job, Tenants, TenantsConfig};
use tokio::time::Instant;

/// The environment variable through which a master passes a worker its
/// token (so that it never shows in `ps`).
pub const TOKEN_ENV: &str = "MESHPLAY_WORKER_TOKEN";
/// Set by a master on the workers it spawns: the master's pid. The worker
/// exits when its parent is no longer that process.
pub const PARENT_ENV: &str = "MESHPLAY_PARENT_PID";

/// The longest deadline a worker accepts for one request; longer ones are
/// cut to this.
pub const MAX_DEADLINE: Duration = Duration::from_secs(600);

/// How long one load of the tenant states may take.
const STATES_DEADLINE: Duration = Duration::from_secs(10);

/// How a worker is started.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Where the master's hub listens, and who this worker is.
    pub client: ClientConfig,
    /// The plugin folder.
    pub plugins_dir: PathBuf,
    /// Tenant table sizing and VM limits.
    pub tenants: TenantsConfig,
    /// Exit when the parent process is no longer this pid.
    pub parent_pid: Option<u32>,
}

/// Runs a worker until the master refuses it or tells it to shut down.
///
/// Returns [`ClientError`] when the master refuses this worker's credentials
/// or speaks another protocol.
pub async fn run(config: WorkerConfig) -> Result<(), ClientError> {
    if let Some(parent) = config.parent_pid {
        tokio::spawn(watch_parent(parent));
    }
    let (catalogue, errors) = Catalogue::load(&config.plugins_dir);
    for e in &errors {
        tracing::error!("plugin not loaded: {e}");
    }
    tracing::info!(
        plugins = catalogue.all().len(),
        dir = %config.plugins_dir.display(),
        "plugins loaded"
    );
    let db = DbClient::new(
        &config.client.master,
        config.client.worker_id,
        &config.client.token,
    );
    // States first: an event must never run before its tenant's state is
    // known. The master serves both, so this also waits for it to be up.
    let states = load_states(&db).await?;
    tracing::info!(tenants = states.len(), "tenant states loaded");
    let tenants = Tenants::new(config.tenants.clone(), catalogue, Some(db.clone()));
    tenants.replace_states(states);
    let runtime = Arc::new(Runtime {
        db,
        first_connect: AtomicBool::new(true),
        tenants,
        plugins_dir: config.plugins_dir.clone(),
        in_flight: Arc::new(AtomicU64::new(0)),
        stopping: AtomicBool::new(false),
    });
    client::run(config.client, runtime).await
}

/// The states of this worker's shard, retried with backoff until the master
/// answers. Refused credentials are fatal.
async fn load_states(db: &DbClient) -> Result<Vec<TenantStateEntry>, ClientError> {
    let mut backoff = Backoff::reconnect();
    loop {
        match db.tenant_states(STATES_DEADLINE).await {
            Ok(states) => return Ok(states),
            Err(DbError::Refused(status)) => return Err(ClientError::Refused(status)),
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(?delay, "cannot load tenant states yet: {e}");
                tokio::time::sleep(delay).await;
            }
        }
    }
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

struct Runtime {
    db: DbClient,
    /// The states were loaded just before the first connection; reload
    /// only on later ones.
    first_connect: AtomicBool,
    tenants: Arc<Tenants>,
    plugins_dir: PathBuf,
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

impl Runtime {
    fn answer(
        &self,
        req_id: u64,
        tenant: crate::mesophyll::message::Tenant,
        job: Job,
        outbox: Outbox,
    ) {
        let guard = InFlight::new(&self.in_flight);
        let tenants = Arc::clone(&self.tenants);
        tokio::spawn(async move {
            let result = tenants.run(tenant, job).await;
            outbox.reply(req_id, result).await;
            drop(guard);
        });
    }
}

impl Handler for Runtime {
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
                };
                match req_id {
                    Some(req_id) => self.answer(req_id, tenant, job, outbox),
                    None => {
                        if let Err(e) = self.tenants.submit_detached(tenant.clone(), job) {
                            tracing::warn!(%tenant, "fire-and-forget event dropped: {e}");
                        }
                    }
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
                };
                self.answer(req_id, tenant, job, outbox);
            }
            ServerMessage::DropTenant { req_id, tenant } => {
                self.answer(req_id, tenant, Job::Drop, outbox);
            }
            ServerMessage::TenantStateChanged { tenant, state } => {
                tracing::debug!(%tenant, "tenant state changed");
                self.tenants.set_state(tenant, state);
            }
            ServerMessage::PluginsChanged { revision } => {
                let (catalogue, errors) = Catalogue::load(&self.plugins_dir);
                for e in &errors {
                    tracing::error!("plugin not loaded: {e}");
                }
                tracing::info!(
                    revision,
                    plugins = catalogue.all().len(),
                    "plugins reloaded"
                );
                self.tenants.set_catalogue(catalogue);
            }
            ServerMessage::Shutdown { grace_ms } => {
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
            ServerMessage::Hello { .. } => {}
        }
    }

    fn connected(&self) {
        if self.first_connect.swap(false, Ordering::Relaxed) {
            return;
        }
        let db = self.db.clone();
        let tenants = Arc::clone(&self.tenants);
        tokio::spawn(async move {
            match db.tenant_states(STATES_DEADLINE).await {
                Ok(states) => {
                    tracing::info!(tenants = states.len(), "tenant states reloaded");
                    tenants.replace_states(states);
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
        }
    }
}

fn request_id(msg: &ServerMessage) -> Option<u64> {
    match msg {
        ServerMessage::DispatchEvent { req_id, .. } => *req_id,
        ServerMessage::RunScript { req_id, .. } | ServerMessage::DropTenant { req_id, .. } => {
            Some(*req_id)
        }
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
