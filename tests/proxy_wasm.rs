//! proxy-wasm 0.2.1 filters end to end, on a real master and real worker
//! processes: the two examples built from the public SDK inside the example
//! plugin, the plugin configuration reaching `on_configure`, a filter that
//! loops, one that imports calls the host lacks, shared data per tenant,
//! `filters.run`, the CLI upload, and uploads that are refused.

mod common;

use common::api::{built, failure, fixture, results, script, upload, value};
use common::{Master, Opts, event, tenants_on};
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_plugin_runs_both_sdk_filters_on_both_workers() {
    let m = Master::start(Opts::default()).await;
    let c = &m.client;
    for worker in 0..2 {
        let id = &tenants_on("user", worker, 2, 1)[0].id;
        // The body rewrite and the header reach the handler.
        let v = value(c, id, "proxied", &event("post", json!({"text": "hello"}))).await;
        assert_eq!(
            v,
            json!({
                "data": {"text": "hello", "stamp": "meshplay-example", "path": "/post"},
                "headers": {"x-stamp": "meshplay-example"},
            }),
            "worker {worker}"
        );
        // A local response rejects with its text and its status.
        let (code, message) = failure(
            c,
            id,
            "proxied",
            &event("post", json!({"text": "cheap SCAM"})),
        )
        .await;
        assert_eq!(code, "rejected");
        assert_eq!(message, "proxy-deny (403): blocked word: scam");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugin_configuration_reaches_on_configure() {
    let m = Master::start(Opts {
        workers: 1,
        ..Opts::default()
    })
    .await;
    let c = &m.client;
    c.put_plugin(
        "custom",
        &upload(
            r#"name = "custom"
version = "1"
events = ["post"]
[[filters]]
name = "proxy-deny"
config = { words = ["later"], status = 451 }
[[filters]]
name = "proxy-stamp"
config = "a string, as its bytes"
"#,
            "return { post = function(e) return { data = e.data, stamp = e.headers['x-stamp'] } end }",
        ),
    )
    .await
    .unwrap();
    let v = value(c, "t1", "custom", &event("post", json!({}))).await;
    assert_eq!(v["stamp"], "a string, as its bytes");
    assert_eq!(v["data"]["stamp"], "a string, as its bytes");
    let (code, message) = failure(c, "t1", "custom", &event("post", json!("see you later"))).await;
    assert_eq!(
        (code.as_str(), message.as_str()),
        ("rejected", "proxy-deny (451): blocked word: later")
    );

    // A configuration the filter refuses in on_configure fails the plugin.
    c.put_plugin(
        "misconfigured",
        &upload(
            r#"name = "misconfigured"
version = "1"
events = ["post"]
[[filters]]
name = "proxy-deny"
config = "not json"
"#,
            "return { post = function() return 'ran' end }",
        ),
    )
    .await
    .unwrap();
    let (code, message) = failure(c, "t1", "misconfigured", &event("post", json!(1))).await;
    assert_eq!(code, "filter");
    assert!(message.contains("proxy_on_configure"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_loop_ends_at_its_deadline_and_the_worker_answers_the_next_event() {
    let m = Master::start(Opts {
        workers: 1,
        ..Opts::default()
    })
    .await;
    let c = &m.client;
    c.put_filter("proxy-spin", fixture("proxy-endless-loop.wat"))
        .await
        .unwrap();
    c.put_plugin(
        "spinner",
        &upload(
            r#"name = "spinner"
version = "1"
events = ["go"]
[[filters]]
name = "proxy-spin"
timeout_ms = 100
"#,
            "return { go = function() return 'ran' end }",
        ),
    )
    .await
    .unwrap();
    let pid = m.worker(0).await.pid.unwrap();
    let started = Instant::now();
    let (code, message) = failure(c, "t1", "spinner", &event("go", json!(1))).await;
    let took = started.elapsed();
    assert_eq!(code, "filter");
    assert!(
        message.contains("proxy-spin") && message.contains("100ms"),
        "{message}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(
        value(c, "t1", "echo", &event("echo", json!(7))).await["data"],
        7
    );
    assert_eq!(
        m.worker(0).await.pid,
        Some(pid),
        "the worker did not restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_the_host_lacks_answer_unimplemented_and_shared_data_stays_with_its_tenant() {
    let m = Master::start(Opts {
        workers: 1,
        ..Opts::default()
    })
    .await;
    let c = &m.client;
    // Uploaded through the CLI, as a plugin author would.
    let tmp = tempfile::tempdir().unwrap();
    for (name, wat) in [
        ("proxy-unimplemented", "proxy-unimplemented.wat"),
        ("proxy-counter", "proxy-counter.wat"),
    ] {
        let path = tmp.path().join(format!("{name}.wasm"));
        std::fs::write(&path, fixture(wat)).unwrap();
        let (code, out, err) = m.cli(&["filters", "push", path.to_str().unwrap()]);
        assert_eq!(code, 0, "{out}{err}");
    }
    c.put_plugin(
        "lacking",
        &upload(
            r#"name = "lacking"
version = "1"
events = ["ask", "count"]
[[filters]]
name = "proxy-unimplemented"
events = ["ask"]
[[filters]]
name = "proxy-counter"
events = ["count"]
"#,
            "return { ask = function(e) return e.data end, count = function(e) return e.data end }",
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        value(c, "t1", "lacking", &event("ask", json!(null))).await,
        json!({"http_call": 12, "later": 12})
    );
    let mut counts = Vec::new();
    for id in ["a", "a", "b", "a", "b"] {
        counts.push(value(c, id, "lacking", &event("count", json!(null))).await);
    }
    assert_eq!(counts, [json!(1), json!(2), json!(1), json!(3), json!(2)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_call_proxy_wasm_filters_and_bad_modules_are_refused_at_upload() {
    let m = Master::start(Opts {
        workers: 1,
        ..Opts::default()
    })
    .await;
    let c = &m.client;
    let v = script(
        c,
        "t1",
        r#"local ok = filters.run("proxy-stamp", { name = "note", data = { n = 1 } }, "by-script")
           local no = filters.run("proxy-deny", { name = "note", data = "spam" }, { words = { "spam" } })
           return { ok = ok, no = no }"#,
    )
    .await
    .unwrap();
    assert_eq!(v["ok"]["verdict"], "continue");
    assert_eq!(
        v["ok"]["event"]["data"],
        json!({"n": 1, "stamp": "by-script", "path": "/note"})
    );
    assert_eq!(v["ok"]["event"]["headers"]["x-stamp"], "by-script");
    assert_eq!(
        v["no"],
        json!({"verdict": "reject", "reason": "blocked word: spam", "status": 403})
    );

    // A pause with no answer is the filter's failure, not a hang.
    c.put_filter("proxy-pause", fixture("proxy-pause.wat"))
        .await
        .unwrap();
    let e = script(
        c,
        "t1",
        r#"return filters.run("proxy-pause", { name = "x", data = 1 })"#,
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("paused the request"), "{e}");

    // Modules that ask for files, or break the ABI, never get in.
    let before = c.filters().await.unwrap();
    let files = wat::parse_str(
        r#"(module
             (import "wasi_snapshot_preview1" "path_open"
               (func (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
             (memory (export "memory") 1)
             (func (export "proxy_abi_version_0_2_1"))
             (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 0))
             (func (export "proxy_on_context_create") (param i32 i32)))"#,
    )
    .unwrap();
    let e = c.put_filter("sneaky", files).await.unwrap_err();
    assert_eq!(e.status().map(|s| s.as_u16()), Some(400), "{e}");
    assert!(e.to_string().contains("path_open"), "{e}");
    let mut unmarked = built("proxy-stamp");
    // The same module without its marker is judged as ABI v1, and refused.
    let at = unmarked
        .windows(23)
        .position(|w| w == b"proxy_abi_version_0_2_1")
        .unwrap();
    unmarked[at..at + 23].copy_from_slice(b"proxy_abi_version_9_9_9");
    let e = c.put_filter("unmarked", unmarked).await.unwrap_err();
    assert!(
        e.to_string().contains("not a Meshplay filter (ABI v1)"),
        "{e}"
    );
    assert_eq!(c.filters().await.unwrap(), before, "nothing changed");
    // The worker is still the one it was, and still answers.
    let r = results(c, "t2", &event("echo", json!("x"))).await;
    assert!(r["echo"].error.is_none(), "{r:?}");
}
