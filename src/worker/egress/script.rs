//! `http.fetch(url [, options])`, as a script calls it.
//!
//! ```lua
//! local res = http.fetch("https://api.example.com/v1/items", {
//!   method = "POST",                       -- GET unless told
//!   headers = { authorization = "Bearer " .. vars.get("api_key") },
//!   body = { name = "x" },                 -- a table is sent as JSON
//!   timeout_ms = 2000,                     -- never past the deadline
//!   redirect = "follow",                   -- or "manual"
//! })
//! -- res = { ok = true, status = 200, headers = {...}, body = "...", url = "..." }
//! ```
//!
//! Any status is an answer (`ok` is true for 2xx). What stops a fetch
//! raises a table `{ code = ..., message = ... }` whose `tostring` is
//! `code: message`, so `pcall` can tell the codes apart
//! ([`FetchError::code`]). The fetch awaits without holding the worker's
//! thread: the tenant's other work waits, the worker's other tenants do not.

use super::fetch::{FetchError, FetchRequest, FetchResponse, header_value};
use crate::catalogue::allowed_host::Target;
use crate::mesophyll::message::Tenant;
use crate::worker::invocation::{Exhausted, Invocation};
use crate::worker::packing::check_size;
use crate::worker::services::Services;
use crate::worker::watchdog::{Clock, DeadlineExceeded};
use bytes::Bytes;
use hyper::Method;
use hyper::header::{self, HeaderMap, HeaderValue};
use mlua::{Lua, LuaSerdeExt, Table, Value};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The most bytes of a request body (a table is measured as JSON).
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// The `http` table: empty until a script first reads `http.fetch`, when
/// `build` makes the fetch function (a VM that never fetches, most of
/// them, pays a table and a closure instead of about 5 KiB of RSS, `bench
/// memory`). The fetch raises the error table `raw` describes when it
/// answers `nil, code, message`.
const LAZY_HTTP: &str = "local build = ...\n\
    local fetch\n\
    return setmetatable({}, { __metatable = false, __index = function(_, key)\n\
        if key ~= \"fetch\" then return nil end\n\
        if fetch == nil then\n\
            local raw, meta = build()\n\
            fetch = function(url, options)\n\
                local response, code, message = raw(url, options)\n\
                if response == nil then\n\
                    error(setmetatable({ code = code, message = message }, meta), 2)\n\
                end\n\
                return response\n\
            end\n\
        end\n\
        return fetch\n\
    end })";

/// The `http` table.
pub fn table(
    lua: &Lua,
    tenant: &Tenant,
    clock: &Arc<Clock>,
    invocation: &Arc<Invocation>,
    services: &Arc<Services>,
) -> mlua::Result<Table> {
    let (tenant, clock) = (tenant.clone(), Arc::clone(clock));
    let (invocation, services) = (Arc::clone(invocation), Arc::clone(services));
    let build = lua.create_function(move |lua, ()| {
        fetch_function(lua, &tenant, &clock, &invocation, &services)
    })?;
    // Our own code, compiled once per process rather than once per VM.
    static BYTECODE: OnceLock<Vec<u8>> = OnceLock::new();
    let bytecode = BYTECODE.get_or_init(|| {
        crate::catalogue::plugin::compile(LAZY_HTTP.as_bytes()).expect("the http table compiles")
    });
    let http: Table = lua
        .load(&bytecode[..])
        .set_name("=http")
        .set_mode(mlua::chunk::ChunkMode::Binary)
        .call(build)?;
    http.set_readonly(true);
    Ok(http)
}

