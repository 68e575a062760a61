//! One proxy-wasm call: the event made into a request, the module's whole
//! life in a fresh instance under one epoch deadline, and the request it
//! leaves made back into a verdict.

use super::fields::Fields;
use super::guest::Guest;
use super::{HostState, ROOT, STREAM};
use crate::catalogue::abi::{FilterInput, Verdict};
use crate::mesophyll::message::{Event, Packed};
use crate::worker::filters::call::{classify, deadline_ticks};
use crate::worker::filters::{CompiledFilter, FilterEngine, FilterError, Pre};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::{
    Instance, InstancePre, Store, StoreLimitsBuilder, TypedFunc, WasmParams, WasmResults,
};

/// Headers the host sets on every request; an event's own headers cannot
/// replace them.
const HOST_HEADERS: [&str; 5] = [
    ":method",
    ":path",
    ":authority",
    "content-type",
    "x-meshplay-tenant",
];

/// The request headers that present `input`'s event.
fn request_headers(input: &FilterInput<'_>) -> Fields {
    let mut fields: Fields = vec![
        (":method".into(), b"POST".to_vec()),
        (
            ":path".into(),
            format!("/{}", input.event.name).into_bytes(),
        ),
        (":authority".into(), b"meshplay".to_vec()),
        ("content-type".into(), b"application/json".to_vec()),
        (
            "x-meshplay-tenant".into(),
            input.tenant.to_string().into_bytes(),
        ),
    ];
    for (name, value) in &input.event.headers {
        let name = name.to_ascii_lowercase();
        if !HOST_HEADERS.contains(&name.as_str()) {
            fields.push((name, value.clone().into_bytes()));
        }
    }
    fields
}

/// The plugin configuration as the filter reads it: a string as its
/// bytes, nothing as nothing, anything else as JSON.
pub fn plugin_configuration(config: &serde_json::Value) -> Vec<u8> {
    match config {
        serde_json::Value::Null => Vec::new(),
        serde_json::Value::String(s) => s.clone().into_bytes(),
        other => other.to_string().into_bytes(),
    }
}

/// What handlers see of the request's headers once the filter is done:
/// the non-pseudo ones, less the two the host set while they are as it set
/// them.
fn visible_headers(fields: &Fields, tenant: &str) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::<String, String>::new();
    for (name, value) in fields {
        let as_set = match name.as_str() {
            "content-type" => value == b"application/json",
            "x-meshplay-tenant" => value == tenant.as_bytes(),
            n => n.starts_with(':'),
        };
        if as_set {
            continue;
        }
        let value = String::from_utf8_lossy(value);
        out.entry(name.clone())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    out
}

/// A callback the module exports, if it does (types were checked at load).
fn export<P: WasmParams, R: WasmResults>(
    instance: &Instance,
    store: &mut Store<HostState>,
    name: &str,
) -> Option<TypedFunc<P, R>> {
    instance.get_typed_func::<P, R>(&mut *store, name).ok()
}

/// How the callbacks of one stream ended.
enum Outcome {
    /// The request goes on (or a local response answered it).
    Answered,
    /// The filter said its configuration is unusable, or left the request
    /// in a state that is no answer.
    Failed(String),
}

/// The HTTP callbacks of an instance (proxy-wasm's "stream"), looked up once.
struct HttpCallbacks {
    create: TypedFunc<(i32, i32), ()>,
    headers: Option<TypedFunc<(i32, i32, i32), i32>>,
    body: Option<TypedFunc<(i32, i32, i32), i32>>,
    done: Option<TypedFunc<i32, i32>>,
    log: Option<TypedFunc<i32, ()>>,
    delete: Option<TypedFunc<i32, ()>>,
}

/// An instance whose root context is started and configured: what every
/// call builds (and drops after one stream), and what a longer-lived root
/// context would keep.
pub struct Rooted {
    store: Store<HostState>,
    stream: HttpCallbacks,
    started: Result<(), String>,
    timeout: Duration,
    /// Streams run so far: every one after the first gets a deadline of
    /// its own (the first shares the one that covered the start).
    streams: u32,
}

fn state(engine: &FilterEngine, filter: &Arc<str>, input: &FilterInput<'_>) -> HostState {
    HostState {
        limits: StoreLimitsBuilder::new()
            .memory_size(engine.limits.memory_bytes)
            .instances(1)
            .build(),
        filter: Arc::clone(filter),
        guest: None,
        maps: Default::default(),
        body: Vec::new(),
        body_changed: false,
        config: plugin_configuration(input.config),
        local: None,
        resumed: false,
        reset: false,
        effective: ROOT,
        tenant: input.tenant.clone(),
        event: String::new(),
        plugin: input.plugin.map(str::to_owned),
        request: input.request,
        shared: Arc::clone(&engine.proxy_shared),
        last_words: None,
    }
}

