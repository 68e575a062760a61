//! The chaos suite, shortened: `meshplay bench chaos` against a real master
//! in its own process, with workers SIGKILLed every second under load, one
//! SIGSTOPped, and the master SIGKILLed under durable writers. Every check
//! it reports must be met: failures no more than the requests in flight on
//! the killed workers, none past its deadline, every worker back within a
//! second, the hang detected within the heartbeat timeout, no acknowledged
//! write lost. `meshplay bench chaos` with no flags is the full-length run.

mod common;

use serde_json::Value;
use std::process::Command;

#[test]
fn kills_a_hang_and_a_killed_master_cost_only_what_they_held() {
    let out = Command::new(common::EXE)
        .args([
            "bench",
            "chaos",
            "--duration",
            "6s",
            "--kill-every",
            "1s",
            "--concurrency",
            "16",
            "--tenants",
            "50",
            "--heartbeat-timeout-ms",
            "1000",
            "--master-rounds",
            "2",
            "--writers",
            "32",
            "--write-for",
            "1s",
            "--json",
        ])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not a report ({e}): {stdout}\n{stderr}"));
    let checks = report["checks"].as_array().unwrap();
    for c in checks {
        assert_eq!(c["met"], true, "missed: {c}\n{report:#}");
    }
    let names: Vec<&str> = checks.iter().map(|c| c["name"].as_str().unwrap()).collect();
    for expected in [
        "failed requests vs requests in flight on the killed workers",
        "requests past their deadline",
        "after the last kill",
        "SIGSTOPped worker is declared dead",
        "acknowledged writes lost in all",
    ] {
        assert!(
            names.iter().any(|n| n.contains(expected)),
            "no check {expected:?} in {names:#?}"
        );
    }
    // The kills really happened and really cost something to someone.
    let kills = report["figures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "chaos/kills")
        .unwrap();
    assert!(kills["ok"].as_u64().unwrap() > 0, "{kills}");
    assert!(out.status.success(), "{stderr}");
}
