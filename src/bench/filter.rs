//! `meshplay bench filter`: each example filter called the way workers call
//! it (a fresh pooled instance per call, deadline armed) against the same
//! module called on one live instance (the bare wasmtime call).

use crate::bench::figures::{Check, Figure, Report};
use crate::bench::load::spin;
use crate::bench::{BenchError, baseline};
use crate::mesophyll::message::{Event, Tenant};
use crate::worker::filters::{FilterEngine, FilterInput, FilterLimits};
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
        data: json!({"name": "Ada", "message": "write to ada@example.org or call 0612345678"}),
        ..Default::default()
    };
    let mut figures = Vec::new();
    let mut checks = Vec::new();
    for (name, config) in [
        ("redact", json!(null)),
        ("keyword-block", json!({"words": ["spam", "scam"]})),
        ("require-fields", json!({"fields": ["name", "message"]})),
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
        if baseline_too {
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
