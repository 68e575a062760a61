//! `meshplay bench filter`: each example filter called the way workers call
//! it (a fresh pooled instance per call, deadline armed) against the same
//! module called on one live instance: for ABI v1 the bare wasmtime call,
//! for proxy-wasm one root context kept across calls, each call a new HTTP
//! context in it (what the per-call lifetime of a root context costs).

use crate::bench::figures::{Check, Figure, Report};
use crate::bench::load::spin;
use crate::bench::{BenchError, baseline};
use crate::catalogue::filter::Abi;
use crate::mesophyll::message::{Event, Tenant};
use crate::worker::filters::{CompiledFilter, FilterEngine, FilterInput, FilterLimits};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// Runs the benchmark on the modules in `dir` (`<name>.wasm`), `duration`
/// per figure.
///
/// Fails when a module is missing or does not load.
pub fn run(dir: &Path, duration: Duration, baseline_too: bool) -> Result<Report, BenchError> {
    let engine = FilterEngine::new(None, FilterLimits::default())
        .map_err(|e| BenchError::Target(e.to_string()))?;
    let tenant = Tenant {
        kind: "user".into(),
        id: "42".into(),
    };
    let event = Event {
        name: "sign".into(),
        data: json!({"name": "Ada", "message": "write to ada@example.org or call 0612345678"})
            .into(),
        ..Default::default()
    };
    let mut figures = Vec::new();
    let mut checks = Vec::new();
    for (name, config) in [
        ("redact", json!(null)),
        ("keyword-block", json!({"words": ["spam", "scam"]})),
        ("require-fields", json!({"fields": ["name", "message"]})),
        ("proxy-deny", json!({"words": ["spam", "scam"]})),
        ("proxy-stamp", json!("bench")),
    ] {
        let path = dir.join(format!("{name}.wasm"));
        let bytes = std::fs::read(&path)
            .map_err(|e| BenchError::Target(format!("{}: {e}", path.display())))?;
        let filter = engine
            .compile(name, &bytes)
            .map_err(|e| BenchError::Target(format!("{name}: {e}")))?;
        let input = FilterInput {
            tenant: &tenant,
            event: &event,
            config: &config,
            plugin: None,
            request: None,
        };
        let fresh = spin(duration, || {
            engine
                .run(&filter, &input, Duration::from_millis(50))
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
        let fresh = Figure::new(format!("filter/{name}"), &fresh);
        if name == "redact" {
            checks.push(Check {
                name: "redact, fresh instance + call, p50 µs".into(),
                value: fresh.p50_us,
                target: "< 10".into(),
                met: fresh.p50_us < 10.0,
            });
        }
        if baseline_too && filter.abi == Abi::ProxyWasm {
            let live = live_root(&engine, &filter, &input, duration)?;
            let live = Figure::new(format!("baseline/proxy-live-root/{name}"), &live);
            figures.push(fresh.against(&live));
            figures.push(live);
        } else if baseline_too {
            let encoded =
                rmp_serde::to_vec_named(&input).map_err(|e| BenchError::Target(e.to_string()))?;
            let live = baseline::wasm_call(duration, &bytes, &encoded)?;
            let live = Figure::new(format!("baseline/wasm-call/{name}"), &live);
            figures.push(fresh.against(&live));
            figures.push(live);
        } else {
            figures.push(fresh);
        }
    }
    Ok(Report {
        bench: "filter".into(),
        params: BTreeMap::from([
            ("duration".to_string(), format!("{duration:?}")),
            ("modules".to_string(), dir.display().to_string()),
        ]),
        figures,
        checks,
    })
}

/// Calls of the proxy-wasm `filter` on one instance whose root context was
/// started once, each a new HTTP context.
fn live_root(
    engine: &FilterEngine,
    filter: &CompiledFilter,
    input: &FilterInput<'_>,
    duration: Duration,
) -> Result<crate::bench::load::Measured, BenchError> {
    let timeout = Duration::from_millis(50);
    let start = || {
        engine
            .rooted(filter, input, timeout)
            .expect("a proxy-wasm filter")
            .map_err(|e| BenchError::Target(format!("{}: {e}", filter.name)))
    };
    let mut rooted = start()?;
    let mut context = 1;
    Ok(spin(duration, || {
        // Context ids are never reused; a fresh root now and then keeps
        // the instance's heap from growing with the SDK's context maps.
        context += 1;
        if context > 10_000 {
            rooted = start().map_err(|e| e.to_string())?;
            context = 2;
        }
        rooted
            .call(context, input)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }))
}
