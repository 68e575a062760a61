//! The `nats` global: a handler publishes on the NATS the master is
//! connected to (`serve --nats`), to subjects its plugin's manifest grants.
//!
//! ```lua
//! nats.publish("orders.created", { id = 7 })   -- publishes = ["orders.>"]
//! nats.publish("orders.raw", "text as it is")  -- a string goes as its bytes
//! ```
//!
//! A publish goes through the master (`POST /db/nats`), which holds the
//! credentials, and returns once the master's client has taken it. Other
//! values than strings go as JSON, measured first like `kv.set`'s.

use crate::catalogue::subject::{check_subject, matches};
use crate::mesophyll::db::{MAX_VALUE_BYTES, NatsPublish};
use crate::mesophyll::db_client::DbClient;
use crate::mesophyll::message::Tenant;
use crate::worker::invocation::Invocation;
use crate::worker::kv::MasterCall;
use crate::worker::packing::pack_checked;
use crate::worker::watchdog::Clock;
use mlua::{Lua, Value};
use std::sync::Arc;

/// Installs `nats` for `tenant`; without a store every call fails.
pub fn install(
    lua: &Lua,
    tenant: &Tenant,
    clock: &Arc<Clock>,
    invocation: &Arc<Invocation>,
    db: Option<&DbClient>,
) -> mlua::Result<()> {
    let t = lua.create_table()?;
    if let Some(db) = db {
        let call = MasterCall::new(db, tenant, clock);
        let invocation = Arc::clone(invocation);
        t.set(
            "publish",
            lua.create_async_function(move |lua, (subject, data): (String, Value)| {
                let (call, invocation) = (call.clone(), Arc::clone(&invocation));
                async move { publish(&lua, &call, &invocation, subject, data).await }
            })?,
        )?;
    }
    t.set_readonly(true);
    lua.globals().set("nats", t)
}

async fn publish(
    lua: &Lua,
    call: &MasterCall,
    invocation: &Invocation,
    subject: String,
    data: Value,
) -> mlua::Result<bool> {
    let what = "nats.publish";
    let err = |m: String| mlua::Error::runtime(format!("{what}: {m}"));
    let plugin = invocation
        .plugin()
        .ok_or_else(|| err("scripts run under no plugin and publish nothing".into()))?;
    check_subject(&subject).map_err(err)?;
    if !plugin
        .manifest
        .publishes
        .iter()
        .any(|p| matches(p, &subject))
    {
        return Err(err(format!(
            "plugin {} may not publish to {subject:?}: its plugin.toml would need publishes = [\"{subject}\"] (or a pattern matching it)",
            plugin.manifest.name
        )));
    }
    let payload = match &data {
        Value::String(s) => s.as_bytes().to_vec(),
        other => {
            let packed =
                pack_checked(lua, what, "the data cannot be sent", other, MAX_VALUE_BYTES)?;
            serde_json::to_vec(&packed).map_err(|e| err(e.to_string()))?
        }
    };
    let msg = NatsPublish {
        tenant: call.tenant().clone(),
        plugin: plugin.manifest.name.clone(),
        subject,
        payload,
    };
    call.bounded(what, |db, _, deadline| async move {
        db.nats_publish(&msg, deadline).await
    })
    .await
}
