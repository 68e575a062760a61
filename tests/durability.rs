//! What an acknowledged write survives, on both backends: `kill -9` of the
//! master after writes, and `kill -9` in the middle of 64 concurrent
//! writers, three times over. (Power loss is not something a test can do
//! here; the README says what each backend promises.)

mod common;

use common::api::{concurrent_incr, first_value};
use common::{Master, Opts, event};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

async fn acknowledged_writes_survive_kill_9_of_the_master(opts: Opts) {
    let mut m = Master::start(opts.clone()).await;
    let expected = concurrent_incr(&m.client, 16, 8).await;
    // Plus writes through the REST API.
    for i in 0..20 {
        m.client
            .kv_set("user", "1", "rest", &format!("k{i}"), &json!(i))
            .await
            .unwrap();
    }
    m.child.kill().unwrap();
    m.child.wait().unwrap();

    let dir = m.dir.clone();
    let m2 = Master::start_in(opts.clone(), dir).await;
    for t in 0..16 {
        let r = m2
            .client
            .kv_get("counter", &t.to_string(), "counter", "value")
            .await
            .unwrap();
        assert_eq!(r.map(|r| r.value), Some(json!(expected)), "tenant {t}");
    }
    let page = m2
        .client
        .kv_find("user", "1", "rest", "%", None)
        .await
        .unwrap();
    assert_eq!(page.records.len(), 20);
    // And the counter plugin carries on from there.
    let v = first_value(&m2.client, "counter", "0", &event("incr", Value::Null)).await;
    assert_eq!(v, expected + 1);
}

const WRITERS: usize = 64;

/// 64 writers, each setting its own keys one after another through the
/// REST API (a 200 is an acknowledged, durable write), until the master is
/// killed under them; then a new master on the same store must have every
/// write that was acknowledged. Three rounds, on the store as it is.
async fn no_acknowledged_write_is_lost_when_the_master_dies_under_64_writers(opts: Opts) {
    let mut m = Master::start(opts.clone()).await;
    let mut total = 0;
    for round in 0..3 {
        let dying = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let client = m.client.clone();
                let dying = Arc::clone(&dying);
                tokio::spawn(async move {
                    let (tenant, scope) = (format!("w{w}"), format!("round{round}"));
                    let mut acked = Vec::new();
                    for n in 0u64.. {
                        let key = format!("k{n:06}");
                        match client
                            .kv_set("durable", &tenant, &scope, &key, &json!(n))
                            .await
                        {
                            Ok(_) => acked.push(key),
                            // Refused before the kill is a bug; after it,
                            // the end of this writer.
                            Err(e) => {
                                assert!(dying.load(Ordering::SeqCst), "writer {w}: {e}");
                                break;
                            }
                        }
                    }
                    (tenant, acked)
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        dying.store(true, Ordering::SeqCst);
        m.child.kill().unwrap();
        m.child.wait().unwrap();
        let mut acked = Vec::new();
        for w in writers {
            acked.push(w.await.unwrap());
        }
        let dir = m.dir.clone();
        m = Master::start_in(opts.clone(), dir).await;
        let mut lost = Vec::new();
        let mut count = 0;
        for (tenant, keys) in &acked {
            count += keys.len();
            let scope = format!("round{round}");
            let mut stored = Vec::new();
            let mut after = None;
            loop {
                let page = m
                    .client
                    .kv_find("durable", tenant, &scope, "%", after.as_deref())
                    .await
                    .unwrap();
                stored.extend(page.records.into_iter().map(|r| r.key));
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            lost.extend(
                keys.iter()
                    .filter(|k| !stored.contains(k))
                    .map(|k| format!("{tenant}/{k}")),
            );
        }
        assert!(
            count > WRITERS,
            "round {round}: only {count} writes were acknowledged"
        );
        assert!(
            lost.is_empty(),
            "round {round}: {} of {count} acknowledged writes lost: {lost:?}",
            lost.len()
        );
        println!("round {round}: {count} acknowledged writes from {WRITERS} writers, 0 lost");
        total += count;
    }
    println!("{total} acknowledged writes in 3 rounds, 0 lost");
}

crate::on_both_stores!(
    acknowledged_writes_survive_kill_9_of_the_master,
    no_acknowledged_write_is_lost_when_the_master_dies_under_64_writers,
);
