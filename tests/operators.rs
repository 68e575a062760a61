//! What an operator relies on, against the real binary: readiness that
//! follows the worker slots, JSON logs from the master and its workers, and
//! shell completions.

mod common;

use common::{EXE, Master, Opts, SpawnGuard, eventually, raw, with_external_worker_1};
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

    let mut worker = Command::new(EXE)
        .args(["--worker", "--worker-id", "1", "--master"])
        .arg(m.endpoint.mesophyll_addr.to_string())
        .args(["--token", &token])
        .env_remove("MESHPLAY_WORKER_TOKEN")
        .stderr(std::process::Stdio::null())
        .kill_on_drop_guard();
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
