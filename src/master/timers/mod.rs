//! Timers and schedules: events the master dispatches later, on its own.
//!
//! A handler sets a timer (`timers.after`, `timers.at`) or a schedule
//! (`timers.every`) through `POST /db/timers` ([`endpoint`]); the REST API
//! and the CLI manage schedules too. Each is written to the store before
//! the call returns ([`crate::master::store::timers`]). The master keeps
//! the near future in memory ([`near`]) and [`delivery`] fires what is due
//! to the worker that owns the tenant, as an event whose `event.timer`
//! says which timer it is and which attempt.
//!
//! **At least once.** A timer leaves the store only after its delivery
//! ended: every handler answered, or the last attempt failed. A failed or
//! timed-out delivery is tried again with exponential back-off, up to
//! `--timer-max-attempts`, then dropped (counted, logged). A master that
//! dies while a delivery runs fires that timer again when it is back. So a
//! handler may see one timer twice: it should be idempotent, keyed on
//! `event.timer.id`.
//!
//! A schedule's run is a timer like any other; when it ends, the next run
//! (after now, so missed slots are skipped — see [`cron`]) replaces it.
//!
//! Modules:
//!
//! - [`metrics`]: what `/metrics` shows of timers and schedules.

pub mod cron;
pub mod delivery;
pub mod endpoint;
pub mod metrics;
pub mod near;

pub use metrics::TimerMetrics;

use crate::master::store::timers::{NewTimer, StoredSchedule, StoredTimer};
use crate::master::store::{Store, StoreError, blocking};
use crate::mesophyll::hub::Hub;
use crate::mesophyll::message::Tenant;
use crate::mesophyll::packed::Packed;
use crate::mesophyll::timers::{
    MAX_SCHEDULES_PER_TENANT, MAX_TIMER_DATA_BYTES, MAX_TIMER_DELAY_MS, Schedule, ScheduleSpec,
    check_name,
};
use cron::{Cadence, CadenceError};
use near::Near;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// How timers behave: `serve --timer-*` and `--max-timers-per-tenant`.
#[derive(Debug, Clone)]
pub struct TimerConfig {
    /// Pending timers one tenant may have (schedules' runs included).
    pub max_per_tenant: usize,
    /// Deliveries tried before a timer is dropped.
    pub max_attempts: u32,
    /// The first retry's delay; each next one doubles, up to
    /// [`MAX_RETRY_DELAY`].
    pub retry_base: Duration,
    /// The handlers' budget per delivery.
    pub deadline: Duration,
    /// Deliveries under way at once.
    pub concurrency: usize,
}

/// The longest wait between two attempts.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(300);

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            max_per_tenant: 1000,
            max_attempts: 5,
            retry_base: Duration::from_secs(1),
            deadline: Duration::from_secs(10),
            concurrency: 256,
        }
    }
}

