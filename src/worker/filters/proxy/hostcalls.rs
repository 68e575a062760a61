//! The `env` functions of proxy-wasm 0.2.1 that Meshplay implements, other
//! than the header maps ([`super::fields`]): logging, time, buffers (the
//! request body and the configurations), the stream's fate (continue,
//! reset, local response), properties, contexts, shared data and metrics.
//!
//! Properties a filter can read ([`property`]): `plugin_name` (the Meshplay
//! plugin whose manifest applies the filter; absent under `filters.run`),
//! `request.path`, `request.method`, and under `meshplay`: `tenant`
//! (`type:id`), `tenant_type`, `tenant_id`, `event` and `filter`. Anything
//! else is `NOT_FOUND`; nothing can be set.

use super::guest::{give, read, write_u32, write_u64};
use super::shared::MetricKind;
use super::wasi::unix_nanos;
use super::{HostState, LocalResponse, ROOT, STREAM, Status, answer};
use crate::worker::filters::log_line;
use wasmtime::{Caller, Linker};

/// The ABI's buffer types Meshplay has content for.
const HTTP_REQUEST_BODY: i32 = 0;
const VM_CONFIGURATION: i32 = 6;
const PLUGIN_CONFIGURATION: i32 = 7;
const FOREIGN_FUNCTION_ARGUMENTS: i32 = 8;

/// The ABI's stream types.
const HTTP_REQUEST: i32 = 0;
const UPSTREAM: i32 = 3;

/// The longest log line a filter may write.
const MAX_LOG_BYTES: i32 = 4096;

/// The largest request body a filter may leave (the same bound as ABI v1's
/// verdicts).
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// The buffer `kind` as it stands, or why there is none.
fn buffer(state: &HostState, kind: i32) -> Result<&[u8], Status> {
    match kind {
        HTTP_REQUEST_BODY => Ok(&state.body),
        VM_CONFIGURATION => Ok(&[]),
        PLUGIN_CONFIGURATION => Ok(&state.config),
        1..=FOREIGN_FUNCTION_ARGUMENTS => Err(Status::NotFound),
        _ => Err(Status::BadArgument),
    }
}

/// The value of the property at `path` (segments split by NUL).
pub(super) fn property(state: &HostState, path: &[u8]) -> Option<Vec<u8>> {
    let path: Vec<&[u8]> = path.split(|b| *b == 0).filter(|s| !s.is_empty()).collect();
    let text = match path.as_slice() {
        [b"plugin_name"] => state.plugin.clone()?,
        [b"request.path"] | [b"request", b"path"] => format!("/{}", state.event),
        [b"request.method"] | [b"request", b"method"] => "POST".into(),
        [b"meshplay", what] => match *what {
            b"tenant" => state.tenant.to_string(),
            b"tenant_type" => state.tenant.kind.clone(),
            b"tenant_id" => state.tenant.id.clone(),
            b"event" => state.event.clone(),
            b"filter" => state.filter.to_string(),
            _ => return None,
        },
        _ => return None,
    };
    Some(text.into_bytes())
}

fn metric_kind(kind: i32) -> Result<MetricKind, Status> {
    match kind {
        0 => Ok(MetricKind::Counter),
        1 => Ok(MetricKind::Gauge),
        2 => Ok(MetricKind::Histogram),
        _ => Err(Status::BadArgument),
    }
}

/// Adds the functions to `linker`.
pub(super) fn define(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    define_logging(linker)?;
    define_buffers(linker)?;
    define_stream(linker)?;
    define_shared_data(linker)?;
    define_metrics(linker)
}

/// Logging, its level, and the clock.
fn define_logging(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap("env", "proxy_log", log)?;
    linker.func_wrap(
        "env",
        "proxy_get_log_level",
        |mut caller: Caller<'_, HostState>, level_at: i32| -> i32 {
            use tracing::level_filters::LevelFilter;
            let level = match LevelFilter::current() {
                LevelFilter::TRACE => 0,
                LevelFilter::DEBUG => 1,
                LevelFilter::INFO => 2,
                LevelFilter::WARN => 3,
                LevelFilter::ERROR => 4,
                _ => 5,
            };
            answer(write_u32(&mut caller, level_at, level))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut caller: Caller<'_, HostState>, time_at: i32| -> i32 {
            answer(write_u64(&mut caller, time_at, unix_nanos()))
        },
    )?;
    Ok(())
}

