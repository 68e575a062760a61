//! The master's store: tenant KV, global KV and tenant states, on sled.
//!
//! The endpoints see only the [`Store`] trait, so another backend can be
//! added without touching them. [`SledStore`] is the embedded one, under
//! `<data-dir>/store`:
//!
//! | tree | key | value |
//! |---|---|---|
//! | `kv` | type, id, scope, key | [`KvRecord`] |
//! | `global_kv` | scope, key, version (big-endian) | [`GlobalEntry`] |
//! | `tenant_states` | type, id | [`TenantState`] |
//! | `catalogue` | `plugin/<name>`, `filter/<name>` | uploaded [`crate::mesophyll::db::PluginBundle`] (MessagePack) or module bytes |
//!
//! Key parts are joined with an order-preserving encoding (a 0 byte becomes
//! `00 ff`, each part ends with `00 01`), so a tenant's keys, and a scope's
//! keys within it, are contiguous and sorted, and prefix scans serve `Find`
//! and `ListScopes`. Values are MessagePack.
//!
//! **Durability.** A write returns only once it is on disk. Concurrent
//! writers share one `fsync` (group commit): each write applies to sled,
//! then joins the queue of the committer task, which flushes once for
//! everyone waiting and answers them all. Under load this turns N fsyncs
//! into one; alone, a write costs one.

use crate::mesophyll::db::{GlobalEntry, KvRecord, TenantState, TenantStateEntry};
use crate::mesophyll::message::Tenant;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use tokio::sync::{mpsc, oneshot};

/// A store failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The backend failed (I/O, corruption).
    #[error("store: {0}")]
    Backend(String),
    /// A stored value does not decode (a bug, or a newer format).
    #[error("stored value undecodable: {0}")]
    Corrupt(String),
    /// The entry exists already (global KV create).
    #[error("{0} exists already")]
    Exists(String),
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

/// A boxed future, so the trait stays object-safe.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// What the DB endpoints and the REST API need of a store. Reads are
/// synchronous (they never wait on disk for long); writes are futures that
/// complete once the write is durable.
pub trait Store: Send + Sync + 'static {
    /// One KV record.
    fn kv_get(
        &self,
        tenant: &Tenant,
        scope: &str,
        key: &str,
    ) -> Result<Option<KvRecord>, StoreError>;
    /// Writes one KV record; `now` is Unix milliseconds.
    fn kv_set<'a>(
        &'a self,
        tenant: &'a Tenant,
        scope: &'a str,
        key: &'a str,
        value: serde_json::Value,
        now: i64,
    ) -> StoreFuture<'a, KvRecord>;
    /// Deletes one KV record; true when it existed.
    fn kv_delete<'a>(
        &'a self,
        tenant: &'a Tenant,
        scope: &'a str,
        key: &'a str,
    ) -> StoreFuture<'a, bool>;
    /// Records of `scope` whose key starts with `prefix`, after `after`, in
    /// key order, for as long as `keep` wants more (it sees each record and
    /// returns false to stop).
    fn kv_scan(
        &self,
        tenant: &Tenant,
        scope: &str,
        prefix: &str,
        after: Option<&str>,
        keep: &mut dyn FnMut(KvRecord) -> bool,
    ) -> Result<(), StoreError>;
    /// The tenant's scopes, sorted.
    fn kv_scopes(&self, tenant: &Tenant) -> Result<Vec<String>, StoreError>;

    /// Every tenant state.
    fn tenant_states(&self) -> Result<Vec<TenantStateEntry>, StoreError>;
    /// One tenant's state.
    fn tenant_state(&self, tenant: &Tenant) -> Result<Option<TenantState>, StoreError>;
    /// Upserts one tenant's state.
    fn put_tenant_state<'a>(
        &'a self,
        tenant: &'a Tenant,
        state: &'a TenantState,
    ) -> StoreFuture<'a, ()>;

    /// Adds a global entry; [`StoreError::Exists`] if its (scope, key,
    /// version) is taken.
    fn global_create(&self, entry: GlobalEntry) -> StoreFuture<'_, GlobalEntry>;
    /// One global entry.
    fn global_get(
        &self,
        scope: &str,
        key: &str,
        version: u32,
    ) -> Result<Option<GlobalEntry>, StoreError>;
    /// Removes one global entry; true when it existed.
    fn global_delete<'a>(
        &'a self,
        scope: &'a str,
        key: &'a str,
        version: u32,
    ) -> StoreFuture<'a, bool>;
    /// Every uploaded plugin or filter: `(key, bytes)`, keys like
    /// `plugin/<name>` and `filter/<name>`.
    fn catalogue_entries(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// Stores one catalogue entry.
    fn catalogue_put<'a>(&'a self, key: &'a str, bytes: Vec<u8>) -> StoreFuture<'a, ()>;
    /// Removes one catalogue entry; true when it existed.
    fn catalogue_delete<'a>(&'a self, key: &'a str) -> StoreFuture<'a, bool>;

    /// Entries of `scope`, in key order, while `keep` wants more.
    fn global_scan(
        &self,
        scope: &str,
        keep: &mut dyn FnMut(GlobalEntry) -> bool,
    ) -> Result<(), StoreError>;
}

