//! `meshplay bench egress`: what `http.fetch` costs, and what tenants
//! waiting on a slow upstream cost their neighbours.
//!
//! An upstream runs in this process on loopback (`/fast` answers at once,
//! `/slow` after `--slow-ms`); the master this benchmark starts opens
//! 127.0.0.1/32 to its workers' fetches. Figures, each over `--duration`:
//!
//! 1. `baseline/bare-fetch`: hyper-util's client GETs `/fast`, 1 in flight;
//! 2. `egress/echo-1`: an echo dispatch straight through the hub, 1 in
//!    flight (what a dispatch costs without a fetch);
//! 3. `egress/fetch-1`: a dispatch whose handler fetches `/fast`, 1 in
//!    flight; its p50 less the two above is what the egress path adds;
//! 4. `egress/echo-alone`: echo dispatches at `--concurrency`;
//! 5. `egress/echo-beside-waiters`: the same while `--waiting` tenants
//!    (other tenants of the same workers) each wait on `/slow`, again and
//!    again; its p99 against 4's is the check.

use crate::bench::figures::{Check, Figure, Report};
use crate::bench::load::{LoadPlan, Measured, drive};
use crate::bench::{BenchError, InProcess, Launch};
use crate::master::shard;
use crate::mesophyll::hub::{Hub, HubConfig, HubError};
use crate::mesophyll::message::{EgressPolicy, Event, ServerMessage, Tenant};
use axum::Router;
use axum::extract::Query;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// What the benchmark is told.
#[derive(Debug, Clone)]
pub struct EgressOptions {
    /// Worker processes.
    pub workers: u32,
    /// How long each figure runs.
    pub duration: Duration,
    /// Echo callers at once in figures 4 and 5.
    pub concurrency: usize,
    /// Tenants waiting on the slow upstream during figure 5.
    pub waiting: u32,
    /// How late the slow upstream answers.
    pub slow: Duration,
    /// Print progress lines.
    pub progress: bool,
}

const FETCHER: &str = "return { fetch = function(event) return http.fetch(event.data).status end }";

/// Runs the benchmark.
pub async fn run(opts: EgressOptions) -> Result<Report, BenchError> {
    let upstream = upstream().await?;
    let origin = format!("http://{upstream}");
    let manifest = format!(
        "name = \"fetcher\"\nversion = \"1\"\nevents = [\"fetch\"]\nallowed_hosts = [\"{origin}\"]\n"
    );
    let hub = HubConfig {
        egress: EgressPolicy {
            open_networks: vec!["127.0.0.1/32".into()],
            max_per_worker: opts.waiting.max(256),
            ..EgressPolicy::default()
        },
        ..HubConfig::default()
    };
    let fleet = InProcess::launch(Launch {
        workers: opts.workers,
        external: 0,
        store: None,
        worker_threads: 1,
        hub,
        plugins: vec![("fetcher".into(), manifest, FETCHER.into())],
        timers: crate::master::timers::TimerConfig::default(),
        nats: None,
    })
    .await?;
    let measured = measure(&opts, &fleet, &origin).await;
    fleet.stop().await;
    measured
}

async fn measure(
    opts: &EgressOptions,
    fleet: &InProcess,
    origin: &str,
) -> Result<Report, BenchError> {
    let plan = |label: &str, concurrency: usize| LoadPlan {
        label: label.into(),
        concurrency,
        duration: opts.duration,
        progress: opts.progress,
    };
    let hub = Arc::clone(&fleet.master.hub);
    let workers = fleet.workers;
    let fast = format!("{origin}/fast");

    let bare = bare_client(&plan("baseline/bare-fetch", 1), &fast).await;
    let echo1 = echo(&plan("egress/echo-1", 1), &hub, workers).await;
    let fetch1 = {
        let (hub, fast) = (Arc::clone(&hub), fast.clone());
        drive(&plan("egress/fetch-1", 1), move |_| {
            let (hub, fast) = (Arc::clone(&hub), fast.clone());
            async move { dispatch(&hub, workers, Tenant::new("fetcher", "0"), "fetch", &fast).await }
        })
        .await
    };
    let alone = echo(&plan("egress/echo-alone", opts.concurrency), &hub, workers).await;
    let slow = format!("{origin}/slow?ms={}", opts.slow.as_millis());
    let waiters = Waiters::start(&hub, workers, opts.waiting, &slow);
    // Every waiter has its first fetch in flight before the echoes start.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let beside = echo(
        &plan("egress/echo-beside-waiters", opts.concurrency),
        &hub,
        workers,
    )
    .await;
    let (waited, waiter_errors) = waiters.stop().await;

    let bare_f = Figure::new("baseline/bare-fetch", &bare);
    let echo1_f = Figure::new("egress/echo-1", &echo1);
    let fetch1_f = Figure::new("egress/fetch-1", &fetch1);
    let alone_f = Figure::new("egress/echo-alone", &alone);
    let beside_f = Figure::new("egress/echo-beside-waiters", &beside).against(&alone_f);
    let overhead = fetch1_f.p50_us - echo1_f.p50_us - bare_f.p50_us;
    let checks = vec![
        Check {
            name: "fetch overhead at 1 in flight: fetch-1 p50 - echo-1 p50 - bare p50, µs".into(),
            value: overhead,
            target: "reported".into(),
            met: true,
        },
        Check {
            name: format!(
                "echo p99 beside {} waiting tenants / echo p99 alone",
                opts.waiting
            ),
            value: beside_f.p99_us / alone_f.p99_us.max(1.0),
            target: "<= 2".into(),
            met: beside_f.p99_us <= 2.0 * alone_f.p99_us.max(1.0),
        },
        Check {
            name: "slow fetches the waiters completed (errors beside them)".into(),
            value: waited as f64,
            target: format!("errors: {waiter_errors:?}"),
            met: waiter_errors.is_empty(),
        },
    ];
    Ok(Report {
        bench: "egress".into(),
        params: BTreeMap::from([
            ("workers".into(), workers.to_string()),
            ("duration".into(), format!("{:?}", opts.duration)),
            ("concurrency".into(), opts.concurrency.to_string()),
            ("waiting".into(), opts.waiting.to_string()),
            ("slow".into(), format!("{:?}", opts.slow)),
        ]),
        figures: vec![bare_f, echo1_f, fetch1_f, alone_f, beside_f],
        checks,
    })
}