/// Why a timer or schedule operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum TimerError {
    /// Malformed: a name, a time, data too large (`bad_request`).
    #[error("{0}")]
    Bad(String),
    /// The pattern or zone (`bad_request`).
    #[error(transparent)]
    Cadence(#[from] CadenceError),
    /// The store refused or failed (`too_many_timers`,
    /// `too_many_schedules`, `store`).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The master's timers: the store's, the near future, the deliveries.
pub struct Timers {
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
    workers: u32,
    config: TimerConfig,
    metrics: TimerMetrics,
    near: Mutex<Near>,
    /// Held across a refill's read and its taking in, and by a write
    /// between its store write and its notice, so that a timer written
    /// during a read is either read or noticed.
    loading: tokio::sync::Mutex<()>,
    wake: Notify,
}

/// Now, Unix milliseconds, as [`crate::clock`] reads it (a plugin's tests
/// move it).
pub fn now_ms() -> i64 {
    crate::clock::unix_millis()
}

impl Timers {
    /// The timers of `store`, delivered through `hub` to `workers` shards
    /// once [`Timers::start`] runs.
    pub fn new(
        store: Arc<dyn Store>,
        hub: Arc<Hub>,
        workers: u32,
        config: TimerConfig,
        metrics: TimerMetrics,
    ) -> Arc<Timers> {
        Arc::new(Timers {
            store,
            hub,
            workers,
            config,
            metrics,
            near: Mutex::new(Near::new()),
            loading: tokio::sync::Mutex::new(()),
            wake: Notify::new(),
        })
    }

    /// Forgets the near future it holds, so that the next start reads it
    /// from the store again (a master taking the lease over: the last
    /// leader may have set, fired and cancelled timers meanwhile).
    pub fn forget(&self) {
        *self.near() = Near::new();
    }

    /// Its metrics.
    pub fn metrics(&self) -> &TimerMetrics {
        &self.metrics
    }

    /// Wakes the delivery loop to look at the clock again: the clock was
    /// moved ([`crate::clock::advance`]).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Whether every timer due by now has been delivered (or given up on,
    /// or put off to a retry): what a test that advanced the clock waits
    /// for before it looks at what the timers did.
    pub fn caught_up(&self) -> bool {
        let now = now_ms();
        let near = self.near();
        let (_, in_flight) = near.sizes();
        in_flight == 0 && !near.wants_refill(now) && near.next_due().is_none_or(|d| d > now)
    }

    /// When the earliest pending timer due at most at `until` is due,
    /// read from the store (so past the near future too): a test that
    /// moves the clock far steps it from one due time to the next, and the
    /// timers fire in their order.
    pub async fn earliest_due(&self, until: i64) -> Result<Option<i64>, StoreError> {
        let first = blocking(&self.store, move |s| {
            s.timers().timers_due((i64::MIN, 0), until, 1)
        })
        .await?;
        Ok(first.first().map(|t| t.due_at))
    }

    /// Pending timers held in memory now (the near future).
    pub fn held(&self) -> usize {
        self.near().sizes().0
    }

    fn near(&self) -> std::sync::MutexGuard<'_, Near> {
        self.near.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds `t` if it is near, waking the loop if it is the earliest.
    async fn notice(&self, t: StoredTimer) {
        let _loading = self.loading.lock().await;
        if self.near().noticed(t) {
            self.wake.notify_one();
        }
    }

    /// A new timer for `tenant`: `event` with `data` at `due_at` (Unix
    /// ms; one in the past fires at once).
    ///
    /// Fails with [`TimerError::Bad`] on a bad name, data over
    /// [`MAX_TIMER_DATA_BYTES`] or a time more than
    /// [`MAX_TIMER_DELAY_MS`] ahead; with `too_many_timers` at the cap.
    pub async fn set(
        &self,
        tenant: &Tenant,
        event: String,
        data: Packed,
        due_at: i64,
    ) -> Result<StoredTimer, TimerError> {
        let checked = check_timer(&event, &data, due_at, now_ms());
        let written = match checked {
            Ok(()) => {
                let new = NewTimer {
                    tenant: tenant.clone(),
                    event,
                    data,
                    due_at,
                    schedule: None,
                };
                let cap = self.config.max_per_tenant;
                self.store
                    .timers()
                    .timer_add(new, cap)
                    .await
                    .map_err(Into::into)
            }
            Err(e) => Err(e),
        };
        self.count_write(&written, "set");
        let t = written?;
        self.notice(t.clone()).await;
        Ok(t)
    }

    fn count_write<T>(&self, result: &Result<T, TimerError>, ok: &'static str) {
        self.metrics.written(match result {
            Ok(_) => ok,
            Err(TimerError::Store(StoreError::Limit { code, .. })) => code,
            Err(TimerError::Store(_)) => "store",
            Err(_) => "bad_request",
        });
    }

    /// Cancels `tenant`'s timer `id`; false when it is not pending.
    pub async fn cancel(&self, tenant: &Tenant, id: u64) -> Result<bool, TimerError> {
        let removed = self.store.timers().timer_cancel(tenant, id).await?;
        if removed {
            self.near().remove(id);
        }
        Ok(removed)
    }

    /// Puts `tenant`'s schedule `spec`, replacing one of its name; its
    /// first run is the pattern's next match.
    ///
    /// Fails with [`TimerError::Cadence`] on a bad pattern or zone, and
    /// `too_many_schedules` past [`MAX_SCHEDULES_PER_TENANT`].
    pub async fn put_schedule(
        &self,
        tenant: &Tenant,
        spec: ScheduleSpec,
    ) -> Result<Schedule, TimerError> {
        let result = self.write_schedule(tenant, spec).await;
        self.count_write(&result, "scheduled");
        result
    }

    async fn write_schedule(
        &self,
        tenant: &Tenant,
        spec: ScheduleSpec,
    ) -> Result<Schedule, TimerError> {
        check_name("a schedule's name", &spec.name).map_err(TimerError::Bad)?;
        check_timer(&spec.event, &spec.data, 0, 0)?;
        let now = now_ms();
        let first = Cadence::of(&spec, now)?
            .next_after(now)
            .ok_or_else(|| CadenceError::Never(spec.cron.clone()))?;
        let name = spec.name.clone();
        let listed = Schedule {
            spec: spec.clone(),
            next_due: first,
        };
        let run = self
            .store
            .timers()
            .schedule_put(tenant, spec, first, MAX_SCHEDULES_PER_TENANT)
            .await?;
        self.near().remove_run(tenant, &name);
        self.notice(run).await;
        Ok(listed)
    }

    /// Deletes `tenant`'s schedule `name` and its pending run.
    pub async fn delete_schedule(&self, tenant: &Tenant, name: &str) -> Result<bool, TimerError> {
        let existed = self.store.timers().schedule_delete(tenant, name).await?;
        self.near().remove_run(tenant, name);
        Ok(existed)
    }

    /// `tenant`'s pending timers (the first `limit` by id) and schedules.
    pub async fn list(
        &self,
        tenant: &Tenant,
        limit: usize,
    ) -> Result<(Vec<StoredTimer>, Vec<StoredSchedule>), TimerError> {
        let t = tenant.clone();
        Ok(blocking(&self.store, move |s| {
            Ok((
                s.timers().timers_of(&t, limit)?,
                s.timers().schedules_of(&t)?,
            ))
        })
        .await?)
    }
}

/// Why a timer's event, data or time is refused, if it is.
fn check_timer(event: &str, data: &Packed, due_at: i64, now: i64) -> Result<(), TimerError> {
    check_name("an event's name", event).map_err(TimerError::Bad)?;
    if data.as_bytes().len() > MAX_TIMER_DATA_BYTES {
        return Err(TimerError::Bad(format!(
            "a timer's data may hold at most {MAX_TIMER_DATA_BYTES} bytes (this one: {})",
            data.as_bytes().len()
        )));
    }
    if due_at > now.saturating_add(MAX_TIMER_DELAY_MS) {
        return Err(TimerError::Bad(format!(
            "a timer may be set at most {} days ahead",
            MAX_TIMER_DELAY_MS / 86_400_000
        )));
    }
    Ok(())
}
