//! The DB endpoints' wire types: what a worker asks of the master's store
//! over HTTP/2, and what it gets back. Bodies are MessagePack (structs as
//! maps), like the WebSocket frames.
//!
//! ```text
//! GET  /db/tenant-states                          -> Vec<TenantStateEntry>
//! POST /db/tenant-state          TenantStateEntry -> TenantStateEntry
//! POST /db/kv?tenant_type=&tenant_id=   KvOp      -> KvReply
//! POST /db/public-global-kv             PublicGlobalOp -> GlobalReply
//! POST /db/global-kv?tenant_type=&tenant_id=  GlobalOp -> GlobalReply
//! GET  /db/catalogue                              -> CatalogueSnapshot
//! GET  /db/vars                                   -> Vec<VarValue>
//! POST /db/events                Vec<EmittedEvent> -> EmitReply
//! ```
//!
//! Every call carries the worker's id and token (the same headers as the
//! WebSocket upgrade). Errors come back as [`DbErrorBody`] with the status:
//! 401/404 credentials, 403 a tenant outside the caller's shard, 400 a bad
//! body, 413 too large, 409 a global key that exists already, 500 the
//! store's own failure.
//!
//! [`crate::mesophyll::db_client`] is the worker's side.

use crate::mesophyll::message::{Event, Tenant, TenantState};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The longest KV key, in bytes.
pub const MAX_KEY_BYTES: usize = 512;
/// The longest scope name, in bytes.
pub const MAX_SCOPE_BYTES: usize = 128;
/// The largest value, in bytes once encoded as MessagePack.
pub const MAX_VALUE_BYTES: usize = 256 * 1024;
/// The largest request body the DB endpoints read.
pub const MAX_DB_BODY_BYTES: usize = MAX_VALUE_BYTES + 16 * 1024;
/// Records a `Find` returns when it does not say.
pub const DEFAULT_FIND_LIMIT: u32 = 100;
/// The most records one `Find` may return; page with `after` for more.
pub const MAX_FIND_LIMIT: u32 = 1000;
/// The most bytes of records (keys and encoded values) one `Find` page
/// carries, whatever its limit: a page ends early, with `next`, rather
/// than be built whole at 1,000 values of [`MAX_VALUE_BYTES`] each. A
/// page always has at least one record.
pub const MAX_FIND_PAGE_BYTES: usize = 1024 * 1024;
/// The scope scripts use when they name none.
pub const DEFAULT_SCOPE: &str = "default";

/// The most event or plugin names a tenant state may list.
pub const MAX_STATE_NAMES: usize = 1024;
/// The longest of those names, in bytes.
pub const MAX_STATE_NAME_BYTES: usize = 128;

/// Why a tenant state is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateProblem {
    /// Over a size limit (the message says which).
    #[error("{0}")]
    TooLarge(String),
    /// A name is too long.
    #[error("{0}")]
    Invalid(String),
}

/// Whether the store takes `state`: the whole of it encoded within
/// [`MAX_VALUE_BYTES`], at most [`MAX_STATE_NAMES`] names of at most
/// [`MAX_STATE_NAME_BYTES`] in each list. A worker loads every state of its
/// shard, so one huge state would cost every load.
pub fn check_state(state: &TenantState) -> Result<(), StateProblem> {
    for (what, names) in [("events", &state.events), ("plugins", &state.plugins)] {
        let names = names.as_deref().unwrap_or_default();
        if names.len() > MAX_STATE_NAMES {
            return Err(StateProblem::TooLarge(format!(
                "{} {what}; a state lists at most {MAX_STATE_NAMES}",
                names.len()
            )));
        }
        if let Some(long) = names.iter().find(|n| n.len() > MAX_STATE_NAME_BYTES) {
            return Err(StateProblem::Invalid(format!(
                "{what}: a name of {} bytes; the limit is {MAX_STATE_NAME_BYTES}",
                long.len()
            )));
        }
    }
    let size = rmp_serde::to_vec_named(state)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > MAX_VALUE_BYTES {
        return Err(StateProblem::TooLarge(format!(
            "a state of {size} bytes; the limit is {MAX_VALUE_BYTES}"
        )));
    }
    Ok(())
}

/// An event a handler emitted (`events.emit`), on its way through the
/// master to the worker that owns `to`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmittedEvent {
    /// The tenant whose handler emitted it (the caller's shard's).
    pub from: Tenant,
    /// The plugin that emitted it.
    pub plugin: String,
    /// Where it goes.
    pub to: Tenant,
    /// The event, its `hops` counted.
    pub event: Event,
}

/// A message a handler publishes on NATS (`nats.publish`, `POST
/// /db/nats`), to a subject its plugin's manifest grants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NatsPublish {
    /// The tenant whose handler publishes (the caller's shard's).
    pub tenant: Tenant,
    /// Its plugin.
    pub plugin: String,
    /// Where.
    pub subject: String,
    /// The payload's bytes (a string as it is, other values as JSON).
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

