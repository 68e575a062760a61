//! `meshplay bench` runs end to end with real processes and reports what it
//! measured. Nothing here holds a figure to a speed: a shared machine is too
//! noisy for that. It checks that every figure ran, counted its calls and
//! its errors, and carries the ratio to its limit.

mod common;

use serde_json::Value;
use std::process::Command;

fn bench(args: &[&str]) -> (i32, Value, String) {
    let out = Command::new(common::EXE)
        .arg("bench")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), json, stderr)
}

fn figure<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["figures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("no figure {name} in {report:#}"))
}

fn ran_clean(f: &Value) {
    assert!(f["ok"].as_u64().unwrap() > 0, "{f}");
    assert_eq!(f["errors"], serde_json::json!({}), "{f}");
    let (p50, p99, max) = (
        f["p50_us"].as_f64().unwrap(),
        f["p99_us"].as_f64().unwrap(),
        f["max_us"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{f}");
}

#[test]
fn dispatch_measures_rest_binary_direct_and_the_raw_limits() {
    let (code, r, err) = bench(&[
        "dispatch",
        "--via",
        "rest,binary,direct",
        "--duration",
        "300ms",
        "--concurrency",
        "4",
        "--tenants",
        "5",
        "--workers",
        "2",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    for name in [
        "dispatch/rest",
        "dispatch/binary",
        "dispatch/direct",
        "baseline/ws-echo",
        "baseline/luau-call",
        "baseline/http1-echo",
    ] {
        ran_clean(figure(&r, name));
    }
    let rest = figure(&r, "dispatch/rest");
    assert_eq!(rest["vs"]["limit"], "dispatch/direct");
    let ratio = rest["vs"]["rate_ratio"].as_f64().unwrap();
    let expected =
        rest["rate"].as_f64().unwrap() / figure(&r, "dispatch/direct")["rate"].as_f64().unwrap();
    assert!((ratio - expected).abs() < 1e-9, "{ratio} vs {expected}");
    assert_eq!(
        figure(&r, "dispatch/direct")["vs"]["limit"],
        "baseline/ws-echo"
    );
    let checks: Vec<&str> = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(checks.len(), 4, "{checks:?}");
    assert!(checks.contains(&"rest throughput / http1-echo throughput"));
}

#[test]
fn dispatch_refuses_direct_against_a_remote_master() {
    let out = Command::new(common::EXE)
        .args([
            "bench",
            "dispatch",
            "--direct",
            "--api-addr",
            "127.0.0.1:9",
            "--api-token",
            "x",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a usage error");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--direct needs the master"), "{err}");
}

#[test]
fn kv_measures_the_db_endpoints_h2_and_sled() {
    let (code, r, err) = bench(&["kv", "--duration", "300ms", "--concurrency", "8", "--json"]);
    assert_eq!(code, 0, "{err}");
    for name in [
        "kv/set (durable)",
        "kv/get",
        "kv/find (100 keys)",
        "baseline/h2-echo",
        "baseline/sled-set+flush",
        "baseline/sled-get",
    ] {
        ran_clean(figure(&r, name));
    }
    assert_eq!(figure(&r, "kv/get")["vs"]["limit"], "baseline/h2-echo");
}

#[test]
fn kv_on_postgres_runs_pgbench_beside_it_on_the_same_database() {
    let Some(url) = common::pg::database_or_skip() else {
        return;
    };
    let args = [
        "kv",
        "--store",
        &url,
        "--duration",
        "1s",
        "--concurrency",
        "8",
        "--json",
    ];
    let (code, r, err) = bench(&args);
    assert_eq!(code, 0, "{err}");
    for name in [
        "kv/set (durable)",
        "kv/get",
        "kv/find (100 keys)",
        "peer/pgbench-simple-update",
    ] {
        ran_clean(figure(&r, name));
    }
    assert_eq!(
        figure(&r, "kv/set (durable)")["vs"]["limit"],
        "peer/pgbench-simple-update"
    );
    assert_eq!(r["params"]["store"], url.as_str());
}

#[test]
fn filter_measures_each_example_filter_against_a_live_instance() {
    let (code, r, err) = bench(&["filter", "--duration", "200ms", "--json"]);
    assert_eq!(code, 0, "{err}");
    for name in ["redact", "keyword-block", "require-fields"] {
        ran_clean(figure(&r, &format!("filter/{name}")));
        ran_clean(figure(&r, &format!("baseline/wasm-call/{name}")));
    }
    // proxy-wasm: a fresh root context per call, against one kept live.
    for name in ["proxy-deny", "proxy-stamp"] {
        ran_clean(figure(&r, &format!("filter/{name}")));
        ran_clean(figure(&r, &format!("baseline/proxy-live-root/{name}")));
    }
}

#[test]
fn egress_measures_fetch_against_a_bare_client_and_echo_beside_waiters() {
    let (code, r, err) = bench(&[
        "egress",
        "--duration",
        "300ms",
        "--waiting",
        "20",
        "--slow-ms",
        "300",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    for name in [
        "baseline/bare-fetch",
        "egress/echo-1",
        "egress/fetch-1",
        "egress/echo-alone",
        "egress/echo-beside-waiters",
    ] {
        ran_clean(figure(&r, name));
    }
    let beside = figure(&r, "egress/echo-beside-waiters");
    assert_eq!(beside["vs"]["limit"], "egress/echo-alone", "{beside}");
    let waiters = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"].as_str().unwrap().starts_with("slow fetches"))
        .unwrap();
    assert!(waiters["value"].as_f64().unwrap() >= 20.0, "{waiters}");
    assert_eq!(waiters["met"], true, "{waiters}");
}

#[test]
fn timers_are_written_beside_sled_and_all_fire() {
    let (code, r, err) = bench(&[
        "timers",
        "--timers",
        "2000",
        "--tenants",
        "100",
        "--rate",
        "1000",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    for name in ["timers/write", "baseline/sled-durable-set"] {
        ran_clean(figure(&r, name));
    }
    // On time is 0 µs late: lateness has no positive floor to check.
    let lateness = figure(&r, "timers/lateness");
    assert_eq!(lateness["ok"], 2000, "{lateness}");
    assert_eq!(lateness["errors"], serde_json::json!({}), "{lateness}");
    assert_eq!(r["params"]["fired"], "2000", "{r:#}");
    assert_eq!(figure(&r, "timers/write")["ok"], 2000, "{r:#}");
    let write = figure(&r, "timers/write");
    assert_eq!(write["vs"]["limit"], "baseline/sled-durable-set", "{write}");
}

#[test]
fn memory_reports_rss_per_tenant_at_each_step() {
    let (code, r, err) = bench(&["memory", "--tenants", "20,60", "--json"]);
    assert_eq!(code, 0, "{err}");
    let checks = r["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 2, "{r:#}");
    assert!(
        checks[1]["name"]
            .as_str()
            .unwrap()
            .contains("60 tenants (60 VMs"),
        "{r:#}"
    );
    for c in checks {
        assert!(c["value"].as_f64().unwrap() > 0.0, "{c}");
    }
}

#[test]
fn peers_measure_meshplay_from_outside_beside_redis_and_nats() {
    let (code, r, err) = bench(&[
        "peers",
        "--duration",
        "300ms",
        "--concurrency",
        "8",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    ran_clean(figure(&r, "meshplay/rest"));
    ran_clean(figure(&r, "meshplay/binary"));
    let ci = std::env::var("CI").as_deref() == Ok("true");
    for (peer, figure_name) in [
        ("redis", "peer/redis-eval"),
        ("nats", "peer/nats-request-reply"),
    ] {
        if let Some(skipped) = r["params"][peer].as_str() {
            assert!(!ci, "{peer} must be installed under CI: {skipped}");
            eprintln!("{peer} {skipped}");
            continue;
        }
        let f = figure(&r, figure_name);
        ran_clean(f);
        assert_eq!(f["vs"]["limit"], "meshplay/binary");
        let check = format!("meshplay/binary throughput / {figure_name} throughput");
        assert!(
            r["checks"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["name"] == check.as_str()),
            "{r:#}"
        );
    }
}

#[test]
fn nats_measures_the_bridge_beside_nats_alone_and_rest() {
    let installed = std::process::Command::new("nats-server")
        .arg("--version")
        .output()
        .is_ok();
    if !installed {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "nats-server must be installed under CI"
        );
        eprintln!("skipped: nats-server is not installed");
        return;
    }
    let (code, r, err) = bench(&[
        "nats",
        "--duration",
        "300ms",
        "--concurrency",
        "8",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    for name in ["nats/dispatch", "dispatch/rest", "peer/nats-request-reply"] {
        ran_clean(figure(&r, name));
    }
    assert_eq!(
        figure(&r, "nats/dispatch")["vs"]["limit"],
        "peer/nats-request-reply"
    );
}
