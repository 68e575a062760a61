//! Timers and schedules through a real master, real workers and a real
//! store (sled, and PostgreSQL where there is one): a timer fires once at
//! its time and again after a `kill -9` of the master; a failing handler is
//! retried with back-off, then dropped and counted; cancel works; the
//! per-tenant cap answers `too_many_timers`; a per-second schedule runs,
//! stops when unscheduled, and runs a missed slot once, not once per slot.

mod common;

use common::api::upload;
use common::{Master, Opts, event, eventually, scrape};
use meshplay::client::{ApiClient, DispatchOutcome};
use serde_json::{Value, json};
use std::time::Duration;

const MANIFEST: &str = r#"name = "alarm"
version = "1"
events = ["set", "at", "ring", "flaky", "cancel", "fill", "every", "unschedule", "tick", "list"]
"#;

const ALARM: &str = r#"
local function note(key, event)
    local seen = kv.get(key) or {}
    table.insert(seen, {
        id = event.timer.id, due = event.timer.due_at, attempt = event.timer.attempt,
        at = time.now_ms(), data = event.data, schedule = event.timer.schedule,
    })
    kv.set(key, seen)
end
return {
    set = function(event) return timers.after(event.data.ms, event.data.event or "ring", event.data.data) end,
    at = function(event) return timers.at(event.data.at, "ring", event.data.data) end,
    ring = function(event) note("rings", event) end,
    flaky = function(event)
        local tries = (kv.get("tries") or 0) + 1
        kv.set("tries", tries)
        note("flaky", event)
        if event.data.fail_until == nil or tries < event.data.fail_until then
            error("not yet")
        end
    end,
    cancel = function(event) return timers.cancel(event.data.id) end,
    fill = function(event)
        local n = 0
        while true do
            local ok, err = pcall(timers.after, 60000, "ring", nil)
            if not ok then return { set = n, err = tostring(err) } end
            n += 1
        end
    end,
    every = function(event)
        return timers.every(event.data.name, event.data.cron, "tick", { name = event.data.name }, event.data.zone)
    end,
    unschedule = function(event) return timers.unschedule(event.data.name) end,
    tick = function(event) note("ticks", event) end,
    list = function(event) return timers.list() end,
}
"#;

async fn alarm(extra: &[&str], opts: Opts) -> Master {
    let mut opts = opts;
    opts.extra.extend(extra.iter().map(|s| s.to_string()));
    let m = Master::start(opts).await;
    m.client
        .put_plugin("alarm", &upload(MANIFEST, ALARM))
        .await
        .unwrap();
    m
}

async fn call(c: &ApiClient, id: &str, name: &str, data: Value) -> Value {
    match c.dispatch("alarm", id, &event(name, data)).await.unwrap() {
        DispatchOutcome::Done(d) => {
            let r = &d.results[0];
            match &r.error {
                Some(e) => json!({ "error": e.code, "message": e.message }),
                None => r.value.clone().unwrap_or(Value::Null),
            }
        }
        other => panic!("{other:?}"),
    }
}

async fn seen(c: &ApiClient, id: &str, key: &str) -> Vec<Value> {
    match c.kv_get("alarm", id, "default", key).await.unwrap() {
        Some(r) => r.value.as_array().cloned().unwrap_or_default(),
        None => Vec::new(),
    }
}

async fn wait_seen(c: &ApiClient, id: &str, key: &str, n: usize, limit: Duration) -> Vec<Value> {
    eventually(limit, &format!("{n} {key} of {id}"), || async {
        let s = seen(c, id, key).await;
        (s.len() >= n).then_some(s)
    })
    .await
}

async fn a_timer_fires_once_at_its_time_and_after_a_master_is_killed(opts: Opts) {
    let mut m = alarm(&[], opts.clone()).await;
    let c = m.client.clone();
    let id = call(&c, "a", "set", json!({ "ms": 300, "data": { "n": 1 } })).await;
    assert!(id.as_u64().is_some(), "{id}");
    let rings = wait_seen(&c, "a", "rings", 1, Duration::from_secs(10)).await;
    let ring = &rings[0];
    assert_eq!(ring["id"], id);
    assert_eq!(ring["attempt"], 1);
    assert_eq!(ring["data"], json!({ "n": 1 }));
    let late = ring["at"].as_i64().unwrap() - ring["due"].as_i64().unwrap();
    eprintln!("fired {late} ms after its due time");
    assert!((0..5000).contains(&late), "fired {late} ms late");
    // Once: nothing more comes.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(seen(&c, "a", "rings").await.len(), 1);

    // Due while the master is dead: fired when it is back.
    let at = json!(chrono_ms() + 1500);
    let id2 = call(&c, "b", "at", json!({ "at": at, "data": "after the kill" })).await;
    m.child.kill().unwrap();
    m.child.wait().unwrap();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let m2 = Master::start_in(opts, m.dir.clone()).await;
    let rings = wait_seen(&m2.client, "b", "rings", 1, Duration::from_secs(15)).await;
    assert_eq!(rings[0]["id"], id2);
    assert_eq!(rings[0]["data"], "after the kill");
}

