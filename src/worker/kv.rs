//! The `kv` and `global_kv` globals: tenant code's view of the master's
//! store, through the worker's [`DbClient`].
//!
//! Every function is bound, when the VM is built, to the VM's own tenant:
//! a script cannot name another tenant, so it cannot read another tenant's
//! keys (and the master would refuse a tenant outside this worker's shard
//! anyway). Calls are async: a script waiting on the store yields its
//! thread to the other tenants, and the wait counts against its deadline.
//! Failures are Luau errors whose message starts with the function's name
//! (`kv.set: too large: ...`); a call cut by the deadline is a `timeout`.

use crate::mesophyll::db::MAX_VALUE_BYTES;
use crate::mesophyll::db::{
    DEFAULT_SCOPE, GlobalEntry, GlobalOp, GlobalReply, KvOp, KvRecord, KvReply, PublicGlobalOp,
};
use crate::mesophyll::db_client::{DbClient, DbClientError};
use crate::mesophyll::message::Tenant;
use crate::worker::packing::check_size;
use crate::worker::watchdog::{Clock, DeadlineExceeded};
use mlua::{Lua, LuaSerdeExt, Table, Value};
use std::future::Future;
use std::sync::Arc;

/// Everything a call to the master's DB endpoints needs: bound to the
/// VM's tenant, bounded by the running call's deadline.
#[derive(Clone)]
pub(crate) struct MasterCall {
    db: DbClient,
    tenant: Tenant,
    clock: Arc<Clock>,
}

impl MasterCall {
    async fn kv(&self, what: &str, op: KvOp) -> mlua::Result<KvReply> {
        self.bounded(what, |db, t, d| async move { db.kv(&t, &op, d).await })
            .await
    }

    async fn global(&self, what: &str, op: GlobalOp) -> mlua::Result<GlobalReply> {
        self.bounded(what, |db, t, d| async move { db.global(&t, &op, d).await })
            .await
    }

    async fn public(&self, what: &str, op: PublicGlobalOp) -> mlua::Result<GlobalReply> {
        self.bounded(
            what,
            |db, _, d| async move { db.public_global(&op, d).await },
        )
        .await
    }

    /// For `tenant`'s VM.
    pub(crate) fn new(db: &DbClient, tenant: &Tenant, clock: &Arc<Clock>) -> Self {
        MasterCall {
            db: db.clone(),
            tenant: tenant.clone(),
            clock: Arc::clone(clock),
        }
    }

    /// The tenant it calls for.
    pub(crate) fn tenant(&self) -> &Tenant {
        &self.tenant
    }

    /// Runs one call within the script's remaining time.
    pub(crate) async fn bounded<T, F, Fut>(&self, what: &str, call: F) -> mlua::Result<T>
    where
        F: FnOnce(DbClient, Tenant, std::time::Duration) -> Fut,
        Fut: Future<Output = Result<T, DbClientError>>,
    {
        let remaining = self.clock.remaining();
        if remaining.is_zero() {
            return Err(mlua::Error::external(DeadlineExceeded));
        }
        match call(self.db.clone(), self.tenant.clone(), remaining).await {
            Ok(v) => Ok(v),
            Err(DbClientError::Timeout(_)) => Err(mlua::Error::external(DeadlineExceeded)),
            Err(e) => Err(mlua::Error::runtime(format!("{what}: {e}"))),
        }
    }
}

fn scope(s: Option<String>) -> String {
    s.unwrap_or_else(|| DEFAULT_SCOPE.to_owned())
}

/// `v` as JSON, measured first with the bounded walk
/// ([`check_size`]).
fn to_json(lua: &Lua, what: &str, v: Value) -> mlua::Result<serde_json::Value> {
    check_size(lua, what, "the value cannot be stored", &v, MAX_VALUE_BYTES)?;
    lua.from_value_with(v, mlua::serde::DeserializeOptions::new().sort_keys(true))
        .map_err(|e| mlua::Error::runtime(format!("{what}: the value cannot be stored: {e}")))
}