/// The call's buffers (the body): read, replace, measure.
fn define_buffers(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut caller: Caller<'_, HostState>,
         kind: i32,
         start: i32,
         max: i32,
         data_at: i32,
         size_at: i32| {
            let slice = buffer(caller.data(), kind).and_then(|b| {
                let start = start as u32 as usize;
                if start > b.len() {
                    return Err(Status::BadArgument);
                }
                let end = start.saturating_add(max as u32 as usize).min(b.len());
                Ok(b[start..end].to_vec())
            });
            match slice {
                Ok(bytes) => give(&mut caller, &bytes, data_at, size_at),
                Err(s) => Ok(s as i32),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_buffer_bytes",
        |mut caller: Caller<'_, HostState>,
         kind: i32,
         start: i32,
         size: i32,
         data: i32,
         len: i32|
         -> i32 {
            let mut set = || -> Result<(), Status> {
                match buffer(caller.data(), kind) {
                    Ok(_) if kind == HTTP_REQUEST_BODY => {}
                    // The configurations are the host's to give, not to take back.
                    Ok(_) => return Err(Status::BadArgument),
                    Err(s) => return Err(s),
                }
                let value = read(&caller, data, len)?;
                let state = caller.data_mut();
                let body = &mut state.body;
                // Prepend (0, 0), append (start past the end), inject and
                // replace: one splice covers them all.
                let start = (start as u32 as usize).min(body.len());
                let end = start.saturating_add(size as u32 as usize).min(body.len());
                if body.len() - (end - start) + value.len() > MAX_BODY_BYTES {
                    return Err(Status::BadArgument);
                }
                body.splice(start..end, value);
                state.body_changed = true;
                Ok(())
            };
            answer(set())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_buffer_status",
        |mut caller: Caller<'_, HostState>, kind: i32, size_at: i32, flags_at: i32| -> i32 {
            let len = match buffer(caller.data(), kind) {
                Ok(b) => b.len() as u32,
                Err(s) => return s as i32,
            };
            answer(
                write_u32(&mut caller, size_at, len)
                    .and_then(|()| write_u32(&mut caller, flags_at, 0)),
            )
        },
    )?;
    Ok(())
}

/// What a filter decides of its stream (go on, stop, answer), the properties it reads, and the context calls.
fn define_stream(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_continue_stream",
        |mut caller: Caller<'_, HostState>, stream: i32| -> i32 {
            on_stream(&mut caller, stream, |s| s.resumed = true)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_close_stream",
        |mut caller: Caller<'_, HostState>, stream: i32| -> i32 {
            on_stream(&mut caller, stream, |s| s.reset = true)
        },
    )?;
    linker.func_wrap("env", "proxy_send_local_response", send_local_response)?;

    linker.func_wrap(
        "env",
        "proxy_get_property",
        |mut caller: Caller<'_, HostState>, path: i32, len: i32, data_at: i32, size_at: i32| {
            let value = read(&caller, path, len)
                .and_then(|path| property(caller.data(), &path).ok_or(Status::NotFound));
            match value {
                Ok(v) => give(&mut caller, &v, data_at, size_at),
                Err(s) => Ok(s as i32),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_effective_context",
        |mut caller: Caller<'_, HostState>, context: i32| -> i32 {
            if context == ROOT || context == STREAM {
                caller.data_mut().effective = context;
                Status::Ok as i32
            } else {
                Status::BadArgument as i32
            }
        },
    )?;
    // Nothing waits for a context to finish: the call ends, and its
    // instance with it.
    linker.func_wrap("env", "proxy_done", || -> i32 { Status::Ok as i32 })?;
    Ok(())
}

