//! What a tenant costs inside a worker: creating its sandboxed Luau VM (time,
//! and `used_memory` printed once), one handler call, and one filter call
//! (fresh pooled instance + call) of each example filter.
//!
//! `cargo bench --bench tenants`

use criterion::{Criterion, criterion_group, criterion_main};
use meshplay::mesophyll::message::{Event, Tenant};
use meshplay::worker::filters::{FilterEngine, FilterInput, FilterLimits};
use meshplay::worker::loaded::LoadedCatalogue;
use meshplay::worker::services::Services;
use meshplay::worker::vm::{Vm, VmLimits};
use serde_json::json;
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

fn tenant() -> Tenant {
    Tenant {
        kind: "user".into(),
        id: "42".into(),
    }
}

fn vm_benches(c: &mut Criterion) {
    let services = Services::bare();
    let t = tenant();
    let vm = Vm::new(&t, VmLimits::default(), &services).unwrap();
    eprintln!("a fresh VM: used_memory = {} bytes", vm.used_memory());
    drop(vm);
    c.bench_function("vm/new", |b| {
        b.iter(|| Vm::new(black_box(&t), VmLimits::default(), &services).unwrap())
    });

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (catalogue, errors) = LoadedCatalogue::load(&root.join("plugins"));
    assert!(errors.is_empty(), "{errors:?}");
    let echo = catalogue
        .all()
        .iter()
        .find(|p| p.manifest.name == "echo")
        .unwrap()
        .clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut vm = Vm::new(&t, VmLimits::default(), &services).unwrap();
    let event = Event {
        name: "echo".into(),
        data: json!({"x": 1}).into(),
        ..Default::default()
    };
    let deadline = || tokio::time::Instant::now() + Duration::from_secs(5);
    rt.block_on(vm.handle_event(&echo, &event, deadline()))
        .unwrap();
    eprintln!(
        "a VM after its first echo event: used_memory = {} bytes",
        vm.used_memory()
    );
    c.bench_function("vm/handle_event/echo", |b| {
        b.iter(|| {
            rt.block_on(vm.handle_event(&echo, black_box(&event), deadline()))
                .unwrap()
        })
    });
}

fn filter_benches(c: &mut Criterion) {
    let engine = FilterEngine::new(None, FilterLimits::default()).unwrap();
    let t = tenant();
    let event = Event {
        name: "sign".into(),
        data: json!({"name": "Ada", "message": "write to ada@example.org or call 0612345678"})
            .into(),
        ..Default::default()
    };
    let configs = [
        ("redact", json!(null)),
        ("keyword-block", json!({"words": ["spam", "scam"]})),
        ("require-fields", json!({"fields": ["name", "message"]})),
    ];
    let dist = Path::new(env!("CARGO_MANIFEST_DIR")).join("filters/dist");
    for (name, config) in configs {
        let bytes = std::fs::read(dist.join(format!("{name}.wasm"))).unwrap();
        let filter = engine.compile(name, &bytes).unwrap();
        let input = FilterInput {
            tenant: &t,
            event: &event,
            config: &config,
            plugin: None,
            request: None,
        };
        c.bench_function(&format!("filter/instantiate+call/{name}"), |b| {
            b.iter(|| {
                engine
                    .run(&filter, black_box(&input), Duration::from_millis(50))
                    .unwrap()
            })
        });
    }
}

criterion_group!(benches, vm_benches, filter_benches);
criterion_main!(benches);
