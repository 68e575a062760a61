//! The master's store: tenant KV, global KV, tenant states and uploaded
//! catalogue entries.
//!
//! The endpoints see only the [`Store`] trait (here), so that the backend
//! is a choice of the operator's ([`StoreUrl`]): [`PostgresStore`] on a
//! PostgreSQL database (its own file says how), or [`SledStore`], the
//! embedded one under `<data-dir>/store`; [`keys`] is how sled lays records
//! out, and [`commit`] how it makes writes durable:
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
//!
//! Modules:
//!
//! - [`copy`]: `meshplay store copy --from URL --to URL`;
//! - `pager`: a page of tenant states filled up to a byte budget, the same
//!   way on every backend (`super::Store::tenant_states_page`);
//! - [`postgres`]: the PostgreSQL backend (`--store postgres://...`);
//! - `records`: what the stores write of tokens and audit entries, in
//!   types of their own, so that a REST field is not a format change;
//! - `sled_store`: the sled backend;
//! - [`timers`]: what the store keeps of timers and schedules, and the
//!   `TimerStore` each backend implements for them;
//! - [`url`]: where the store is, as one string.

pub mod commit;
pub mod copy;
pub mod keys;
mod pager;
pub mod postgres;
pub(crate) mod records;
mod sled_store;
pub mod timers;
pub mod url;

pub use postgres::PostgresStore;
pub use sled_store::SledStore;
pub use url::StoreUrl;

use crate::mesophyll::db::{GlobalEntry, KvRecord, TenantStateEntry, TenantStatesPage};
use crate::mesophyll::message::{Tenant, TenantState};
use crate::rest::{AuditEntry, TokenInfo};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

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
    /// The database refused a write from a master whose leadership epoch
    /// no longer leads (PostgreSQL, standby masters): this master must
    /// stop acting as the leader.
    #[error("fenced: {0}")]
    Fenced(String),
    /// A per-tenant cap would be passed: `too_many_timers`,
    /// `too_many_schedules`.
    #[error("{message}")]
    Limit {
        /// The stable code the API answers with.
        code: &'static str,
        /// What was passed.
        message: String,
    },
}

/// Runs the store's synchronous work `f` on a blocking thread: a scan of a
/// whole scope, or a decode of many records, must not hold an async thread
/// (and every request queued behind it).
pub async fn blocking<T, F>(store: &Arc<dyn Store>, f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
{
    let store = Arc::clone(store);
    tokio::task::spawn_blocking(move || f(store.as_ref()))
        .await
        .map_err(|e| StoreError::Backend(format!("store task: {e}")))?
}

/// What an owner's delete of a global entry did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlobalDelete {
    /// It was there and is gone.
    Deleted,
    /// There was no such entry.
    Missing,
    /// The entry belongs to another tenant (or to none); it is untouched.
    NotOwner,
}

