//! `meshplay bench kv`: Get, durable Set and Find over the DB endpoints, as a
//! worker calls them (HTTP/2, MessagePack, worker credentials), against a
//! bare HTTP/2 echo with the same concurrency and bare sled; with `--store
//! postgres://...`, on that database against pgbench on the same one.

use crate::bench::figures::{Check, Figure, Report};
use crate::bench::load::{LoadPlan, Measured, drive};
use crate::bench::{BenchError, InProcess, baseline, pgbench};
use crate::datadir::DataDir;
use crate::master::store::StoreUrl;
use crate::mesophyll::db::{KvOp, KvReply};
use crate::mesophyll::db_client::{DbClient, DbClientError};
use crate::mesophyll::message::Tenant;
use std::collections::BTreeMap;
use std::time::Duration;

/// What to run.
#[derive(Debug, Clone)]
pub struct KvOptions {
    /// Callers at once.
    pub concurrency: usize,
    /// How long each figure runs.
    pub duration: Duration,
    /// Bytes of each value set.
    pub value_len: usize,
    /// Measure the raw limits too.
    pub baseline: bool,
    /// Print progress lines.
    pub progress: bool,
    /// The store under test (`None`: sled in a temporary directory). On
    /// PostgreSQL the peer is pgbench's simple-update on the same database.
    pub store: Option<StoreUrl>,
}

const DEADLINE: Duration = Duration::from_secs(10);
const KEYS: u64 = 500;
const TENANTS: u64 = 8;

fn tenant(n: u64) -> Tenant {
    Tenant {
        kind: "user".into(),
        id: format!("bench-{}", n % TENANTS),
    }
}

fn kind(e: &DbClientError) -> String {
    match e {
        DbClientError::Timeout(_) => "timeout",
        DbClientError::TooLarge(_) => "too_large",
        DbClientError::Forbidden(_) | DbClientError::Refused(_) => "refused",
        DbClientError::Transport(_) => "transport",
        _ => "store",
    }
    .into()
}

async fn op(db: &DbClient, n: u64, op: KvOp) -> Result<(), String> {
    match db.kv(&tenant(n), &op, DEADLINE).await {
        Ok(KvReply::Found { .. } | KvReply::Record(Some(_)) | KvReply::Stored(_)) => Ok(()),
        Ok(_) => Err("unexpected".into()),
        Err(e) => Err(kind(&e)),
    }
}

/// The load of one figure.
fn plan(opts: &KvOptions, label: &str) -> LoadPlan {
    LoadPlan {
        label: label.into(),
        concurrency: opts.concurrency,
        duration: opts.duration,
        progress: opts.progress,
    }
}

/// Set, Get and Find from a worker's seat, against a master started for
/// them (every key written before Get and Find are timed).
async fn measure(opts: &KvOptions) -> Result<(Measured, Measured, Measured), BenchError> {
    let load = |label: &str| plan(opts, label);
    // One worker, left to us: its credentials are how this benchmark calls.
    let m = InProcess::start_on(1, 1, opts.store.clone(), 1).await?;
    let token = DataDir::at(m.data_dir())
        .worker_token(0)
        .map_err(|e| BenchError::Target(e.to_string()))?;
    let db = DbClient::new(
        &crate::mesophyll::addresses::Addresses::one(m.master.mesophyll_addr.to_string()),
        0,
        &token,
        None,
    );
    let value = serde_json::Value::String("x".repeat(opts.value_len));
    let set = |n: u64, value: &serde_json::Value| KvOp::Set {
        scope: "bench".into(),
        key: format!("k{:04}", (n / TENANTS) % KEYS),
        value: value.clone(),
    };
    // Every key exists before Get and Find are timed.
    {
        use futures::{StreamExt, TryStreamExt};
        futures::stream::iter(0..KEYS * TENANTS)
            .map(|n| op(&db, n, set(n, &value)))
            .buffer_unordered(64)
            .try_collect::<Vec<()>>()
            .await
            .map_err(BenchError::Target)?;
    }

    let (d, v) = (db.clone(), value.clone());
    let sets = drive(&load("kv/set"), move |n| {
        let (d, op_) = (d.clone(), set(n, &v));
        async move { op(&d, n, op_).await }
    })
    .await;
    let d = db.clone();
    let gets = drive(&load("kv/get"), move |n| {
        let d = d.clone();
        let get = KvOp::Get {
            scope: "bench".into(),
            key: format!("k{:04}", (n / TENANTS) % KEYS),
        };
        async move { op(&d, n, get).await }
    })
    .await;
    let d = db.clone();
    let finds = drive(&load("kv/find"), move |n| {
        let d = d.clone();
        let find = KvOp::Find {
            scope: "bench".into(),
            pattern: format!("k0{}%", n % 5),
            limit: Some(100),
            after: None,
        };
        async move { op(&d, n, find).await }
    })
    .await;
    m.stop().await;
    Ok((sets, gets, finds))
}

