//! Events a handler sends on: `events.emit` to its own tenant,
//! `events.emit_to` to tenants of the types its manifest grants.
//!
//! ```lua
//! events.emit("reminder", { text = "..." })                 -- this tenant
//! events.emit_to("guild", "42", "member_joined", { id = 7 })  -- emits_to = ["guild"]
//! ```
//!
//! Emitted events wait in the call's [`Invocation`] and leave only when
//! the handler returns successfully: a handler that fails emits nothing.
//! The worker then hands them to the master (`POST /db/events`), which
//! dispatches each to the worker that owns its tenant, fire-and-forget,
//! like a REST dispatch with `wait = false`.
//!
//! Each emitted event carries one more hop than the event its handler
//! handled; past the fleet's limit (`serve --max-event-hops`, 8) the emit
//! raises instead, so two plugins that answer each other's events stop
//! after that many rounds. Bounded: [`MAX_EMITS_PER_CALL`] a call, their
//! data [`MAX_EMITTED_BYTES`] together.

use crate::catalogue::plugin::Plugin;
use crate::mesophyll::db::{EmittedEvent, MAX_VALUE_BYTES};
use crate::mesophyll::message::{Event, Tenant};
use crate::worker::invocation::Invocation;
use crate::worker::packing::pack_checked;
use crate::worker::services::Services;
use mlua::{Lua, Table, Value};
use std::sync::Arc;
use std::time::Duration;

/// How long handing emitted events to the master may take.
const EMIT_DEADLINE: Duration = Duration::from_secs(5);

/// The most events one handler call may emit.
pub const MAX_EMITS_PER_CALL: usize = 16;

/// The most data bytes (MessagePack) one call's emitted events hold
/// together.
pub const MAX_EMITTED_BYTES: usize = MAX_VALUE_BYTES;

/// The `events` table of a tenant's VM.
pub fn table(
    lua: &Lua,
    tenant: &Tenant,
    invocation: &Arc<Invocation>,
    services: &Arc<Services>,
) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    let (me, call, svc) = (tenant.clone(), Arc::clone(invocation), Arc::clone(services));
    t.set(
        "emit",
        lua.create_function(move |lua, (name, data): (String, Value)| {
            emit(lua, &call, &svc, "events.emit", me.clone(), name, data)
        })?,
    )?;
    let (call, svc) = (Arc::clone(invocation), Arc::clone(services));
    t.set(
        "emit_to",
        lua.create_function(
            move |lua, (kind, id, name, data): (String, String, String, Value)| {
                let plugin = running(&call, "events.emit_to")?;
                if !plugin.manifest.emits_to.contains(&kind) {
                    return Err(mlua::Error::runtime(format!(
                        "events.emit_to: plugin {} may not emit to tenants of type {kind:?}: \
                         its plugin.toml would need emits_to = [\"{kind}\"]",
                        plugin.manifest.name
                    )));
                }
                emit(
                    lua,
                    &call,
                    &svc,
                    "events.emit_to",
                    Tenant::new(kind, id),
                    name,
                    data,
                )
            },
        )?,
    )?;
    t.set_readonly(true);
    Ok(t)
}

fn running(call: &Invocation, what: &str) -> mlua::Result<Arc<Plugin>> {
    call.plugin().ok_or_else(|| {
        mlua::Error::runtime(format!(
            "{what}: scripts run under no plugin and emit nothing"
        ))
    })
}

fn emit(
    lua: &Lua,
    call: &Invocation,
    services: &Services,
    what: &str,
    to: Tenant,
    name: String,
    data: Value,
) -> mlua::Result<()> {
    running(call, what)?;
    let err = |m: String| Err(mlua::Error::runtime(format!("{what}: {m}")));
    if name.is_empty() || to.kind.is_empty() || to.id.is_empty() {
        return err("the tenant's type and id and the event's name cannot be empty".into());
    }
    let hops = call.hops() + 1;
    let limit = services.max_event_hops();
    if hops > limit {
        services.note_hop_limited();
        return err(format!(
            "the event was emitted {} times in a row already (the fleet's limit is {limit}, \
             serve --max-event-hops): {name:?} to {to} is not sent",
            hops - 1
        ));
    }
    let left = MAX_EMITTED_BYTES.saturating_sub(call.emitted_bytes());
    let data = pack_checked(lua, what, "the data cannot be sent", &data, left)?;
    let event = Event {
        name,
        data,
        hops,
        ..Default::default()
    };
    if let Err(limit) = call.emit(to, event, MAX_EMITS_PER_CALL) {
        return err(format!("at most {limit} events a call"));
    }
    Ok(())
}

/// Hands what a successful handler of `plugin` emitted as `from` to the
/// master, without holding the tenant's next job.
pub fn send(services: &Services, from: &Tenant, plugin: &str, emitted: Vec<(Tenant, Event)>) {
    let Some(db) = services.db.clone() else {
        return;
    };
    if emitted.is_empty() {
        return;
    }
    let events: Vec<EmittedEvent> = emitted
        .into_iter()
        .map(|(to, event)| EmittedEvent {
            from: from.clone(),
            plugin: plugin.to_owned(),
            to,
            event,
        })
        .collect();
    tokio::spawn(async move {
        match db.emit(&events, EMIT_DEADLINE).await {
            Ok(reply) if reply.dropped == 0 => {}
            Ok(reply) => tracing::warn!(
                from = %events[0].from,
                dropped = reply.dropped,
                "emitted events dropped by the master"
            ),
            Err(e) => tracing::warn!(
                from = %events[0].from,
                events = events.len(),
                "emitted events not sent: {e}"
            ),
        }
    });
}
