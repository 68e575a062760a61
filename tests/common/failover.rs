//! The rounds the standby tests put a cluster of masters through
//! (`standby.rs` on loopback, `netns_standby.rs` across network
//! namespaces): load on both shards all through, the leader killed,
//! paused and cut off from the database three times each, and what each
//! must show.

use meshplay::bench::failover::Prober;
use meshplay::bench::failover::cluster::{Cluster, ClusterPlan, Part};
use meshplay::client::{ApiClient, ApiClientError, DispatchOutcome};
use meshplay::mesophyll::message::Tenant;
use meshplay::rest::DispatchRequest;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The lease every master of the tests runs with.
pub const LEASE_TTL_MS: u64 = 2000;

/// Two masters and two workers with the repository's plugins and filters,
/// working in `dir`, each master given `serve_args` too.
pub fn plan(dir: &std::path::Path, serve_args: Vec<String>) -> ClusterPlan {
    ClusterPlan {
        exe: super::EXE.into(),
        dir: dir.to_owned(),
        plugins: super::plugins_dir(),
        filters: super::filters_dir(),
        masters: 2,
        workers: 2,
        lease_ttl_ms: LEASE_TTL_MS,
        lease_renew_ms: 1000,
        lease_poll_ms: 250,
        heartbeat_timeout_ms: 2000,
        serve_args,
    }
}

/// What the load saw.
#[derive(Default)]
pub struct Ledger {
    /// Per key: the last value acknowledged, and values tried after it
    /// whose fate is unknown.
    writes: BTreeMap<String, (Option<i64>, Vec<i64>)>,
    /// Per counting tenant: every count answered, in order.
    counts: BTreeMap<String, Vec<i64>>,
    /// Per counting tenant: increments whose fate is unknown.
    unknown_counts: BTreeMap<String, u64>,
    /// Failures by what the client said.
    errors: BTreeMap<String, u64>,
}

fn kind(e: &ApiClientError) -> String {
    e.code().map_or_else(|| "connect".to_owned(), str::to_owned)
}

/// Writes KV and counts on both shards, one request after another, until
/// `stop` is set (never aborted: a request cut short would go unrecorded).
pub fn load(
    client: ApiClient,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let tenants: Vec<Tenant> = (0..2)
        .map(|w| super::tenants_on("user", w, 2, 1).remove(0))
        .collect();
    tokio::spawn(async move {
        let incr = DispatchRequest {
            name: "incr".into(),
            data: serde_json::json!({}),
            wait: true,
            timeout_ms: Some(3000),
        };
        for n in 0i64.. {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            for t in &tenants {
                let key = format!("k{}", n % 16);
                let written = client
                    .kv_set(&t.kind, &t.id, "s", &key, &serde_json::json!(n))
                    .await;
                let counted = client.dispatch(&t.kind, &t.id, &incr).await;
                let mut l = ledger.lock().unwrap();
                let entry = l.writes.entry(format!("{}/{key}", t.id)).or_default();
                match written {
                    Ok(_) => *entry = (Some(n), Vec::new()),
                    Err(e) => {
                        entry.1.push(n);
                        *l.errors.entry(format!("kv: {}", kind(&e))).or_default() += 1;
                    }
                }
                match counted {
                    Ok(DispatchOutcome::Done(d)) => match &d.results[0].value {
                        Some(v) => l
                            .counts
                            .entry(t.id.clone())
                            .or_default()
                            .push(v.as_i64().unwrap()),
                        None => {
                            // The handler failed (its KV call, say): it may
                            // have written before it did.
                            *l.unknown_counts.entry(t.id.clone()).or_default() += 1;
                            let code = d.results[0].error.as_ref().map_or("?", |e| &e.code);
                            *l.errors.entry(format!("incr: {code}")).or_default() += 1;
                        }
                    },
                    Ok(other) => panic!("a waited dispatch answered {other:?}"),
                    Err(e) => {
                        *l.unknown_counts.entry(t.id.clone()).or_default() += 1;
                        *l.errors.entry(format!("incr: {}", kind(&e))).or_default() += 1;
                    }
                }
            }
        }
    })
}