/// `v` as a Luau value the way every host function answers: `None` and
/// `()` as `nil`, not as the `null` light userdata.
pub(crate) fn to_lua(lua: &Lua, v: &impl serde::Serialize) -> mlua::Result<Value> {
    lua.to_value_with(
        v,
        mlua::serde::SerializeOptions::new()
            .serialize_none_to_null(false)
            .serialize_unit_to_null(false),
    )
}

fn unexpected(what: &str) -> mlua::Error {
    mlua::Error::runtime(format!("{what}: unexpected answer from the master"))
}

/// Installs `kv` and `global_kv` for `tenant`. Without a store (`db` is
/// `None`, as in unit tests) every call fails with a clear error.
pub fn install(
    lua: &Lua,
    tenant: &Tenant,
    clock: &Arc<Clock>,
    db: Option<&DbClient>,
) -> mlua::Result<()> {
    let globals = lua.globals();
    let Some(db) = db else {
        let missing = lua.create_function(|_, ()| -> mlua::Result<()> {
            Err(mlua::Error::runtime("kv: this worker has no store"))
        })?;
        for name in ["kv", "global_kv"] {
            let t = lua.create_table()?;
            let meta = lua.create_table()?;
            meta.set("__index", missing.clone())?;
            t.set_metatable(Some(meta))?;
            globals.set(name, t)?;
        }
        return Ok(());
    };
    let ctx = MasterCall::new(db, tenant, clock);
    globals.set("kv", kv_table(lua, &ctx)?)?;
    globals.set("global_kv", global_table(lua, &ctx)?)?;
    Ok(())
}

fn record_table(lua: &Lua, r: KvRecord) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.set("key", r.key)?;
    t.set("scope", r.scope)?;
    t.set("value", to_lua(lua, &r.value)?)?;
    t.set("created_at", r.created_at)?;
    t.set("updated_at", r.updated_at)?;
    Ok(t)
}

fn kv_table(lua: &Lua, ctx: &MasterCall) -> mlua::Result<Table> {
    let kv = lua.create_table()?;
    kv.set("get", kv_get(lua, ctx.clone())?)?;
    kv.set("set", kv_set(lua, ctx.clone())?)?;
    kv.set("delete", kv_delete(lua, ctx.clone())?)?;
    kv.set("find", kv_find(lua, ctx.clone())?)?;
    kv.set("list_scopes", kv_list_scopes(lua, ctx.clone())?)?;
    kv.set_readonly(true);
    Ok(kv)
}

/// `kv.get(key, scope?)`: the value, or nil.
fn kv_get(lua: &Lua, c: MasterCall) -> mlua::Result<mlua::Function> {
    lua.create_async_function(move |lua, (key, s): (String, Option<String>)| {
        let c = c.clone();
        async move {
            let op = KvOp::Get {
                scope: scope(s),
                key,
            };
            match c.kv("kv.get", op).await? {
                KvReply::Record(Some(r)) => to_lua(&lua, &r.value),
                KvReply::Record(None) => Ok(Value::Nil),
                _ => Err(unexpected("kv.get")),
            }
        }
    })
}

/// `kv.set(key, value, scope?)`: true, once the value is stored.
fn kv_set(lua: &Lua, c: MasterCall) -> mlua::Result<mlua::Function> {
    lua.create_async_function(
        move |lua, (key, value, s): (String, Value, Option<String>)| {
            let c = c.clone();
            async move {
                let value = to_json(&lua, "kv.set", value)?;
                let op = KvOp::Set {
                    scope: scope(s),
                    key,
                    value,
                };
                match c.kv("kv.set", op).await? {
                    KvReply::Stored(_) => Ok(true),
                    _ => Err(unexpected("kv.set")),
                }
            }
        },
    )
}

/// `kv.delete(key, scope?)`: whether there was a value.
fn kv_delete(lua: &Lua, c: MasterCall) -> mlua::Result<mlua::Function> {
    lua.create_async_function(move |_, (key, s): (String, Option<String>)| {
        let c = c.clone();
        async move {
            match c
                .kv(
                    "kv.delete",
                    KvOp::Delete {
                        scope: scope(s),
                        key,
                    },
                )
                .await?
            {
                KvReply::Deleted(existed) => Ok(existed),
                _ => Err(unexpected("kv.delete")),
            }
        }
    })
}