/// Runs the benchmark and returns its report.
///
/// Fails when its master does not start or a baseline cannot run.
pub async fn run(opts: KvOptions) -> Result<Report, BenchError> {
    let load = |label: &str| plan(&opts, label);
    let (sets, gets, finds) = measure(&opts).await?;

    let mut figures = Vec::new();
    let mut checks = Vec::new();
    let set = Figure::new("kv/set (durable)", &sets);
    let get = Figure::new("kv/get", &gets);
    let find = Figure::new("kv/find (100 keys)", &finds);
    let postgres = match &opts.store {
        Some(StoreUrl::Postgres(url)) => Some(url.clone()),
        _ => None,
    };
    if postgres.is_none() {
        checks.push(Check {
            name: format!("durable set ops/s with {} writers", opts.concurrency),
            value: set.rate,
            target: ">= 20000 (at 64 writers)".into(),
            met: set.rate >= 20_000.0,
        });
    }
    if let (true, Some(url)) = (opts.baseline, postgres) {
        let Some(pgbench) = pgbench::find() else {
            return Err(BenchError::Target(
                "no pgbench to compare with (apt-get install postgresql)".into(),
            ));
        };
        let (clients, duration) = (opts.concurrency, opts.duration);
        let peer = tokio::task::spawn_blocking(move || {
            pgbench::simple_update(&pgbench, &url, clients, duration)
        })
        .await
        .map_err(|e| BenchError::Target(e.to_string()))??;
        let peer = Figure::new("peer/pgbench-simple-update", &peer);
        checks.push(Check::ratio_at_least(
            "kv set / pgbench simple-update (same database, same clients)",
            set.rate,
            peer.rate,
            0.5,
        ));
        figures.push(set.against(&peer));
        figures.extend([get, find, peer]);
    } else if opts.baseline {
        let body = crate::mesophyll::codec::encode(&KvOp::Get {
            scope: "bench".into(),
            key: "k0000".into(),
        })
        .map_err(|e| BenchError::Target(e.to_string()))?;
        let h2 = Figure::new(
            "baseline/h2-echo",
            &baseline::h2_echo(&load("baseline/h2-echo"), body).await?,
        );
        let (sled_set, sled_get) = tokio::task::spawn_blocking({
            let (d, len) = (opts.duration, opts.value_len);
            move || baseline::sled_ops(d, len)
        })
        .await
        .map_err(|e| BenchError::Target(e.to_string()))??;
        let sled_set = Figure::new("baseline/sled-set+flush", &sled_set);
        let sled_get = Figure::new("baseline/sled-get", &sled_get);
        checks.push(Check::ratio_at_least(
            "kv get / h2 echo (same concurrency)",
            get.rate,
            h2.rate,
            0.5,
        ));
        figures.push(set.against(&sled_set));
        figures.push(get.against(&h2));
        figures.push(find.against(&h2));
        figures.extend([h2, sled_set, sled_get]);
    } else {
        figures.extend([set, get, find]);
    }
    let params = BTreeMap::from([
        ("concurrency".to_string(), opts.concurrency.to_string()),
        ("duration".to_string(), format!("{:?}", opts.duration)),
        ("value_bytes".to_string(), opts.value_len.to_string()),
        ("keys".to_string(), (KEYS * TENANTS).to_string()),
        (
            "store".to_string(),
            opts.store
                .as_ref()
                .map_or("sled (temporary)".into(), StoreUrl::redacted),
        ),
    ]);
    Ok(Report {
        bench: "kv".into(),
        params,
        figures,
        checks,
    })
}