/// The raw fetch (answering `response` or `nil, code, message`) and the
/// metatable of its error tables.
fn fetch_function(
    lua: &Lua,
    tenant: &Tenant,
    clock: &Arc<Clock>,
    invocation: &Arc<Invocation>,
    services: &Arc<Services>,
) -> mlua::Result<(mlua::Function, Table)> {
    let (tenant, clock) = (tenant.clone(), Arc::clone(clock));
    let (invocation, services) = (Arc::clone(invocation), Arc::clone(services));
    let raw = lua.create_async_function(move |lua, (url, options): (Value, Option<Table>)| {
        let (tenant, clock) = (tenant.clone(), Arc::clone(&clock));
        let (invocation, services) = (Arc::clone(&invocation), Arc::clone(&services));
        async move {
            let request = read_request(&lua, url, options, &clock)?;
            match fetch(&services, &invocation, &clock, &tenant, request).await? {
                Ok(response) => Ok((Some(response_table(&lua, response)?), None, None)),
                Err(e) => Ok((None, Some(e.code()), Some(e.to_string()))),
            }
        }
    })?;
    let meta = lua.create_table()?;
    meta.set(
        "__tostring",
        lua.create_function(|_, e: Table| {
            Ok(format!(
                "{}: {}",
                e.get::<String>("code")?,
                e.get::<String>("message")?
            ))
        })?,
    )?;
    meta.set_readonly(true);
    Ok((raw, meta))
}

/// The fetch, or why it did not happen. The outer error is the script's
/// own deadline, which is not the fetch's to report.
async fn fetch(
    services: &Services,
    invocation: &Invocation,
    clock: &Clock,
    tenant: &Tenant,
    request: Result<FetchRequest, FetchError>,
) -> mlua::Result<Result<FetchResponse, FetchError>> {
    let egress = &services.egress;
    let Some(plugin) = invocation.plugin() else {
        let e = FetchError::Denied(
            "scripts run under no plugin's manifest, so they reach nothing: fetch from a plugin"
                .into(),
        );
        egress.count("-", e.code());
        return Ok(Err(e));
    };
    let denied = |e: FetchError| {
        egress.count(&plugin.manifest.name, e.code());
        if matches!(e, FetchError::Denied(_)) {
            tracing::warn!(req_id = clock.request(), %tenant, plugin = %plugin.manifest.name, "egress denied: {e}");
        }
        Ok(Err(e))
    };
    let request = match request {
        Ok(r) => r,
        Err(e) => return denied(e),
    };
    // The limits alone, not a copy of the whole policy.
    let (per_call, per_tenant) = {
        let active = egress.active();
        (
            active.policy.max_fetches_per_call,
            active.policy.max_per_tenant,
        )
    };
    let _slot = match invocation.start_fetch(per_call, per_tenant) {
        Ok(slot) => slot,
        Err(e @ Exhausted::Calls(_)) => return denied(FetchError::TooManyFetches(e.to_string())),
        Err(e @ Exhausted::InFlight(_)) => return denied(FetchError::Overloaded(e.to_string())),
    };
    let result = egress.fetch(&plugin.manifest, request).await;
    if let Err(e @ FetchError::Denied(_)) = &result {
        tracing::warn!(req_id = clock.request(), %tenant, plugin = %plugin.manifest.name, "egress denied: {e}");
    }
    if matches!(result, Err(FetchError::Timeout(_))) && clock.remaining().is_zero() {
        return Err(mlua::Error::external(DeadlineExceeded));
    }
    Ok(result)
}

/// The request the arguments describe; a malformed one is the fetch's
/// `bad_request`, not a script error, so that `pcall` sees its code.
fn read_request(
    lua: &Lua,
    url: Value,
    options: Option<Table>,
    clock: &Clock,
) -> mlua::Result<Result<FetchRequest, FetchError>> {
    let remaining = clock.remaining();
    if remaining.is_zero() {
        return Err(mlua::Error::external(DeadlineExceeded));
    }
    let bad = |m: String| Ok(Err(FetchError::BadRequest(m)));
    let Value::String(url) = url else {
        return bad(format!("the URL must be a string, not {}", url.type_name()));
    };
    let target = match Target::parse(&url.to_str()?) {
        Ok(t) => t,
        Err(e) => return bad(e.to_string()),
    };
    let mut request = FetchRequest {
        method: Method::GET,
        target,
        headers: HeaderMap::new(),
        body: Bytes::new(),
        follow: true,
        timeout: remaining,
    };
    if let Some(options) = options
        && let Err(e) = apply_options(lua, &options, &mut request)?
    {
        return bad(e);
    }
    Ok(Ok(request))
}

