//! Timers and schedules on sled: four trees, written together in one
//! transaction so that a crash leaves a timer in all its indexes or in
//! none.
//!
//! | tree | key | value |
//! |---|---|---|
//! | `timers` | id (big-endian) | [`StoredTimer`] |
//! | `timers_due` | due time, id (big-endian) | nothing |
//! | `timers_tenant` | tenant, id | nothing |
//! | `schedules` | tenant, name | [`StoredSchedule`] |

use super::super::commit::GroupCommit;
use super::super::keys::{decode, encode, push_part, tenant_prefix};
use super::super::timers::{NewTimer, NextRun, StoredSchedule, StoredTimer, TimerStore};
use super::super::{StoreError, StoreFuture};
use crate::mesophyll::message::Tenant;
use crate::mesophyll::timers::ScheduleSpec;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};

/// The timer trees.
pub(super) struct SledTimers {
    timers: sled::Tree,
    due: sled::Tree,
    by_tenant: sled::Tree,
    schedules: sled::Tree,
    db: sled::Db,
    commit: GroupCommit,
}

type Tx<T> = Result<T, ConflictableTransactionError<StoreError>>;

fn due_key(due_at: i64, id: u64) -> [u8; 16] {
    let mut k = [0; 16];
    k[..8].copy_from_slice(&(due_at.max(0) as u64).to_be_bytes());
    k[8..].copy_from_slice(&id.to_be_bytes());
    k
}

fn tenant_key(tenant: &Tenant, id: u64) -> Vec<u8> {
    let mut k = tenant_prefix(tenant);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn schedule_key(tenant: &Tenant, name: &str) -> Vec<u8> {
    let mut k = tenant_prefix(tenant);
    push_part(&mut k, name.as_bytes());
    k
}

/// A stored record that does not decode aborts the transaction.
fn undecoded<T>(r: Result<T, StoreError>) -> Tx<T> {
    r.map_err(ConflictableTransactionError::Abort)
}

fn limit(code: &'static str, message: String) -> StoreError {
    StoreError::Limit { code, message }
}

fn flat(e: TransactionError<StoreError>) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => e.into(),
    }
}

/// The timer trees inside one transaction.
struct Trees<'a> {
    timers: &'a TransactionalTree,
    due: &'a TransactionalTree,
    by_tenant: &'a TransactionalTree,
}

impl Trees<'_> {
    fn get(&self, id: u64) -> Tx<Option<StoredTimer>> {
        match self.timers.get(id.to_be_bytes())? {
            Some(bytes) => Ok(Some(undecoded(decode(&bytes))?)),
            None => Ok(None),
        }
    }

    fn put(&self, t: &StoredTimer) -> Tx<()> {
        self.timers.insert(t.id.to_be_bytes().to_vec(), encode(t))?;
        self.due
            .insert(due_key(t.due_at, t.id).to_vec(), Vec::new())?;
        self.by_tenant
            .insert(tenant_key(&t.tenant, t.id), Vec::new())?;
        Ok(())
    }

    fn remove(&self, t: &StoredTimer) -> Tx<()> {
        self.timers.remove(t.id.to_be_bytes().to_vec())?;
        self.due.remove(due_key(t.due_at, t.id).to_vec())?;
        self.by_tenant.remove(tenant_key(&t.tenant, t.id))?;
        Ok(())
    }
}

impl SledTimers {
    /// Opens (or creates) the trees in `db`.
    pub(super) fn open(db: &sled::Db, commit: GroupCommit) -> Result<Self, StoreError> {
        Ok(SledTimers {
            timers: db.open_tree("timers")?,
            due: db.open_tree("timers_due")?,
            by_tenant: db.open_tree("timers_tenant")?,
            schedules: db.open_tree("schedules")?,
            db: db.clone(),
            commit,
        })
    }

    fn pending_count(&self, tenant: &Tenant, cap: usize) -> usize {
        self.by_tenant
            .scan_prefix(tenant_prefix(tenant))
            .take(cap.saturating_add(1))
            .count()
    }

    /// Runs `f` over the timer trees and the schedules in one transaction.
    fn transaction<T>(
        &self,
        f: impl Fn(&Trees<'_>, &TransactionalTree) -> Tx<T>,
    ) -> Result<T, StoreError> {
        (&self.timers, &self.due, &self.by_tenant, &self.schedules)
            .transaction(|(timers, due, by_tenant, schedules)| {
                f(
                    &Trees {
                        timers,
                        due,
                        by_tenant,
                    },
                    schedules,
                )
            })
            .map_err(flat)
    }

    fn schedule_count(&self, tenant: &Tenant) -> usize {
        self.schedules.scan_prefix(tenant_prefix(tenant)).count()
    }
}

impl TimerStore for SledTimers {
    fn timer_add(&self, timer: NewTimer, cap: usize) -> StoreFuture<'_, StoredTimer> {
        Box::pin(async move {
            if self.pending_count(&timer.tenant, cap) >= cap {
                return Err(limit(
                    "too_many_timers",
                    format!(
                        "{} has {cap} pending timers, its limit (serve --max-timers-per-tenant)",
                        timer.tenant
                    ),
                ));
            }
            let stored = timer.stored(self.db.generate_id()?);
            self.transaction(|trees, _| trees.put(&stored))?;
            self.commit.durable().await?;
            Ok(stored)
        })
    }

