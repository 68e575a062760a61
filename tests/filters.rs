//! WASM filters end to end: the example filters inside a plugin, filters
//! that misbehave, uploads that are refused, hot changes of plugins and
//! filters, scripts calling filters, and the precompiled cache.

mod common;

use common::api::{built, failure, fixture, results, script, upload, value};
use common::{Master, Opts, event, eventually, signal, tenants_on};
use meshplay::client::ApiClientError;
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guestbook_plugin_checks_cleans_and_keeps_entries() {
    let m = Master::start(Opts::default()).await;
    let c = &m.client;

    let signed = value(
        c,
        "ada",
        "guestbook",
        &event(
            "sign",
            json!({"name": "Ada", "message": "write to ada@example.org or call 0612345678"}),
        ),
    )
    .await;
    assert_eq!(signed["number"], 1);
    assert_eq!(
        signed["entry"]["message"],
        "write to [email] or call ##########"
    );

    let (code, message) = failure(
        c,
        "ada",
        "guestbook",
        &event("sign", json!({"name": "Bob", "message": "Cheap SPAM here"})),
    )
    .await;
    assert_eq!(code, "rejected");
    assert_eq!(message, "keyword-block: blocked word: spam");

    let (code, message) = failure(
        c,
        "ada",
        "guestbook",
        &event("sign", json!({"name": "Bob"})),
    )
    .await;
    assert_eq!(code, "rejected");
    assert_eq!(message, "require-fields: missing fields: message");

    // Rejected events never reached the handler; `entries` is not subject
    // to require-fields.
    let entries = value(c, "ada", "guestbook", &event("entries", Value::Null)).await;
    assert_eq!(entries.as_array().unwrap().len(), 1, "{entries}");
    assert_eq!(entries[0]["name"], "Ada");

    // The catalogue shows what the plugin offers and applies.
    let list = c.plugins().await.unwrap();
    let gb = list.plugins.iter().find(|p| p.name == "guestbook").unwrap();
    let ops: Vec<&str> = gb.operations.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(ops, ["sign", "entries"]);
    assert_eq!(gb.filters, ["require-fields", "keyword-block", "redact"]);
    let (code, out, _) = m.cli(&["plugins", "list"]);
    assert_eq!(code, 0);
    assert!(out.contains("guestbook") && out.contains("sign"), "{out}");

    let filters = c.filters().await.unwrap();
    let names: Vec<&str> = filters.filters.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "keyword-block",
            "proxy-deny",
            "proxy-stamp",
            "redact",
            "require-fields"
        ]
    );
    let redact = filters.filters.iter().find(|f| f.name == "redact").unwrap();
    assert_eq!(redact.size, built("redact").len());
    assert_eq!(redact.sha256.len(), 64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaway_filters_fail_alone_and_the_worker_answers_at_once() {
    let m = Master::start(Opts {
        workers: 1,
        ..Opts::default()
    })
    .await;
    let c = &m.client;
    c.put_filter("spin", fixture("endless-loop.wat"))
        .await
        .unwrap();
    c.put_filter("hog", fixture("memory-hog.wat"))
        .await
        .unwrap();
    c.put_plugin(
        "spinner",
        &upload(
            r#"name = "spinner"
version = "1"
events = ["go"]
[[filters]]
name = "spin"
timeout_ms = 100
"#,
            "return { go = function() return 'ran' end }",
        ),
    )
    .await
    .unwrap();
    c.put_plugin(
        "hogger",
        &upload(
            r#"name = "hogger"
version = "1"
events = ["go"]
[[filters]]
name = "hog"
"#,
            "return { go = function() return 'ran' end }",
        ),
    )
    .await
    .unwrap();
    // A plugin may choose to go on when its filter fails.
    c.put_plugin(
        "lenient",
        &upload(
            r#"name = "lenient"
version = "1"
events = ["go"]
[[filters]]
name = "spin"
timeout_ms = 20
on_error = "continue"
"#,
            "return { go = function(e) return e.data end }",
        ),
    )
    .await
    .unwrap();
    let pid = m.worker(0).await.pid.unwrap();

    let started = Instant::now();
    let r = results(c, "t1", &event("go", json!("x"))).await;
    let took = started.elapsed();
    let spinner = r["spinner"].error.as_ref().expect("spinner must fail");
    assert_eq!(spinner.code, "filter");
    assert!(
        spinner.message.contains("spin") && spinner.message.contains("100ms"),
        "{spinner:?}"
    );
    let hogger = r["hogger"].error.as_ref().expect("hogger must fail");
    assert_eq!(hogger.code, "filter");
    assert!(hogger.message.contains("trapped"), "{hogger:?}");
    assert_eq!(r["lenient"].value, Some(json!("x")));
    // Deadlines end the calls: three filters with 100 ms, 20 ms and the
    // hog's trap cannot take anywhere near the 10 s dispatch budget.
    assert!(took < Duration::from_secs(5), "{took:?}");

    // The same worker and the same tenant answer the next event.
    assert_eq!(
        value(c, "t1", "echo", &event("echo", json!(7))).await["data"],
        7
    );
    assert_eq!(m.worker(0).await.pid, Some(pid));

    // Scripts get a filter failure as a Luau error they can catch.
    let caught = script(
        c,
        "t1",
        r#"local ok, err = pcall(filters.run, "spin", { name = "x", data = 1 })
           return { ok = ok, err = tostring(err) }"#,
    )
    .await
    .unwrap();
    assert_eq!(caught["ok"], false);
    assert!(
        caught["err"].as_str().unwrap().contains("deadline"),
        "{caught}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_are_refused_with_the_reason_and_change_nothing() {
    let m = Master::start(Opts {
        workers: 1,
        ..Opts::default()
    })
    .await;
    let c = &m.client;
    let before_filters = c.filters().await.unwrap();
    let before_plugins = c.plugins().await.unwrap();

    let refused = |r: Result<_, ApiClientError>| {
        let e = r.expect_err("must be refused");
        assert_eq!(e.status().map(|s| s.as_u16()), Some(400), "{e}");
        e.to_string()
    };
    let e = refused(
        c.put_filter("missiles", fixture("unknown-import.wat"))
            .await,
    );
    assert!(e.contains("launch_missiles"), "{e}");
    let e = refused(c.put_filter("garbage", fixture("not-wasm.wasm")).await);
    assert!(e.contains("not a valid WebAssembly module"), "{e}");
    let e = refused(c.put_filter("plain", fixture("no-abi-marker.wat")).await);
    assert!(e.contains("meshplay_abi_v1"), "{e}");
    let e = refused(c.put_filter("Bad Name", built("redact")).await);
    assert!(e.contains("Bad Name"), "{e}");

    let e = refused(
        c.put_plugin(
            "broken",
            &upload(
                "name = \"broken\"\nversion = \"1\"\nevents = [\"go\"]\n",
                "return { go = function( end }",
            ),
        )
        .await,
    );
    assert!(e.contains("init.luau"), "{e}");
    let e = refused(
        c.put_plugin(
            "needs",
            &upload(
                "name = \"needs\"\nversion = \"1\"\nevents = [\"go\"]\n[[filters]]\nname = \"nowhere\"\n",
                "return {}",
            ),
        )
        .await,
    );
    assert!(e.contains("nowhere"), "{e}");
    let e = refused(
        c.put_plugin(
            "other",
            &upload(
                "name = \"mismatch\"\nversion = \"1\"\nevents = [\"go\"]\n",
                "return {}",
            ),
        )
        .await,
    );
    assert!(e.contains("mismatch"), "{e}");

    // Folder entries are not the API's to delete; unknown ones are 404.
    let e = c.delete_filter("redact").await.unwrap_err();
    assert_eq!(e.code(), Some("from_folder"), "{e}");
    let e = c.delete_plugin("nope").await.unwrap_err();
    assert_eq!(e.status().map(|s| s.as_u16()), Some(404), "{e}");

    // The raw API answers a body that is too large, or not JSON, clearly.
    let token = m.admin_token();
    let (status, body) = common::raw(
        m.endpoint.api_addr,
        "PUT",
        "/api/v1/plugins/x",
        Some(&token),
        "application/json",
        b"{not json".to_vec(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = common::raw(
        m.endpoint.api_addr,
        "PUT",
        "/api/v1/filters/big",
        Some(&token),
        "application/wasm",
        vec![0u8; 9 << 20],
    )
    .await;
    assert_eq!(status, 413, "{body}");

    assert_eq!(c.filters().await.unwrap(), before_filters);
    assert_eq!(c.plugins().await.unwrap(), before_plugins);

    // The CLI says why too, and exits non-zero.
    let not_wasm = Path::new(env!("CARGO_MANIFEST_DIR")).join("filters/fixtures/not-wasm.wasm");
    let (code, _, err) = m.cli(&["filters", "push", not_wasm.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("not a valid WebAssembly module"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_change_the_next_events_without_restarting_workers() {
    let m = Master::start(Opts::default()).await;
    let c = &m.client;
    m.wait_connected(2).await;
    let pids = m.worker_pids().await;
    // One tenant on each worker: both must reload.
    let ids: Vec<String> = (0..2)
        .map(|w| tenants_on("user", w, 2, 1).remove(0).id)
        .collect();

    let manifest = |version: &str, filter: &str| {
        format!(
            "name = \"tagger\"\nversion = \"{version}\"\nevents = [\"tag\"]\n\
             operations = [{{ name = \"tag\" }}]\n[[filters]]\nname = \"{filter}\"\n\
             config = {{ words = [\"no\"], fields = [\"text\"] }}\n"
        )
    };
    // The greeter keeps a count in its VM: unrelated changes must not
    // reset it.
    let greet = event("member_join", json!({"name": "Ada"}));
    assert_eq!(value(c, &ids[0], "greeter", &greet).await["members"], 1);

    // The filter "gate" starts as keyword-block.
    c.put_filter("gate", built("keyword-block")).await.unwrap();
    c.put_plugin(
        "tagger",
        &upload(
            &manifest("1", "gate"),
            "return { tag = function(e) return 'v1:' .. e.data.text end }",
        ),
    )
    .await
    .unwrap();
    for id in &ids {
        let v = value(c, id, "tagger", &event("tag", json!({"text": "say yes"}))).await;
        assert_eq!(v, "v1:say yes");
        let (code, _) = failure(c, id, "tagger", &event("tag", json!({"text": "say no"}))).await;
        assert_eq!(code, "rejected");
    }

    // A new version of the plugin: the very next event runs it.
    c.put_plugin(
        "tagger",
        &upload(
            &manifest("2", "gate"),
            "return { tag = function(e) return 'v2:' .. e.data.text end }",
        ),
    )
    .await
    .unwrap();
    for id in &ids {
        let v = value(c, id, "tagger", &event("tag", json!({"text": "say yes"}))).await;
        assert_eq!(v, "v2:say yes");
    }

    assert_eq!(value(c, &ids[0], "greeter", &greet).await["members"], 2);

    // A new version of the filter: "gate" becomes require-fields.
    c.put_filter("gate", built("require-fields")).await.unwrap();
    for id in &ids {
        let v = value(c, id, "tagger", &event("tag", json!({"text": "say no"}))).await;
        assert_eq!(v, "v2:say no");
        let (code, message) = failure(c, id, "tagger", &event("tag", json!({"other": 1}))).await;
        assert_eq!(code, "rejected");
        assert_eq!(message, "gate: missing fields: text");
    }
    let list = c.plugins().await.unwrap();
    let tagger = list.plugins.iter().find(|p| p.name == "tagger").unwrap();
    assert_eq!(tagger.version, "2");

    // A filter still in use cannot go; once its plugin is gone, it can.
    let e = c.delete_filter("gate").await.unwrap_err();
    assert_eq!(e.code(), Some("in_use"), "{e}");
    c.delete_plugin("tagger").await.unwrap();
    c.delete_filter("gate").await.unwrap();
    let e = c
        .dispatch("user", &ids[0], &event("tag", json!({"text": "x"})))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("not_found"), "{e}");
    assert!(
        !c.filters()
            .await
            .unwrap()
            .filters
            .iter()
            .any(|f| f.name == "gate")
    );

    // Scripts call filters directly, with their own configuration.
    let v = script(
        c,
        &ids[1],
        r#"local out = filters.run("redact", { name = "note", data = { text = "mail me: a.b@c.io" } })
           local no = filters.run("keyword-block", { name = "note", data = "a scam" }, { words = { "scam" } })
           return { out = out, no = no }"#,
    )
    .await
    .unwrap();
    assert_eq!(v["out"]["verdict"], "continue");
    assert_eq!(v["out"]["event"]["data"]["text"], "mail me: [email]");
    assert_eq!(v["no"]["verdict"], "reject");
    assert_eq!(v["no"]["reason"], "blocked word: scam");
    let e = script(c, &ids[1], r#"return filters.run("nope", { name = "x" })"#)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no filter named \"nope\""), "{e}");

    c.put_filter("gate2", built("redact")).await.unwrap();
    assert_eq!(m.worker_pids().await, pids, "no worker restarted");

    // The CLI works the same catalogue.
    let dir = common::plugins_dir().join("echo");
    let (code, out, err) = m.cli(&["plugins", "push", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = m.cli(&["filters", "list"]);
    assert_eq!(code, 0);
    assert!(out.contains("gate2"), "{out}");
    let (code, _, err) = m.cli(&["filters", "rm", "gate2"]);
    assert_eq!(code, 0, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_worker_loads_its_filters_from_the_precompiled_cache() {
    let m = Master::start(Opts {
        workers: 1,
        ..Opts::default()
    })
    .await;
    m.wait_connected(1).await;
    let first = m.log();
    assert!(
        first.contains("filter loaded") && first.contains("cached=false"),
        "the first worker compiles"
    );
    let cache = m.data_dir().join("cache/filters");
    let cached = std::fs::read_dir(&cache).unwrap().count();
    assert_eq!(cached, 5, "one file per example filter");

    let pid = m.worker(0).await.pid.unwrap();
    signal(pid, libc::SIGKILL);
    m.wait_restarted(0, pid, Duration::from_secs(20)).await;
    let after = eventually(Duration::from_secs(10), "the reload log", || {
        let tail = m.log()[first.len()..].to_string();
        async move { (tail.matches("filter loaded").count() >= 5).then_some(tail) }
    })
    .await;
    assert_eq!(after.matches("cached=true").count(), 5, "{after}");
    assert!(!after.contains("cached=false"), "{after}");
    // And the cached filters work.
    let v = value(
        &m.client,
        "cache",
        "guestbook",
        &event("sign", json!({"name": "C", "message": "call 123456789"})),
    )
    .await;
    assert_eq!(v["entry"]["message"], "call #########");

    // Uploads are durable: a restarted master still has them.
    m.client.put_filter("extra", built("redact")).await.unwrap();
    let dir = m.dir.clone();
    let mut m = m;
    assert!(m.stop().is_some_and(|s| s.success()));
    drop(m);
    let m = Master::start_in(
        Opts {
            workers: 1,
            ..Opts::default()
        },
        dir,
    )
    .await;
    let filters = m.client.filters().await.unwrap();
    assert!(
        filters.filters.iter().any(|f| f.name == "extra"),
        "{filters:?}"
    );
}
