//! What a tenant's Luau code sees of the host: the `meshplay`, `log` and
//! `time` globals. `plugins/README.md` documents them for plugin authors;
//! keep the two in step.
//!
//! Every host function that waits (`time.sleep`) waits at most until the
//! running call's deadline, so an awaited host call cannot stretch a script
//! past its budget.

use crate::mesophyll::message::Tenant;
use crate::worker::vm::{Clock, DeadlineExceeded};
use mlua::{Lua, Table, Value, Variadic};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Installs the host API into `lua`'s globals (before they are frozen by
/// the sandbox).
pub fn install(lua: &Lua, tenant: &Tenant, worker_id: u32, clock: &Arc<Clock>) -> mlua::Result<()> {
    let globals = lua.globals();

    let meshplay = lua.create_table()?;
    let t = lua.create_table()?;
    t.set("type", tenant.kind.as_str())?;
    t.set("id", tenant.id.as_str())?;
    t.set_readonly(true);
    meshplay.set("tenant", t)?;
    meshplay.set("worker_id", worker_id)?;
    meshplay.set("version", env!("CARGO_PKG_VERSION"))?;
    globals.set("meshplay", meshplay)?;

    globals.set("log", log_table(lua, tenant)?)?;
    globals.set("time", time_table(lua, clock)?)?;
    Ok(())
}

fn log_table(lua: &Lua, tenant: &Tenant) -> mlua::Result<Table> {
    let log = lua.create_table()?;
    let tenant = tenant.to_string();
    macro_rules! level {
        ($name:literal, $level:expr) => {{
            let tenant = tenant.clone();
            log.set(
                $name,
                lua.create_function(move |_, parts: Variadic<Value>| {
                    let line = render(&parts);
                    match $level {
                        tracing::Level::DEBUG => tracing::debug!(tenant = %tenant, "script: {line}"),
                        tracing::Level::INFO => tracing::info!(tenant = %tenant, "script: {line}"),
                        tracing::Level::WARN => tracing::warn!(tenant = %tenant, "script: {line}"),
                        _ => tracing::error!(tenant = %tenant, "script: {line}"),
                    }
                    Ok(())
                })?,
            )?;
        }};
    }
    level!("debug", tracing::Level::DEBUG);
    level!("info", tracing::Level::INFO);
    level!("warn", tracing::Level::WARN);
    level!("error", tracing::Level::ERROR);
    Ok(log)
}

/// Joins log arguments as `print` would, bounded so a script cannot flood
/// the log with one call.
fn render(parts: &[Value]) -> String {
    const MAX: usize = 4096;
    let mut line = String::new();
    for (i, v) in parts.iter().enumerate() {
        if i > 0 {
            line.push(' ');
        }
        match v.to_string() {
            Ok(s) => line.push_str(&s),
            Err(_) => line.push_str(v.type_name()),
        }
        if line.len() > MAX {
            let mut cut = MAX;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
            line.push('…');
            break;
        }
    }
    line
}

fn time_table(lua: &Lua, clock: &Arc<Clock>) -> mlua::Result<Table> {
    let time = lua.create_table()?;
    time.set(
        "now",
        lua.create_function(|_, ()| {
            Ok(SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0))
        })?,
    )?;
    time.set(
        "now_ms",
        lua.create_function(|_, ()| {
            Ok(SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0))
        })?,
    )?;
    let clock = Arc::clone(clock);
    time.set(
        "sleep",
        lua.create_async_function(move |_, ms: f64| {
            let clock = Arc::clone(&clock);
            async move {
                if !ms.is_finite() || ms < 0.0 {
                    return Err(mlua::Error::runtime(
                        "time.sleep: milliseconds must be >= 0",
                    ));
                }
                let want = Duration::from_secs_f64(ms / 1000.0);
                let remaining = clock.remaining();
                tokio::time::sleep(want.min(remaining)).await;
                if want > remaining {
                    return Err(mlua::Error::external(DeadlineExceeded));
                }
                Ok(())
            }
        })?,
    )?;
    Ok(time)
}