/// Appends one key part in the order-preserving encoding.
fn push_part(buf: &mut Vec<u8>, part: &[u8]) {
    for &b in part {
        if b == 0 {
            buf.extend_from_slice(&[0, 0xff]);
        } else {
            buf.push(b);
        }
    }
    buf.extend_from_slice(&[0, 1]);
}

fn key_of(parts: &[&[u8]]) -> Vec<u8> {
    let mut buf = Vec::new();
    for p in parts {
        push_part(&mut buf, p);
    }
    buf
}

/// The smallest key greater than every key that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(v).expect("store records always encode")
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    rmp_serde::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

type Waiter = oneshot::Sender<Result<(), StoreError>>;

/// The sled backend.
pub struct SledStore {
    db: sled::Db,
    kv: sled::Tree,
    global: sled::Tree,
    states: sled::Tree,
    catalogue: sled::Tree,
    commits: mpsc::Sender<Waiter>,
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
        let (commits, queue) = mpsc::channel(64 * 1024);
        tokio::spawn(committer(db.clone(), queue));
        Ok(SledStore {
            db,
            kv,
            global,
            states,
            catalogue,
            commits,
        })
    }

    /// Waits until everything written so far is durable.
    async fn durable(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.commits
            .send(tx)
            .await
            .map_err(|_| StoreError::Backend("the committer stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Backend("the committer stopped".into()))?
    }

    fn tenant_prefix(tenant: &Tenant) -> Vec<u8> {
        key_of(&[tenant.kind.as_bytes(), tenant.id.as_bytes()])
    }

    fn kv_key(tenant: &Tenant, scope: &str, key: &str) -> Vec<u8> {
        key_of(&[
            tenant.kind.as_bytes(),
            tenant.id.as_bytes(),
            scope.as_bytes(),
            key.as_bytes(),
        ])
    }

    fn global_key(scope: &str, key: &str, version: u32) -> Vec<u8> {
        key_of(&[scope.as_bytes(), key.as_bytes(), &version.to_be_bytes()])
    }
}

/// Flushes once for every batch of waiters.
async fn committer(db: sled::Db, mut queue: mpsc::Receiver<Waiter>) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while let Ok(w) = queue.try_recv() {
            batch.push(w);
        }
        let db = db.clone();
        let result = tokio::task::spawn_blocking(move || db.flush().map(|_| ()))
            .await
            .map_err(|e| StoreError::Backend(format!("flush task: {e}")))
            .and_then(|r| r.map_err(StoreError::from));
        if let Err(e) = &result {
            tracing::error!("store flush failed: {e}");
        }
        for w in batch {
            let _ = w.send(result.clone());
        }
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
            .get(Self::kv_key(tenant, scope, key))?
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
            let k = Self::kv_key(tenant, scope, key);
            let mut record = KvRecord {
                scope: scope.to_owned(),
                key: key.to_owned(),
                value,
                created_at: now,
                updated_at: now,
            };
            // Keep created_at across updates without a read-modify-write
            // race: compare-and-swap until our write lands.
            let mut current = self.kv.get(&k)?;
            loop {
                if let Some(old) = &current {
                    record.created_at = decode::<KvRecord>(old)?.created_at;
                }
                match self
                    .kv
                    .compare_and_swap(&k, current.as_ref(), Some(encode(&record)))?
                {
                    Ok(()) => break,
                    Err(e) => current = e.current,
                }
            }
            self.durable().await?;
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
            let existed = self.kv.remove(Self::kv_key(tenant, scope, key))?.is_some();
            self.durable().await?;
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
        let mut scope_prefix = Self::tenant_prefix(tenant);
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
                let mut k = Self::kv_key(tenant, scope, a);
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
        let prefix = Self::tenant_prefix(tenant);
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

    fn tenant_states(&self) -> Result<Vec<TenantStateEntry>, StoreError> {
        self.states.iter().values().map(|v| decode(&v?)).collect()
    }

    fn tenant_state(&self, tenant: &Tenant) -> Result<Option<TenantState>, StoreError> {
        self.states
            .get(Self::tenant_prefix(tenant))?
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
            self.states
                .insert(Self::tenant_prefix(tenant), encode(&entry))?;
            self.durable().await
        })
    }

    fn catalogue_entries(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.catalogue_entries_impl()
    }

    fn catalogue_put<'a>(&'a self, key: &'a str, bytes: Vec<u8>) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.catalogue.insert(key.as_bytes(), bytes)?;
            self.durable().await
        })
    }

    fn catalogue_delete<'a>(&'a self, key: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let existed = self.catalogue.remove(key.as_bytes())?.is_some();
            self.durable().await?;
            Ok(existed)
        })
    }

    fn global_create(&self, entry: GlobalEntry) -> StoreFuture<'_, GlobalEntry> {
        Box::pin(async move {
            let k = Self::global_key(&entry.scope, &entry.key, entry.version);
            let swapped =
                self.global
                    .compare_and_swap(&k, None as Option<&[u8]>, Some(encode(&entry)))?;
            if swapped.is_err() {
                return Err(StoreError::Exists(format!(
                    "{}/{} version {}",
                    entry.scope, entry.key, entry.version
                )));
            }
            self.durable().await?;
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
            .get(Self::global_key(scope, key, version))?
            .map(|v| decode(&v))
            .transpose()
    }

    fn global_delete<'a>(
        &'a self,
        scope: &'a str,
        key: &'a str,
        version: u32,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let existed = self
                .global
                .remove(Self::global_key(scope, key, version))?
                .is_some();
            self.durable().await?;
            Ok(existed)
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

impl Drop for SledStore {
    fn drop(&mut self) {
        let _ = self.db.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn store() -> (tempfile::TempDir, SledStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(&dir.path().join("store")).unwrap();
        (dir, store)
    }

    fn keys(
        store: &SledStore,
        t: &Tenant,
        scope: &str,
        prefix: &str,
        after: Option<&str>,
    ) -> Vec<String> {
        let mut out = Vec::new();
        store
            .kv_scan(t, scope, prefix, after, &mut |r| {
                out.push(r.key);
                true
            })
            .unwrap();
        out
    }

    #[tokio::test]
    async fn kv_round_trip_keeps_created_at() {
        let (_d, s) = store();
        let t = Tenant::new("user", "1");
        s.kv_set(&t, "default", "a", json!({"n": 1}), 10)
            .await
            .unwrap();
        let r = s.kv_set(&t, "default", "a", json!(2), 20).await.unwrap();
        assert_eq!((r.created_at, r.updated_at), (10, 20));
        assert_eq!(
            s.kv_get(&t, "default", "a").unwrap().unwrap().value,
            json!(2)
        );
        assert!(s.kv_delete(&t, "default", "a").await.unwrap());
        assert!(!s.kv_delete(&t, "default", "a").await.unwrap());
        assert_eq!(s.kv_get(&t, "default", "a").unwrap(), None);
    }

    #[tokio::test]
    async fn scans_stay_inside_their_tenant_and_scope() {
        let (_d, s) = store();
        let a = Tenant::new("user", "1");
        // Tenant ids that are prefixes of each other, and zero bytes.
        let b = Tenant::new("user", "10");
        let c = Tenant::new("user", "1\0x");
        for (t, scope, key) in [
            (&a, "s", "k1"),
            (&a, "s", "k2"),
            (&a, "s", "x"),
            (&a, "s2", "k3"),
            (&a, "s\0", "k4"),
            (&b, "s", "k5"),
            (&c, "s", "k6"),
        ] {
            s.kv_set(t, scope, key, json!(1), 0).await.unwrap();
        }
        assert_eq!(keys(&s, &a, "s", "", None), ["k1", "k2", "x"]);
        assert_eq!(keys(&s, &a, "s", "k", None), ["k1", "k2"]);
        assert_eq!(keys(&s, &a, "s", "", Some("k1")), ["k2", "x"]);
        assert_eq!(keys(&s, &b, "s", "", None), ["k5"]);
        assert_eq!(s.kv_scopes(&a).unwrap(), ["s", "s\0", "s2"]);
        assert_eq!(s.kv_scopes(&c).unwrap(), ["s"]);
    }

    #[tokio::test]
    async fn concurrent_writers_are_all_durable() {
        let (_d, s) = store();
        let s = std::sync::Arc::new(s);
        let mut tasks = Vec::new();
        for i in 0..64 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let t = Tenant::new("user", i.to_string());
                s.kv_set(&t, "default", "k", json!(i), 0).await.unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        for i in 0..64 {
            let t = Tenant::new("user", i.to_string());
            assert_eq!(
                s.kv_get(&t, "default", "k").unwrap().unwrap().value,
                json!(i)
            );
        }
    }

    #[tokio::test]
    async fn global_entries_are_created_once() {
        let (_d, s) = store();
        let e = GlobalEntry {
            key: "list".into(),
            version: 1,
            scope: "lists".into(),
            value: json!([1]),
            public: true,
            owner: Some(Tenant::new("user", "1")),
            created_at: 0,
        };
        s.global_create(e.clone()).await.unwrap();
        assert!(matches!(
            s.global_create(e.clone()).await,
            Err(StoreError::Exists(_))
        ));
        assert_eq!(s.global_get("lists", "list", 1).unwrap(), Some(e));
        assert!(s.global_delete("lists", "list", 1).await.unwrap());
    }

    #[tokio::test]
    async fn tenant_states_round_trip() {
        let (_d, s) = store();
        let t = Tenant::new("guild", "1");
        let state = TenantState {
            events: Some(vec!["echo".into()]),
            plugins: None,
            data: json!({"lang": "en"}),
        };
        s.put_tenant_state(&t, &state).await.unwrap();
        assert_eq!(s.tenant_state(&t).unwrap(), Some(state.clone()));
        assert_eq!(s.tenant_states().unwrap()[0].state, state);
    }
}