/// Reads `options` into `request`; `Ok(Err(..))` for a bad option.
fn apply_options(
    lua: &Lua,
    options: &Table,
    request: &mut FetchRequest,
) -> mlua::Result<Result<(), String>> {
    for pair in options.pairs::<String, Value>() {
        let (key, _) = pair?;
        if !["method", "headers", "body", "timeout_ms", "redirect"].contains(&key.as_str()) {
            return Ok(Err(format!(
                "unknown option {key:?} (method, headers, body, timeout_ms, redirect)"
            )));
        }
    }
    if let Some(method) = options.get::<Option<String>>("method")? {
        match Method::from_bytes(method.to_ascii_uppercase().as_bytes()) {
            Ok(m) if m != Method::CONNECT => request.method = m,
            _ => return Ok(Err(format!("{method:?} is not a method fetch sends"))),
        }
    }
    if let Some(headers) = options.get::<Option<Table>>("headers")? {
        for pair in headers.pairs::<String, mlua::LuaString>() {
            let (name, value) = pair?;
            match header_value(&name, &value.as_bytes()) {
                Ok((name, value)) => {
                    request.headers.append(name, value);
                }
                Err(e) => return Ok(Err(e.to_string())),
            }
        }
    }
    match options.get::<Value>("body")? {
        Value::Nil => {}
        Value::String(s) => request.body = Bytes::copy_from_slice(&s.as_bytes()),
        v @ Value::Table(_) => {
            check_size(
                lua,
                "http.fetch",
                "the body cannot be sent",
                &v,
                MAX_REQUEST_BYTES,
            )?;
            let json: serde_json::Value = lua.from_value(v)?;
            request.body = Bytes::from(serde_json::to_vec(&json).map_err(mlua::Error::external)?);
            if !request.headers.contains_key(header::CONTENT_TYPE) {
                request.headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
            }
        }
        other => {
            return Ok(Err(format!(
                "the body is a string or a table, not {}",
                other.type_name()
            )));
        }
    }
    if request.body.len() > MAX_REQUEST_BYTES {
        return Ok(Err(format!(
            "a body of {} bytes (at most {MAX_REQUEST_BYTES})",
            request.body.len()
        )));
    }
    if let Some(ms) = options.get::<Option<f64>>("timeout_ms")? {
        if !ms.is_finite() || ms <= 0.0 {
            return Ok(Err("timeout_ms must be above 0".into()));
        }
        let want = Duration::try_from_secs_f64(ms / 1000.0).unwrap_or(Duration::MAX);
        request.timeout = request.timeout.min(want);
    }
    match options.get::<Option<String>>("redirect")?.as_deref() {
        None | Some("follow") => request.follow = true,
        Some("manual") => request.follow = false,
        Some(other) => {
            return Ok(Err(format!(
                "redirect is \"follow\" or \"manual\", not {other:?}"
            )));
        }
    }
    Ok(Ok(()))
}

/// `{ ok, status, headers, body, url }`; a header sent twice has its
/// values joined with `, `.
fn response_table(lua: &Lua, response: FetchResponse) -> mlua::Result<Table> {
    let t = lua.create_table_with_capacity(0, 5)?;
    t.raw_set("ok", (200..300).contains(&response.status))?;
    t.raw_set("status", response.status)?;
    let headers = lua.create_table()?;
    for name in response.headers.keys() {
        let joined = response
            .headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join(", ");
        headers.raw_set(name.as_str(), joined)?;
    }
    t.raw_set("headers", headers)?;
    t.raw_set("body", lua.create_string(&response.body)?)?;
    t.raw_set("url", response.url)?;
    Ok(t)
}
