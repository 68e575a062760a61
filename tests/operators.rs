//! What an operator relies on, against the real binary: readiness that
//! follows the worker slots, `meshplay status`, JSON logs from the master
//! and its workers, and shell completions.

mod common;

use common::api::upload;
use common::{EXE, Master, Opts, SpawnGuard, event, eventually, raw, with_external_worker_1};
use meshplay::client::DispatchOutcome;
use meshplay::rest::ScriptRequest;
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

async fn readyz(m: &Master) -> (u16, Value) {
    raw(
        m.endpoint.api_addr,
        "GET",
        "/readyz",
        None,
        "application/json",
        vec![],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_answers_503_until_every_slot_is_served_and_again_when_one_goes() {
    let (m, token) = with_external_worker_1().await;
    m.wait_connected(1).await;
    // Worker 0 is up, the external slot 1 is not: alive, but not ready.
    let (status, body) = readyz(&m).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["waiting_for"], serde_json::json!([1]), "{body}");
    let (status, _) = raw(
        m.endpoint.api_addr,
        "GET",
        "/healthz",
        None,
        "application/json",
        vec![],
    )
    .await;
    assert_eq!(status, 200, "liveness does not wait for workers");
    let (code, out, err) = m.cli(&["status"]);
    assert_eq!(code, 4, "status says degraded: {out}{err}");
    assert!(out.contains("1 of 2 running"), "{out}");

    let mut worker = common::start_worker_1(&m, &token);
    let body = eventually(Duration::from_secs(20), "readiness", || async {
        let (status, body) = readyz(&m).await;
        (status == 200).then_some(body)
    })
    .await;
    assert_eq!(
        (body["ready"].as_bool(), body["connected"].as_u64()),
        (Some(true), Some(2))
    );

    let _ = worker.0.kill();
    let body = eventually(Duration::from_secs(20), "unreadiness", || async {
        let (status, body) = readyz(&m).await;
        (status == 503).then_some(body)
    })
    .await;
    assert_eq!(body["waiting_for"], serde_json::json!([1]), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_a_line_from_the_master_and_its_workers() {
    let m = Master::start(Opts {
        extra: vec!["--log-format".into(), "json".into()],
        ..Opts::default()
    })
    .await;
    m.wait_connected(2).await;
    let log = eventually(Duration::from_secs(20), "both workers' logs", || async {
        let log = m.log();
        (log.matches("tenant states loaded").count() >= 2).then_some(log)
    })
    .await;
    let mut workers = std::collections::BTreeSet::new();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(
            v["timestamp"].is_string() && v["level"].is_string(),
            "{line}"
        );
        assert!(v["message"].is_string(), "{line}");
        for span in v["spans"].as_array().into_iter().flatten() {
            if let Some(id) = span["id"].as_u64() {
                workers.insert(id);
            }
        }
    }
    assert_eq!(
        workers.into_iter().collect::<Vec<_>>(),
        [0, 1],
        "each worker's lines carry its id"
    );
    assert!(!log.contains(&m.admin_token()), "no token in the log");
}

#[test]
fn completions_come_for_each_shell_and_name_the_commands() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(EXE)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        for command in ["serve", "dispatch", "filters", "completions"] {
            assert!(script.contains(command), "{shell} lacks {command}");
        }
    }
    let out = Command::new(EXE)
        .args(["completions", "cmd.exe"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_fleet_and_counts_the_last_minute() {
    let m = Master::start(Opts::default()).await;
    m.wait_connected(2).await;
    let c = &m.client;
    for i in 0..3 {
        c.dispatch(
            "user",
            &format!("s{i}"),
            &event("echo", serde_json::json!(i)),
        )
        .await
        .unwrap();
    }
    let spam = serde_json::json!({"name": "B", "message": "cheap spam"});
    c.dispatch("user", "s9", &event("sign", spam))
        .await
        .unwrap();
    let mut quiet = event("echo", serde_json::json!(0));
    quiet.wait = false;
    c.dispatch("user", "s8", &quiet).await.unwrap();

    let (code, out, err) = m.cli(&["status", "--json"]);
    assert_eq!(code, 0, "{err}");
    let s: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (s["workers"].as_u64(), s["running"].as_u64()),
        (Some(2), Some(2))
    );
    assert!(s["store"].as_str().unwrap().starts_with("sled:"), "{s}");
    assert!(
        s["plugins"].as_array().unwrap().contains(&"proxied".into()),
        "{s}"
    );
    assert_eq!(s["filters"].as_array().unwrap().len(), 5, "{s}");
    // Three echoes and the fire-and-forget one, and the rejected signature.
    assert_eq!(s["last_minute"]["events"], 5, "{s}");
    assert_eq!(s["last_minute"]["errors"], 1, "{s}");
    assert!((s["last_minute"]["error_ratio"].as_f64().unwrap() - 0.2).abs() < 1e-9);

    let (code, out, _) = m.cli(&["status"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("2 of 2 running") && out.contains("5 events"),
        "{out}"
    );
}

/// The `req_id` a JSON log line carries.
fn request_of(line: &Value) -> Option<String> {
    line["req_id"].as_str().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_carries_one_id_through_the_answer_and_master_and_worker_logs() {
    let m = Master::start(Opts {
        extra: vec!["--log-format".into(), "json".into()],
        ..Opts::default()
    })
    .await;
    m.wait_connected(2).await;
    let c = &m.client;
    c.put_plugin(
        "chatty",
        &upload(
            "name = 'chatty'\nversion = '1'\nevents = ['talk']",
            "return { talk = function() log.info('chatty says hi') return 1 end }",
        ),
    )
    .await
    .unwrap();
    let DispatchOutcome::Done(done) = c
        .dispatch("user", "r1", &event("talk", serde_json::json!(null)))
        .await
        .unwrap()
    else {
        panic!("a waited dispatch")
    };
    let id = done.request_id.expect("the answer names its request");
    assert_eq!(id.len(), 16, "{id}");
    // A proxy-wasm filter's log line carries its request's id too.
    let DispatchOutcome::Done(denied) = c
        .dispatch(
            "user",
            "r3",
            &event("post", serde_json::json!({"t": "spam"})),
        )
        .await
        .unwrap()
    else {
        panic!("a waited dispatch")
    };
    let denied_id = denied.request_id.unwrap();
    // A script that logs, then fails: the master logs the failure.
    let req = ScriptRequest {
        name: None,
        code: "log.warn('about to fail') error('on purpose')".into(),
        event: None,
        timeout_ms: Some(5000),
    };
    c.run_script("user", "r2", &req).await.unwrap_err();

    let lines = eventually(Duration::from_secs(10), "the log lines", || async {
        let lines: Vec<Value> = m
            .log()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let has = |text: &str| {
            lines
                .iter()
                .any(|l| l["message"].as_str().is_some_and(|m| m.contains(text)))
        };
        (has("chatty says hi")
            && has("about to fail")
            && has("script failed")
            && has("denied for plugin proxied"))
        .then_some(lines)
    })
    .await;
    let line = |text: &str| {
        lines
            .iter()
            .find(|l| l["message"].as_str().is_some_and(|m| m.contains(text)))
            .unwrap()
    };
    assert_eq!(
        request_of(line("chatty says hi")).as_deref(),
        Some(id.as_str())
    );
    assert_eq!(
        request_of(line("denied for plugin proxied")).as_deref(),
        Some(denied_id.as_str())
    );
    let worker_side = request_of(line("about to fail")).expect("the worker's line has an id");
    let master_side = request_of(line("script failed")).expect("the master's line has an id");
    assert_eq!(worker_side, master_side);
    assert_ne!(worker_side, id, "each request its own id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_sets_what_flags_and_the_environment_leave_unset() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("meshplay.toml");
    std::fs::write(&file, "log-format = \"json\"\nworkers = 7\n").unwrap();
    // The harness sets --workers on the command line: it wins over the file.
    let m = Master::start(Opts {
        workers: 1,
        extra: vec!["--config".into(), file.to_str().unwrap().into()],
        ..Opts::default()
    })
    .await;
    m.wait_connected(1).await;
    assert_eq!(m.client.workers().await.unwrap().workers.len(), 1);
    let log = m.log();
    let first = log.lines().next().expect("a log line");
    assert!(
        first.starts_with('{'),
        "the file's log-format applies: {first}"
    );

    // The environment wins over the file.
    let data = tempfile::tempdir().unwrap();
    let mut serve = Command::new(EXE)
        .args(["serve", "--config"])
        .arg(&file)
        .arg("--data-dir")
        .arg(data.path())
        .args([
            "--api-addr",
            "127.0.0.1:0",
            "--mesophyll-addr",
            "127.0.0.1:0",
        ])
        .env("MESHPLAY_LOG_FORMAT", "text")
        .env_remove("RUST_LOG")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop_guard();
    let mut stderr = serve.0.stderr.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut buf = [0u8; 256];
        let n = stderr.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    })
    .await
    .unwrap();
    assert!(
        !line.starts_with('{') && line.contains("INFO"),
        "text, not JSON: {line}"
    );
}

#[test]
fn config_check_names_each_problem_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "workers = 4\napi-addr = \"127.0.0.1:9999\"\n").unwrap();
    let out = Command::new(EXE)
        .args(["config", "check"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(":1: --workers=4") && text.contains("2 settings, all valid"),
        "{text}"
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "workers = \"many\"\n# a comment\nworker = 2\n").unwrap();
    let out = Command::new(EXE)
        .args(["config", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("bad.toml:1: `workers`: invalid value 'many'"),
        "{err}"
    );
    assert!(err.contains("bad.toml:3: unknown key `worker`"), "{err}");
    // serve refuses it the same way, before starting anything.
    let out = Command::new(EXE)
        .args(["serve", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("bad.toml:3")
    );
}
