//! The `meshplay`, `log`, `time` and `filters` globals of a tenant's Luau
//! code, and the index of the rest of what it sees of the host: `kv` and
//! `global_kv` in [`crate::worker::kv`], `http` in
//! [`crate::worker::egress::script`], `json`, `base64` and `crypto` in
//! [`crate::worker::stdlib`]. `plugins/README.md` documents them all for
//! plugin authors; keep the two in step.
//!
//! Every host function that waits (`time.sleep`) waits at most until the
//! running call's deadline, so an awaited host call cannot stretch a script
//! past its budget.

use crate::mesophyll::message::{Event, Tenant};
use crate::worker::filters::{FilterInput, Verdict};
use crate::worker::invocation::Invocation;
use crate::worker::packing::{MAX_PACKED_BYTES, check_size};
use crate::worker::services::Services;
use crate::worker::watchdog::{Clock, DeadlineExceeded};
use mlua::LuaSerdeExt;
use mlua::{Lua, Table, Value, Variadic};
use std::sync::Arc;
use std::time::Duration;

/// Installs the host API into `lua`'s globals (before they are frozen by
/// the sandbox).
pub fn install(
    lua: &Lua,
    tenant: &Tenant,
    clock: &Arc<Clock>,
    invocation: &Arc<Invocation>,
    services: &Arc<Services>,
) -> mlua::Result<()> {
    let globals = lua.globals();

    let meshplay = lua.create_table()?;
    let t = lua.create_table()?;
    t.set("type", tenant.kind.as_str())?;
    t.set("id", tenant.id.as_str())?;
    t.set_readonly(true);
    meshplay.set("tenant", t)?;
    meshplay.set("worker_id", services.worker_id)?;
    meshplay.set("version", env!("CARGO_PKG_VERSION"))?;
    globals.set("meshplay", meshplay)?;

    let log = log_table(lua, tenant, clock)?;
    // Luau's own `print` writes, unbounded and untagged, to the worker's
    // inherited stdout (a worker whose stdout nobody drains would block on
    // it): it is `log.info` instead.
    globals.set("print", log.get::<mlua::Function>("info")?)?;
    globals.set("log", log)?;
    globals.set("time", time_table(lua, clock)?)?;
    globals.set("filters", filters_table(lua, tenant, clock, services)?)?;
    crate::worker::stdlib::install(lua, &globals)?;
    globals.set(
        "events",
        crate::worker::events::table(lua, tenant, invocation, services)?,
    )?;
    globals.set(
        "vars",
        crate::worker::vars::table(lua, tenant, invocation, &services.vars)?,
    )?;
    globals.set(
        "http",
        crate::worker::egress::script::table(lua, tenant, clock, invocation, services)?,
    )?;
    Ok(())
}

/// `filters.run(name, event [, config])`: runs a filter of the current
/// catalogue on `event` (`{ name = ..., data = ... }`) for this tenant and
/// returns its verdict, `{ verdict = "continue", event = ... }` or
/// `{ verdict = "reject", reason = ... }`. A failing filter raises an error.
fn filters_table(
    lua: &Lua,
    tenant: &Tenant,
    clock: &Arc<Clock>,
    services: &Arc<Services>,
) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    let services = Arc::clone(services);
    let clock = Arc::clone(clock);
    let tenant = tenant.clone();
    t.set(
        "run",
        lua.create_function(
            move |lua, (name, event, config): (String, Value, Option<Value>)| {
                let (what, limit) = ("filters.run", MAX_PACKED_BYTES);
                check_size(lua, what, "the event cannot be sent", &event, limit)?;
                if let Some(c) = &config {
                    check_size(lua, what, "the config cannot be sent", c, limit)?;
                }
                let event: Event = lua.from_value(event).map_err(|e| {
                    mlua::Error::runtime(format!(
                        "filters.run: the event must be {{ name, data }}: {e}"
                    ))
                })?;
                let config: serde_json::Value = match config {
                    Some(c) => lua.from_value(c).map_err(|e| {
                        mlua::Error::runtime(format!("filters.run: bad config: {e}"))
                    })?,
                    None => serde_json::Value::Null,
                };
                let remaining = clock.remaining();
                if remaining.is_zero() {
                    return Err(mlua::Error::external(DeadlineExceeded));
                }
                let timeout = remaining.min(crate::catalogue::manifest::DEFAULT_FILTER_TIMEOUT);
                let catalogue = services.catalogue();
                let verdict = services
                    .run_filter(
                        &catalogue,
                        &name,
                        &FilterInput {
                            tenant: &tenant,
                            event: &event,
                            config: &config,
                            plugin: None,
                            request: clock.request_id(),
                        },
                        Some(timeout),
                    )
                    .map_err(|e| mlua::Error::runtime(format!("filters.run: {name} {e}")))?;
                let out = lua.create_table()?;
                match verdict {
                    Verdict::Continue { event: next } => {
                        out.set("verdict", "continue")?;
                        let next = next.unwrap_or(event);
                        out.set(
                            "event",
                            lua.to_value_with(
                                &next,
                                mlua::serde::SerializeOptions::new()
                                    .serialize_none_to_null(false)
                                    .serialize_unit_to_null(false),
                            )?,
                        )?;
                    }
                    Verdict::Reject { reason, status } => {
                        out.set("verdict", "reject")?;
                        out.set("reason", reason)?;
                        out.set("status", status)?;
                    }
                }
                Ok(out)
            },
        )?,
    )?;
    t.set_readonly(true);
    Ok(t)
}