/// A boxed future, so the trait stays object-safe.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// What the DB endpoints and the REST API need of a store. Reads are
/// synchronous, to be called through [`blocking`] (a scan can take long);
/// writes are futures that complete once the write is durable, and do
/// their own synchronous part off the async threads.
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
    /// Every KV record of every tenant, while `keep` wants more
    /// (`store copy`).
    fn kv_all(&self, keep: &mut dyn FnMut(Tenant, KvRecord) -> bool) -> Result<(), StoreError>;
    /// Writes `record` as it is, its times included (`store copy`).
    fn kv_import<'a>(&'a self, tenant: &'a Tenant, record: &'a KvRecord) -> StoreFuture<'a, ()>;

    /// The states of the tenants `keep` wants (a worker's shard): the
    /// others are not even decoded.
    fn tenant_states(
        &self,
        keep: &dyn Fn(&Tenant) -> bool,
    ) -> Result<Vec<TenantStateEntry>, StoreError>;
    /// One page of the states `keep` wants, in this store's order of
    /// tenants, starting after `after`: entries until their encoded size
    /// would pass `max_bytes` (at least one), and the tenant to pass as
    /// `after` for the next page (`None` on the last).
    fn tenant_states_page(
        &self,
        keep: &dyn Fn(&Tenant) -> bool,
        after: Option<&Tenant>,
        max_bytes: usize,
    ) -> Result<TenantStatesPage, StoreError>;
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
    /// Removes one global entry if `owner` owns it, in one atomic step (a
    /// check and a delete apart could remove an entry another tenant made
    /// in between).
    fn global_delete<'a>(
        &'a self,
        scope: &'a str,
        key: &'a str,
        version: u32,
        owner: &'a Tenant,
    ) -> StoreFuture<'a, GlobalDelete>;
    /// Every uploaded plugin or filter: `(key, bytes)`, keys like
    /// `plugin/<name>` and `filter/<name>`.
    fn catalogue_entries(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// Stores one catalogue entry.
    fn catalogue_put<'a>(&'a self, key: &'a str, bytes: Vec<u8>) -> StoreFuture<'a, ()>;
    /// Removes one catalogue entry; true when it existed.
    fn catalogue_delete<'a>(&'a self, key: &'a str) -> StoreFuture<'a, bool>;
    /// Stores `puts` and removes `deletes` (keys that are not there are
    /// skipped) as one change: a reader sees all of it or none of it
    /// (`meshplay deploy`).
    fn catalogue_apply<'a>(
        &'a self,
        puts: Vec<(String, Vec<u8>)>,
        deletes: Vec<String>,
    ) -> StoreFuture<'a, ()>;

    /// Entries of `scope`, in key order, while `keep` wants more.
    fn global_scan(
        &self,
        scope: &str,
        keep: &mut dyn FnMut(GlobalEntry) -> bool,
    ) -> Result<(), StoreError>;

    /// Every global entry of every scope, while `keep` wants more.
    fn global_all(&self, keep: &mut dyn FnMut(GlobalEntry) -> bool) -> Result<(), StoreError>;

    /// Every API token, as stored (hashed).
    fn tokens(&self) -> Result<Vec<StoredToken>, StoreError>;
    /// Stores a token, or replaces the one of its id (a revocation).
    fn put_token<'a>(&'a self, token: &'a StoredToken) -> StoreFuture<'a, ()>;
    /// Forgets token `id` (a worker's ended session: a token the store
    /// does not have is refused like a revoked one).
    fn delete_token<'a>(&'a self, id: &'a str) -> StoreFuture<'a, ()>;
    /// Appends one audit entry, giving it the next `seq`; durable when it
    /// completes.
    fn audit_append(&self, entry: AuditEntry) -> StoreFuture<'_, AuditEntry>;
    /// Up to `limit` audit entries after `after`, oldest first.
    fn audit(&self, after: Option<u64>, limit: usize) -> Result<Vec<AuditEntry>, StoreError>;
    /// Deletes every audit entry up to `seq`, that one included
    /// ([`crate::master::MasterConfig::audit_retention`] chooses it).
    fn audit_delete_through(&self, seq: u64) -> StoreFuture<'_, ()>;

    /// Every plugin variable that has a value ([`crate::master::vars`]).
    fn vars(&self) -> Result<Vec<StoredVar>, StoreError>;
    /// Stores a variable's value, or replaces the one of its key.
    fn put_var<'a>(&'a self, var: &'a StoredVar) -> StoreFuture<'a, ()>;
    /// Forgets the value under `key`; whether there was one.
    fn delete_var<'a>(&'a self, key: &'a str) -> StoreFuture<'a, bool>;

    /// Timers and schedules ([`timers`]).
    fn timers(&self) -> &dyn timers::TimerStore;
}

/// A plugin variable's value as the store keeps it: a secret's sealed
/// ([`crate::master::vars`]), any other as it is.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredVar {
    /// The plugin that declares it.
    pub plugin: String,
    /// The tenant it is set for; `None`: the plugin's own value.
    pub tenant: Option<Tenant>,
    /// Its name.
    pub name: String,
    /// Whether `value` is sealed.
    pub secret: bool,
    /// The value's bytes (nonce and ciphertext for a secret).
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

impl StoredVar {
    /// Where it is kept: plugin, tenant and name, NUL-separated. Plugin and
    /// variable names hold no NUL, so they are the first and the last part
    /// whatever the tenant holds; the tenant's type length keeps `a:b:c`
    /// of type `a` apart from type `a:b`.
    pub fn key(plugin: &str, tenant: Option<&Tenant>, name: &str) -> String {
        match tenant {
            None => format!("{plugin}\0\0{name}"),
            Some(t) => format!("{plugin}\0{}\0{}\0{name}", t.kind.len(), t),
        }
    }
}

impl std::fmt::Debug for StoredVar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredVar")
            .field("plugin", &self.plugin)
            .field("tenant", &self.tenant)
            .field("name", &self.name)
            .field("secret", &self.secret)
            .finish_non_exhaustive()
    }
}

/// An API token as the store keeps it: what is listed, and the SHA-256 of
/// the secret (never the secret).
///
/// The stores write it as a `TokenRecord`, a type of their own (`records`).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredToken {
    /// What is listed.
    pub info: TokenInfo,
    /// Hex SHA-256 of the bearer token.
    pub sha256: String,
    /// For a joined worker's session: the slot it holds.
    pub session: Option<SessionGrant>,
}

/// What a joined worker's session token holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionGrant {
    /// The slot (worker id).
    pub slot: u32,
    /// The id of the join token it came with: revoking that ends it.
    pub join_token: String,
    /// The hostname the worker reported.
    pub host: String,
    /// Its process id there.
    pub pid: u32,
}
