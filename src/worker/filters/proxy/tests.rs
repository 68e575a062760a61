//! The proxy-wasm host against the SDK-built examples (`filters/dist`) and
//! the WAT fixtures, on a real engine.

use crate::catalogue::abi::{FilterInput, Verdict};
use crate::catalogue::filter::Abi;
use crate::catalogue::proxy_abi::{HOST_FUNCTIONS, MARKER, WASI, WASI_FUNCTIONS};
use crate::fixtures::{dist, fixture};
use crate::mesophyll::message::{Event, Tenant};
use crate::worker::filters::{CompiledFilter, FilterEngine, FilterError, FilterLimits};
use serde_json::{Value, json};
use std::time::Duration;

fn engine() -> FilterEngine {
    FilterEngine::new(None, FilterLimits::default()).unwrap()
}

fn run_for(
    e: &FilterEngine,
    f: &CompiledFilter,
    tenant: &Tenant,
    data: Value,
    config: Value,
) -> Result<Verdict, FilterError> {
    let event = Event {
        name: "post".into(),
        data: data.into(),
        ..Default::default()
    };
    e.run(
        f,
        &FilterInput {
            tenant,
            event: &event,
            config: &config,
            plugin: Some("notes"),
            request: None,
        },
        Duration::from_millis(200),
    )
}

fn run(
    e: &FilterEngine,
    f: &CompiledFilter,
    data: Value,
    config: Value,
) -> Result<Verdict, FilterError> {
    run_for(e, f, &Tenant::new("user", "1"), data, config)
}

fn rewritten(v: Verdict) -> Event {
    match v {
        Verdict::Continue { event: Some(e) } => e,
        other => panic!("expected a rewritten event, got {other:?}"),
    }
}

