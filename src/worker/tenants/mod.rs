//! The tenants of one worker: one actor task per tenant, owning its VM.
//!
//! Jobs for a tenant run one at a time, in arrival order, on that tenant's
//! task, so a tenant's VM is never entered twice at once, while different
//! tenants run side by side (and the VM's time slicing keeps a CPU-bound one
//! from holding a runtime thread).
//!
//! - Each tenant's queue is bounded ([`TenantsConfig::queue_depth`]); a full
//!   queue answers "overloaded" at once.
//! - A tenant idle for [`TenantsConfig::idle_ttl`] ends its task and frees
//!   its VM. Past [`TenantsConfig::max_tenants`] live tenants, the least
//!   recently used idle one is evicted to make room.
//! - A VM that hit its memory cap (or abandoned a call) is dropped; the next
//!   job builds a fresh one.
//! - New VMs wait while all live VMs' heaps are past the worker's memory
//!   budget ([`budget`]).
//! - `DropTenant` travels through the same queue, so jobs queued before it
//!   finish on the old VM and jobs after it get a fresh one.
//!
//! Modules:
//!
//! - `reply`: where a tenant job's outcome goes.

pub mod budget;
mod reply;

pub use reply::Reply;

use crate::catalogue::manifest::OnError;
use crate::catalogue::plugin::Plugin;
use crate::mesophyll::answers;
use crate::mesophyll::message::{
    ErrorKind, Event, LiveTenant, LiveTenants, Packed, PluginOutcome, RemoteError, Tenant,
};
use crate::worker::events;
use crate::worker::filters::{FilterError, FilterInput, Verdict};
use crate::worker::loaded::LoadedCatalogue;
use crate::worker::services::Services;
use crate::worker::states::TenantStates;
use crate::worker::vm::{Vm, VmLimits};
use budget::HeapBudget;
use dashmap::DashMap;
use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Sizing of the tenant table.
#[derive(Debug, Clone)]
pub struct TenantsConfig {
    /// Limits of each VM.
    pub vm: VmLimits,
    /// Jobs queued per tenant before "overloaded".
    pub queue_depth: usize,
    /// Idle time after which a tenant's VM is freed.
    pub idle_ttl: Duration,
    /// Live tenants before the least recently used idle one is evicted.
    pub max_tenants: usize,
    /// The Luau heap bytes all live VMs may hold together before new ones
    /// are refused `overloaded` ([`budget`]).
    pub memory_budget: usize,
}

impl Default for TenantsConfig {
    fn default() -> Self {
        TenantsConfig {
            vm: VmLimits::default(),
            queue_depth: 256,
            idle_ttl: Duration::from_secs(600),
            max_tenants: 50_000,
            memory_budget: Self::default_memory_budget(),
        }
    }
}

impl TenantsConfig {
    /// [`TenantsConfig::memory_budget`] unless told otherwise: 4 GiB.
    pub const fn default_memory_budget() -> usize {
        4096 * 1024 * 1024
    }
}

/// One unit of work for a tenant.
#[derive(Debug)]
pub enum Job {
    /// Run every plugin that handles the event.
    Event {
        /// The event.
        event: Event,
        /// Budget for all handlers together.
        deadline: Instant,
        /// The master's id for the request (`None`: fire-and-forget), for
        /// the log lines of the handlers and filters.
        request: Option<u64>,
    },
    /// Run ad-hoc Luau.
    Script {
        /// Chunk name for error messages.
        name: String,
        /// Luau source.
        code: String,
        /// The script's `...`.
        event: Event,
        /// Budget.
        deadline: Instant,
        /// The master's id for the request, for its log lines.
        request: Option<u64>,
    },
    /// Drop the VM.
    Drop,
}

/// A job in a tenant's queue, with whoever waits for its outcome. Boxed:
/// tokio's channel allocates its slots 32 at a time, with the queue, so an
/// unboxed job (200 bytes) would make every idle tenant carry 6 KiB of
/// empty slots.
type Queued = Box<(Job, Option<Reply>)>;

