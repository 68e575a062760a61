//! The proxy-wasm ABI 0.2.1 as Meshplay accepts it: which imports a module
//! may have and which callbacks it must export, checked before it is kept
//! (by the master on upload, by a worker before it runs it).
//!
//! A module is a proxy-wasm filter when it exports the marker
//! `proxy_abi_version_0_2_1`. Its imports fall in three groups:
//!
//! - the host functions in [`HOST_FUNCTIONS`], which Meshplay implements;
//!   a module must import them with the ABI's types;
//! - any other function of module `env` (HTTP and gRPC calls, shared
//!   queues, ticks, foreign functions, and whatever a later ABI adds):
//!   linked to a stub that answers `UNIMPLEMENTED` (12), so a module built
//!   with a full SDK still loads and learns at the call what it cannot do;
//! - the WASI calls an SDK's runtime needs ([`WASI_FUNCTIONS`]): logging
//!   through `fd_write`, an empty environment and argument list, clocks,
//!   randomness, `proc_exit` as a trap. Nothing else of WASI: a module that
//!   imports a file or socket call is refused here, by name.
//!
//! The host side lives in the worker (`worker::filters::proxy`); a unit
//! test there checks that it defines every function listed here with the
//! type listed here.

use wasmtime::{ExternType, FuncType, Module};

use super::filter::ModuleError;

/// The export that marks a proxy-wasm 0.2.1 module.
pub const MARKER: &str = "proxy_abi_version_0_2_1";

/// A function's type as `(params, results)`, in wasm's own names.
pub type Signature = (&'static [&'static str], &'static [&'static str]);

const I1: &[&str] = &["i32"];
const I2: &[&str] = &["i32", "i32"];
const I3: &[&str] = &["i32", "i32", "i32"];
const I4: &[&str] = &["i32", "i32", "i32", "i32"];
const I5: &[&str] = &["i32", "i32", "i32", "i32", "i32"];
const STATUS: &[&str] = &["i32"];

/// The `env` functions Meshplay implements, with their types.
pub const HOST_FUNCTIONS: &[(&str, Signature)] = &[
    ("proxy_log", (I3, STATUS)),
    ("proxy_get_log_level", (I1, STATUS)),
    ("proxy_get_current_time_nanoseconds", (I1, STATUS)),
    ("proxy_get_buffer_bytes", (I5, STATUS)),
    ("proxy_set_buffer_bytes", (I5, STATUS)),
    ("proxy_get_buffer_status", (I3, STATUS)),
    ("proxy_get_header_map_size", (I2, STATUS)),
    ("proxy_get_header_map_pairs", (I3, STATUS)),
    ("proxy_set_header_map_pairs", (I3, STATUS)),
    ("proxy_get_header_map_value", (I5, STATUS)),
    ("proxy_add_header_map_value", (I5, STATUS)),
    ("proxy_replace_header_map_value", (I5, STATUS)),
    ("proxy_remove_header_map_value", (I3, STATUS)),
    ("proxy_continue_stream", (I1, STATUS)),
    ("proxy_close_stream", (I1, STATUS)),
    (
        "proxy_send_local_response",
        (
            &["i32", "i32", "i32", "i32", "i32", "i32", "i32", "i32"],
            STATUS,
        ),
    ),
    ("proxy_get_property", (I4, STATUS)),
    ("proxy_get_shared_data", (I5, STATUS)),
    ("proxy_set_shared_data", (I5, STATUS)),
    ("proxy_set_effective_context", (I1, STATUS)),
    ("proxy_done", (&[], STATUS)),
    ("proxy_define_metric", (I4, STATUS)),
    ("proxy_increment_metric", (&["i32", "i64"], STATUS)),
    ("proxy_record_metric", (&["i32", "i64"], STATUS)),
    ("proxy_get_metric", (I2, STATUS)),
];

/// The WASI module's name.
pub const WASI: &str = "wasi_snapshot_preview1";

/// The `wasi_snapshot_preview1` functions a filter may import, with their
/// types: what the SDKs' runtimes import, and nothing that reaches a file,
/// a socket or the host's environment.
pub const WASI_FUNCTIONS: &[(&str, Signature)] = &[
    ("fd_write", (I4, STATUS)),
    ("environ_sizes_get", (I2, STATUS)),
    ("environ_get", (I2, STATUS)),
    ("args_sizes_get", (I2, STATUS)),
    ("args_get", (I2, STATUS)),
    ("clock_time_get", (&["i32", "i64", "i32"], STATUS)),
    ("random_get", (I2, STATUS)),
    ("proc_exit", (I1, &[])),
];

