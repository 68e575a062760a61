//! proxy-wasm ABI 0.2.1 filters: Envoy HTTP filters, unchanged, run on
//! events.
//!
//! An event is presented as one HTTP request (built in [`call`]):
//!
//! | request | from the event |
//! |---|---|
//! | `:method` | `POST` |
//! | `:path` | `/<event name>` |
//! | `:authority` | `meshplay` |
//! | `content-type` | `application/json` |
//! | `x-meshplay-tenant` | `<type>:<id>` |
//! | other headers | the event's `headers` (set by an earlier proxy-wasm filter) |
//! | body | the event's data as JSON |
//!
//! and the filter's answer comes back as a [`Verdict`](super::Verdict): a
//! local response rejects (its body the reason, its status in the error);
//! otherwise the event goes on with the body the filter left (JSON when it
//! parses, else a string) and the non-pseudo headers it added or changed as
//! `event.headers`. Pausing without a response, resetting the stream, or a
//! trap is a filter failure, which the manifest's `on_error` decides on.
//!
//! **What lives how long.** Everything of a call lives for that call. Each
//! call takes a fresh instance from the worker's pool and runs the module's
//! whole life in it: `_initialize`, the root context (id 1) with
//! `proxy_on_vm_start` and `proxy_on_configure` (the plugin configuration),
//! one HTTP context (id 2) for the event, `proxy_on_request_headers`,
//! `proxy_on_request_body` (end of stream), then `proxy_on_done`,
//! `proxy_on_log` and `proxy_on_delete` of the HTTP context; the instance is
//! then dropped without finalising the root context. A root context thus
//! never outlives its event: nothing a call leaves in the module's memory
//! reaches another tenant, another plugin configuration, or the next event.
//! What a filter must keep across calls goes to shared data
//! ([`shared::ProxyShared`]), which is scoped to the tenant and lives as long
//! as the worker. `meshplay bench filter` measures what this costs per call.
//!
//! The files: `guest` (reading and writing the instance's memory),
//! `fields` (header maps), `hostcalls` (the `env` functions), `wasi`
//! (the WASI subset), [`shared`] (shared data and metrics), [`call`] (one
//! call). What a module may import and must export is checked before it
//! gets here, in [`crate::catalogue::proxy_abi`].

pub mod call;
mod fields;
mod guest;
mod hostcalls;
pub mod shared;
mod wasi;

use crate::catalogue::proxy_abi;
use crate::mesophyll::message::Tenant;
use fields::{Fields, MAP_TYPES};
use shared::ProxyShared;
use std::collections::HashSet;
use std::sync::Arc;
use wasmtime::{ExternType, Linker, Module, StoreLimits, Val, ValType};

/// The ABI's `proxy_status_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Status {
    /// Done.
    Ok = 0,
    /// No such key, property, buffer or metric.
    NotFound = 1,
    /// An argument out of range (an unknown map, buffer or level).
    BadArgument = 2,
    /// Pointers outside the instance's memory.
    InvalidMemoryAccess = 6,
    /// Shared data changed since the filter read it.
    CasMismatch = 8,
    /// The host cannot do it now (a budget is spent, the guest's allocator
    /// failed).
    InternalFailure = 10,
    /// Meshplay does not offer it (HTTP and gRPC calls, queues, ticks...).
    Unimplemented = 12,
}

/// A result as the ABI returns it.
fn answer(r: Result<(), Status>) -> i32 {
    match r {
        Ok(()) => Status::Ok as i32,
        Err(s) => s as i32,
    }
}

/// The root context's id; the event's HTTP context is [`STREAM`].
pub const ROOT: i32 = 1;
/// The id of the one HTTP context of a call.
pub const STREAM: i32 = 2;

/// The response a filter sent instead of letting the event go on.
#[derive(Debug, Clone)]
pub struct LocalResponse {
    /// The HTTP status it chose.
    pub status: u32,
    /// Its body: the reason the event is rejected.
    pub body: Vec<u8>,
    /// Its status details (Envoy's `response_code_details`).
    pub details: Vec<u8>,
}

/// Everything one call's host functions read and write: the request made
/// of the event, what the filter answered, and who it runs for.
pub struct HostState {
    limits: StoreLimits,
    filter: Arc<str>,
    guest: Option<guest::Guest>,
    /// Field maps by the ABI's map type; only request headers (0) have
    /// content at the start.
    maps: [Fields; MAP_TYPES],
    body: Vec<u8>,
    body_changed: bool,
    config: Vec<u8>,
    local: Option<LocalResponse>,
    resumed: bool,
    reset: bool,
    effective: i32,
    tenant: Tenant,
    event: String,
    plugin: Option<String>,
    /// The request the call serves, for log lines.
    request: Option<u64>,
    shared: Arc<ProxyShared>,
    /// The last line the filter logged at error level or worse: a
    /// panicking SDK says why there, just before it traps.
    last_words: Option<String>,
}

/// Adds every host function Meshplay implements to `linker`.
pub fn define(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    hostcalls::define(linker)?;
    fields::define(linker)?;
    wasi::define(linker)
}

/// Links every `env` function `module` imports that the host does not
/// implement to a stub: one that answers `UNIMPLEMENTED` when the import
/// returns a status, and otherwise traps when called, naming the function.
/// Either way the module loads.
pub fn link_unimplemented(linker: &mut Linker<HostState>, module: &Module) -> wasmtime::Result<()> {
    let mut seen = HashSet::new();
    for import in module.imports() {
        let name = import.name();
        if import.module() != "env" || proxy_abi::implemented(name) || !seen.insert(name) {
            continue;
        }
        let ExternType::Func(ty) = import.ty() else {
            continue;
        };
        let gives_status =
            ty.results().len() == 1 && ty.results().all(|r| matches!(r, ValType::I32));
        let owned = name.to_owned();
        linker.func_new("env", name, ty, move |caller, _params, results| {
            if gives_status {
                tracing::debug!(filter = %caller.data().filter, call = %owned, "unimplemented proxy-wasm call");
                results[0] = Val::I32(Status::Unimplemented as i32);
                Ok(())
            } else {
                Err(wasmtime::Error::msg(format!(
                    "called env::{owned}, which this host does not implement"
                )))
            }
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
