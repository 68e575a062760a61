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
//! - `DropTenant` travels through the same queue, so jobs queued before it
//!   finish on the old VM and jobs after it get a fresh one.

use crate::catalogue::manifest::OnError;
use crate::catalogue::plugin::Plugin;
use crate::mesophyll::db::TenantStateEntry;
use crate::mesophyll::message::TenantState;
use crate::mesophyll::message::{ErrorKind, Event, PluginOutcome, RemoteError, Tenant};
use crate::worker::filters::{FilterError, Verdict};
use crate::worker::loaded::LoadedCatalogue;
use crate::worker::services::Services;
use crate::worker::vm::{Vm, VmLimits};
use dashmap::DashMap;
use serde_json::Value;
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
}

impl Default for TenantsConfig {
    fn default() -> Self {
        TenantsConfig {
            vm: VmLimits::default(),
            queue_depth: 256,
            idle_ttl: Duration::from_secs(600),
            max_tenants: 50_000,
        }
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
    },
    /// Drop the VM.
    Drop,
}

type Responder = oneshot::Sender<Result<Value, RemoteError>>;

struct Handle {
    serial: u64,
    tx: mpsc::Sender<(Job, Option<Responder>)>,
    last_used: Arc<AtomicU64>,
    /// Set while the actor runs a job: such a tenant is not evicted.
    busy: Arc<AtomicBool>,
}

/// Changes of tenant state that arrived while a full reload was under way,
/// in arrival order: they are newer than the reload's snapshot may be, so
/// they are applied again on top of it.
#[derive(Default)]
struct Reloads {
    running: usize,
    changes: Vec<(Tenant, Option<TenantState>)>,
}

/// A full reload of the tenant states, begun with [`Tenants::begin_reload`].
#[must_use = "finish it with Tenants::finish_reload"]
pub struct Reload(());

/// The tenants of this worker.
pub struct Tenants {
    config: TenantsConfig,
    services: Arc<Services>,
    states: DashMap<Tenant, TenantState>,
    live: DashMap<Tenant, Handle>,
    /// One turn per tenant: an actor holds its tenant's turn from its first
    /// job to its exit, so a tenant evicted (or idle-retired) while a job
    /// runs gets its next actor only after that job; jobs of one tenant
    /// never run at the same time or out of order.
    turns: DashMap<Tenant, Arc<tokio::sync::Mutex<()>>>,
    reloads: std::sync::Mutex<Reloads>,
    serials: AtomicU64,
    vms: AtomicU64,
    /// A logical clock for LRU: bumped on every use (wall-clock time ties
    /// too easily on a fast path).
    uses: AtomicU64,
}

impl Tenants {
    /// An empty table running the plugins of `services`' catalogue.
    pub fn new(config: TenantsConfig, services: Arc<Services>) -> Arc<Self> {
        Arc::new(Tenants {
            config,
            services,
            states: DashMap::new(),
            live: DashMap::new(),
            turns: DashMap::new(),
            reloads: std::sync::Mutex::default(),
            serials: AtomicU64::new(0),
            vms: AtomicU64::new(0),
            uses: AtomicU64::new(0),
        })
    }

    /// Sets (or, with `None`, clears) one tenant's state; the tenant's next
    /// event sees it.
    pub fn set_state(&self, tenant: Tenant, state: Option<TenantState>) {
        {
            let mut reloads = self.reloads.lock().unwrap_or_else(|p| p.into_inner());
            if reloads.running > 0 {
                reloads.changes.push((tenant.clone(), state.clone()));
            }
        }
        self.apply_state(tenant, state);
    }

    fn apply_state(&self, tenant: Tenant, state: Option<TenantState>) {
        match state {
            Some(s) => {
                self.states.insert(tenant, s);
            }
            None => {
                self.states.remove(&tenant);
            }
        }
    }

    /// One tenant's state as this worker holds it.
    pub fn state(&self, tenant: &Tenant) -> Option<TenantState> {
        self.states.get(tenant).map(|s| s.clone())
    }

    /// Starts a full reload: call before asking the master for every state.
    pub fn begin_reload(&self) -> Reload {
        self.reloads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .running += 1;
        Reload(())
    }