/// The answer to `POST /db/events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmitReply {
    /// Events queued to their workers.
    pub queued: u32,
    /// Events that could not be (their worker unavailable or its queue
    /// full); they are counted and logged by the master.
    pub dropped: u32,
}

/// A plugin variable's value, as a worker gets it (`GET /db/vars`): the
/// plugin's own value (`tenant` absent) or one tenant's override; secrets
/// decrypted, for the plugin's `vars.get` alone.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VarValue {
    /// The plugin that declares it.
    pub plugin: String,
    /// The tenant it is set for; `None`: every tenant without its own.
    #[serde(default)]
    pub tenant: Option<Tenant>,
    /// Its name.
    pub name: String,
    /// Its value.
    pub value: String,
}

impl std::fmt::Debug for VarValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VarValue")
            .field("plugin", &self.plugin)
            .field("tenant", &self.tenant)
            .field("name", &self.name)
            .field("value", &"<not shown>")
            .finish()
    }
}

/// One page of a shard's tenant states (`GET /db/tenant-states?page=1`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantStatesPage {
    /// The states, in the store's order of tenants.
    pub states: Vec<TenantStateEntry>,
    /// Pass as `after` for the next page; `None` on the last one.
    pub next: Option<Tenant>,
}

/// The most bytes of encoded states one page carries (at least one state,
/// which is at most [`MAX_VALUE_BYTES`]).
pub const MAX_STATES_PAGE_BYTES: usize = 1024 * 1024;

/// A tenant and its state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct TenantStateEntry {
    /// Whose state.
    pub tenant: Tenant,
    /// The state.
    pub state: TenantState,
}

/// One stored KV record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct KvRecord {
    /// Its scope.
    pub scope: String,
    /// Its key.
    pub key: String,
    /// Its value.
    pub value: Value,
    /// When it was first written, Unix milliseconds.
    pub created_at: i64,
    /// When it was last written, Unix milliseconds.
    pub updated_at: i64,
}

/// A tenant KV operation (`POST /db/kv`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum KvOp {
    /// Read one key.
    Get {
        /// The scope.
        scope: String,
        /// The key.
        key: String,
    },
    /// Write one key (durable before the answer).
    Set {
        /// The scope.
        scope: String,
        /// The key.
        key: String,
        /// The value.
        value: Value,
    },
    /// Remove one key (durable before the answer).
    Delete {
        /// The scope.
        scope: String,
        /// The key.
        key: String,
    },
    /// Keys of a scope matching a LIKE pattern (`%` any run, `_` one
    /// character, `\` escapes), in key order.
    Find {
        /// The scope.
        scope: String,
        /// The pattern; `%` lists everything.
        pattern: String,
        /// At most this many ([`DEFAULT_FIND_LIMIT`], at most
        /// [`MAX_FIND_LIMIT`]).
        #[serde(default)]
        limit: Option<u32>,
        /// Start after this key (the previous page's `next`).
        #[serde(default)]
        after: Option<String>,
    },
    /// The tenant's scopes.
    ListScopes {},
}

/// The answer to a [`KvOp`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum KvReply {
    /// `Get`: the record, if any.
    Record(Option<KvRecord>),
    /// `Set`: what is stored now.
    Stored(KvRecord),
    /// `Delete`: whether there was something to delete.
    Deleted(bool),
    /// `Find`: one page of records, and where the next page starts.
    Found {
        /// The records, in key order.
        records: Vec<KvRecord>,
        /// Pass as `after` to get the next page; `None` on the last one.
        next: Option<String>,
    },
    /// `ListScopes`.
    Scopes(Vec<String>),
}

/// An entry of the global KV: shared between tenants, owned by the tenant
/// that created it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GlobalEntry {
    /// 3-64 characters of `[A-Za-z0-9._-]`.
    pub key: String,
    /// Entries are immutable; a new version is a new entry.
    pub version: u32,
    /// A namespace (`templates`, `lists`, ...).
    pub scope: String,
    /// Its value.
    pub value: Value,
    /// Whether other tenants can read it (`/db/public-global-kv`).
    #[serde(default)]
    pub public: bool,
    /// Set by the master on create: the tenant that created it.
    #[serde(default)]
    pub owner: Option<Tenant>,
    /// Set by the master on create, Unix milliseconds.
    #[serde(default)]
    pub created_at: i64,
}

/// `POST /db/global-kv`, on behalf of one tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum GlobalOp {
    /// Add an entry; fails with 409 when `(scope, key, version)` exists.
    Create {
        /// The entry (its `owner` and `created_at` are set by the master).
        entry: GlobalEntry,
    },
    /// Remove an entry; only its owner may.
    Delete {
        /// Its key.
        key: String,
        /// Its version.
        version: u32,
        /// Its scope.
        scope: String,
    },
}

