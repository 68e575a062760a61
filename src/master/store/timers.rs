//! What the store keeps of timers and schedules, and the [`TimerStore`]
//! each backend implements for them.
//!
//! A pending timer is one record, indexed twice: by when it is due (the
//! master's [`crate::master::timers`] reads the near future from there)
//! and by its tenant (for the per-tenant cap, listing, and a tenant's
//! cancel). A schedule is a record per tenant and name that points at the
//! timer of its next run; a run that ends (delivered or given up) is
//! replaced by the next in one write ([`TimerStore::schedule_advance`]),
//! so a schedule always has exactly one pending run.
//!
//! Every write is durable when its future completes, like the rest of the
//! store; a timer is removed only once its delivery has ended, which is
//! what makes delivery at least once.

use super::{StoreError, StoreFuture};
use crate::mesophyll::message::Tenant;
use crate::mesophyll::packed::Packed;
use crate::mesophyll::timers::{PendingTimer, Schedule, ScheduleSpec, TimerInfo};
use serde::{Deserialize, Serialize};

/// A pending timer as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredTimer {
    /// Given by the store, rising.
    pub id: u64,
    /// Whose it is.
    pub tenant: Tenant,
    /// The event it dispatches.
    pub event: String,
    /// The event's data.
    pub data: Packed,
    /// When it is due (next), Unix milliseconds.
    pub due_at: i64,
    /// Deliveries tried so far.
    pub attempt: u32,
    /// The schedule whose run it is.
    pub schedule: Option<String>,
}

impl StoredTimer {
    /// Where it sorts among pending timers: by due time, then id.
    pub fn slot(&self) -> (i64, u64) {
        (self.due_at, self.id)
    }

    /// What the handler that it wakes sees, for delivery number `attempt`.
    pub fn info(&self, attempt: u32) -> TimerInfo {
        TimerInfo {
            id: self.id,
            due_at: self.due_at,
            attempt,
            schedule: self.schedule.clone(),
        }
    }

    /// As listed to its tenant.
    pub fn pending(&self) -> PendingTimer {
        PendingTimer {
            id: self.id,
            event: self.event.clone(),
            due_at: self.due_at,
            attempt: self.attempt,
            schedule: self.schedule.clone(),
        }
    }
}

/// A timer about to be written (the store gives its id).
#[derive(Debug, Clone, PartialEq)]
pub struct NewTimer {
    /// Whose it is.
    pub tenant: Tenant,
    /// The event it dispatches.
    pub event: String,
    /// The event's data.
    pub data: Packed,
    /// When it is due.
    pub due_at: i64,
    /// The schedule whose run it is.
    pub schedule: Option<String>,
}

impl NewTimer {
    /// The stored timer it becomes under `id`.
    pub fn stored(self, id: u64) -> StoredTimer {
        StoredTimer {
            id,
            tenant: self.tenant,
            event: self.event,
            data: self.data,
            due_at: self.due_at,
            attempt: 0,
            schedule: self.schedule,
        }
    }

    /// The first run of the schedule `spec`, due at `due_at`.
    pub fn run_of(tenant: &Tenant, spec: &ScheduleSpec, due_at: i64) -> NewTimer {
        NewTimer {
            tenant: tenant.clone(),
            event: spec.event.clone(),
            data: spec.data.clone(),
            due_at,
            schedule: Some(spec.name.clone()),
        }
    }
}

/// A schedule as stored: what was put, and the timer of its next run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredSchedule {
    /// Whose it is.
    pub tenant: Tenant,
    /// What was put.
    pub spec: ScheduleSpec,
    /// The pending timer of its next run.
    pub timer_id: u64,
    /// When that is due.
    pub next_due: i64,
}

impl StoredSchedule {
    /// As listed.
    pub fn listed(&self) -> Schedule {
        Schedule {
            spec: self.spec.clone(),
            next_due: self.next_due,
        }
    }
}

/// When a schedule runs next, from its spec (the master's cron reading,
/// which the store does not know).
pub type NextRun<'a> = &'a (dyn Fn(&ScheduleSpec) -> Option<i64> + Send + Sync);

/// The timer half of the store.
///
/// Reads are synchronous like the [`super::Store`]'s (call them on a
/// blocking thread); writes complete once durable.
pub trait TimerStore: Send + Sync {
    /// Writes `timer`, unless its tenant has `cap` pending timers already
    /// ([`StoreError::Limit`]). Schedules' runs count towards the cap.
    fn timer_add(&self, timer: NewTimer, cap: usize) -> StoreFuture<'_, StoredTimer>;

    /// Removes `tenant`'s timer `id`; false when there was none (fired,
    /// cancelled, or another tenant's). A schedule's run is not cancelled
    /// this way: its schedule is deleted instead.
    fn timer_cancel<'a>(&'a self, tenant: &'a Tenant, id: u64) -> StoreFuture<'a, bool>;

    /// Moves timer `id` to `due_at` after its delivery number `attempt`
    /// failed; `None` when it is gone (cancelled while it ran).
    fn timer_retry(
        &self,
        id: u64,
        due_at: i64,
        attempt: u32,
    ) -> StoreFuture<'_, Option<StoredTimer>>;

    /// Removes timer `id`, whose delivery ended.
    fn timer_done(&self, id: u64) -> StoreFuture<'_, ()>;

    /// Pending timers in due order strictly after `after` (a slot, see
    /// [`StoredTimer::slot`]) and due at most at `until`: at most `limit`.
    fn timers_due(
        &self,
        after: (i64, u64),
        until: i64,
        limit: usize,
    ) -> Result<Vec<StoredTimer>, StoreError>;

    /// `tenant`'s pending timers by id, at most `limit`.
    fn timers_of(&self, tenant: &Tenant, limit: usize) -> Result<Vec<StoredTimer>, StoreError>;

    /// Puts `spec` for `tenant` with its first run at `first_due`,
    /// replacing a schedule of the same name and its pending run; refused
    /// ([`StoreError::Limit`]) when it would be the tenant's
    /// `cap + 1`th schedule. Returns the new pending run.
    fn schedule_put<'a>(
        &'a self,
        tenant: &'a Tenant,
        spec: ScheduleSpec,
        first_due: i64,
        cap: usize,
    ) -> StoreFuture<'a, StoredTimer>;

    /// Deletes `tenant`'s schedule `name` and its pending run; false when
    /// there was none.
    fn schedule_delete<'a>(&'a self, tenant: &'a Tenant, name: &'a str) -> StoreFuture<'a, bool>;

    /// After run `done` of `tenant`'s schedule `name` ended: removes it,
    /// and, if the schedule still exists and `done` is its pending run,
    /// writes its next run at what `next` says of its spec, returned
    /// (`next` answering `None` deletes the schedule: it never runs again).
    fn schedule_advance<'a>(
        &'a self,
        tenant: &'a Tenant,
        name: &'a str,
        done: u64,
        next: NextRun<'a>,
    ) -> StoreFuture<'a, Option<StoredTimer>>;

    /// `tenant`'s schedules by name.
    fn schedules_of(&self, tenant: &Tenant) -> Result<Vec<StoredSchedule>, StoreError>;

    /// Every schedule, for `store copy`.
    fn schedules_all(&self) -> Result<Vec<StoredSchedule>, StoreError>;
}
