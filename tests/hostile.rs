//! The hostile-script corpus (`tests/hostile/*.luau`), run through the REST
//! API against a real master and real workers. Each script says on its
//! first line what it must end with (`-- expect: memory timeout`); each must
//! end within its deadline (plus the backstop), the worker must answer the
//! same tenant's next script, and no worker may die. Then the ways out of a
//! tenant's VM: shared library tables, other tenants' globals, other
//! plugins' globals, and bytecode instead of source.

mod common;

use meshplay::rest::{PluginUpload, ScriptRequest};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const DEADLINE_MS: u64 = 1000;

fn script(code: &str) -> ScriptRequest {
    ScriptRequest {
        name: Some("hostile".into()),
        code: code.into(),
        event: None,
        timeout_ms: Some(DEADLINE_MS),
    }
}

async fn run(m: &common::Master, tenant: &str, code: &str) -> Result<Value, String> {
    m.client
        .run_script("user", tenant, &script(code))
        .await
        .map(|r| r.result)
        .map_err(|e| e.code().unwrap_or("transport").to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_script_is_contained_and_the_worker_goes_on() {
    let m = common::Master::start(common::Opts::default()).await;
    m.wait_connected(2).await;
    let pids = m.worker_pids().await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hostile");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "luau"))
        .collect();
    files.sort();
    assert!(files.len() >= 20, "{} scripts", files.len());
    for file in &files {
        let name = file.file_stem().unwrap().to_string_lossy().into_owned();
        let code = std::fs::read_to_string(file).unwrap();
        let expect: Vec<&str> = code
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("-- expect:"))
            .unwrap_or_else(|| panic!("{name}: no `-- expect:` line"))
            .split_whitespace()
            .collect();
        let started = Instant::now();
        let outcome = run(&m, &name, &code).await;
        let took = started.elapsed();
        let kind = match &outcome {
            Ok(_) => "ok".to_owned(),
            Err(k) => k.clone(),
        };
        assert!(
            expect.contains(&kind.as_str()),
            "{name}: ended {kind} ({outcome:?}), expected one of {expect:?}"
        );
        // The deadline, the backstop (1 s) and room for a loaded machine.
        assert!(
            took < Duration::from_millis(DEADLINE_MS + 3000),
            "{name}: took {took:?}"
        );
        assert_eq!(
            run(&m, &name, "return 1").await,
            Ok(json!(1)),
            "{name}: the tenant does not answer after it"
        );
    }
    assert_eq!(m.worker_pids().await, pids, "a worker died");
    for w in m.client.workers().await.unwrap().workers {
        assert_eq!(w.restarts, 0, "{w:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_of_one_tenant_or_plugin_reaches_another() {
    let m = common::Master::start(common::Opts::default()).await;
    m.wait_connected(2).await;
    // Same worker, two tenants: separate VMs.
    let two = common::tenants_on("user", 0, 2, 2);
    let (a, b) = (&two[0].id, &two[1].id);
    run(&m, a, "secret = 42").await.unwrap();
    assert_eq!(run(&m, a, "return secret").await, Ok(json!(42)));
    assert_eq!(run(&m, b, "return secret").await, Ok(Value::Null));

    // Shared library tables cannot be changed, through any door.
    for attempt in [
        "string.rep = function() return 'pwned' end",
        "rawset(string, 'rep', function() return 'pwned' end)",
        "getmetatable('').__index = { rep = function() return 'pwned' end }",
        "setmetatable(string, { __index = function() return 'pwned' end })",
        "table.insert = nil",
    ] {
        assert_eq!(
            run(&m, a, attempt).await,
            Err("runtime".into()),
            "{attempt}"
        );
    }
    for tenant in [a, b] {
        assert_eq!(
            run(&m, tenant, "return string.rep('a', 3) .. ('b'):rep(2)").await,
            Ok(json!("aaabb"))
        );
        assert_eq!(
            run(&m, tenant, "local t = {} table.insert(t, 1) return #t").await,
            Ok(json!(1))
        );
    }

    // A plugin's globals live in its own environment, not the script's.
    let upload = PluginUpload {
        manifest: "name = 'keeper'\nversion = '1'\nevents = ['keep']".into(),
        files: [(
            "init.luau".to_string(),
            "secret = 'plugin-secret'\nreturn { keep = function() return secret end }".to_string(),
        )]
        .into(),
    };
    m.client.put_plugin("keeper", &upload).await.unwrap();
    let out = m
        .client
        .dispatch("user", a, &common::event("keep", Value::Null))
        .await
        .unwrap();
    match out {
        meshplay::client::DispatchOutcome::Done(d) => {
            assert_eq!(d.results[0].value, Some(json!("plugin-secret")))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        run(
            &m,
            a,
            "return secret == 42 and rawget(_G, 'secret') == nil and _G.secret == nil"
        )
        .await,
        Ok(json!(true))
    );

    // Bytecode handed over as a script is refused as source text.
    let bytecode = meshplay::catalogue::plugin::compile(b"return 'ran as bytecode'").unwrap();
    let code = String::from_utf8(bytecode).expect("this chunk's bytecode is UTF-8");
    assert_eq!(run(&m, b, &code).await, Err("syntax".into()));
}
