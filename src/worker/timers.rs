//! The `timers` global: a handler asks the master to wake its tenant
//! later, once or on a schedule.
//!
//! ```lua
//! local id = timers.after(10 * 60 * 1000, "remind", { text = "stand up" })
//! timers.at(1767225600000, "new_year")
//! timers.cancel(id)
//! timers.every("daily", "0 9 * * 1-5", "standup", nil, "Europe/Stockholm")
//! timers.unschedule("daily")
//! local pending = timers.list()   -- { timers = {...}, schedules = {...} }
//! ```
//!
//! Each call is one `POST /db/timers` ([`crate::mesophyll::timers`]): the
//! timer is in the master's store when the call returns, whatever the
//! handler does next. The handler woken by it gets `event.timer = { id,
//! due_at, attempt, schedule }`. Calls wait like `kv` calls: within the
//! running call's deadline, yielding the thread meanwhile.

use crate::mesophyll::db_client::DbClient;
use crate::mesophyll::message::Tenant;
use crate::mesophyll::timers::{
    MAX_TIMER_DATA_BYTES, ScheduleSpec, TimerOp, TimerReply, TimerRequest, UTC, When,
};
use crate::worker::kv::MasterCall;
use crate::worker::packing::pack_checked;
use crate::worker::watchdog::Clock;
use mlua::{Lua, LuaSerdeExt, Table, Value};
use std::sync::Arc;

impl MasterCall {
    async fn timers(&self, what: &str, op: TimerOp) -> mlua::Result<TimerReply> {
        self.bounded(what, |db, tenant, deadline| async move {
            db.timers(&TimerRequest { tenant, op }, deadline).await
        })
        .await
    }
}

fn unexpected(what: &str) -> mlua::Error {
    mlua::Error::runtime(format!("{what}: unexpected answer from the master"))
}

/// A whole number of milliseconds from a Luau number.
fn millis(what: &str, n: f64) -> mlua::Result<i64> {
    if !n.is_finite() || !(0.0..=1e15).contains(&n) {
        return Err(mlua::Error::runtime(format!(
            "{what}: the time must be a non-negative number of milliseconds (got {n})"
        )));
    }
    Ok(n as i64)
}

/// Installs `timers` for `tenant`; without a store every call fails.
pub fn install(
    lua: &Lua,
    tenant: &Tenant,
    clock: &Arc<Clock>,
    db: Option<&DbClient>,
) -> mlua::Result<()> {
    let t = lua.create_table()?;
    if let Some(db) = db {
        let call = MasterCall::new(db, tenant, clock);
        set_timers(lua, &t, &call)?;
        schedules(lua, &t, &call)?;
    }
    t.set_readonly(true);
    lua.globals().set("timers", t)
}

fn set_timers(lua: &Lua, t: &Table, call: &MasterCall) -> mlua::Result<()> {
    for (name, after) in [("after", true), ("at", false)] {
        let c = call.clone();
        let what = if after { "timers.after" } else { "timers.at" };
        t.set(
            name,
            lua.create_async_function(move |lua, (time, event, data): (f64, String, Value)| {
                let c = c.clone();
                async move {
                    let ms = millis(what, time)?;
                    let when = if after {
                        When::After(ms as u64)
                    } else {
                        When::At(ms)
                    };
                    let data = pack_checked(
                        &lua,
                        what,
                        "the data cannot be sent",
                        &data,
                        MAX_TIMER_DATA_BYTES,
                    )?;
                    match c.timers(what, TimerOp::Set { event, data, when }).await? {
                        TimerReply::Set { id } => Ok(id),
                        _ => Err(unexpected(what)),
                    }
                }
            })?,
        )?;
    }
    let c = call.clone();
    t.set(
        "cancel",
        lua.create_async_function(move |_, id: u64| {
            let c = c.clone();
            async move {
                match c.timers("timers.cancel", TimerOp::Cancel { id }).await? {
                    TimerReply::Removed(r) => Ok(r),
                    _ => Err(unexpected("timers.cancel")),
                }
            }
        })?,
    )?;
    Ok(())
}

fn schedules(lua: &Lua, t: &Table, call: &MasterCall) -> mlua::Result<()> {
    let c = call.clone();
    t.set(
        "every",
        lua.create_async_function(
            move |lua,
                  (name, cron, event, data, timezone): (
                String,
                String,
                String,
                Value,
                Option<String>,
            )| {
                let c = c.clone();
                async move {
                    let what = "timers.every";
                    let data = pack_checked(
                        &lua,
                        what,
                        "the data cannot be sent",
                        &data,
                        MAX_TIMER_DATA_BYTES,
                    )?;
                    let spec = ScheduleSpec {
                        name,
                        cron,
                        event,
                        data,
                        timezone: timezone.unwrap_or_else(|| UTC.to_owned()),
                    };
                    match c.timers(what, TimerOp::Every(spec)).await? {
                        TimerReply::Scheduled(s) => Ok(s.next_due),
                        _ => Err(unexpected(what)),
                    }
                }
            },
        )?,
    )?;
    let c = call.clone();
    t.set(
        "unschedule",
        lua.create_async_function(move |_, name: String| {
            let c = c.clone();
            async move {
                match c
                    .timers("timers.unschedule", TimerOp::Unschedule { name })
                    .await?
                {
                    TimerReply::Removed(r) => Ok(r),
                    _ => Err(unexpected("timers.unschedule")),
                }
            }
        })?,
    )?;
    let c = call.clone();
    t.set(
        "list",
        lua.create_async_function(move |lua, ()| {
            let c = c.clone();
            async move {
                match c.timers("timers.list", TimerOp::List).await? {
                    TimerReply::Listed { timers, schedules } => {
                        let out = lua.create_table()?;
                        out.set("timers", lua.to_value(&timers)?)?;
                        out.set("schedules", lua.to_value(&schedules)?)?;
                        Ok(out)
                    }
                    _ => Err(unexpected("timers.list")),
                }
            }
        })?,
    )?;
    Ok(())
}