    fn timer_cancel<'a>(&'a self, tenant: &'a Tenant, id: u64) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let removed = self.transaction(|trees, _| match trees.get(id)? {
                Some(t) if &t.tenant == tenant && t.schedule.is_none() => {
                    trees.remove(&t)?;
                    Ok(true)
                }
                _ => Ok(false),
            })?;
            if removed {
                self.commit.durable().await?;
            }
            Ok(removed)
        })
    }

    fn timer_retry(
        &self,
        id: u64,
        due_at: i64,
        attempt: u32,
    ) -> StoreFuture<'_, Option<StoredTimer>> {
        Box::pin(async move {
            let moved = self.transaction(|trees, _| {
                let Some(old) = trees.get(id)? else {
                    return Ok(None);
                };
                trees.remove(&old)?;
                let new = StoredTimer {
                    due_at,
                    attempt,
                    ..old
                };
                trees.put(&new)?;
                Ok(Some(new))
            })?;
            self.commit.durable().await?;
            Ok(moved)
        })
    }

    fn timer_done(&self, id: u64) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            self.transaction(|trees, _| match trees.get(id)? {
                Some(t) => trees.remove(&t),
                None => Ok(()),
            })?;
            self.commit.durable().await
        })
    }

    fn timers_due(
        &self,
        after: (i64, u64),
        until: i64,
        limit: usize,
    ) -> Result<Vec<StoredTimer>, StoreError> {
        let mut out = Vec::new();
        let from = due_key(after.0, after.1);
        for item in self.due.range(from..) {
            let (key, _) = item?;
            let (due, id) = key.split_at(8);
            let due = u64::from_be_bytes(due.try_into().unwrap_or_default()) as i64;
            let id = u64::from_be_bytes(id.try_into().unwrap_or_default());
            if (due, id) <= after {
                continue;
            }
            if due > until || out.len() >= limit {
                break;
            }
            if let Some(bytes) = self.timers.get(id.to_be_bytes())? {
                out.push(decode(&bytes)?);
            }
        }
        Ok(out)
    }

    fn timers_of(&self, tenant: &Tenant, limit: usize) -> Result<Vec<StoredTimer>, StoreError> {
        let mut out = Vec::new();
        for item in self
            .by_tenant
            .scan_prefix(tenant_prefix(tenant))
            .take(limit)
        {
            let (key, _) = item?;
            let id = &key[key.len() - 8..];
            if let Some(bytes) = self.timers.get(id)? {
                out.push(decode(&bytes)?);
            }
        }
        Ok(out)
    }

    fn schedule_put<'a>(
        &'a self,
        tenant: &'a Tenant,
        spec: ScheduleSpec,
        first_due: i64,
        cap: usize,
    ) -> StoreFuture<'a, StoredTimer> {
        Box::pin(async move {
            let key = schedule_key(tenant, &spec.name);
            if !self.schedules.contains_key(&key)? && self.schedule_count(tenant) >= cap {
                return Err(limit(
                    "too_many_schedules",
                    format!("{tenant} has {cap} schedules, its limit"),
                ));
            }
            let run = NewTimer::run_of(tenant, &spec, first_due).stored(self.db.generate_id()?);
            let schedule = StoredSchedule {
                tenant: tenant.clone(),
                spec,
                timer_id: run.id,
                next_due: first_due,
            };
            self.transaction(|trees, schedules| {
                if let Some(bytes) = schedules.get(&key)? {
                    let old: StoredSchedule = undecoded(decode(&bytes))?;
                    if let Some(t) = trees.get(old.timer_id)? {
                        trees.remove(&t)?;
                    }
                }
                schedules.insert(key.as_slice(), encode(&schedule))?;
                trees.put(&run)
            })?;
            self.commit.durable().await?;
            Ok(run)
        })
    }

    fn schedule_delete<'a>(&'a self, tenant: &'a Tenant, name: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let key = schedule_key(tenant, name);
            let existed = self.transaction(|trees, schedules| {
                let Some(bytes) = schedules.remove(key.as_slice())? else {
                    return Ok(false);
                };
                let old: StoredSchedule = undecoded(decode(&bytes))?;
                if let Some(t) = trees.get(old.timer_id)? {
                    trees.remove(&t)?;
                }
                Ok(true)
            })?;
            if existed {
                self.commit.durable().await?;
            }
            Ok(existed)
        })
    }

    fn schedule_advance<'a>(
        &'a self,
        tenant: &'a Tenant,
        name: &'a str,
        done: u64,
        next: NextRun<'a>,
    ) -> StoreFuture<'a, Option<StoredTimer>> {
        Box::pin(async move {
            let key = schedule_key(tenant, name);
            let id = self.db.generate_id()?;
            let next = self.transaction(|trees, schedules| {
                if let Some(t) = trees.get(done)? {
                    trees.remove(&t)?;
                }
                let Some(bytes) = schedules.get(&key)? else {
                    return Ok(None);
                };
                let mut schedule: StoredSchedule = undecoded(decode(&bytes))?;
                if schedule.timer_id != done {
                    return Ok(None);
                }
                let Some(next_due) = next(&schedule.spec) else {
                    schedules.remove(key.as_slice())?;
                    return Ok(None);
                };
                let run = NewTimer::run_of(tenant, &schedule.spec, next_due).stored(id);
                schedule.timer_id = id;
                schedule.next_due = next_due;
                schedules.insert(key.as_slice(), encode(&schedule))?;
                trees.put(&run)?;
                Ok(Some(run))
            })?;
            self.commit.durable().await?;
            Ok(next)
        })
    }

    fn schedules_all(&self) -> Result<Vec<StoredSchedule>, StoreError> {
        self.schedules.iter().map(|item| decode(&item?.1)).collect()
    }

    fn schedules_of(&self, tenant: &Tenant) -> Result<Vec<StoredSchedule>, StoreError> {
        self.schedules
            .scan_prefix(tenant_prefix(tenant))
            .map(|item| decode(&item?.1))
            .collect()
    }
}