/// The loopback upstream: `/fast` at once, `/slow?ms=` after that long.
async fn upstream() -> Result<SocketAddr, BenchError> {
    let app = Router::new().route("/fast", get(|| async { "ok" })).route(
        "/slow",
        get(|Query(q): Query<HashMap<String, u64>>| async move {
            tokio::time::sleep(Duration::from_millis(q.get("ms").copied().unwrap_or(2000))).await;
            "late"
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

async fn bare_client(plan: &LoadPlan, url: &str) -> Measured {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let url: hyper::Uri = url.parse().expect("the upstream's URL parses");
    drive(plan, move |_| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let res = client.get(url).await.map_err(|_| "network".to_owned())?;
            res.into_body()
                .collect()
                .await
                .map(|_| ())
                .map_err(|_| "network".to_owned())
        }
    })
    .await
}

async fn echo(plan: &LoadPlan, hub: &Arc<Hub>, workers: u32) -> Measured {
    let hub = Arc::clone(hub);
    drive(plan, move |n| {
        let hub = Arc::clone(&hub);
        async move {
            let tenant = Tenant::new("user", (n % 64).to_string());
            dispatch(&hub, workers, tenant, "echo", "x").await
        }
    })
    .await
}

/// One waited dispatch of `name` with `data` to `tenant`, through the hub.
async fn dispatch(
    hub: &Hub,
    workers: u32,
    tenant: Tenant,
    name: &str,
    data: &str,
) -> Result<(), String> {
    let worker = shard::worker_for(&tenant, workers);
    let build = |req_id| ServerMessage::DispatchEvent {
        req_id: Some(req_id),
        tenant,
        event: Event {
            name: name.into(),
            data: serde_json::json!(data).into(),
            ..Default::default()
        },
        deadline_ms: 10_000,
    };
    match hub.request(worker, Duration::from_secs(11), build).await {
        Ok(_) => Ok(()),
        Err(HubError::Remote(e)) => Err(e.kind.as_str().to_owned()),
        Err(HubError::Overloaded(_)) => Err("overloaded".into()),
        Err(HubError::DeadlineExceeded { .. }) => Err("deadline_exceeded".into()),
        Err(_) => Err("worker_unavailable".into()),
    }
}

/// Tenants that fetch the slow upstream again and again until stopped.
struct Waiters {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<Option<String>>>,
}

impl Waiters {
    fn start(hub: &Arc<Hub>, workers: u32, n: u32, slow: &str) -> Waiters {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let tasks = (0..n)
            .map(|i| {
                let (hub, stop, done, slow) =
                    (Arc::clone(hub), stop.clone(), done.clone(), slow.to_owned());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let tenant = Tenant::new("fetcher", format!("waiter-{i}"));
                        if let Err(e) = dispatch(&hub, workers, tenant, "fetch", &slow).await {
                            return Some(e);
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    None
                })
            })
            .collect();
        Waiters { stop, done, tasks }
    }

    /// Stops them after their fetch in flight; what they completed and the
    /// errors they met.
    async fn stop(self) -> (u64, BTreeMap<String, u64>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut errors = BTreeMap::new();
        for t in self.tasks {
            if let Ok(Some(e)) = t.await {
                *errors.entry(e).or_default() += 1;
            }
        }
        (self.done.load(Ordering::Relaxed), errors)
    }
}
