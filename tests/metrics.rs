//! `GET /metrics` against a real fleet: traffic of every kind (successes, a
//! plugin error, a filter reject, a timeout, scripts, KV writes, a killed
//! worker), then a scrape in which each series moved by exactly that much,
//! with the right labels, and no label naming a tenant.

mod common;

use common::api::upload;
use common::{Master, Opts, event, eventually, scrape, signal, tenants_on};
use meshplay::rest::ScriptRequest;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

/// The sum of every sample of `name` whose labels include each of `with`.
fn sum(samples: &BTreeMap<String, f64>, name: &str, with: &[&str]) -> f64 {
    samples
        .iter()
        .filter(|(series, _)| {
            series.split('{').next() == Some(name) && with.iter().all(|w| series.contains(w))
        })
        .map(|(_, v)| v)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_traffic_moves_its_series_by_exactly_that_much() {
    let m = Master::start(Opts::default()).await;
    m.wait_connected(2).await;
    let c = &m.client;
    c.put_plugin(
        "faulty",
        &upload(
            r#"name = "faulty"
version = "1"
events = ["boom", "slow"]
[limits]
timeout_ms = 200
"#,
            "return { boom = function() error('no') end, slow = function() while true do end end }",
        ),
    )
    .await
    .unwrap();
    let (_, before) = scrape(&m).await;
    let t0 = tenants_on("user", 0, 2, 1).remove(0);

    for i in 0..3 {
        c.dispatch(&t0.kind, &t0.id, &event("echo", json!(i)))
            .await
            .unwrap();
    }
    c.dispatch("user", "m1", &event("boom", json!(null)))
        .await
        .unwrap();
    c.dispatch("user", "m2", &event("slow", json!(null)))
        .await
        .unwrap();
    c.dispatch(
        "user",
        "m3",
        &event("sign", json!({"name": "B", "message": "cheap spam"})),
    )
    .await
    .unwrap();
    c.dispatch("user", "m4", &event("incr", json!({"by": 2})))
        .await
        .unwrap();
    let script = |code: &str| ScriptRequest {
        name: None,
        code: code.into(),
        event: None,
        timeout_ms: Some(5000),
    };
    c.run_script("user", "m5", &script("return 1"))
        .await
        .unwrap();
    c.run_script("user", "m5", &script("error('x')"))
        .await
        .unwrap_err();

    let moved = |after: &BTreeMap<String, f64>, name: &str, with: &[&str]| {
        sum(after, name, with) - sum(&before, name, with)
    };
    // Worker-reported series arrive with the next heartbeat.
    let (text, after) = eventually(Duration::from_secs(10), "the filter calls", || async {
        let (text, after) = scrape(&m).await;
        let seen = sum(
            &after,
            "meshplay_filter_calls_total",
            &[r#"filter="keyword-block""#],
        );
        (seen > 0.0).then_some((text, after))
    })
    .await;
    let events = "meshplay_events_total";
    assert_eq!(
        moved(&after, events, &[r#"plugin="echo""#, r#"code="ok""#]),
        3.0
    );
    assert_eq!(
        moved(&after, events, &[r#"plugin="faulty""#, r#"code="runtime""#]),
        1.0
    );
    assert_eq!(
        moved(&after, events, &[r#"plugin="faulty""#, r#"code="timeout""#]),
        1.0
    );
    assert_eq!(
        moved(
            &after,
            events,
            &[r#"plugin="guestbook""#, r#"code="rejected""#]
        ),
        1.0
    );
    assert_eq!(
        moved(&after, events, &[r#"plugin="counter""#, r#"code="ok""#]),
        1.0
    );
    assert_eq!(moved(&after, events, &[]), 7.0, "nothing else moved");
    let dispatches = "meshplay_dispatches_total";
    assert_eq!(moved(&after, dispatches, &[r#"result="ok""#]), 7.0);
    assert_eq!(
        moved(
            &after,
            "meshplay_dispatch_duration_seconds_count",
            &[r#"result="ok""#]
        ),
        7.0
    );
    let calls = "meshplay_filter_calls_total";
    assert_eq!(
        moved(
            &after,
            calls,
            &[r#"filter="keyword-block""#, r#"outcome="reject""#]
        ),
        1.0
    );
    assert_eq!(
        moved(
            &after,
            calls,
            &[r#"filter="require-fields""#, r#"outcome="continue""#]
        ),
        1.0
    );
    assert_eq!(
        moved(&after, calls, &[r#"filter="redact""#]),
        0.0,
        "a reject stops the chain"
    );
    let scripts = "meshplay_scripts_total";
    assert_eq!(moved(&after, scripts, &[r#"result="ok""#]), 1.0);
    assert_eq!(
        moved(&after, scripts, &[r#"result="runtime""#]),
        1.0,
        "{text}"
    );
    let kv = "meshplay_kv_operations_total";
    assert_eq!(moved(&after, kv, &[r#"op="get""#]), 1.0);
    assert_eq!(moved(&after, kv, &[r#"op="set""#]), 1.0);
    assert_eq!(sum(&after, "meshplay_worker_up", &[]), 2.0);
    for w in ["0", "1"] {
        let label = format!(r#"worker="{w}""#);
        assert!(
            sum(&after, "meshplay_worker_rss_bytes", &[&label]) > 0.0,
            "{text}"
        );
    }
    for tenant in [&t0.id, "m1", "m2", "m3", "m4", "m5"] {
        assert!(
            !text.contains(&format!("\"{tenant}\"")),
            "a tenant in a label: {tenant}"
        );
    }

    // A killed worker is a restart with its cause.
    let pid = m.worker(0).await.pid.unwrap();
    signal(pid, libc::SIGKILL);
    m.wait_restarted(0, pid, Duration::from_secs(20)).await;
    let (_, restarted) = scrape(&m).await;
    let restarts = "meshplay_worker_restarts_total";
    let exited = [r#"worker="0""#, r#"cause="exited""#];
    assert_eq!(
        sum(&restarted, restarts, &exited) - sum(&before, restarts, &exited),
        1.0
    );
    assert_eq!(sum(&restarted, restarts, &[r#"cause="hung""#]), 0.0);
}