fn log_table(lua: &Lua, tenant: &Tenant, clock: &Arc<Clock>) -> mlua::Result<Table> {
    let log = lua.create_table()?;
    let tenant = tenant.to_string();
    macro_rules! level {
        ($name:literal, $level:expr) => {{
            let tenant = tenant.clone();
            let clock = Arc::clone(clock);
            log.set(
                $name,
                lua.create_function(move |_, parts: Variadic<Value>| {
                    let line = render(&parts);
                    // The master's id of the request this call serves.
                    let req_id = clock.request();
                    let req_id = req_id.as_deref();
                    match $level {
                        tracing::Level::DEBUG => tracing::debug!(tenant = %tenant, req_id, "script: {line}"),
                        tracing::Level::INFO => tracing::info!(tenant = %tenant, req_id, "script: {line}"),
                        tracing::Level::WARN => tracing::warn!(tenant = %tenant, req_id, "script: {line}"),
                        _ => tracing::error!(tenant = %tenant, req_id, "script: {line}"),
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

/// The most bytes one log line of a script keeps; the rest is cut and
/// marked with `…`.
pub const MAX_LOG_LINE: usize = 4096;

/// Joins log arguments as `print` would, bounded so a script cannot flood
/// the log with one call, and with control characters escaped (`\n` as
/// the two characters `\` `n`), so that a script cannot forge a log line
/// of its own in the text format.
fn render(parts: &[Value]) -> String {
    let mut line = String::new();
    for (i, v) in parts.iter().enumerate() {
        if i > 0 {
            line.push(' ');
        }
        let text = match v {
            // Read in place: a long string is not copied whole to be cut.
            Value::String(s) => {
                let bytes = s.as_bytes();
                String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_LOG_LINE + 1)]).into_owned()
            }
            other => other
                .to_string()
                .unwrap_or_else(|_| other.type_name().to_owned()),
        };
        for c in text.chars() {
            if c.is_control() {
                line.extend(c.escape_default());
            } else {
                line.push(c);
            }
            if line.len() > MAX_LOG_LINE {
                break;
            }
        }
        if line.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
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
        lua.create_function(|_, ()| Ok(crate::clock::unix_seconds()))?,
    )?;
    time.set(
        "now_ms",
        lua.create_function(|_, ()| Ok(crate::clock::unix_millis()))?,
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
                // Past what a Duration holds is "forever", cut at the deadline.
                let want = Duration::try_from_secs_f64(ms / 1000.0).unwrap_or(Duration::MAX);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_line_cannot_hold_a_line_break_or_run_long() {
        let lua = Lua::new();
        let forged = lua
            .create_string("ok\n2026-12-06T00:00:00Z ERROR forged\r\x1b[31m")
            .unwrap();
        let line = render(&[Value::String(forged), Value::Integer(7)]);
        assert_eq!(
            line,
            "ok\\n2026-12-06T00:00:00Z ERROR forged\\r\\u{1b}[31m 7"
        );
        assert!(!line.contains('\n'));
        let long = lua.create_string("é".repeat(10_000)).unwrap();
        let line = render(&[Value::String(long)]);
        assert!(
            line.len() <= MAX_LOG_LINE + '…'.len_utf8(),
            "{}",
            line.len()
        );
        assert!(line.ends_with('…'));
    }
}