/// The call's error as a filter error, with what a panicking SDK logged.
fn failure(e: wasmtime::Error, store: &mut Store<HostState>, timeout: Duration) -> FilterError {
    match (classify(e, timeout), store.data_mut().last_words.take()) {
        (FilterError::Trap(t), Some(words)) => {
            FilterError::Trap(format!("{t} (the filter's last words: {words})"))
        }
        (why, _) => why,
    }
}

impl Rooted {
    /// A fresh instance of `pre` with its root context (id 1) created,
    /// started and configured with `input`'s configuration, under a
    /// deadline of `timeout` for everything it runs from now on.
    pub fn start(
        engine: &FilterEngine,
        filter: &Arc<str>,
        pre: &InstancePre<HostState>,
        input: &FilterInput<'_>,
        timeout: Duration,
    ) -> Result<Rooted, FilterError> {
        let mut store = Store::new(&engine.engine, state(engine, filter, input));
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(deadline_ticks(timeout));
        store.epoch_deadline_trap();
        let config_len = store.data().config.len() as i32;
        let started = (|| -> wasmtime::Result<(HttpCallbacks, Result<(), String>)> {
            let instance = pre.instantiate(&mut store)?;
            let memory = instance
                .get_memory(&mut store, "memory")
                .ok_or_else(|| wasmtime::Error::msg("no exported memory"))?;
            let alloc = export::<i32, i32>(&instance, &mut store, "proxy_on_memory_allocate")
                .or_else(|| export(&instance, &mut store, "malloc"))
                .ok_or_else(|| wasmtime::Error::msg("no allocator export"))?;
            store.data_mut().guest = Some(Guest { memory, alloc });
            let stream = HttpCallbacks {
                create: export(&instance, &mut store, "proxy_on_context_create")
                    .ok_or_else(|| wasmtime::Error::msg("no proxy_on_context_create export"))?,
                headers: export(&instance, &mut store, "proxy_on_request_headers"),
                body: export(&instance, &mut store, "proxy_on_request_body"),
                done: export(&instance, &mut store, "proxy_on_done"),
                log: export(&instance, &mut store, "proxy_on_log"),
                delete: export(&instance, &mut store, "proxy_on_delete"),
            };

            if let Some(init) = export::<(), ()>(&instance, &mut store, "_initialize") {
                init.call(&mut store, ())?;
                if let Some(main) = export::<(i32, i32), i32>(&instance, &mut store, "main") {
                    main.call(&mut store, (0, 0))?;
                }
            } else if let Some(start) = export::<(), ()>(&instance, &mut store, "_start") {
                start.call(&mut store, ())?;
            }
            stream.create.call(&mut store, (ROOT, 0))?;
            if let Some(f) = export::<(i32, i32), i32>(&instance, &mut store, "proxy_on_vm_start")
                && f.call(&mut store, (ROOT, 0))? == 0
            {
                let why = "refused to start (proxy_on_vm_start returned false)";
                return Ok((stream, Err(why.into())));
            }
            if let Some(f) = export::<(i32, i32), i32>(&instance, &mut store, "proxy_on_configure")
                && f.call(&mut store, (ROOT, config_len))? == 0
            {
                let why = "refused its plugin configuration (proxy_on_configure returned false)";
                return Ok((stream, Err(why.into())));
            }
            Ok((stream, Ok(())))
        })();
        match started {
            Ok((stream, started)) => Ok(Rooted {
                store,
                stream,
                started,
                timeout,
                streams: 0,
            }),
            Err(e) => Err(failure(e, &mut store, timeout)),
        }
    }

    /// Presents `input`'s event as HTTP context `context` (a fresh id per
    /// event) and turns what the filter left into a verdict.
    pub fn call(&mut self, context: i32, input: &FilterInput<'_>) -> Result<Verdict, FilterError> {
        if let Err(why) = &self.started {
            return Err(FilterError::Failed(why.clone()));
        }
        if self.streams > 0 {
            self.store.set_epoch_deadline(deadline_ticks(self.timeout));
        }
        self.streams += 1;
        let body = serde_json::to_vec(&input.event.data)
            .map_err(|e| FilterError::Failed(format!("cannot encode the event: {e}")))?;
        let (header_count, body_len) = {
            let s = self.store.data_mut();
            s.maps = Default::default();
            s.maps[0] = request_headers(input);
            s.body = body;
            s.body_changed = false;
            s.local = None;
            s.resumed = false;
            s.reset = false;
            s.tenant = input.tenant.clone();
            s.event.clone_from(&input.event.name);
            s.plugin = input.plugin.map(str::to_owned);
            s.request = input.request;
            (s.maps[0].len() as i32, s.body.len() as i32)
        };
        let outcome = self
            .stream(context, header_count, body_len)
            .map_err(|e| failure(e, &mut self.store, self.timeout))?;
        verdict(self.store.data_mut(), input, outcome)
    }