struct Handle {
    serial: u64,
    tx: mpsc::Sender<Queued>,
    last_used: Arc<AtomicU64>,
    /// Set while the actor runs a job: such a tenant is not evicted.
    busy: Arc<AtomicBool>,
}

/// The tenants of this worker.
pub struct Tenants {
    config: TenantsConfig,
    services: Arc<Services>,
    states: TenantStates,
    live: DashMap<Tenant, Handle>,
    /// One turn per tenant: an actor holds its tenant's turn from its first
    /// job to its exit, so a tenant evicted (or idle-retired) while a job
    /// runs gets its next actor only after that job; jobs of one tenant
    /// never run at the same time or out of order.
    turns: DashMap<Tenant, Arc<tokio::sync::Mutex<()>>>,
    serials: AtomicU64,
    vms: AtomicU64,
    /// A logical clock for LRU: bumped on every use (wall-clock time ties
    /// too easily on a fast path).
    uses: AtomicU64,
    /// The heaps of the live VMs against `config.memory_budget`.
    heaps: HeapBudget,
}

impl Tenants {
    /// An empty table running the plugins of `services`' catalogue.
    pub fn new(config: TenantsConfig, services: Arc<Services>) -> Arc<Self> {
        Arc::new(Tenants {
            heaps: HeapBudget::new(config.memory_budget),
            config,
            services,
            states: TenantStates::default(),
            live: DashMap::new(),
            turns: DashMap::new(),
            serials: AtomicU64::new(0),
            vms: AtomicU64::new(0),
            uses: AtomicU64::new(0),
        })
    }

    /// The tenants' states: what events and plugins each may run.
    pub fn states(&self) -> &TenantStates {
        &self.states
    }

    /// VMs alive now.
    pub fn vms(&self) -> u64 {
        self.vms.load(Ordering::Relaxed)
    }

    /// Tenants with a live task.
    pub fn live(&self) -> usize {
        self.live.len()
    }

    /// Up to `limit` of the tenants with a live task, the most recently used
    /// first, and how many there are in all.
    pub fn list(&self, limit: usize) -> LiveTenants {
        let mut live: Vec<(u64, LiveTenant)> = self
            .live
            .iter()
            .map(|h| {
                let tenant = LiveTenant {
                    tenant: h.key().clone(),
                    busy: h.busy.load(Ordering::Relaxed),
                    queued: (h.tx.max_capacity() - h.tx.capacity()) as u64,
                };
                (h.last_used.load(Ordering::Relaxed), tenant)
            })
            .collect();
        let total = live.len() as u64;
        live.sort_unstable_by_key(|t| std::cmp::Reverse(t.0));
        live.truncate(limit);
        LiveTenants {
            total,
            tenants: live.into_iter().map(|(_, t)| t).collect(),
        }
    }

    /// Queues `job` for `tenant` and waits for its outcome.
    ///
    /// Fails at once with [`ErrorKind::Overloaded`] when the tenant's queue is
    /// full.
    pub async fn run(self: &Arc<Self>, tenant: Tenant, job: Job) -> Result<Packed, RemoteError> {
        let (tx, rx) = oneshot::channel();
        if let Err((e, _)) = self.submit(tenant, job, Some(Reply::Caller(tx))) {
            return Err(e);
        }
        rx.await.unwrap_or_else(|_| {
            Err(RemoteError::new(
                ErrorKind::Internal,
                "the tenant's task ended without answering",
            ))
        })
    }

    /// Queues `job` without waiting for it (fire-and-forget dispatch).
    pub fn submit_detached(self: &Arc<Self>, tenant: Tenant, job: Job) -> Result<(), RemoteError> {
        self.submit(tenant, job, None).map_err(|(e, _)| e)
    }

    /// Queues `job` for `tenant`; its outcome goes to `reply`, and so does
    /// the refusal when the tenant's queue is full.
    pub fn submit_answering(self: &Arc<Self>, tenant: Tenant, job: Job, reply: Reply) {
        if let Err((e, Some(reply))) = self.submit(tenant, job, Some(reply)) {
            reply.refuse(e);
        }
    }

