//! The sled backend: embedded, in `<data-dir>/store`, one tree per kind of
//! record, keyed by [`super::keys`], flushed by [`super::commit`].
//!
//! Modules:
//!
//! - `timers`: timers and schedules on sled;
//! - `sync`: what sled's flush leaves undone, done after it.

use super::commit::GroupCommit;
use super::keys::{
    decode, encode, global_key, key_of, kv_key, prefix_end, push_part, split, tenant_of,
    tenant_prefix,
};
use super::pager::Pager;
use super::records::{AuditRecord, TokenRecord};
use super::{GlobalDelete, Store, StoreError, StoreFuture, StoredToken, StoredVar};
use crate::mesophyll::db::{GlobalEntry, KvRecord, TenantStateEntry, TenantStatesPage};
use crate::mesophyll::message::{Tenant, TenantState};
use crate::rest::AuditEntry;
use std::path::Path;

mod timers;

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

/// The sled backend.
pub struct SledStore {
    kv: sled::Tree,
    global: sled::Tree,
    states: sled::Tree,
    catalogue: sled::Tree,
    tokens: sled::Tree,
    vars: sled::Tree,
    /// Keyed by `seq`, big-endian, so that iteration is log order.
    audit: sled::Tree,
    /// Hands out audit `seq`s (sled's own id generator: rising, never
    /// reused across restarts).
    db: sled::Db,
    commit: GroupCommit,
    timers: timers::SledTimers,
}

impl SledStore {
    /// Opens (or creates) the store in `dir`. Must run inside a tokio
    /// runtime (it starts the committer task).
    ///
    /// Fails when sled cannot open the directory, for instance because
    /// another master holds it.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            // Our own group commit decides when to flush.
            .flush_every_ms(None)
            .open()?;
        let kv = db.open_tree("kv")?;
        let global = db.open_tree("global_kv")?;
        let states = db.open_tree("tenant_states")?;
        let catalogue = db.open_tree("catalogue")?;
        let tokens = db.open_tree("tokens")?;
        let vars = db.open_tree("vars")?;
        let audit = db.open_tree("audit")?;
        let flushed = db.clone();
        let files = std::sync::Arc::new(FileSync::open(dir)?);
        let commit = GroupCommit::start(move || {
            flushed.flush()?;
            files.sync()
        });
        let timers = timers::SledTimers::open(&db, commit.clone())?;
        Ok(SledStore {
            timers,
            kv,
            global,
            states,
            catalogue,
            tokens,
            vars,
            audit,
            db,
            commit,
        })
    }
}

impl SledStore {
    /// Writes `n` records `key-<i>` in `scope` at once, flushed once: for
    /// tests that need a large scope.
    #[cfg(test)]
    pub(crate) fn fill(&self, tenant: &Tenant, scope: &str, n: usize) {
        let mut batch = sled::Batch::default();
        for i in 0..n {
            let key = format!("key-{i:08}");
            let record = KvRecord {
                scope: scope.to_owned(),
                key: key.clone(),
                value: serde_json::Value::from(i),
                created_at: 0,
                updated_at: 0,
            };
            batch.insert(kv_key(tenant, scope, &key), encode(&record));
        }
        self.kv.apply_batch(batch).unwrap();
    }
}

impl Store for SledStore {
    fn kv_get(
        &self,
        tenant: &Tenant,
        scope: &str,
        key: &str,
    ) -> Result<Option<KvRecord>, StoreError> {
        self.kv
            .get(kv_key(tenant, scope, key))?
            .map(|v| decode(&v))
            .transpose()
    }