/// Shared data: `proxy_get_shared_data` and `proxy_set_shared_data`.
fn define_shared_data(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut caller: Caller<'_, HostState>,
         key: i32,
         key_len: i32,
         data_at: i32,
         size_at: i32,
         cas_at: i32| {
            let found = read(&caller, key, key_len).and_then(|key| {
                let state = caller.data();
                state
                    .shared
                    .get(&state.tenant, &key)
                    .ok_or(Status::NotFound)
            });
            let (value, cas) = match found {
                Ok(entry) => entry,
                Err(s) => return Ok(s as i32),
            };
            if let Err(s) = write_u32(&mut caller, cas_at, cas) {
                return Ok(s as i32);
            }
            give(&mut caller, &value, data_at, size_at)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_shared_data",
        |caller: Caller<'_, HostState>, key: i32, key_len: i32, value: i32, len: i32, cas: i32| {
            let set = read(&caller, key, key_len).and_then(|key| {
                let value = read(&caller, value, len)?;
                let state = caller.data();
                state.shared.set(&state.tenant, &key, &value, cas as u32)
            });
            answer(set)
        },
    )?;
    Ok(())
}

/// Metrics: define, increment, record, read.
fn define_metrics(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_define_metric",
        |mut caller: Caller<'_, HostState>, kind: i32, name: i32, len: i32, id_at: i32| -> i32 {
            let defined = metric_kind(kind).and_then(|kind| {
                let name = String::from_utf8_lossy(&read(&caller, name, len)?).into_owned();
                let state = caller.data();
                state.shared.define(&state.filter, kind, &name)
            });
            answer(defined.and_then(|id| write_u32(&mut caller, id_at, id)))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_increment_metric",
        |caller: Caller<'_, HostState>, id: i32, delta: i64| -> i32 {
            let state = caller.data();
            answer(state.shared.increment(&state.filter, id as u32, delta))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_record_metric",
        |caller: Caller<'_, HostState>, id: i32, value: i64| -> i32 {
            let state = caller.data();
            answer(state.shared.record(&state.filter, id as u32, value as u64))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_metric",
        |mut caller: Caller<'_, HostState>, id: i32, value_at: i32| -> i32 {
            let state = caller.data();
            let value = state.shared.value(&state.filter, id as u32);
            answer(value.and_then(|v| write_u64(&mut caller, value_at, v)))
        },
    )?;
    Ok(())
}

/// `proxy_continue_stream` and `proxy_close_stream`: `mark` the request
/// stream; the response and TCP streams do not exist here.
fn on_stream(caller: &mut Caller<'_, HostState>, stream: i32, mark: fn(&mut HostState)) -> i32 {
    match stream {
        HTTP_REQUEST => {
            mark(caller.data_mut());
            Status::Ok as i32
        }
        1..=UPSTREAM => Status::Unimplemented as i32,
        _ => Status::BadArgument as i32,
    }
}

/// `proxy_log(level, ptr, len)`: to the worker's log under the filter's
/// name; error and critical lines are also kept as the call's last words.
fn log(mut caller: Caller<'_, HostState>, level: i32, ptr: i32, len: i32) -> i32 {
    if !(0..=5).contains(&level) {
        return Status::BadArgument as i32;
    }
    let text = match read(&caller, ptr, len.clamp(0, MAX_LOG_BYTES)) {
        Ok(t) => t,
        Err(s) => return s as i32,
    };
    let line = String::from_utf8_lossy(&text);
    let as_level = match level {
        0 => tracing::Level::TRACE,
        1 => tracing::Level::DEBUG,
        2 => tracing::Level::INFO,
        3 => tracing::Level::WARN,
        _ => tracing::Level::ERROR,
    };
    let state = caller.data();
    log_line(as_level, "filter", &state.filter, state.request, &line);
    if level >= 4 {
        caller.data_mut().last_words = Some(line.into_owned());
    }
    Status::Ok as i32
}

/// `proxy_send_local_response(status, details, details_len, body,
/// body_len, headers, headers_len, grpc_status)`: the event is rejected
/// once the callback returns; the response's headers and gRPC status have
/// nowhere to go and are dropped.
#[allow(clippy::too_many_arguments)] // the ABI's signature
fn send_local_response(
    mut caller: Caller<'_, HostState>,
    status: i32,
    details: i32,
    details_len: i32,
    body: i32,
    body_len: i32,
    _headers: i32,
    _headers_len: i32,
    _grpc_status: i32,
) -> i32 {
    let sent = read(&caller, details, details_len).and_then(|details| {
        let body = read(&caller, body, body_len)?;
        caller.data_mut().local = Some(LocalResponse {
            status: status as u32,
            body,
            details,
        });
        Ok(())
    });
    answer(sent)
}