    fn stream(
        &mut self,
        context: i32,
        header_count: i32,
        body_len: i32,
    ) -> wasmtime::Result<Outcome> {
        let (store, f) = (&mut self.store, &self.stream);
        f.create.call(&mut *store, (context, ROOT))?;
        store.data_mut().effective = context;
        let mut paused = false;
        for (callback, size, end_of_stream) in
            [(&f.headers, header_count, 0), (&f.body, body_len, 1)]
        {
            if let Some(callback) = callback {
                // Envoy goes on delivering the body after headers that
                // paused; whatever the body callback says stands.
                paused = callback.call(&mut *store, (context, size, end_of_stream))? != 0;
            }
            let s = store.data();
            if s.local.is_some() || s.reset {
                break;
            }
        }
        if let Some(done) = &f.done {
            done.call(&mut *store, context)?;
        }
        if let Some(log) = &f.log {
            log.call(&mut *store, context)?;
        }
        if let Some(delete) = &f.delete {
            delete.call(&mut *store, context)?;
        }
        let s = store.data();
        Ok(if s.local.is_none() && s.reset {
            Outcome::Failed("reset the request (proxy_close_stream)".into())
        } else if s.local.is_none() && paused && !s.resumed {
            Outcome::Failed("paused the request without a local response".into())
        } else {
            Outcome::Answered
        })
    }
}

/// What the request the filter left says about the event.
fn verdict(
    state: &mut HostState,
    input: &FilterInput<'_>,
    outcome: Outcome,
) -> Result<Verdict, FilterError> {
    if let Some(local) = state.local.take() {
        let reason = if local.body.is_empty() {
            String::from_utf8_lossy(&local.details).into_owned()
        } else {
            String::from_utf8_lossy(&local.body).into_owned()
        };
        return Ok(Verdict::Reject {
            reason,
            status: Some(local.status),
        });
    }
    if let Outcome::Failed(why) = outcome {
        return Err(FilterError::Failed(why));
    }
    let headers = visible_headers(&state.maps[0], &input.tenant.to_string());
    if !state.body_changed && headers == input.event.headers {
        return Ok(Verdict::Continue { event: None });
    }
    let data = if state.body_changed {
        let body = std::mem::take(&mut state.body);
        serde_json::from_slice(&body).unwrap_or_else(|_| {
            Packed::from_value(&serde_json::Value::String(
                String::from_utf8_lossy(&body).into_owned(),
            ))
        })
    } else {
        input.event.data.clone()
    };
    Ok(Verdict::Continue {
        event: Some(Event {
            name: input.event.name.clone(),
            data,
            headers,
            hops: input.event.hops,
            timer: input.event.timer.clone(),
            http: input.event.http.clone(),
        }),
    })
}

impl FilterEngine {
    /// Runs the proxy-wasm `filter` once on `input`, within `timeout`: a
    /// fresh instance, its root context, one HTTP context, dropped after.
    ///
    /// Fails with [`FilterError::Timeout`] past the deadline,
    /// [`FilterError::Trap`] on a trap (a panicking SDK's message
    /// included), [`FilterError::Failed`] when the filter refuses its
    /// configuration, pauses without answering or resets the request.
    pub(crate) fn run_proxy(
        &self,
        filter: &Arc<str>,
        pre: &InstancePre<HostState>,
        input: &FilterInput<'_>,
        timeout: Duration,
    ) -> Result<Verdict, FilterError> {
        Rooted::start(self, filter, pre, input, timeout)?.call(STREAM, input)
    }

    /// The proxy-wasm filter's instance, started and configured for
    /// `input`, for a caller that runs many streams in it (`meshplay bench
    /// filter` measures what the per-call lifetime costs against it).
    ///
    /// `None` for an ABI v1 filter.
    pub fn rooted(
        &self,
        filter: &CompiledFilter,
        input: &FilterInput<'_>,
        timeout: Duration,
    ) -> Option<Result<Rooted, FilterError>> {
        match &filter.pre {
            Pre::ProxyWasm(pre) => Some(Rooted::start(
                self,
                &Arc::from(filter.name.as_str()),
                pre,
                input,
                timeout,
            )),
            Pre::V1(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn configurations_are_strings_as_bytes_and_the_rest_as_json() {
        assert_eq!(plugin_configuration(&json!("spam")), b"spam");
        assert_eq!(plugin_configuration(&json!(null)), b"");
        assert_eq!(plugin_configuration(&json!({"a": [1]})), br#"{"a":[1]}"#);
    }

    #[test]
    fn handlers_see_what_the_filter_added_not_what_the_host_set() {
        let fields: Fields = vec![
            (":path".into(), b"/x".to_vec()),
            ("content-type".into(), b"application/json".to_vec()),
            ("x-meshplay-tenant".into(), b"user:1".to_vec()),
            ("x-a".into(), b"1".to_vec()),
            ("x-a".into(), b"2".to_vec()),
        ];
        let seen = visible_headers(&fields, "user:1");
        assert_eq!(
            seen.into_iter().collect::<Vec<_>>(),
            [("x-a".to_string(), "1, 2".to_string())]
        );
        let changed: Fields = vec![("content-type".into(), b"text/plain".to_vec())];
        assert_eq!(
            visible_headers(&changed, "user:1")["content-type"],
            "text/plain"
        );
    }
}
