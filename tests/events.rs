//! `events.emit` and `events.emit_to` through a real master and two real
//! workers: an event reaches a tenant of another shard, only after its
//! handler succeeds, only to the types the manifest grants, and a chain of
//! handlers answering each other stops at the hop limit, counted.

mod common;

use common::api::upload;
use common::{Master, Opts, event, eventually, tenants_on};
use meshplay::client::{ApiClient, DispatchOutcome};
use serde_json::{Value, json};
use std::time::Duration;

const MANIFEST: &str = r#"name = "herald"
version = "1"
events = ["announce", "received", "bounce", "fail_after_emit", "to_user"]
emits_to = ["guild"]
"#;

const HERALD: &str = r#"
return {
    announce = function(event)
        events.emit_to("guild", event.data.guild, "received", { from = meshplay.tenant.id, text = event.data.text })
        events.emit("received", { from = "myself" })
        return "sent"
    end,
    received = function(event)
        local got = kv.get("got") or {}
        table.insert(got, event.data)
        kv.set("got", got)
        return #got
    end,
    bounce = function(event)
        kv.set("bounces", (kv.get("bounces") or 0) + 1)
        local ok, err = pcall(events.emit, "bounce", {})
        if not ok then kv.set("stopped", tostring(err)) end
        return ok
    end,
    fail_after_emit = function(event)
        events.emit_to("guild", event.data.guild, "received", { from = "a failed handler" })
        error("boom")
    end,
    to_user = function(event)
        events.emit_to("user", "1", "received", {})
    end,
}
"#;

async fn kv(c: &ApiClient, kind: &str, id: &str, key: &str) -> Option<Value> {
    c.kv_get(kind, id, "default", key)
        .await
        .unwrap()
        .map(|r| r.value)
}

async fn dispatch(c: &ApiClient, kind: &str, id: &str, name: &str, data: Value) -> Value {
    match c.dispatch(kind, id, &event(name, data)).await.unwrap() {
        DispatchOutcome::Done(d) => {
            let r = &d.results[0];
            match &r.error {
                Some(e) => json!({ "error": e.code, "message": e.message }),
                None => r.value.clone().unwrap(),
            }
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_other_shards_after_success_and_stop_at_the_hop_limit() {
    let m = Master::start(Opts::default()).await;
    let c = &m.client;
    c.put_plugin("herald", &upload(MANIFEST, HERALD))
        .await
        .unwrap();
    // The user on worker 0, the guild on worker 1: the event crosses shards.
    let user = tenants_on("user", 0, 2, 1).remove(0);
    let guild = tenants_on("guild", 1, 2, 1).remove(0);

    let data = json!({ "guild": guild.id, "text": "hello" });
    assert_eq!(
        dispatch(c, "user", &user.id, "announce", data).await,
        "sent"
    );
    let got = eventually(Duration::from_secs(10), "the guild's event", || async {
        kv(c, "guild", &guild.id, "got").await
    })
    .await;
    assert_eq!(got, json!([{ "from": user.id, "text": "hello" }]));
    let mine = eventually(Duration::from_secs(10), "the user's own event", || async {
        kv(c, "user", &user.id, "got").await
    })
    .await;
    assert_eq!(mine, json!([{ "from": "myself" }]));

    // A failed handler emits nothing.
    let failed = dispatch(
        c,
        "user",
        &user.id,
        "fail_after_emit",
        json!({ "guild": guild.id }),
    )
    .await;
    assert_eq!(failed["error"], "runtime", "{failed}");

    // Only to the types the manifest grants.
    let refused = dispatch(c, "user", &user.id, "to_user", json!({})).await;
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("emits_to = [\"user\"]"),
        "{refused}"
    );

    // A handler that answers itself runs once from outside and 8 times
    // more; the ninth emit raises.
    dispatch(c, "user", &user.id, "bounce", json!({})).await;
    let stopped = eventually(Duration::from_secs(20), "the chain to stop", || async {
        kv(c, "user", &user.id, "stopped").await
    })
    .await;
    assert!(
        stopped.as_str().unwrap().contains("limit is 8"),
        "{stopped}"
    );
    assert_eq!(kv(c, "user", &user.id, "bounces").await, Some(json!(9)));

    // By now the failed handler's event would have arrived.
    assert_eq!(
        kv(c, "guild", &guild.id, "got")
            .await
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let metrics = eventually(
        Duration::from_secs(5),
        "the hop limit in /metrics",
        || async {
            let (text, _) = common::scrape(&m).await;
            text.lines()
                .any(|l| l.starts_with("meshplay_event_hop_limit_total{worker=\"0\"} 1"))
                .then_some(text)
        },
    )
    .await;
    // 2 from announce, 8 from the chain.
    assert!(
        metrics.contains("meshplay_emitted_events_total{result=\"queued\"} 10"),
        "{metrics}"
    );
}