#[test]
fn the_host_defines_every_function_the_catalogue_promises_with_its_type() {
    // A module importing every listed function links only if the host
    // defines each with the listed type (none of them is stubbed).
    let mut imports = String::new();
    for (module, table) in [("env", HOST_FUNCTIONS), (WASI, WASI_FUNCTIONS)] {
        for (name, (params, results)) in table {
            imports.push_str(&format!(
                "(import \"{module}\" \"{name}\" (func (param {}) (result {})))\n",
                params.join(" "),
                results.join(" ")
            ));
        }
    }
    let wat = format!(
        "(module {imports} (memory (export \"memory\") 1) (func (export \"{MARKER}\"))
         (func (export \"proxy_on_memory_allocate\") (param i32) (result i32) (i32.const 0))
         (func (export \"proxy_on_context_create\") (param i32 i32)))"
    );
    let f = engine()
        .compile("all-imports", &wat::parse_str(&wat).unwrap())
        .unwrap();
    assert_eq!(f.abi, Abi::ProxyWasm);
}

#[test]
fn the_stamp_filter_rewrites_the_body_and_adds_a_header_from_its_configuration() {
    let e = engine();
    let stamp = e.compile("proxy-stamp", &dist("proxy-stamp")).unwrap();
    assert_eq!(stamp.abi, Abi::ProxyWasm);
    let ev = rewritten(run(&e, &stamp, json!({"text": "hi"}), json!("from-config")).unwrap());
    assert_eq!(
        ev.data,
        json!({"text": "hi", "stamp": "from-config", "path": "/post"})
    );
    assert_eq!(
        ev.headers.get("x-stamp").map(String::as_str),
        Some("from-config")
    );
    assert_eq!(ev.headers.len(), 1, "{:?}", ev.headers);
    // No configuration: its default. A body that is not an object: only
    // the header changes, and the data stays as it was.
    let ev = rewritten(run(&e, &stamp, json!([1, 2]), json!(null)).unwrap());
    assert_eq!(ev.data, json!([1, 2]));
    assert_eq!(ev.headers["x-stamp"], "stamped");
}

#[test]
fn the_deny_filter_rejects_with_its_local_response_and_counts_it() {
    let e = engine();
    let deny = e.compile("proxy-deny", &dist("proxy-deny")).unwrap();
    let config = json!({"words": ["spam"], "status": 451});
    assert_eq!(
        run(&e, &deny, json!({"text": "buy SPAM now"}), config.clone()).unwrap(),
        Verdict::Reject {
            reason: "blocked word: spam".into(),
            status: Some(451)
        }
    );
    assert_eq!(
        run(&e, &deny, json!({"text": "fine"}), config).unwrap(),
        Verdict::Continue { event: None }
    );
    let metrics = e.proxy_shared.metrics();
    let denied = metrics
        .iter()
        .find(|m| m.name == "proxy_deny_denied")
        .expect("the filter defines its counter");
    assert_eq!((&*denied.filter, denied.value), ("proxy-deny", 1));
    // A configuration it cannot use is refused in on_configure.
    let err = run(&e, &deny, json!({}), json!("not json")).unwrap_err();
    assert!(
        matches!(&err, FilterError::Failed(m) if m.contains("proxy_on_configure")),
        "{err}"
    );
}

#[test]
fn a_loop_ends_at_the_deadline_and_the_next_call_runs() {
    let e = engine();
    let looping = e
        .compile("loop", &fixture("proxy-endless-loop.wat"))
        .unwrap();
    let err = run(&e, &looping, json!(1), json!(null)).unwrap_err();
    assert!(matches!(err, FilterError::Timeout(_)), "{err}");
    let stamp = e.compile("proxy-stamp", &dist("proxy-stamp")).unwrap();
    run(&e, &stamp, json!({}), json!(null)).unwrap();
}

#[test]
fn calls_the_host_lacks_load_and_answer_unimplemented() {
    let e = engine();
    let f = e
        .compile("unimplemented", &fixture("proxy-unimplemented.wat"))
        .unwrap();
    let ev = rewritten(run(&e, &f, json!(null), json!(null)).unwrap());
    assert_eq!(ev.data, json!({"http_call": 12, "later": 12}));
}

#[test]
fn pausing_without_an_answer_is_a_failure() {
    let e = engine();
    let f = e.compile("pause", &fixture("proxy-pause.wat")).unwrap();
    let err = run(&e, &f, json!(null), json!(null)).unwrap_err();
    assert!(
        matches!(&err, FilterError::Failed(m) if m.contains("paused")),
        "{err}"
    );
}

#[test]
fn shared_data_outlives_a_call_but_not_its_tenant() {
    let e = engine();
    let f = e.compile("counter", &fixture("proxy-counter.wat")).unwrap();
    let (a, b) = (Tenant::new("user", "a"), Tenant::new("user", "b"));
    let count = |t: &Tenant| rewritten(run_for(&e, &f, t, json!(null), json!(null)).unwrap()).data;
    assert_eq!(count(&a), json!(1));
    assert_eq!(count(&a), json!(2));
    assert_eq!(count(&b), json!(1));
    assert_eq!(count(&a), json!(3));
}

#[test]
fn modules_that_reach_for_files_or_break_the_abi_are_refused() {
    let e = engine();
    let base = format!(
        "(memory (export \"memory\") 1) (func (export \"{MARKER}\"))
         (func (export \"proxy_on_memory_allocate\") (param i32) (result i32) (i32.const 0))"
    );
    let refused = |body: &str| -> String {
        let bytes = wat::parse_str(format!("(module {body})")).unwrap();
        e.compile("bad", &bytes).unwrap_err().to_string()
    };
    let files = refused(&format!(
        "(import \"{WASI}\" \"path_open\" (func (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32))) {base}
         (func (export \"proxy_on_context_create\") (param i32 i32))"
    ));
    assert!(
        files.contains("path_open") && files.contains("no filesystem"),
        "{files}"
    );
    let wrong = refused(&format!(
        "(import \"env\" \"proxy_log\" (func (param i32) (result i32))) {base}
         (func (export \"proxy_on_context_create\") (param i32 i32))"
    ));
    assert!(wrong.contains("proxy_log"), "{wrong}");
    let no_context = refused(&base);
    assert!(
        no_context.contains("proxy_on_context_create"),
        "{no_context}"
    );
    let other = refused(&format!(
        "(import \"host\" \"secrets\" (func (result i32))) {base}
         (func (export \"proxy_on_context_create\") (param i32 i32))"
    ));
    assert!(other.contains("host::secrets"), "{other}");
}

#[test]
fn a_paused_request_that_the_filter_resumes_goes_on_and_one_it_resets_fails() {
    let e = engine();
    // The body callback pauses, after calling `call` on stream `stream`.
    let module = |call: &str, stream: i32| {
        wat::parse_str(format!(
            "(module
               (import \"env\" \"{call}\" (func $call (param i32) (result i32)))
               (memory (export \"memory\") 1) (func (export \"{MARKER}\"))
               (func (export \"proxy_on_memory_allocate\") (param i32) (result i32) (i32.const 0))
               (func (export \"proxy_on_context_create\") (param i32 i32))
               (func (export \"proxy_on_request_body\") (param i32 i32 i32) (result i32)
                 (drop (call $call (i32.const {stream}))) (i32.const 1)))"
        ))
        .unwrap()
    };
    let resumes = e
        .compile("resumes", &module("proxy_continue_stream", 0))
        .unwrap();
    assert_eq!(
        run(&e, &resumes, json!(1), json!(null)).unwrap(),
        Verdict::Continue { event: None }
    );
    let resets = e
        .compile("resets", &module("proxy_close_stream", 0))
        .unwrap();
    let err = run(&e, &resets, json!(1), json!(null)).unwrap_err();
    assert!(
        matches!(&err, FilterError::Failed(m) if m.contains("reset")),
        "{err}"
    );
    // Resuming the response, which does not exist here, is no resume.
    let wrong = e
        .compile("wrong", &module("proxy_continue_stream", 1))
        .unwrap();
    let err = run(&e, &wrong, json!(1), json!(null)).unwrap_err();
    assert!(
        matches!(&err, FilterError::Failed(m) if m.contains("paused")),
        "{err}"
    );
}

#[test]
fn memory_past_the_cap_is_refused_and_the_trap_is_the_calls_alone() {
    let e = engine();
    // 300 pages (about 19 MiB) more than the 16 MiB cap: memory.grow
    // answers -1, and the module traps on it.
    let hog = wat::parse_str(format!(
        "(module (memory (export \"memory\") 1) (func (export \"{MARKER}\"))
           (func (export \"proxy_on_memory_allocate\") (param i32) (result i32) (i32.const 0))
           (func (export \"proxy_on_context_create\") (param i32 i32))
           (func (export \"proxy_on_request_headers\") (param i32 i32 i32) (result i32)
             (if (i32.eq (memory.grow (i32.const 300)) (i32.const -1)) (then unreachable))
             (i32.const 0)))"
    ))
    .unwrap();
    let hog = e.compile("hog", &hog).unwrap();
    let err = run(&e, &hog, json!(1), json!(null)).unwrap_err();
    assert!(
        matches!(&err, FilterError::Trap(m) if m.contains("unreachable")),
        "{err}"
    );
    let stamp = e.compile("proxy-stamp", &dist("proxy-stamp")).unwrap();
    run(&e, &stamp, json!({}), json!(null)).unwrap();
}

#[test]
fn a_trap_carries_what_the_filter_logged_last_at_error_level() {
    // What the Rust SDK does on a panic: log the message as critical,
    // then abort.
    let e = engine();
    let panics = wat::parse_str(format!(
        "(module
           (import \"env\" \"proxy_log\" (func $log (param i32 i32 i32) (result i32)))
           (memory (export \"memory\") 1) (data (i32.const 16) \"panicked at lib.rs:7: boom\")
           (func (export \"{MARKER}\"))
           (func (export \"proxy_on_memory_allocate\") (param i32) (result i32) (i32.const 0))
           (func (export \"proxy_on_context_create\") (param i32 i32))
           (func (export \"proxy_on_request_body\") (param i32 i32 i32) (result i32)
             (drop (call $log (i32.const 5) (i32.const 16) (i32.const 26))) unreachable))"
    ))
    .unwrap();
    let panics = e.compile("panics", &panics).unwrap();
    let err = run(&e, &panics, json!(1), json!(null)).unwrap_err();
    assert!(
        matches!(&err, FilterError::Trap(m) if m.contains("panicked at lib.rs:7: boom")),
        "{err}"
    );
}
