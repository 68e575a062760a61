//! The filter runtime against the shipped filters and the misbehaving
//! fixtures.

use super::*;
use crate::catalogue::manifest::DEFAULT_FILTER_TIMEOUT;
use crate::fixtures::{dist, fixture};
use crate::mesophyll::message::{Event, Tenant};
use serde_json::json;

fn engine(cache: Option<PathBuf>) -> FilterEngine {
    FilterEngine::new(cache, FilterLimits::default()).unwrap()
}

fn run(
    e: &FilterEngine,
    f: &CompiledFilter,
    data: serde_json::Value,
    config: serde_json::Value,
) -> Result<Verdict, FilterError> {
    let tenant = Tenant::new("user", "1");
    let event = Event {
        name: "msg".into(),
        data: data.into(),
        ..Default::default()
    };
    e.run(
        f,
        &FilterInput {
            tenant: &tenant,
            event: &event,
            config: &config,
            plugin: None,
            request: None,
        },
        DEFAULT_FILTER_TIMEOUT,
    )
}

#[test]
fn redact_rewrites_and_keyword_block_rejects() {
    let e = engine(None);
    let redact = e.compile("redact", &dist("redact")).unwrap();
    match run(
        &e,
        &redact,
        json!({"t": "mail me at ada@example.org"}),
        json!(null),
    )
    .unwrap()
    {
        Verdict::Continue { event: Some(ev) } => {
            assert_eq!(ev.data.to_value()["t"], "mail me at [email]")
        }
        other => panic!("{other:?}"),
    }
    let block = e.compile("keyword-block", &dist("keyword-block")).unwrap();
    let words = json!({"words": ["spam"]});
    assert_eq!(
        run(&e, &block, json!(["buy SPAM"]), words.clone()).unwrap(),
        Verdict::Reject {
            reason: "blocked word: spam".into(),
            status: None
        }
    );
    assert_eq!(
        run(&e, &block, json!("fine"), words).unwrap(),
        Verdict::Continue { event: None }
    );
    assert!(matches!(
        run(&e, &block, json!("x"), json!(null)),
        Err(FilterError::Failed(_))
    ));
}

#[test]
fn runaway_and_greedy_filters_fail_and_the_engine_goes_on() {
    let e = engine(None);
    let looping = e.compile("loop", &fixture("endless-loop.wat")).unwrap();
    let started = std::time::Instant::now();
    assert_eq!(
        run(&e, &looping, json!(1), json!(null)),
        Err(FilterError::Timeout(DEFAULT_FILTER_TIMEOUT))
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let hog = e.compile("hog", &fixture("memory-hog.wat")).unwrap();
    assert!(matches!(
        run(&e, &hog, json!(1), json!(null)),
        Err(FilterError::Trap(_))
    ));
    let ok = e
        .compile("require-fields", &dist("require-fields"))
        .unwrap();
    assert!(run(&e, &ok, json!({"a": 1}), json!({"fields": ["a"]})).is_ok());
}

#[test]
fn modules_that_are_not_filters_are_not_compiled() {
    let e = engine(None);
    let err = e.compile("x", &fixture("unknown-import.wat")).unwrap_err();
    assert!(
        matches!(err, FilterError::Module(ModuleError::Abi(_))),
        "{err}"
    );
    let err = e.compile("x", &fixture("not-wasm.wasm")).unwrap_err();
    assert!(
        matches!(err, FilterError::Module(ModuleError::Invalid(_))),
        "{err}"
    );
}

#[test]
fn the_second_compile_comes_from_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes = dist("redact");
    let first = engine(Some(tmp.path().to_path_buf()))
        .compile("redact", &bytes)
        .unwrap();
    assert!(!first.from_cache);
    let e = engine(Some(tmp.path().to_path_buf()));
    let second = e.compile("redact", &bytes).unwrap();
    assert!(second.from_cache);
    assert!(run(&e, &second, json!("x"), json!(null)).is_ok());
}

#[test]
fn calls_past_the_pool_are_overloaded_not_trapped() {
    let e = FilterEngine::new(
        None,
        FilterLimits {
            instances: 2,
            ..FilterLimits::default()
        },
    )
    .unwrap();
    let looping = Arc::new(e.compile("loop", &fixture("endless-loop.wat")).unwrap());
    let redact = e.compile("redact", &dist("redact")).unwrap();
    let spinners: Vec<_> = (0..2)
        .map(|_| {
            let (e, f) = (e.clone(), Arc::clone(&looping));
            std::thread::spawn(move || {
                let tenant = Tenant::new("user", "1");
                let event = Event::default();
                e.run(
                    &f,
                    &FilterInput {
                        tenant: &tenant,
                        event: &event,
                        config: &json!(null),
                        plugin: None,
                        request: None,
                    },
                    Duration::from_millis(1000),
                )
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    if spinners.iter().any(|s| s.is_finished()) {
        let r: Vec<_> = spinners.into_iter().map(|s| s.join().unwrap()).collect();
        panic!("the spinners ended early: {r:?}");
    }
    let third = run(&e, &redact, json!("x"), json!(null));
    assert!(
        matches!(third, Err(FilterError::Overloaded(2))),
        "{third:?}"
    );
    for s in spinners {
        assert!(matches!(s.join().unwrap(), Err(FilterError::Timeout(_))));
    }
    // Room again once they ended.
    assert!(run(&e, &redact, json!("x"), json!(null)).is_ok());
}