/// Callbacks the host calls when the module exports them, with the types
/// it calls them with. `proxy_on_context_create` and an allocator are
/// required; the rest are optional.
pub const CALLBACKS: &[(&str, Signature)] = &[
    ("_initialize", (&[], &[])),
    ("_start", (&[], &[])),
    ("main", (I2, I1)),
    ("proxy_on_memory_allocate", (I1, I1)),
    ("malloc", (I1, I1)),
    ("proxy_on_context_create", (I2, &[])),
    ("proxy_on_vm_start", (I2, I1)),
    ("proxy_on_configure", (I2, I1)),
    ("proxy_on_request_headers", (I3, I1)),
    ("proxy_on_request_body", (I3, I1)),
    ("proxy_on_done", (I1, I1)),
    ("proxy_on_log", (I1, &[])),
    ("proxy_on_delete", (I1, &[])),
];

/// Whether `ty` is `signature`.
pub fn same_type(ty: &FuncType, (params, results): Signature) -> bool {
    ty.params()
        .map(|p| p.to_string())
        .eq(params.iter().copied())
        && ty
            .results()
            .map(|r| r.to_string())
            .eq(results.iter().copied())
}

fn show((params, results): Signature) -> String {
    format!("({}) -> ({})", params.join(", "), results.join(", "))
}

fn show_type(ty: &FuncType) -> String {
    let params: Vec<String> = ty.params().map(|p| p.to_string()).collect();
    let results: Vec<String> = ty.results().map(|r| r.to_string()).collect();
    format!("({}) -> ({})", params.join(", "), results.join(", "))
}

fn listed(table: &[(&str, Signature)], name: &str) -> Option<Signature> {
    table.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// Whether `name` is an `env` function this host implements.
pub fn implemented(name: &str) -> bool {
    listed(HOST_FUNCTIONS, name).is_some()
}

/// Checks a module that carries [`MARKER`] against the ABI as Meshplay
/// accepts it: every import known or stubbable, every callback of the
/// right type, the required exports present.
pub fn check(module: &Module) -> Result<(), ModuleError> {
    let refuse = |why: String| Err(ModuleError::ProxyAbi(why));
    for import in module.imports() {
        let (from, name) = (import.module(), import.name());
        let ExternType::Func(ty) = import.ty() else {
            return refuse(format!(
                "imports `{from}::{name}`, which is not a function (the host provides functions only)"
            ));
        };
        let known = match from {
            "env" => listed(HOST_FUNCTIONS, name),
            WASI => match listed(WASI_FUNCTIONS, name) {
                Some(sig) => Some(sig),
                None => {
                    return refuse(format!(
                        "imports `{WASI}::{name}`; filters get no filesystem, network or other WASI calls (only {})",
                        WASI_FUNCTIONS
                            .iter()
                            .map(|(n, _)| *n)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            },
            other => {
                return refuse(format!(
                    "imports `{other}::{name}`; a proxy-wasm filter imports from `env` and `{WASI}` only"
                ));
            }
        };
        if let Some(sig) = known
            && !same_type(&ty, sig)
        {
            return refuse(format!(
                "imports `{from}::{name}` as {}, but its type is {}",
                show_type(&ty),
                show(sig)
            ));
        }
    }
    for (name, sig) in CALLBACKS {
        if let Some(ExternType::Func(ty)) = module.get_export(name)
            && !same_type(&ty, *sig)
        {
            return refuse(format!(
                "exports `{name}` as {}, but the host calls it as {}",
                show_type(&ty),
                show(*sig)
            ));
        }
    }
    if !matches!(module.get_export("memory"), Some(ExternType::Memory(_))) {
        return refuse("no exported `memory`".into());
    }
    if module.get_export("proxy_on_context_create").is_none() {
        return refuse("no export `proxy_on_context_create`".into());
    }
    if module.get_export("proxy_on_memory_allocate").is_none()
        && module.get_export("malloc").is_none()
    {
        return refuse(
            "no allocator exported (`proxy_on_memory_allocate`, or `malloc`): the host cannot hand the filter any data"
                .into(),
        );
    }
    Ok(())
}