    /// Ends a full reload with what the master answered (or, with `None`,
    /// gives it up): every state becomes `entries`, then the changes that
    /// arrived meanwhile are applied again, in order, on top.
    pub fn finish_reload(&self, reload: Reload, entries: impl Into<Option<Vec<TenantStateEntry>>>) {
        let Reload(()) = reload;
        let mut reloads = self.reloads.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entries) = entries.into() {
            self.replace_states(entries);
            for (tenant, state) in reloads.changes.clone() {
                self.apply_state(tenant, state);
            }
        }
        reloads.running -= 1;
        if reloads.running == 0 {
            reloads.changes.clear();
        }
    }

    /// Replaces every tenant state with `entries`.
    fn replace_states(&self, entries: Vec<TenantStateEntry>) {
        let fresh: std::collections::HashSet<Tenant> =
            entries.iter().map(|e| e.tenant.clone()).collect();
        self.states.retain(|t, _| fresh.contains(t));
        for e in entries {
            self.states.insert(e.tenant, e.state);
        }
    }

    /// VMs alive now.
    pub fn vms(&self) -> u64 {
        self.vms.load(Ordering::Relaxed)
    }

    /// Tenants with a live task.
    pub fn live(&self) -> usize {
        self.live.len()
    }

    /// Queues `job` for `tenant` and waits for its outcome.
    ///
    /// Fails at once with [`ErrorKind::Overloaded`] when the tenant's queue is
    /// full.
    pub async fn run(self: &Arc<Self>, tenant: Tenant, job: Job) -> Result<Value, RemoteError> {
        let (tx, rx) = oneshot::channel();
        self.submit(tenant, job, Some(tx))?;
        rx.await.unwrap_or_else(|_| {
            Err(RemoteError::new(
                ErrorKind::Internal,
                "the tenant's task ended without answering",
            ))
        })
    }

    /// Queues `job` without waiting for it (fire-and-forget dispatch).
    pub fn submit_detached(self: &Arc<Self>, tenant: Tenant, job: Job) -> Result<(), RemoteError> {
        self.submit(tenant, job, None)
    }

    fn submit(
        self: &Arc<Self>,
        tenant: Tenant,
        job: Job,
        reply: Option<Responder>,
    ) -> Result<(), RemoteError> {
        let mut msg = (job, reply);
        // Two rounds: a task that is just retiring closes its queue; the
        // second round finds it gone and starts a new one.
        for _ in 0..2 {
            let tx = self.sender(&tenant);
            match tx.try_send(msg) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    return Err(RemoteError::new(
                        ErrorKind::Overloaded,
                        format!(
                            "tenant {tenant} has {} jobs queued",
                            self.config.queue_depth
                        ),
                    ));
                }
                Err(mpsc::error::TrySendError::Closed(back)) => {
                    self.live.remove_if(&tenant, |_, h| h.tx.same_channel(&tx));
                    msg = back;
                }
            }
        }
        Err(RemoteError::new(
            ErrorKind::Unavailable,
            "tenant task unavailable",
        ))
    }

    fn tick(&self) -> u64 {
        self.uses.fetch_add(1, Ordering::Relaxed)
    }

    fn sender(self: &Arc<Self>, tenant: &Tenant) -> mpsc::Sender<(Job, Option<Responder>)> {
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
        mut rx: mpsc::Receiver<(Job, Option<Responder>)>,
        turn: Arc<tokio::sync::Mutex<()>>,
        busy: Arc<AtomicBool>,
    ) {
        // Wait for an earlier actor of this tenant (evicted or retiring) to
        // finish every job it took.
        let my_turn = turn.lock().await;
        let mut vm: Option<Vm> = None;
        loop {
            let next = tokio::time::timeout(self.config.idle_ttl, rx.recv()).await;
            let Ok(Some((job, reply))) = next else {
                // Idle, or evicted (every sender dropped).
                break;
            };
            busy.store(true, Ordering::SeqCst);
            let outcome = self.execute(&tenant, &mut vm, job).await;
            busy.store(false, Ordering::SeqCst);
            if let Some(reply) = reply {
                let _ = reply.send(outcome);
            }
        }
        // Only our own entry: a newer task for the same tenant stays (and
        // waits for our turn to end).
        self.live.remove_if(&tenant, |_, h| h.serial == serial);
        // Jobs that raced into the queue as we stopped reading are still
        // ours to run, in order: nobody else may run them before us.
        rx.close();
        while let Ok((job, reply)) = rx.try_recv() {
            let outcome = self.execute(&tenant, &mut vm, job).await;
            if let Some(reply) = reply {
                let _ = reply.send(outcome);
            }
        }
        if vm.take().is_some() {
            self.vms.fetch_sub(1, Ordering::Relaxed);
        }
        drop(my_turn);
        // Forget the turn unless a newer actor holds it too.
        self.turns.remove_if(&tenant, |_, t| {
            Arc::ptr_eq(t, &turn) && Arc::strong_count(t) <= 2
        });
    }

    async fn execute(
        &self,
        tenant: &Tenant,
        slot: &mut Option<Vm>,
        job: Job,
    ) -> Result<Value, RemoteError> {
        match job {
            Job::Drop => {
                if slot.take().is_some() {
                    self.vms.fetch_sub(1, Ordering::Relaxed);
                }
                Ok(Value::Bool(true))
            }
            Job::Script {
                name,
                code,
                event,
                deadline,
            } => {
                let vm = self.vm(tenant, slot)?;
                let out = vm.run_script(&name, &code, &event, deadline).await;
                self.recycle_if_poisoned(slot);
                out
            }
            Job::Event { event, deadline } => {
                let state = self.states.get(tenant).map(|s| s.clone());
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
                let plugins: Vec<_> = catalogue
                    .handling(&event.name)
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
                    let result = match self.filtered(&catalogue, &plugin, tenant, &event) {
                        Err(refusal) => Err(refusal),
                        Ok(event) => match self.vm(tenant, slot) {
                            Ok(vm) => vm.handle_event(&plugin, &event, deadline).await,
                            Err(e) => Err(e),
                        },
                    };
                    self.recycle_if_poisoned(slot);
                    outcomes.push(PluginOutcome {
                        plugin: plugin.manifest.name.clone(),
                        result,
                    });
                }
                serde_json::to_value(outcomes)
                    .map_err(|e| RemoteError::new(ErrorKind::Internal, e.to_string()))
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
    ) -> Result<Cow<'e, Event>, RemoteError> {
        // Borrowed until a filter rewrites it: most plugins have no filters,
        // and their events are not copied.
        let mut event = Cow::Borrowed(event);
        for f in &plugin.manifest.filters {
            if !f.applies_to(&event.name) {
                continue;
            }
            let timeout = f.timeout_ms.map(Duration::from_millis);
            match self
                .services
                .run_filter(catalogue, &f.name, tenant, &event, &f.config, timeout)
            {
                Ok(Verdict::Continue { event: Some(next) }) => event = Cow::Owned(next),
                Ok(Verdict::Continue { event: None }) => {}
                Ok(Verdict::Reject { reason }) => {
                    return Err(RemoteError::new(
                        ErrorKind::Rejected,
                        format!("{}: {reason}", f.name),
                    ));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tenants(max: usize) -> Arc<Tenants> {
        Tenants::new(
            TenantsConfig {
                max_tenants: max,
                queue_depth: 2,
                ..TenantsConfig::default()
            },
            Services::bare(),
        )
    }

    fn script(code: &str) -> Job {
        Job::Script {
            name: "t".into(),
            code: code.into(),
            event: Event::default(),
            deadline: Instant::now() + Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn drop_gives_the_next_job_a_fresh_vm() {
        let t = tenants(10);
        let a = Tenant::new("u", "1");
        t.run(a.clone(), script("x = 1")).await.unwrap();
        assert_eq!(t.run(a.clone(), script("return x")).await.unwrap(), 1);
        t.run(a.clone(), Job::Drop).await.unwrap();
        assert_eq!(
            t.run(a.clone(), script("return x")).await.unwrap(),
            Value::Null
        );
    }

    #[tokio::test]
    async fn a_full_queue_is_overloaded_at_once() {
        let t = tenants(10);
        let a = Tenant::new("u", "1");
        // One job running (sleeping), two queued: the fourth is refused.
        for _ in 0..3 {
            t.submit_detached(a.clone(), script("time.sleep(300)"))
                .unwrap();
            tokio::task::yield_now().await;
        }
        let err = t.run(a, script("return 1")).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Overloaded);
    }

    #[tokio::test]
    async fn past_the_cap_the_least_recently_used_tenant_is_evicted() {
        let t = tenants(2);
        for id in ["1", "2", "3"] {
            t.run(Tenant::new("u", id), script("x = 1")).await.unwrap();
        }
        assert_eq!(t.live(), 2);
        // Tenant 1 was evicted: its VM is fresh.
        assert_eq!(
            t.run(Tenant::new("u", "1"), script("return x"))
                .await
                .unwrap(),
            Value::Null
        );
    }

    #[tokio::test]
    async fn an_event_nobody_handles_is_not_found() {
        let t = tenants(2);
        let err = t
            .run(
                Tenant::new("u", "1"),
                Job::Event {
                    event: Event {
                        name: "nope".into(),
                        data: Value::Null,
                    },
                    deadline: Instant::now() + Duration::from_secs(1),
                },
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotFound);
    }

    fn event(name: &str, data: Value) -> Job {
        Job::Event {
            event: Event {
                name: name.into(),
                data,
            },
            deadline: Instant::now() + Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn the_shipped_greeter_counts_members_and_explains_bad_input() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins");
        let (catalogue, errors) = LoadedCatalogue::load(&dir);
        assert!(errors.is_empty(), "{errors:?}");
        let t = Tenants::new(
            TenantsConfig::default(),
            Services::new(0, None, None, catalogue),
        );
        let guild = Tenant::new("guild", "7");
        let join = |name: &str| event("member_join", serde_json::json!({ "name": name }));
        t.run(guild.clone(), join("Ada")).await.unwrap();
        let out = t.run(guild.clone(), join("Grace")).await.unwrap();
        let out: Vec<PluginOutcome> = serde_json::from_value(out).unwrap();
        assert_eq!(out.len(), 1);
        let v = out[0].result.clone().unwrap();
        assert_eq!(v["message"], "Welcome, Grace! You are member #2 here.");
        assert_eq!(v["by"], "greeter 1.0.0");

        let out = t
            .run(guild, event("member_join", Value::Null))
            .await
            .unwrap();
        let out: Vec<PluginOutcome> = serde_json::from_value(out).unwrap();
        let err = out[0].result.clone().unwrap_err();
        assert_eq!(err.kind, ErrorKind::Runtime);
        assert!(err.message.starts_with("greeter:13:"), "{err}");
        assert!(err.message.contains("needs data.name"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn evicting_a_busy_tenant_never_runs_it_twice_at_once() {
        let t = tenants(1);
        let a = Tenant::new("u", "a");
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let slow = {
            let (t, a, order) = (Arc::clone(&t), a.clone(), Arc::clone(&order));
            tokio::spawn(async move {
                let r = t.run(a, script("time.sleep(300) return 1")).await;
                order.lock().unwrap().push(1);
                r
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The cap is one tenant: B evicts A, whose queue is empty while its
        // first job still runs.
        t.run(Tenant::new("u", "b"), script("return 0"))
            .await
            .unwrap();
        let second = t.run(a, script("return 2")).await;
        order.lock().unwrap().push(2);
        assert_eq!(slow.await.unwrap().unwrap(), 1);
        assert_eq!(second.unwrap(), 2);
        assert_eq!(
            *order.lock().unwrap(),
            [1, 2],
            "A's second job overtook its first"
        );
    }

    #[tokio::test]
    async fn a_job_that_races_an_idle_exit_is_run_not_dropped() {
        let t = Tenants::new(
            TenantsConfig {
                idle_ttl: Duration::from_millis(20),
                ..TenantsConfig::default()
            },
            Services::bare(),
        );
        let a = Tenant::new("u", "1");
        // Many rounds of: let the actor go idle, then send just as it exits.
        for _ in 0..50 {
            t.run(a.clone(), script("return 1")).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            let out = t.run(a.clone(), script("return 2")).await;
            assert_eq!(out.unwrap(), 2);
        }
    }

    #[test]
    fn a_state_change_during_a_reload_survives_the_reload() {
        let t = tenants(10);
        let a = Tenant::new("u", "1");
        let old = TenantState {
            data: serde_json::json!("old"),
            ..TenantState::default()
        };
        let new = TenantState {
            data: serde_json::json!("new"),
            ..TenantState::default()
        };
        // The worker asks for every state; before the answer lands, a newer
        // change arrives; the answer (read before the change) must not
        // overwrite it.
        let reload = t.begin_reload();
        t.set_state(a.clone(), Some(new.clone()));
        t.finish_reload(
            reload,
            vec![TenantStateEntry {
                tenant: a.clone(),
                state: old,
            }],
        );
        assert_eq!(t.state(&a), Some(new));
    }
}