/// Does `fault` to the leader and heals it, checking what each fault
/// must show; answers the round's outage.
pub async fn round(cluster: &mut Cluster, prober: &Prober, fault: &str) -> Duration {
    let old = cluster.wait_serving(Duration::from_secs(60)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let from = Instant::now() - Duration::from_secs(1);
    let mut probe = None;
    let at = Instant::now();
    match fault {
        "kill" => cluster.kill(old),
        "pause" => {
            cluster.pause(old);
            // Sent to the paused leader: it waits in its socket.
            let client = cluster.client_of(old);
            probe = Some(tokio::spawn(async move {
                let t = Tenant::new("user", "probe");
                client
                    .kv_set(&t.kind, &t.id, "s", "fenced", &serde_json::json!("written"))
                    .await
            }));
        }
        "cut" => cluster.cut(old),
        _ => unreachable!(),
    }
    if fault == "cut" {
        // It must step down within its lease, by its own clock.
        cluster
            .wait_part(
                old,
                Part::Stands,
                Duration::from_millis(LEASE_TTL_MS + 1500),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
        let took = at.elapsed();
        assert!(
            took < Duration::from_millis(LEASE_TTL_MS + 1500),
            "{took:?}"
        );
    }
    let new = cluster
        .wait_other_leader(old, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    let outage = prober
        .recovered(from, Instant::now(), Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    match fault {
        "kill" => cluster.restart(old).unwrap(),
        "pause" => cluster.resume(old),
        _ => cluster.restore(old),
    }
    if let Some(probe) = probe {
        let refused = probe.await.unwrap().unwrap_err();
        assert_eq!(refused.code(), Some("not_leader"), "{refused}");
        let seen = cluster
            .client()
            .kv_get("user", "probe", "s", "fenced")
            .await;
        assert!(
            matches!(seen, Ok(None)),
            "the paused leader wrote after waking: {seen:?}"
        );
    }
    cluster
        .wait_part(old, Part::Stands, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    eprintln!("{fault}: master {old} -> {new}, outage {outage:?}");
    outage
}

/// Every acknowledged write is there (or a later one whose fate was
/// unknown), and no increment ran twice.
pub async fn check_ledger(client: &ApiClient, ledger: &Ledger) {
    for (path, (acked, unknown)) in &ledger.writes {
        let Some(acked) = acked else { continue };
        let (id, key) = path.split_once('/').unwrap();
        let record = client.kv_get("user", id, "s", key).await.unwrap();
        let stored = record.map(|r| r.value.as_i64().unwrap());
        let stored = stored.unwrap_or_else(|| panic!("{path}: gone, but {acked} was acknowledged"));
        assert!(
            stored == *acked || unknown.contains(&stored),
            "{path}: {stored}, but {acked} was acknowledged (unknown after it: {unknown:?})"
        );
    }
    let req = DispatchRequest {
        name: "count".into(),
        data: serde_json::json!({}),
        wait: true,
        timeout_ms: None,
    };
    for (id, counts) in &ledger.counts {
        assert!(
            counts.windows(2).all(|w| w[0] < w[1]),
            "{id}: a count answered twice or out of order: {counts:?}"
        );
        let DispatchOutcome::Done(d) = client.dispatch("user", id, &req).await.unwrap() else {
            unreachable!()
        };
        let now = d.results[0].value.as_ref().unwrap().as_i64().unwrap();
        let acked = counts.len() as i64;
        let unknown = *ledger.unknown_counts.get(id).unwrap_or(&0) as i64;
        assert!(
            acked <= now && now <= acked + unknown,
            "{id}: count {now}, {acked} increments acknowledged, {unknown} unknown"
        );
    }
}

/// Puts `cluster` through every round under load and checks the ledger.
pub async fn rounds(cluster: &mut Cluster) {
    let client = cluster
        .client()
        .with_request_timeout(Duration::from_secs(4));
    let prober = Prober::start(client.clone(), 2, "echo", Duration::from_secs(2));
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = load(client.clone(), Arc::clone(&ledger), Arc::clone(&stop));

    let mut outages = Vec::new();
    for fault in ["kill", "pause", "cut"] {
        for _ in 0..3 {
            outages.push((fault, round(cluster, &prober, fault).await));
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    let leader = cluster.wait_serving(Duration::from_secs(60)).await.unwrap();
    check_metrics(cluster, leader).await;
    check_stream(cluster, leader).await;
    let ledger = std::mem::take(&mut *ledger.lock().unwrap());
    eprintln!("outages: {outages:?}\nfailures: {:?}", ledger.errors);
    assert!(
        ledger.writes.values().filter(|(a, _)| a.is_some()).count() >= 16,
        "too few writes acknowledged to show anything: {:?}",
        ledger.writes
    );
    assert!(
        !ledger.errors.keys().any(|k| k.ends_with("not_leader")),
        "a standby's refusal reached the caller: {:?}",
        ledger.errors
    );
    check_ledger(&cluster.client(), &ledger).await;
}

/// `/metrics` of every master says whether it leads, and that its part
/// changed (each took the lease or lost it in the rounds).
async fn check_metrics(cluster: &Cluster, leader: usize) {
    for (i, m) in cluster.masters.iter().enumerate() {
        let (status, body) = super::raw(m.api, "GET", "/metrics", None, "text/plain", vec![]).await;
        assert_eq!(status, 200);
        let text = body.as_str().unwrap();
        let leads = i64::from(i == leader);
        assert!(
            text.contains(&format!("\nmeshplay_leader {leads}\n")),
            "master {i}:\n{text}"
        );
        let changes: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("meshplay_leadership_changes_total "))
            .unwrap_or_else(|| panic!("master {i}: no leadership changes:\n{text}"))
            .parse()
            .unwrap();
        assert!(changes >= 1.0, "master {i}: {changes}");
    }
}

/// The binary stream, given a standby first, opens the leader's.
async fn check_stream(cluster: &Cluster, leader: usize) {
    let mut order: Vec<usize> = (0..cluster.masters.len())
        .filter(|i| *i != leader)
        .collect();
    order.push(leader);
    let urls: Vec<String> = order
        .iter()
        .map(|i| format!("http://{}", cluster.masters[*i].api))
        .collect();
    let client = ApiClient::connect_to(&urls.join(","), cluster.token.clone(), None).unwrap();
    let stream = meshplay::client::StreamClient::connect(&client)
        .await
        .unwrap();
    let echo = DispatchRequest {
        name: "echo".into(),
        data: serde_json::json!({"via": "stream"}),
        wait: true,
        timeout_ms: None,
    };
    let answer = stream.dispatch("user", "stream", echo).await.unwrap();
    assert!(matches!(answer, DispatchOutcome::Done(_)), "{answer:?}");
}
