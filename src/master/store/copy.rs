//! `meshplay store copy --from URL --to URL`: everything one store holds,
//! written into another (sled to PostgreSQL when a deployment outgrows one
//! machine, or back).
//!
//! The destination must be empty: a copy never merges two histories. KV
//! records keep their times, global entries their owners, tokens their
//! hashes and revocations, tenant states and uploads their bytes, plugin
//! variables their sealed values (copy `secrets.key` with them). Audit
//! entries keep their order and contents; their `seq` numbers are the new
//! store's (each backend numbers its own log). Writes go 64 at a time, so
//! the destination's group commit (or PostgreSQL's connections) carry
//! them; each is durable before the copy reports it.
//!
//! Pending timers and schedules go too, each written anew: their ids are
//! the new store's (like audit `seq`s), and a retried timer starts its
//! attempts again.
//!
//! The source must not be in use by a master while it is copied (sled
//! refuses a second opener; for PostgreSQL stop the master first, or the
//! copy misses what is written meanwhile).

use super::timers::NewTimer;
use super::{Store, StoreError};
use crate::mesophyll::db::{GlobalEntry, KvRecord};
use crate::mesophyll::message::Tenant;
use futures::{StreamExt, TryStreamExt};

/// Writes in flight at once.
const PARALLEL: usize = 64;

/// Audit entries read per page.
const AUDIT_PAGE: usize = 1000;

/// What a copy moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Copied {
    /// Tenants' KV records.
    pub kv: u64,
    /// Global KV entries.
    pub global: u64,
    /// Tenant states.
    pub tenant_states: u64,
    /// Catalogue entries (plugins and filters).
    pub catalogue: u64,
    /// API, join and session tokens.
    pub tokens: u64,
    /// Plugin variables.
    pub vars: u64,
    /// Audit log entries.
    pub audit: u64,
    /// Pending timers.
    pub timers: u64,
    /// Schedules.
    pub schedules: u64,
}

/// Timers read per page.
const TIMER_PAGE: usize = 10_000;

/// The per-tenant caps a copy writes under: none the source could pass.
const NO_CAP: usize = u32::MAX as usize;

/// Whether `store` holds nothing at all.
pub fn is_empty(store: &dyn Store) -> Result<bool, StoreError> {
    let mut any = false;
    store.kv_all(&mut |_, _| {
        any = true;
        false
    })?;
    store.global_all(&mut |_| {
        any = true;
        false
    })?;
    Ok(!any
        && store.tenant_states(&|_| true)?.is_empty()
        && store.catalogue_entries()?.is_empty()
        && store.tokens()?.is_empty()
        && store.vars()?.is_empty()
        && store.audit(None, 1)?.is_empty()
        && store
            .timers()
            .timers_due((i64::MIN, 0), i64::MAX, 1)?
            .is_empty()
        && store.timers().schedules_all()?.is_empty())
}

/// Copies everything in `from` into `to`, which must be empty. Reads run
/// on this (blocking-allowed) thread; call it from a multi-threaded
/// runtime.
///
/// Fails with [`StoreError::Exists`] when `to` is not empty, and with the
/// backends' errors; a failed copy leaves `to` partly written (copy again
/// into a fresh one).
pub async fn copy(from: &dyn Store, to: &dyn Store) -> Result<Copied, StoreError> {
    if !tokio::task::block_in_place(|| is_empty(to))? {
        return Err(StoreError::Exists(
            "the destination store is not empty: copy into a fresh one".into(),
        ));
    }
    let mut n = Copied::default();
    let mut records: Vec<(Tenant, KvRecord)> = Vec::new();
    tokio::task::block_in_place(|| {
        from.kv_all(&mut |t, r| {
            records.push((t, r));
            true
        })
    })?;
    n.kv = records.len() as u64;
    futures::stream::iter(records.iter().map(|(t, r)| to.kv_import(t, r)))
        .buffer_unordered(PARALLEL)
        .try_collect::<Vec<()>>()
        .await?;

    let mut globals: Vec<GlobalEntry> = Vec::new();
    tokio::task::block_in_place(|| {
        from.global_all(&mut |g| {
            globals.push(g);
            true
        })
    })?;
    n.global = globals.len() as u64;
    futures::stream::iter(globals.into_iter().map(|g| to.global_create(g)))
        .buffer_unordered(PARALLEL)
        .try_collect::<Vec<_>>()
        .await?;

    let states = tokio::task::block_in_place(|| from.tenant_states(&|_| true))?;
    n.tenant_states = states.len() as u64;
    futures::stream::iter(
        states
            .iter()
            .map(|s| to.put_tenant_state(&s.tenant, &s.state)),
    )
    .buffer_unordered(PARALLEL)
    .try_collect::<Vec<()>>()
    .await?;

    let catalogue = tokio::task::block_in_place(|| from.catalogue_entries())?;
    n.catalogue = catalogue.len() as u64;
    for (key, bytes) in catalogue {
        to.catalogue_put(&key, bytes).await?;
    }
    let tokens = tokio::task::block_in_place(|| from.tokens())?;
    n.tokens = tokens.len() as u64;
    for token in &tokens {
        to.put_token(token).await?;
    }
    // Sealed secrets go as they are: the destination's master needs the
    // source's secrets.key to open them.
    let vars = tokio::task::block_in_place(|| from.vars())?;
    n.vars = vars.len() as u64;
    for var in &vars {
        to.put_var(var).await?;
    }
    copy_timers(from, to, &mut n).await?;
    // In order, one at a time: the log's order is its meaning.
    let mut after = None;
    loop {
        let page = tokio::task::block_in_place(|| from.audit(after, AUDIT_PAGE))?;
        let Some(last) = page.last() else { break };
        after = Some(last.seq);
        for entry in page {
            to.audit_append(entry).await?;
            n.audit += 1;
        }
    }
    Ok(n)
}

/// Every schedule (its pending run made anew) and every other pending
/// timer, with new ids.
async fn copy_timers(from: &dyn Store, to: &dyn Store, n: &mut Copied) -> Result<(), StoreError> {
    let schedules = tokio::task::block_in_place(|| from.timers().schedules_all())?;
    for s in schedules {
        to.timers()
            .schedule_put(&s.tenant, s.spec, s.next_due, NO_CAP)
            .await?;
        n.schedules += 1;
    }
    let mut after = (i64::MIN, 0);
    loop {
        let page =
            tokio::task::block_in_place(|| from.timers().timers_due(after, i64::MAX, TIMER_PAGE))?;
        let Some(last) = page.last() else { break };
        after = last.slot();
        let plain = page.into_iter().filter(|t| t.schedule.is_none()).map(|t| {
            let new = NewTimer {
                tenant: t.tenant,
                event: t.event,
                data: t.data,
                due_at: t.due_at,
                schedule: None,
            };
            to.timers().timer_add(new, NO_CAP)
        });
        n.timers += futures::stream::iter(plain)
            .buffer_unordered(PARALLEL)
            .try_collect::<Vec<_>>()
            .await?
            .len() as u64;
    }
    Ok(())
}