/// `POST /db/public-global-kv`: reads of public entries, by any worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PublicGlobalOp {
    /// Public entries of `scope` whose key contains `query`.
    Find {
        /// The scope.
        scope: String,
        /// A substring of the key (empty: all), bounded by
        /// [`MAX_FIND_LIMIT`].
        query: String,
    },
    /// One public entry.
    Get {
        /// Its key.
        key: String,
        /// Its version.
        version: u32,
        /// Its scope.
        scope: String,
    },
}

/// The answer to a [`GlobalOp`] or [`PublicGlobalOp`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum GlobalReply {
    /// `Create`: the stored entry.
    Created(GlobalEntry),
    /// `Delete`: whether it existed.
    Deleted(bool),
    /// `Get`: the entry, if it exists and is public.
    Entry(Option<GlobalEntry>),
    /// `Find`: the matches, in key order.
    Entries(Vec<GlobalEntry>),
}

/// One plugin as it travels: its manifest and its Luau files, as text.
/// What they mean is the worker's business, not the protocol's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginBundle {
    /// The plugin's name (its folder, or the upload's name).
    pub name: String,
    /// `plugin.toml`, verbatim.
    pub manifest: String,
    /// The `.luau` files by name (`init.luau` -> source).
    pub files: std::collections::BTreeMap<String, String>,
}

/// One filter module as it travels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilterModule {
    /// The filter's name.
    pub name: String,
    /// The module's bytes.
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
}

/// `GET /db/catalogue`: every plugin and filter the workers run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogueSnapshot {
    /// Grows with every change; `CatalogueChanged` carries the same number.
    pub revision: u64,
    /// The plugins.
    pub plugins: Vec<PluginBundle>,
    /// The filters.
    pub filters: Vec<FilterModule>,
}

/// The body of every DB error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DbErrorBody {
    /// Stable: `unauthorized`, `unknown_worker`, `forbidden`, `bad_request`,
    /// `too_large`, `conflict`, `store`.
    pub code: String,
    /// For people.
    pub message: String,
}

/// Whether `key` is a valid global KV key: 3-64 of `[A-Za-z0-9._-]`.
pub fn valid_global_key(key: &str) -> bool {
    (3..=64).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Whether `text` matches the LIKE `pattern` (`%` any run, `_` one
/// character, `\` escapes the next character).
pub fn like(pattern: &str, text: &str) -> bool {
    #[derive(Clone, Copy, PartialEq)]
    enum Tok {
        Any,
        One,
        Lit(char),
    }
    let mut toks = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        toks.push(match c {
            '%' => Tok::Any,
            '_' => Tok::One,
            '\\' => Tok::Lit(chars.next().unwrap_or('\\')),
            c => Tok::Lit(c),
        });
    }
    let text: Vec<char> = text.chars().collect();
    // Iterative matching with one backtrack point for the last `%`: linear
    // in practice, never exponential.
    let (mut t, mut p) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match toks.get(p) {
            Some(Tok::Any) => {
                star = Some((p, t));
                p += 1;
            }
            Some(Tok::One) => {
                t += 1;
                p += 1;
            }
            Some(Tok::Lit(c)) if *c == text[t] => {
                t += 1;
                p += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    toks[p..].iter().all(|t| *t == Tok::Any)
}

/// The literal start of a LIKE pattern (up to its first wildcard), which
/// bounds the keys a `Find` has to look at.
pub fn like_prefix(pattern: &str) -> String {
    let mut out = String::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '%' | '_' => break,
            '\\' => out.push(chars.next().unwrap_or('\\')),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns() {
        assert!(like("%", ""));
        assert!(like("%", "anything"));
        assert!(like("user:%", "user:42"));
        assert!(!like("user:%", "guild:42"));
        assert!(like("a_c", "abc"));
        assert!(!like("a_c", "abbc"));
        assert!(like("%b%", "abc"));
        assert!(like("a%c%e", "abcde"));
        assert!(!like("a%c%e", "abcdf"));
        assert!(like("100\\%", "100%"));
        assert!(!like("100\\%", "1000"));
        assert!(like("é_", "éa"));
        assert_eq!(like_prefix("user:%x"), "user:");
        assert_eq!(like_prefix("a\\_b_"), "a_b");
    }

    #[test]
    fn global_keys() {
        assert!(valid_global_key("my-list.v1_x"));
        assert!(!valid_global_key("ab"));
        assert!(!valid_global_key(&"a".repeat(65)));
        assert!(!valid_global_key("has space"));
    }

    #[test]
    fn ops_round_trip_as_messagepack() {
        let ops = [
            KvOp::Get {
                scope: "s".into(),
                key: "k".into(),
            },
            KvOp::Find {
                scope: "s".into(),
                pattern: "%".into(),
                limit: Some(3),
                after: None,
            },
            KvOp::ListScopes {},
        ];
        for op in ops {
            let bytes = rmp_serde::to_vec_named(&op).unwrap();
            assert_eq!(rmp_serde::from_slice::<KvOp>(&bytes).unwrap(), op);
        }
    }
}