fn chrono_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn failing_handlers_are_retried_with_back_off_then_dropped_and_counted(opts: Opts) {
    let m = alarm(
        &["--timer-retry-ms", "200", "--timer-max-attempts", "3"],
        opts,
    )
    .await;
    let c = &m.client;
    // Fails twice, then succeeds: three deliveries of one timer.
    call(
        c,
        "r",
        "set",
        json!({ "ms": 10, "event": "flaky", "data": { "fail_until": 3 } }),
    )
    .await;
    let tries = wait_seen(c, "r", "flaky", 3, Duration::from_secs(10)).await;
    let attempts: Vec<&Value> = tries.iter().map(|t| &t["attempt"]).collect();
    assert_eq!(attempts, [&json!(1), &json!(2), &json!(3)]);
    let gap = |a: &Value, b: &Value| b["at"].as_i64().unwrap() - a["at"].as_i64().unwrap();
    let (first, second) = (gap(&tries[0], &tries[1]), gap(&tries[1], &tries[2]));
    eprintln!("retried after {first} ms, then {second} ms");
    assert!(
        first >= 190 && second >= 390,
        "back-off: {first} ms, {second} ms"
    );

    // Always fails: three attempts, then dropped.
    call(
        c,
        "d",
        "set",
        json!({ "ms": 10, "event": "flaky", "data": {} }),
    )
    .await;
    wait_seen(c, "d", "flaky", 3, Duration::from_secs(10)).await;
    let dropped = eventually(Duration::from_secs(5), "the drop to be counted", || async {
        let (_, series) = scrape(&m).await;
        let n = series
            .get("meshplay_timer_deliveries_total{outcome=\"dropped\"}")
            .copied();
        n.filter(|n| *n >= 1.0)
    })
    .await;
    assert_eq!(dropped, 1.0);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(seen(c, "d", "flaky").await.len(), 3, "no fourth attempt");
    let listed = call(c, "d", "list", json!({})).await;
    assert_eq!(listed["timers"], json!([]), "{listed}");
}

async fn cancel_removes_a_pending_timer_and_the_cap_answers(opts: Opts) {
    let m = alarm(&["--max-timers-per-tenant", "3"], opts).await;
    let c = &m.client;
    let id = call(c, "c", "set", json!({ "ms": 800 })).await;
    let listed = call(c, "c", "list", json!({})).await;
    assert_eq!(listed["timers"][0]["id"], id, "{listed}");
    assert_eq!(call(c, "c", "cancel", json!({ "id": id })).await, true);
    assert_eq!(call(c, "c", "cancel", json!({ "id": id })).await, false);
    // Another tenant cannot cancel it either.
    let other = call(c, "c", "set", json!({ "ms": 800 })).await;
    assert_eq!(call(c, "x", "cancel", json!({ "id": other })).await, false);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let rings = seen(c, "c", "rings").await;
    assert_eq!(rings.len(), 1, "only the one not cancelled: {rings:?}");
    assert_eq!(rings[0]["id"], other);

    let filled = call(c, "f", "fill", json!({})).await;
    assert_eq!(filled["set"], 3, "{filled}");
    let err = filled["err"].as_str().unwrap();
    assert!(err.contains("too_many_timers"), "{err}");
    assert!(err.contains("--max-timers-per-tenant"), "{err}");
}