    fn kv_set<'a>(
        &'a self,
        tenant: &'a Tenant,
        scope: &'a str,
        key: &'a str,
        value: serde_json::Value,
        now: i64,
    ) -> StoreFuture<'a, KvRecord> {
        Box::pin(async move {
            let k = kv_key(tenant, scope, key);
            let mut record = KvRecord {
                scope: scope.to_owned(),
                key: key.to_owned(),
                value,
                created_at: now,
                updated_at: now,
            };
            // Keep created_at across updates without a read-modify-write
            // race: compare-and-swap until our write lands, on a blocking
            // thread (under contention the loop turns more than once).
            let tree = self.kv.clone();
            let record = tokio::task::spawn_blocking(move || {
                let mut current = tree.get(&k)?;
                loop {
                    if let Some(old) = &current {
                        record.created_at = decode::<KvRecord>(old)?.created_at;
                    }
                    match tree.compare_and_swap(&k, current.as_ref(), Some(encode(&record)))? {
                        Ok(()) => return Ok::<_, StoreError>(record),
                        Err(e) => current = e.current,
                    }
                }
            })
            .await
            .map_err(|e| StoreError::Backend(format!("store task: {e}")))??;
            self.commit.durable().await?;
            Ok(record)
        })
    }

    fn kv_delete<'a>(
        &'a self,
        tenant: &'a Tenant,
        scope: &'a str,
        key: &'a str,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let existed = self.kv.remove(kv_key(tenant, scope, key))?.is_some();
            self.commit.durable().await?;
            Ok(existed)
        })
    }

    fn kv_scan(
        &self,
        tenant: &Tenant,
        scope: &str,
        prefix: &str,
        after: Option<&str>,
        keep: &mut dyn FnMut(KvRecord) -> bool,
    ) -> Result<(), StoreError> {
        let mut scope_prefix = tenant_prefix(tenant);
        push_part(&mut scope_prefix, scope.as_bytes());
        // The key part without its terminator: a byte prefix of every key
        // that starts with `prefix`.
        let mut start = scope_prefix.clone();
        for &b in prefix.as_bytes() {
            if b == 0 {
                start.extend_from_slice(&[0, 0xff]);
            } else {
                start.push(b);
            }
        }
        let end = prefix_end(&start);
        let from = match after {
            Some(a) => {
                let mut k = kv_key(tenant, scope, a);
                k.push(0); // strictly after `a`
                std::cmp::max(k, start.clone())
            }
            None => start.clone(),
        };
        let range = match end {
            Some(end) => self.kv.range(from..end),
            None => self.kv.range(from..),
        };
        for item in range {
            let (_, v) = item?;
            if !keep(decode(&v)?) {
                break;
            }
        }
        Ok(())
    }

    fn kv_scopes(&self, tenant: &Tenant) -> Result<Vec<String>, StoreError> {
        let prefix = tenant_prefix(tenant);
        let end = prefix_end(&prefix);
        let mut scopes = Vec::new();
        let mut from = prefix.clone();
        loop {
            let next = match &end {
                Some(end) => self.kv.range(from.clone()..end.clone()).next(),
                None => self.kv.range(from.clone()..).next(),
            };
            let Some(item) = next else { break };
            let (_, v) = item?;
            let record: KvRecord = decode(&v)?;
            // Skip the rest of this scope in one seek.
            let mut scope_key = prefix.clone();
            push_part(&mut scope_key, record.scope.as_bytes());
            from = match prefix_end(&scope_key) {
                Some(k) => k,
                None => break,
            };
            scopes.push(record.scope);
        }
        Ok(scopes)
    }

    fn kv_all(&self, keep: &mut dyn FnMut(Tenant, KvRecord) -> bool) -> Result<(), StoreError> {
        for item in self.kv.iter() {
            let (k, v) = item?;
            let tenant = split(&k)
                .and_then(|parts| match parts.as_slice() {
                    [kind, id, _, _] => tenant_of(&key_of(&[kind.as_slice(), id.as_slice()])),
                    _ => None,
                })
                .ok_or_else(|| StoreError::Corrupt(format!("KV key {k:?}")))?;
            if !keep(tenant, decode(&v)?) {
                break;
            }
        }
        Ok(())
    }

    fn kv_import<'a>(&'a self, tenant: &'a Tenant, record: &'a KvRecord) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.kv
                .insert(kv_key(tenant, &record.scope, &record.key), encode(record))?;
            self.commit.durable().await
        })
    }

    fn global_all(&self, keep: &mut dyn FnMut(GlobalEntry) -> bool) -> Result<(), StoreError> {
        for item in self.global.iter() {
            if !keep(decode(&item?.1)?) {
                break;
            }
        }
        Ok(())
    }

    fn tenant_states(
        &self,
        keep: &dyn Fn(&Tenant) -> bool,
    ) -> Result<Vec<TenantStateEntry>, StoreError> {
        let mut out = Vec::new();
        for item in self.states.iter() {
            let (k, v) = item?;
            let tenant = tenant_of(&k)
                .ok_or_else(|| StoreError::Corrupt(format!("tenant state key {k:?}")))?;
            if keep(&tenant) {
                out.push(decode(&v)?);
            }
        }
        Ok(out)
    }

    fn tenant_states_page(
        &self,
        keep: &dyn Fn(&Tenant) -> bool,
        after: Option<&Tenant>,
        max_bytes: usize,
    ) -> Result<TenantStatesPage, StoreError> {
        use std::ops::Bound;
        let start = after.map_or(Bound::Unbounded, |t| Bound::Excluded(tenant_prefix(t)));
        let mut page = Pager::new(max_bytes);
        for item in self.states.range::<Vec<u8>, _>((start, Bound::Unbounded)) {
            let (k, v) = item?;
            let tenant = tenant_of(&k)
                .ok_or_else(|| StoreError::Corrupt(format!("tenant state key {k:?}")))?;
            if keep(&tenant) && !page.take(&v, tenant)? {
                break;
            }
        }
        Ok(page.finish())
    }

    fn tenant_state(&self, tenant: &Tenant) -> Result<Option<TenantState>, StoreError> {
        self.states
            .get(tenant_prefix(tenant))?
            .map(|v| decode::<TenantStateEntry>(&v).map(|e| e.state))
            .transpose()
    }

    fn put_tenant_state<'a>(
        &'a self,
        tenant: &'a Tenant,
        state: &'a TenantState,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let entry = TenantStateEntry {
                tenant: tenant.clone(),
                state: state.clone(),
            };
            self.states.insert(tenant_prefix(tenant), encode(&entry))?;
            self.commit.durable().await
        })
    }

    fn catalogue_entries(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.catalogue_entries_impl()
    }

    fn catalogue_put<'a>(&'a self, key: &'a str, bytes: Vec<u8>) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.catalogue.insert(key.as_bytes(), bytes)?;
            self.commit.durable().await
        })
    }

    fn catalogue_delete<'a>(&'a self, key: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let existed = self.catalogue.remove(key.as_bytes())?.is_some();
            self.commit.durable().await?;
            Ok(existed)
        })
    }

    fn catalogue_apply<'a>(
        &'a self,
        puts: Vec<(String, Vec<u8>)>,
        deletes: Vec<String>,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            // A batch is applied atomically: no reader sees half of it.
            let mut batch = sled::Batch::default();
            for (key, bytes) in puts {
                batch.insert(key.as_bytes(), bytes);
            }
            for key in deletes {
                batch.remove(key.as_bytes());
            }
            self.catalogue.apply_batch(batch)?;
            self.commit.durable().await
        })
    }

    fn tokens(&self) -> Result<Vec<StoredToken>, StoreError> {
        self.tokens
            .iter()
            .map(|item| decode::<TokenRecord>(&item?.1).map(StoredToken::from))
            .collect()
    }

    fn put_token<'a>(&'a self, token: &'a StoredToken) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.tokens
                .insert(token.info.id.as_bytes(), encode(&TokenRecord::from(token)))?;
            self.commit.durable().await
        })
    }

    fn delete_token<'a>(&'a self, id: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.tokens.remove(id.as_bytes())?;
            self.commit.durable().await
        })
    }

    fn vars(&self) -> Result<Vec<StoredVar>, StoreError> {
        self.vars.iter().map(|item| decode(&item?.1)).collect()
    }

    fn put_var<'a>(&'a self, var: &'a StoredVar) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let key = StoredVar::key(&var.plugin, var.tenant.as_ref(), &var.name);
            self.vars.insert(key.as_bytes(), encode(var))?;
            self.commit.durable().await
        })
    }

    fn delete_var<'a>(&'a self, key: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let existed = self.vars.remove(key.as_bytes())?.is_some();
            self.commit.durable().await?;
            Ok(existed)
        })
    }

    fn timers(&self) -> &dyn super::timers::TimerStore {
        &self.timers
    }

    fn audit_append(&self, mut entry: AuditEntry) -> StoreFuture<'_, AuditEntry> {
        Box::pin(async move {
            entry.seq = self.db.generate_id()?;
            let record = AuditRecord::from(&entry);
            self.audit
                .insert(entry.seq.to_be_bytes(), encode(&record))?;
            self.commit.durable().await?;
            Ok(entry)
        })
    }

    fn audit(&self, after: Option<u64>, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let from = after.map_or(0, |a| a.saturating_add(1));
        self.audit
            .range(from.to_be_bytes()..)
            .take(limit)
            .map(|item| decode::<AuditRecord>(&item?.1).map(AuditEntry::from))
            .collect()
    }

    fn audit_delete_through(&self, seq: u64) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let mut batch = sled::Batch::default();
            for item in self.audit.range(..=seq.to_be_bytes()) {
                batch.remove(item?.0);
            }
            self.audit.apply_batch(batch)?;
            self.commit.durable().await?;
            Ok(())
        })
    }

    fn global_create(&self, entry: GlobalEntry) -> StoreFuture<'_, GlobalEntry> {
        Box::pin(async move {
            let k = global_key(&entry.scope, &entry.key, entry.version);
            let swapped =
                self.global
                    .compare_and_swap(&k, None as Option<&[u8]>, Some(encode(&entry)))?;
            if swapped.is_err() {
                return Err(StoreError::Exists(format!(
                    "{}/{} version {}",
                    entry.scope, entry.key, entry.version
                )));
            }
            self.commit.durable().await?;
            Ok(entry)
        })
    }

    fn global_get(
        &self,
        scope: &str,
        key: &str,
        version: u32,
    ) -> Result<Option<GlobalEntry>, StoreError> {
        self.global
            .get(global_key(scope, key, version))?
            .map(|v| decode(&v))
            .transpose()
    }

    fn global_delete<'a>(
        &'a self,
        scope: &'a str,
        key: &'a str,
        version: u32,
        owner: &'a Tenant,
    ) -> StoreFuture<'a, GlobalDelete> {
        Box::pin(async move {
            let k = global_key(scope, key, version);
            let outcome = loop {
                let Some(current) = self.global.get(&k)? else {
                    break GlobalDelete::Missing;
                };
                if decode::<GlobalEntry>(&current)?.owner.as_ref() != Some(owner) {
                    break GlobalDelete::NotOwner;
                }
                // Only the very entry that was checked goes; if it changed
                // in between, check again.
                if self
                    .global
                    .compare_and_swap(&k, Some(&current), None as Option<&[u8]>)?
                    .is_ok()
                {
                    break GlobalDelete::Deleted;
                }
            };
            if outcome == GlobalDelete::Deleted {
                self.commit.durable().await?;
            }
            Ok(outcome)
        })
    }

    fn global_scan(
        &self,
        scope: &str,
        keep: &mut dyn FnMut(GlobalEntry) -> bool,
    ) -> Result<(), StoreError> {
        let prefix = key_of(&[scope.as_bytes()]);
        for item in self.global.scan_prefix(prefix) {
            let (_, v) = item?;
            if !keep(decode(&v)?) {
                break;
            }
        }
        Ok(())
    }
}

impl SledStore {
    fn catalogue_entries_impl(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.catalogue
            .iter()
            .map(|item| {
                let (k, v) = item?;
                Ok((String::from_utf8_lossy(&k).into_owned(), v.to_vec()))
            })
            .collect()
    }
}

mod sync;
#[cfg(test)]
mod tests;

use sync::FileSync;
