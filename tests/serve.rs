//! `meshplay serve` end to end: dispatch, scripts, VM life cycle, limits, the
//! API's auth and errors, and the CLI, against a real master and real worker
//! processes.

mod common;

use common::{Master, Opts, raw, tenants_on};
use meshplay::client::{ApiClient, DispatchOutcome};
use meshplay::mesophyll::message::Event;
use meshplay::rest::{DispatchRequest, Dispatched, ScriptRequest};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn event(name: &str, data: Value, wait: bool) -> DispatchRequest {
    DispatchRequest {
        name: name.into(),
        data,
        wait,
        timeout_ms: None,
    }
}

fn script(code: &str, timeout_ms: u64) -> ScriptRequest {
    ScriptRequest {
        name: Some("t".into()),
        code: code.into(),
        event: None,
        timeout_ms: Some(timeout_ms),
    }
}

async fn done(client: &ApiClient, kind: &str, id: &str, req: &DispatchRequest) -> Dispatched {
    match client.dispatch(kind, id, req).await.unwrap() {
        DispatchOutcome::Done(d) => d,
        other => panic!("expected results, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatch_with_and_without_wait() {
    let m = Master::start(Opts::default()).await;
    let c = &m.client;

    let d = done(c, "user", "42", &event("echo", json!({"x": 1}), true)).await;
    assert_eq!(d.results.len(), 1);
    assert_eq!(d.results[0].plugin, "echo");
    assert_eq!(
        d.results[0].value,
        Some(json!({"tenant": {"type": "user", "id": "42"}, "data": {"x": 1}}))
    );
    assert_eq!(d.worker, meshplay::master::shard::worker_for(&d.tenant, 2));

    // Fire-and-forget: 202 at once; the event still runs, in order, before
    // the next one for the same tenant (the count shows it).
    let join = |name: &str| json!({ "name": name });
    match c
        .dispatch("guild", "9", &event("member_join", join("Ada"), false))
        .await
        .unwrap()
    {
        DispatchOutcome::Accepted(a) => assert_eq!(a.tenant.id, "9"),
        other => panic!("expected 202, got {other:?}"),
    }
    let d = done(c, "guild", "9", &event("member_join", join("Grace"), true)).await;
    assert_eq!(d.results[0].value.as_ref().unwrap()["members"], 2);

    // A plugin's error is that plugin's result, not a failed request.
    let d = done(c, "guild", "9", &event("member_join", Value::Null, true)).await;
    let err = d.results[0].error.as_ref().unwrap();
    assert_eq!(err.code, "runtime");
    assert!(err.message.contains("greeter:13"), "{err:?}");

    // An event nobody handles.
    let err = c
        .dispatch("user", "42", &event("nope", Value::Null, true))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("not_found"), "{err}");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(404));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_finds_the_master_by_itself() {
    let m = Master::start(Opts::default()).await;
    let (code, out, err) = m.cli(&["dispatch", "user", "42", "echo", "--data", r#"{"x":1}"#]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.trim(),
        r#"echo: {"data":{"x":1},"tenant":{"id":"42","type":"user"}}"#
    );

    let (code, out, _) = m.cli(&["dispatch", "user", "42", "echo", "--no-wait", "--json"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["tenant"]["id"], "42");

    // A plugin error: exit code 3 and the error on stdout.
    let (code, out, _) = m.cli(&["dispatch", "guild", "1", "member_join"]);
    assert_eq!(code, 3);
    assert!(
        out.starts_with("greeter: error (runtime): greeter:13:"),
        "{out}"
    );

    let file = m.data_dir().join("hello.luau");
    std::fs::write(
        &file,
        "local e = ...\nreturn { who = meshplay.tenant.id, got = e.data }",
    )
    .unwrap();
    let (code, out, err) = m.cli(&[
        "run-script",
        "user",
        "7",
        file.to_str().unwrap(),
        "--data",
        "[1,2]",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        json!({"who": "7", "got": [1, 2]})
    );

    let (code, out, _) = m.cli(&["workers"]);
    assert_eq!(code, 0);
    assert_eq!(
        out.lines().filter(|l| l.contains("running")).count(),
        2,
        "{out}"
    );
    assert!(
        out.contains("HOST") && out.contains("127.0.0.1"),
        "where each worker runs: {out}"
    );

    let (code, out, _) = m.cli(&["drop", "user", "7"]);
    assert_eq!(code, 0);
    assert!(out.contains("dropped the VM of user:7"), "{out}");

    // Bad input to the CLI itself.
    let (code, _, err) = m.cli(&["dispatch", "user", "1", "echo", "--data", "{nope"]);
    assert_eq!(code, 2);
    assert!(err.contains("--data is not JSON"), "{err}");
    let (code, _, err) = m.cli(&["workers", "--api-token", "wrong"]);
    assert_eq!(code, 1);
    assert!(err.contains("unauthorized"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_run_in_the_tenant_vm_and_drop_gives_a_fresh_one() {
    let m = Master::start(Opts::default()).await;
    let c = &m.client;
    let run =
        |code: &'static str| async move { c.run_script("user", "5", &script(code, 2000)).await };

    assert_eq!(
        run("counter = 41 return counter + 1").await.unwrap().result,
        42
    );
    assert_eq!(run("return counter").await.unwrap().result, 41);
    // Another tenant has its own VM.
    let other = c
        .run_script("user", "6", &script("return counter", 2000))
        .await
        .unwrap();
    assert_eq!(other.result, Value::Null);

    c.drop_tenant("user", "5").await.unwrap();
    assert_eq!(run("return counter").await.unwrap().result, Value::Null);

    // The event arrives as `...`.
    let mut req = script("local e = ... return e.data.n * 2", 2000);
    req.event = Some(Event {
        name: "calc".into(),
        data: json!({"n": 21}).into(),
        ..Default::default()
    });
    assert_eq!(c.run_script("user", "5", &req).await.unwrap().result, 42);

    let err = run("return (").await.unwrap_err();
    assert_eq!(err.code(), Some("syntax"), "{err}");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(422));
    let err = run("error('boom')").await.unwrap_err();
    assert_eq!(err.code(), Some("runtime"));
    assert!(err.to_string().contains("t:1: boom"), "{err}");
    let err = run("return require('os')").await.unwrap_err();
    assert_eq!(err.code(), Some("runtime"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_script_times_out_and_the_worker_answers_the_next_event() {
    let m = Master::start(Opts::default()).await;
    let c = &m.client;
    let err = c
        .run_script("user", "1", &script("while true do end", 300))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("timeout"), "{err}");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(504));
    // pcall does not save a runaway either.
    let err = c
        .run_script(
            "user",
            "1",
            &script(
                "while true do pcall(function() while true do end end) end",
                300,
            ),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("timeout"), "{err}");

    let d = done(c, "user", "1", &event("echo", json!("after"), true)).await;
    assert_eq!(d.results[0].value.as_ref().unwrap()["data"], "after");
    // The VM lived on: a runaway is not a reason to lose the tenant's state.
    c.run_script("user", "1", &script("kept = true", 1000))
        .await
        .unwrap();
    let _ = c
        .run_script("user", "1", &script("while true do end", 200))
        .await;
    assert_eq!(
        c.run_script("user", "1", &script("return kept", 1000))
            .await
            .unwrap()
            .result,
        true
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_bomb_gets_a_memory_error_and_a_fresh_vm() {
    let m = Master::start(Opts::default()).await;
    let c = &m.client;
    c.run_script("user", "1", &script("before = 1", 1000))
        .await
        .unwrap();
    let err = c
        .run_script(
            "user",
            "1",
            &script(
                "local t = {} for i = 1, 1e9 do t[i] = string.rep('x', 4096) .. i end",
                20_000,
            ),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("memory"), "{err}");
    // The VM was recycled: the old global is gone, the tenant still works.
    assert_eq!(
        c.run_script("user", "1", &script("return before", 1000))
            .await
            .unwrap()
            .result,
        Value::Null
    );
    let w = m
        .worker(meshplay::master::shard::worker_for(
            &meshplay::mesophyll::message::Tenant::new("user", "1"),
            2,
        ))
        .await;
    assert_eq!(w.restarts, 0, "the worker itself must survive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_too_large_to_send_is_a_clear_error() {
    let m = Master::start(Opts::default()).await;
    let c = &m.client;
    let err = c
        .run_script(
            "user",
            "1",
            &script("return string.rep('x', 5 * 1024 * 1024)", 5000),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("too_large"), "{err}");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(422));
    assert_eq!(
        c.run_script("user", "1", &script("return 1", 1000))
            .await
            .unwrap()
            .result,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_tenant_does_not_delay_another_tenant_of_the_same_worker() {
    let m = Master::start(Opts::default()).await;
    // More CPU-bound tenants than the worker has threads, all on worker 0,
    // plus one quick tenant on the same worker.
    let tenants = tenants_on("user", 0, 2, 5);
    let (busy, quick) = tenants.split_at(4);
    let spin = "local t = time.now_ms() while time.now_ms() - t < 2500 do end return 'done'";
    let mut slow = Vec::new();
    for t in busy {
        let c = m.client.clone();
        let t = t.clone();
        slow.push(tokio::spawn(async move {
            let r = c.run_script(&t.kind, &t.id, &script(spin, 10_000)).await;
            (r, Instant::now())
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let q = &quick[0];
    let d = done(&m.client, &q.kind, &q.id, &event("echo", json!(1), true)).await;
    let quick_done = Instant::now();
    assert_eq!(d.worker, 0);
    for s in slow {
        let (r, finished) = s.await.unwrap();
        assert_eq!(r.unwrap().result, "done");
        assert!(
            quick_done < finished,
            "the quick tenant waited for a busy one"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_threads_follow_the_flags() {
    // By default a worker is one event loop: no thread of a multi-thread
    // runtime, and it still answers (the test above has it time-slice busy
    // tenants).
    let started = |log: &str, threads: &str, multi: &str| {
        log.lines()
            .filter(|l| {
                l.contains("worker started")
                    && l.contains(&format!("runtime_threads={threads}"))
                    && l.contains(&format!("multi_thread={multi}"))
            })
            .count()
    };
    let m = Master::start(Opts::default()).await;
    let d = done(&m.client, "user", "1", &event("echo", json!(1), true)).await;
    assert_eq!(d.results[0].value.as_ref().unwrap()["data"], 1);
    assert_eq!(started(&m.log(), "1", "false"), 2, "{}", m.log());
    // The master takes the cores its two workers leave, at least one.
    let master = |log: &str, threads: usize| {
        log.lines()
            .filter(|l| {
                l.contains("meshplay master ready")
                    && l.contains(&format!("runtime_threads={threads}"))
            })
            .count()
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(
        master(&m.log(), cores.saturating_sub(2).max(1)),
        1,
        "{}",
        m.log()
    );
    let m = Master::start(Opts {
        extra: vec![
            "--worker-threads".into(),
            "3".into(),
            "--master-threads".into(),
            "3".into(),
        ],
        ..Opts::default()
    })
    .await;
    for t in tenants_on("user", 0, 2, 1)
        .iter()
        .chain(&tenants_on("user", 1, 2, 1))
    {
        let d = done(&m.client, &t.kind, &t.id, &event("echo", json!(2), true)).await;
        assert_eq!(d.results[0].value.as_ref().unwrap()["data"], 2);
    }
    assert_eq!(started(&m.log(), "3", "true"), 2, "{}", m.log());
    assert_eq!(master(&m.log(), 3), 1, "{}", m.log());
    for flag in ["--worker-threads", "--master-threads"] {
        let (code, _, err) = m.cli(&["serve", flag, "0"]);
        assert_eq!(code, 2, "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_checks_its_token_and_its_input() {
    let m = Master::start(Opts::default()).await;
    let api = m.endpoint.api_addr;
    let token = m.admin_token();
    let get = |path: &'static str, token: Option<String>| async move {
        raw(
            api,
            "GET",
            path,
            token.as_deref(),
            "application/json",
            vec![],
        )
        .await
    };
    let code = |v: &Value| v["error"]["code"].as_str().map(str::to_owned);

    let (s, v) = get("/api/system/version", None).await;
    assert_eq!((s, v["name"].as_str()), (200, Some("meshplay")));
    let (s, v) = get("/healthz", None).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("ok")));
    let (s, v) = get("/api/v1/workers", None).await;
    assert_eq!((s, code(&v).as_deref()), (401, Some("unauthorized")));
    let (s, _) = get("/api/v1/workers", Some("wrong".into())).await;
    assert_eq!(s, 401);
    let wrong = ApiClient::new(api, "x".repeat(64));
    assert_eq!(
        wrong.workers().await.unwrap_err().code(),
        Some("unauthorized")
    );
    let (s, v) = get("/api/v1/nothing", Some(token.clone())).await;
    assert_eq!((s, code(&v).as_deref()), (404, Some("not_found")));

    let events = "/api/v1/tenants/user/1/events";
    let post = |kind: &'static str, body: Vec<u8>| {
        let token = token.clone();
        async move { raw(api, "POST", events, Some(&token), kind, body).await }
    };
    let json_body = |b: &str| b.as_bytes().to_vec();
    let (s, v) = post("application/json", json_body(r#"{"name":"#)).await;
    assert_eq!((s, code(&v).as_deref()), (400, Some("bad_request")), "{v}");
    let (s, v) = post(
        "application/json",
        json_body(r#"{"name":"echo","wiat":true}"#),
    )
    .await;
    assert_eq!(s, 400, "an unknown field is a mistake worth reporting: {v}");
    let (s, v) = post(
        "application/json",
        json_body(r#"{"name":"echo","timeout_ms":0}"#),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    let big = format!(r#"{{"name":"echo","data":"{}"}}"#, "x".repeat(2 << 20));
    let (s, v) = post("application/json", big.into_bytes()).await;
    assert_eq!((s, code(&v).as_deref()), (413, Some("too_large")));
    let (s, v) = post("application/msgpack", vec![0x81, 0xa4]).await;
    assert_eq!((s, code(&v).as_deref()), (400, Some("bad_request")), "{v}");

    // MessagePack bodies are accepted too.
    let body = rmp_serde::to_vec_named(&event("echo", json!({"m": true}), true)).unwrap();
    let (s, v) = post("application/msgpack", body).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["results"][0]["value"]["data"]["m"], true);

    // A tenant id that is too long.
    let long = format!("/api/v1/tenants/user/{}/events", "x".repeat(300));
    let (s, v) = raw(
        api,
        "POST",
        &long,
        Some(&token),
        "application/json",
        json_body(r#"{"name":"echo"}"#),
    )
    .await;
    assert_eq!((s, code(&v).as_deref()), (400, Some("bad_request")), "{v}");

    // After all that, the API still serves.
    done(&m.client, "user", "1", &event("echo", json!(2), true)).await;
}

/// A tenant state is checked like a KV value, whichever way it comes: one
/// over 256 KiB, or listing thousands of events, is refused and stores
/// nothing (a worker loads every state of its shard at start).
#[tokio::test]
async fn an_oversized_tenant_state_is_refused_and_stores_nothing() {
    let m = Master::start(Opts::default()).await;
    let api = m.endpoint.api_addr;
    let token = m.admin_token();
    let path = "/api/v1/tenants/user/big/state";
    let put = |body: Value| {
        let token = token.clone();
        async move {
            let body = serde_json::to_vec(&body).unwrap();
            raw(api, "PUT", path, Some(&token), "application/json", body).await
        }
    };
    let (s, v) = put(json!({ "data": "x".repeat(300 * 1024) })).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (413, Some("too_large")),
        "{v}"
    );
    let many: Vec<String> = (0..2000).map(|i| format!("e{i}")).collect();
    let (s, v) = put(json!({ "events": many })).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (413, Some("too_large")),
        "{v}"
    );
    let (s, v) = put(json!({ "plugins": ["p".repeat(200)] })).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("bad_request")),
        "{v}"
    );
    let (s, v) = raw(
        api,
        "GET",
        path,
        Some(&token),
        "application/json",
        Vec::new(),
    )
    .await;
    assert!(s == 404 || v["state"]["data"].is_null(), "{s} {v}");
    // A state within the limits is taken.
    let (s, v) = put(json!({ "events": ["echo"], "data": { "plan": "pro" } })).await;
    assert_eq!(s, 200, "{v}");
}

/// A shard whose states outgrow one answer (12 of about 200 KiB, past the
/// 1 MiB page) loads them all, a page at a time, when its worker restarts:
/// each state still decides what runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_worker_loads_many_large_states_in_pages() {
    let m = Master::start(Opts::default()).await;
    m.wait_connected(2).await;
    let tenants = tenants_on("user", 0, 2, 12);
    let big = "x".repeat(200 * 1024);
    for t in &tenants {
        let state = meshplay::mesophyll::message::TenantState {
            events: Some(vec!["echo".into()]),
            plugins: None,
            data: json!({ "filler": big }),
        };
        m.client
            .put_tenant_state("user", &t.id, &state)
            .await
            .unwrap();
    }
    let pid = m.worker(0).await.pid.unwrap();
    common::signal(pid, 9);
    m.wait_restarted(0, pid, Duration::from_secs(20)).await;
    for t in &tenants {
        let refused = m
            .client
            .dispatch(
                "user",
                &t.id,
                &common::event("member_join", json!({"name": "x"})),
            )
            .await
            .unwrap_err();
        assert_eq!(
            refused.code(),
            Some("not_subscribed"),
            "{}: {refused}",
            t.id
        );
        m.client
            .dispatch("user", &t.id, &common::event("echo", json!(1)))
            .await
            .unwrap();
    }
    assert!(
        m.log().contains("tenant states loaded tenants=12"),
        "the restarted worker did not load all 12"
    );
}