async fn a_schedule_runs_each_second_stops_when_unscheduled_and_skips_missed_slots(opts: Opts) {
    let mut m = alarm(&[], opts.clone()).await;
    let c = m.client.clone();
    let next = call(
        &c,
        "s",
        "every",
        json!({ "name": "sec", "cron": "* * * * * *" }),
    )
    .await;
    assert!(next.as_i64().is_some(), "{next}");
    let ticks = wait_seen(&c, "s", "ticks", 2, Duration::from_secs(10)).await;
    assert_eq!(ticks[0]["schedule"], "sec");
    assert_eq!(ticks[0]["data"], json!({ "name": "sec" }));
    assert!(ticks[1]["due"].as_i64() > ticks[0]["due"].as_i64());

    // Bad patterns and zones are refused with the reason.
    let bad = call(
        &c,
        "s",
        "every",
        json!({ "name": "x", "cron": "61 * * * *" }),
    )
    .await;
    assert_eq!(bad["error"], "runtime", "{bad}");
    assert!(
        bad["message"].as_str().unwrap().contains("cron pattern"),
        "{bad}"
    );
    let bad = call(
        &c,
        "s",
        "every",
        json!({ "name": "x", "cron": "* * * * *", "zone": "Mars/Base" }),
    )
    .await;
    assert!(bad["message"].as_str().unwrap().contains("IANA"), "{bad}");

    // Down for 3 s: the overdue run fires once, then the schedule goes on.
    m.child.kill().unwrap();
    m.child.wait().unwrap();
    let killed = chrono_ms();
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let back = chrono_ms();
    let m2 = Master::start_in(opts, m.dir.clone()).await;
    let c2 = m2.client.clone();
    let before = eventually(
        Duration::from_secs(15),
        "a tick after the restart",
        || async {
            let ticks = seen(&c2, "s", "ticks").await;
            ticks
                .iter()
                .any(|t| t["at"].as_i64().unwrap() >= back)
                .then_some(ticks.len())
        },
    )
    .await;
    wait_seen(&c2, "s", "ticks", before + 1, Duration::from_secs(15)).await;
    let ticks = seen(&c2, "s", "ticks").await;
    let missed = ticks
        .iter()
        .filter(|t| t["at"].as_i64().unwrap() >= back && t["due"].as_i64().unwrap() < back)
        .count();
    assert!(
        missed <= 1,
        "{missed} runs due while down ({killed}..{back}): {ticks:?}"
    );

    assert_eq!(
        call(&c2, "s", "unschedule", json!({ "name": "sec" })).await,
        true
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopped = seen(&c2, "s", "ticks").await.len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        seen(&c2, "s", "ticks").await.len(),
        stopped,
        "ticks after unschedule"
    );
    assert_eq!(
        call(&c2, "s", "unschedule", json!({ "name": "sec" })).await,
        false
    );
}

/// Operators' side: the CLI puts a schedule, the REST API lists it with
/// its next run and the pending run among the timers, a bad pattern is a
/// 400 naming it, and delete removes both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_put_list_and_delete_schedules_over_the_cli_and_rest() {
    let m = alarm(&[], Opts::default()).await;
    let (code, out, err) = m.cli(&[
        "schedules",
        "put",
        "alarm",
        "ops",
        "nightly",
        "30 2 * * *",
        "tick",
        "--data",
        r#"{"n": 1}"#,
        "--timezone",
        "Europe/Stockholm",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("nightly scheduled, next run"), "{out}");
    let list = m.client.schedules("alarm", "ops").await.unwrap();
    let s = &list.schedules[0];
    assert_eq!(
        (s.spec.name.as_str(), s.spec.cron.as_str()),
        ("nightly", "30 2 * * *")
    );
    assert_eq!(s.spec.timezone, "Europe/Stockholm");
    assert!(s.next_due > chrono_ms());
    let timers = m.client.timers("alarm", "ops").await.unwrap();
    assert_eq!(timers.timers.len(), 1);
    assert_eq!(timers.timers[0].schedule.as_deref(), Some("nightly"));
    assert_eq!(timers.timers[0].due_at, s.next_due);

    let bad = meshplay::rest::SchedulePut {
        cron: "* * *".into(),
        event: "tick".into(),
        data: Value::Null,
        timezone: None,
    };
    let e = m
        .client
        .put_schedule("alarm", "ops", "bad", &bad)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("cron pattern"), "{e}");

    let (code, out, _) = m.cli(&["schedules", "delete", "alarm", "ops", "nightly"]);
    assert_eq!((code, out.trim()), (0, "nightly deleted"));
    assert!(
        m.client
            .timers("alarm", "ops")
            .await
            .unwrap()
            .timers
            .is_empty()
    );
    assert!(
        !m.client
            .delete_schedule("alarm", "ops", "nightly")
            .await
            .unwrap()
            .deleted
    );
}

crate::on_both_stores!(
    a_timer_fires_once_at_its_time_and_after_a_master_is_killed,
    failing_handlers_are_retried_with_back_off_then_dropped_and_counted,
    cancel_removes_a_pending_timer_and_the_cap_answers,
    a_schedule_runs_each_second_stops_when_unscheduled_and_skips_missed_slots,
);