    /// On refusal, the reply comes back with the error, to be told.
    fn submit(
        self: &Arc<Self>,
        tenant: Tenant,
        job: Job,
        reply: Option<Reply>,
    ) -> Result<(), (RemoteError, Option<Reply>)> {
        let mut msg = Box::new((job, reply));
        // Two rounds: a task that is just retiring closes its queue; the
        // second round finds it gone and starts a new one.
        for _ in 0..2 {
            let tx = self.sender(&tenant);
            match tx.try_send(msg) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Full(back)) => {
                    let (_, reply) = *back;
                    let e = RemoteError::new(
                        ErrorKind::Overloaded,
                        format!(
                            "tenant {tenant} has {} jobs queued",
                            self.config.queue_depth
                        ),
                    );
                    return Err((e, reply));
                }
                Err(mpsc::error::TrySendError::Closed(back)) => {
                    self.live.remove_if(&tenant, |_, h| h.tx.same_channel(&tx));
                    msg = back;
                }
            }
        }
        let e = RemoteError::new(ErrorKind::Unavailable, "tenant task unavailable");
        Err((e, msg.1))
    }

    fn tick(&self) -> u64 {
        self.uses.fetch_add(1, Ordering::Relaxed)
    }

    fn sender(self: &Arc<Self>, tenant: &Tenant) -> mpsc::Sender<Queued> {
        if let Some(h) = self.live.get(tenant) {
            h.last_used.store(self.tick(), Ordering::Relaxed);
            return h.tx.clone();
        }
        if self.live.len() >= self.config.max_tenants {
            self.evict_one();
        }
        let entry = self.live.entry(tenant.clone()).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(self.config.queue_depth);
            let serial = self.serials.fetch_add(1, Ordering::Relaxed);
            let last_used = Arc::new(AtomicU64::new(self.tick()));
            let busy = Arc::new(AtomicBool::new(false));
            let turn = Arc::clone(self.turns.entry(tenant.clone()).or_default().value());
            tokio::spawn(Arc::clone(self).actor(
                tenant.clone(),
                serial,
                rx,
                turn,
                Arc::clone(&busy),
            ));
            Handle {
                serial,
                tx,
                last_used,
                busy,
            }
        });
        entry.tx.clone()
    }

    /// Removes the least recently used tenant that is idle (nothing queued,
    /// nothing running); with none idle, nobody is evicted and the cap is
    /// exceeded for a while rather than a busy tenant disturbed.
    fn evict_one(&self) {
        let victim = self
            .live
            .iter()
            .filter(|h| h.tx.capacity() == h.tx.max_capacity() && !h.busy.load(Ordering::SeqCst))
            .min_by_key(|h| h.last_used.load(Ordering::Relaxed))
            .map(|h| (h.key().clone(), h.serial));
        if let Some((tenant, serial)) = victim {
            self.live.remove_if(&tenant, |_, h| h.serial == serial);
        }
    }

    async fn actor(
        self: Arc<Self>,
        tenant: Tenant,
        serial: u64,
        mut rx: mpsc::Receiver<Queued>,
        turn: Arc<tokio::sync::Mutex<()>>,
        busy: Arc<AtomicBool>,
    ) {
        // Wait for an earlier actor of this tenant (evicted or retiring) to
        // finish every job it took.
        let my_turn = turn.lock().await;
        let mut vm: Option<Vm> = None;
        // The heap this actor's VM was last reported at.
        let mut accounted = 0;
        loop {
            let next = tokio::time::timeout(self.config.idle_ttl, rx.recv()).await;
            let Ok(Some(queued)) = next else {
                // Idle, or evicted (every sender dropped).
                break;
            };
            let (job, reply) = *queued;
            busy.store(true, Ordering::SeqCst);
            let outcome = self.execute_boxed(&tenant, &mut vm, job).await;
            self.heaps
                .account(&mut accounted, vm.as_ref().map_or(0, Vm::used_memory));
            busy.store(false, Ordering::SeqCst);
            if let Some(reply) = reply {
                reply.send(outcome).await;
            }
        }
        // Only our own entry: a newer task for the same tenant stays (and
        // waits for our turn to end).
        self.live.remove_if(&tenant, |_, h| h.serial == serial);
        // Jobs that raced into the queue as we stopped reading are still
        // ours to run, in order: nobody else may run them before us.
        rx.close();
        while let Ok(queued) = rx.try_recv() {
            let (job, reply) = *queued;
            let outcome = self.execute_boxed(&tenant, &mut vm, job).await;
            if let Some(reply) = reply {
                reply.send(outcome).await;
            }
        }
        if vm.take().is_some() {
            self.vms.fetch_sub(1, Ordering::Relaxed);
        }
        self.heaps.account(&mut accounted, 0);
        drop(my_turn);
        // Forget the turn unless a newer actor holds it too.
        self.turns.remove_if(&tenant, |_, t| {
            Arc::ptr_eq(t, &turn) && Arc::strong_count(t) <= 2
        });
    }

    /// [`Self::execute`] on the heap for the length of one job: its future
    /// (a handler call's, 3 KiB) would otherwise live in every tenant's
    /// task, idle ones too.
    async fn execute_boxed(
        &self,
        tenant: &Tenant,
        slot: &mut Option<Vm>,
        job: Job,
    ) -> Result<Packed, RemoteError> {
        Box::pin(self.execute(tenant, slot, job)).await
    }

    async fn execute(
        &self,
        tenant: &Tenant,
        slot: &mut Option<Vm>,
        job: Job,
    ) -> Result<Packed, RemoteError> {
        match job {
            Job::Drop => {
                if slot.take().is_some() {
                    self.vms.fetch_sub(1, Ordering::Relaxed);
                }
                Ok(Packed::from_value(&serde_json::Value::Bool(true)))
            }
            Job::Script {
                name,
                code,
                event,
                deadline,
                request,
            } => {
                let vm = self.vm(tenant, slot)?;
                vm.serve(request);
                let out = vm.run_script(&name, &code, &event, deadline).await;
                self.recycle_if_poisoned(slot);
                out
            }
            Job::Event {
                event,
                deadline,
                request,
            } => {
                let state = self.states.state(tenant);
                if let Some(events) = state.as_ref().and_then(|s| s.events.as_ref())
                    && !events.contains(&event.name)
                {
                    return Err(RemoteError::new(
                        ErrorKind::NotSubscribed,
                        format!("tenant {tenant} is not subscribed to {:?}", event.name),
                    ));
                }
                let chosen = state.as_ref().and_then(|s| s.plugins.as_ref());
                let catalogue = self.services.catalogue();
                // A webhook reaches only the plugins that asked for it.
                let outside = event.http.is_some();
                let plugins: Vec<_> = catalogue
                    .handling(&event.name)
                    .filter(|p| !outside || p.takes_webhook(&event.name))
                    .filter(|p| chosen.is_none_or(|c| c.contains(&p.manifest.name)))
                    .cloned()
                    .collect();
                if plugins.is_empty() {
                    return Err(RemoteError::new(
                        ErrorKind::NotFound,
                        format!("no plugin handles event {:?}", event.name),
                    ));
                }
                let mut outcomes = Vec::with_capacity(plugins.len());
                for plugin in plugins {
                    let limit = plugin
                        .manifest
                        .limits
                        .timeout_ms
                        .map(|ms| Instant::now() + Duration::from_millis(ms));
                    let deadline = limit.map_or(deadline, |l| l.min(deadline));
                    let missing = self.services.vars.missing(&plugin.manifest, tenant);
                    let result = match missing.map_or_else(
                        || self.filtered(&catalogue, &plugin, tenant, &event, request),
                        |name| Err(not_configured(&plugin.manifest.name, name)),
                    ) {
                        Err(refusal) => Err(refusal),
                        Ok(event) => match self.vm(tenant, slot) {
                            Ok(vm) => {
                                vm.serve(request);
                                let out = vm.handle_event(&plugin, &event, deadline).await;
                                // A failed handler emits nothing.
                                let emitted = vm.take_emitted();
                                if out.is_ok() {
                                    events::send(
                                        &self.services,
                                        tenant,
                                        &plugin.manifest.name,
                                        emitted,
                                    );
                                }
                                out
                            }
                            Err(e) => Err(e),
                        },
                    };
                    self.recycle_if_poisoned(slot);
                    outcomes.push(PluginOutcome {
                        plugin: plugin.manifest.name.clone(),
                        result,
                    });
                }
                Ok(answers::encode_outcomes(&outcomes))
            }
        }
    }

    /// Runs `plugin`'s filters in order: the event its handler gets, or why
    /// it gets none (a reject, or a failing filter whose policy is
    /// "reject").
    fn filtered<'e>(
        &self,
        catalogue: &LoadedCatalogue,
        plugin: &Plugin,
        tenant: &Tenant,
        event: &'e Event,
        request: Option<u64>,
    ) -> Result<Cow<'e, Event>, RemoteError> {
        // Borrowed until a filter rewrites it: most plugins have no filters,
        // and their events are not copied.
        let mut event = Cow::Borrowed(event);
        for f in &plugin.manifest.filters {
            if !f.applies_to(&event.name) {
                continue;
            }
            let timeout = f.timeout_ms.map(Duration::from_millis);
            let input = FilterInput {
                tenant,
                event: &event,
                config: &f.config,
                plugin: Some(&plugin.manifest.name),
                request,
            };
            match self
                .services
                .run_filter(catalogue, &f.name, &input, timeout)
            {
                Ok(Verdict::Continue { event: Some(next) }) => event = Cow::Owned(next),
                Ok(Verdict::Continue { event: None }) => {}
                Ok(Verdict::Reject { reason, status }) => {
                    let message = match status {
                        Some(status) => format!("{} ({status}): {reason}", f.name),
                        None => format!("{}: {reason}", f.name),
                    };
                    return Err(RemoteError::new(ErrorKind::Rejected, message));
                }
                // A full pool is no fault of the filter's: the caller may
                // retry, and a filter is never skipped for want of room.
                Err(e @ FilterError::Overloaded(_)) => {
                    return Err(RemoteError::new(
                        ErrorKind::Overloaded,
                        format!("filter {} {e}", f.name),
                    ));
                }
                Err(e) if f.on_error == OnError::Continue => {
                    tracing::warn!(%tenant, filter = %f.name, plugin = %plugin.manifest.name, "filter failed, going on: {e}");
                }
                Err(e) => {
                    return Err(RemoteError::new(
                        ErrorKind::Filter,
                        format!("filter {} {e}", f.name),
                    ));
                }
            }
        }
        Ok(event)
    }

    fn vm<'a>(&self, tenant: &Tenant, slot: &'a mut Option<Vm>) -> Result<&'a mut Vm, RemoteError> {
        if slot.is_none() && self.heaps.exhausted() {
            // Idle tenants make room for the next try; this one waits.
            for _ in 0..EVICT_FOR_ROOM {
                self.evict_one();
            }
            return Err(RemoteError::new(
                ErrorKind::Overloaded,
                format!(
                    "this worker's VMs hold {} MiB of their {} MiB budget (--worker-memory-mb); \
                     idle tenants are being freed, retry",
                    self.heaps.used() >> 20,
                    self.heaps.limit() >> 20
                ),
            ));
        }
        if slot.is_none() {
            *slot = Some(Vm::new(tenant, self.config.vm, &self.services)?);
            self.vms.fetch_add(1, Ordering::Relaxed);
        }
        Ok(slot.as_mut().expect("just filled"))
    }

    fn recycle_if_poisoned(&self, slot: &mut Option<Vm>) {
        if slot.as_ref().is_some_and(Vm::is_poisoned) {
            *slot = None;
            self.vms.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Idle tenants evicted when a new VM finds the memory budget spent.
const EVICT_FOR_ROOM: usize = 8;

#[cfg(test)]
mod tests;

/// The answer of a plugin that lacks required variable `name`.
fn not_configured(plugin: &str, name: &str) -> RemoteError {
    RemoteError::new(
        ErrorKind::NotConfigured,
        format!("plugin {plugin} needs variable {name}: meshplay vars set {plugin} {name} VALUE"),
    )
}