/// `kv.find(pattern, scope?, limit?, after?)`: a page of records and the `after` of the next.
fn kv_find(lua: &Lua, c: MasterCall) -> mlua::Result<mlua::Function> {
    lua.create_async_function(
        move |lua,
              (pattern, s, limit, after): (
            String,
            Option<String>,
            Option<u32>,
            Option<String>,
        )| {
            let c = c.clone();
            async move {
                let op = KvOp::Find {
                    scope: scope(s),
                    pattern,
                    limit,
                    after,
                };
                match c.kv("kv.find", op).await? {
                    KvReply::Found { records, next } => {
                        let list = lua.create_table()?;
                        for r in records {
                            list.push(record_table(&lua, r)?)?;
                        }
                        Ok((list, next))
                    }
                    _ => Err(unexpected("kv.find")),
                }
            }
        },
    )
}

/// `kv.list_scopes()`: the tenant's scopes.
fn kv_list_scopes(lua: &Lua, c: MasterCall) -> mlua::Result<mlua::Function> {
    lua.create_async_function(move |_, ()| {
        let c = c.clone();
        async move {
            match c.kv("kv.list_scopes", KvOp::ListScopes {}).await? {
                KvReply::Scopes(s) => Ok(s),
                _ => Err(unexpected("kv.list_scopes")),
            }
        }
    })
}

fn entry_value(lua: &Lua, e: Option<GlobalEntry>) -> mlua::Result<Value> {
    match e {
        Some(e) => to_lua(lua, &e),
        None => Ok(Value::Nil),
    }
}

fn global_table(lua: &Lua, ctx: &MasterCall) -> mlua::Result<Table> {
    let g = lua.create_table()?;

    let c = ctx.clone();
    g.set(
        "create",
        lua.create_async_function(move |lua, spec: Table| {
            let c = c.clone();
            async move {
                let entry = GlobalEntry {
                    key: spec.get("key")?,
                    version: spec.get::<Option<u32>>("version")?.unwrap_or(1),
                    scope: spec
                        .get::<Option<String>>("scope")?
                        .unwrap_or_else(|| DEFAULT_SCOPE.into()),
                    value: to_json(&lua, "global_kv.create", spec.get("value")?)?,
                    public: spec.get::<Option<bool>>("public")?.unwrap_or(false),
                    owner: None,
                    created_at: 0,
                };
                match c
                    .global("global_kv.create", GlobalOp::Create { entry })
                    .await?
                {
                    GlobalReply::Created(e) => to_lua(&lua, &e),
                    _ => Err(unexpected("global_kv.create")),
                }
            }
        })?,
    )?;

    let c = ctx.clone();
    g.set(
        "delete",
        lua.create_async_function(move |_, (key, version, s): (String, u32, Option<String>)| {
            let c = c.clone();
            async move {
                let op = GlobalOp::Delete {
                    key,
                    version,
                    scope: scope(s),
                };
                match c.global("global_kv.delete", op).await? {
                    GlobalReply::Deleted(existed) => Ok(existed),
                    _ => Err(unexpected("global_kv.delete")),
                }
            }
        })?,
    )?;

    let c = ctx.clone();
    g.set(
        "get",
        lua.create_async_function(
            move |lua, (key, version, s): (String, u32, Option<String>)| {
                let c = c.clone();
                async move {
                    let op = PublicGlobalOp::Get {
                        key,
                        version,
                        scope: scope(s),
                    };
                    match c.public("global_kv.get", op).await? {
                        GlobalReply::Entry(e) => entry_value(&lua, e),
                        _ => Err(unexpected("global_kv.get")),
                    }
                }
            },
        )?,
    )?;

    let c = ctx.clone();
    g.set(
        "find",
        lua.create_async_function(move |lua, (s, query): (Option<String>, Option<String>)| {
            let c = c.clone();
            async move {
                let op = PublicGlobalOp::Find {
                    scope: scope(s),
                    query: query.unwrap_or_default(),
                };
                match c.public("global_kv.find", op).await? {
                    GlobalReply::Entries(list) => to_lua(&lua, &list),
                    _ => Err(unexpected("global_kv.find")),
                }
            }
        })?,
    )?;
    g.set_readonly(true);
    Ok(g)
}
