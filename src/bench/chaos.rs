//! `meshplay bench chaos`: faults under load, with real processes.
//!
//! The master (`meshplay serve`) runs as a child process; this process is
//! the client, so its load is what an application's would be. Three cases:
//!
//! 1. **Kills**: steady REST load (echo, many tenants) while a random worker
//!    is SIGKILLed every `kill_every`. A request sent to a worker that dies
//!    fails at once (it may have run; never replayed); a request for a shard
//!    whose worker is restarting waits for it. So the failures must not
//!    exceed the requests that were in flight on the killed workers (the
//!    master counts them: `lost_in_flight`), no request may outlive its
//!    deadline, and every worker must run again shortly after each kill.
//! 2. **A hang**: one worker SIGSTOPped under load must be declared dead
//!    within the heartbeat timeout (and restarted).
//! 3. **The master killed**: `writers` clients do durable KV sets while the
//!    master is SIGKILLed; restarted on the same data directory, it must
//!    hold every write it acknowledged.

use crate::bench::BenchError;
use crate::bench::figures::{Check, Figure, Report};
use crate::bench::load::{LoadPlan, drive};
use crate::bench::served::Served;
use crate::client::{ApiClient, ApiClientError};
use crate::mesophyll::message::Tenant;
use crate::rest::{DispatchRequest, WorkerState};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    /// The `meshplay` executable that runs the master.
    pub exe: PathBuf,
    /// Worker processes.
    pub workers: u32,
    /// How long the kill case runs.
    pub duration: Duration,
    /// One SIGKILL this often.
    pub kill_every: Duration,
    /// Clients at once.
    pub concurrency: usize,
    /// Distinct tenants the events go to.
    pub tenants: u32,
    /// Every request's budget.
    pub timeout_ms: u64,
    /// The master's heartbeat timeout (the hang case is held to it).
    pub heartbeat_timeout_ms: u64,
    /// Run the hang case.
    pub hang: bool,
    /// Rounds of the master-kill case (0: skip it).
    pub master_rounds: u32,
    /// Durable writers in the master-kill case.
    pub writers: usize,
    /// How long they write before the master is killed.
    pub write_for: Duration,
    /// Draw a progress line.
    pub progress: bool,
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a pid we read from the master's own worker list.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

fn kind(e: &ApiClientError) -> String {
    e.code()
        .map_or_else(|| "transport".to_owned(), str::to_owned)
}

/// Runs every case and reports its figures and checks.
pub async fn run(opts: ChaosOptions) -> Result<Report, BenchError> {
    let mut report = Report {
        bench: "chaos".into(),
        params: BTreeMap::from([
            ("workers".into(), opts.workers.to_string()),
            ("duration".into(), format!("{:?}", opts.duration)),
            ("kill_every".into(), format!("{:?}", opts.kill_every)),
            ("concurrency".into(), opts.concurrency.to_string()),
            ("tenants".into(), opts.tenants.to_string()),
            ("timeout_ms".into(), opts.timeout_ms.to_string()),
            (
                "heartbeat_timeout_ms".into(),
                opts.heartbeat_timeout_ms.to_string(),
            ),
            ("master_rounds".into(), opts.master_rounds.to_string()),
            ("writers".into(), opts.writers.to_string()),
        ]),
        figures: Vec::new(),
        checks: Vec::new(),
    };
    let dir = tempfile::Builder::new()
        .prefix("meshplay-chaos")
        .tempdir()?;
    {
        let served = Served::start(
            &opts.exe,
            opts.workers,
            opts.heartbeat_timeout_ms,
            &dir.path().join("kills"),
        )?;
        served.all_running(Duration::from_secs(60)).await?;
        kills(&opts, &served, &mut report).await?;
        if opts.hang {
            hang(&opts, &served, &mut report).await?;
        }
    }
    if opts.master_rounds > 0 {
        master_kills(&opts, &dir.path().join("writes"), &mut report).await?;
    }
    Ok(report)
}

/// Load on every shard, with a count of requests in flight per shard.
struct Traffic {
    client: ApiClient,
    tenants: Vec<Tenant>,
    timeout_ms: u64,
    past_deadline: AtomicU64,
}

impl Traffic {
    fn new(client: ApiClient, opts: &ChaosOptions) -> Arc<Traffic> {
        let tenants = (0..opts.tenants)
            .map(|i| Tenant::new("chaos", i.to_string()))
            .collect();
        Arc::new(Traffic {
            client,
            tenants,
            timeout_ms: opts.timeout_ms,
            past_deadline: AtomicU64::new(0),
        })
    }

    /// Drives `plan` with this traffic in a task of its own.
    fn start(
        self: &Arc<Self>,
        plan: LoadPlan,
    ) -> tokio::task::JoinHandle<crate::bench::load::Measured> {
        let traffic = Arc::clone(self);
        tokio::spawn(async move {
            drive(&plan, move |seq| {
                let traffic = Arc::clone(&traffic);
                async move { traffic.one(seq).await }
            })
            .await
        })
    }

    async fn one(&self, seq: u64) -> Result<(), String> {
        let tenant = &self.tenants[(seq % self.tenants.len() as u64) as usize];
        let req = DispatchRequest {
            name: "echo".into(),
            data: serde_json::Value::from(seq),
            wait: true,
            timeout_ms: Some(self.timeout_ms),
        };
        let started = Instant::now();
        let result = self.client.dispatch(&tenant.kind, &tenant.id, &req).await;
        if started.elapsed() > Duration::from_millis(self.timeout_ms) {
            self.past_deadline.fetch_add(1, Ordering::Relaxed);
        }
        match result {
            Ok(crate::client::DispatchOutcome::Done(d))
                if d.results.iter().all(|r| r.error.is_none()) =>
            {
                Ok(())
            }
            Ok(other) => Err(format!("plugin error: {other:?}")),
            Err(e) => Err(kind(&e)),
        }
    }
}

async fn kills(
    opts: &ChaosOptions,
    served: &Served,
    report: &mut Report,
) -> Result<(), BenchError> {
    let traffic = Traffic::new(served.client.clone(), opts);
    let plan = LoadPlan {
        label: "chaos/kills".into(),
        concurrency: opts.concurrency,
        duration: opts.duration,
        progress: opts.progress,
    };
    let load = traffic.start(plan);
    let lost_before = served.lost_in_flight().await?;
    let started = Instant::now();
    let mut recoveries = Vec::new();
    let mut next = started + opts.kill_every;
    while next + Duration::from_millis(100) < started + opts.duration {
        tokio::time::sleep_until(next.into()).await;
        next += opts.kill_every;
        let Ok(list) = served.client.workers().await else {
            continue;
        };
        let alive: Vec<u32> = list.workers.iter().filter_map(|w| w.pid).collect();
        if alive.is_empty() {
            continue;
        }
        let victim = alive[rand::random_range(0..alive.len())];
        signal(victim, libc::SIGKILL);
        let client = served.client.clone();
        // How long until every worker runs again, none of them a killed pid.
        recoveries.push(tokio::spawn(async move {
            let at = Instant::now();
            loop {
                if let Ok(l) = client.workers().await
                    && l.workers.iter().all(|w| {
                        w.state == WorkerState::Running && w.pid.is_some_and(|p| p != victim)
                    })
                {
                    return at.elapsed();
                }
                if at.elapsed() > Duration::from_secs(30) {
                    return at.elapsed();
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    let kills = recoveries.len();
    let measured = load
        .await
        .map_err(|e| BenchError::Target(format!("the load task failed: {e}")))?;
    let mut slowest = Duration::ZERO;
    let mut last = Duration::ZERO;
    for r in recoveries {
        last = r.await.unwrap_or(Duration::MAX);
        slowest = slowest.max(last);
    }
    served.all_running(Duration::from_secs(30)).await?;
    let lost = served.lost_in_flight().await? - lost_before;
    let failed: u64 = measured.errors.values().sum();
    let past = traffic.past_deadline.load(Ordering::Relaxed);
    report.figures.push(Figure::new("chaos/kills", &measured));
    report.checks.push(Check {
        name: format!(
            "failed requests vs requests in flight on the killed workers ({kills} kills)"
        ),
        value: failed as f64,
        target: format!("<= {lost}"),
        met: failed <= lost,
    });
    report.checks.push(Check {
        name: "requests past their deadline".into(),
        value: past as f64,
        target: "0".into(),
        met: past == 0,
    });
    report.checks.push(Check {
        name: "seconds until every worker runs again after the last kill".into(),
        value: last.as_secs_f64(),
        target: "<= 1".into(),
        met: last <= Duration::from_secs(1),
    });
    report.checks.push(Check {
        name: "seconds until every worker runs again, slowest of all kills".into(),
        value: slowest.as_secs_f64(),
        target: "<= 1".into(),
        met: slowest <= Duration::from_secs(1),
    });
    Ok(())
}

async fn hang(opts: &ChaosOptions, served: &Served, report: &mut Report) -> Result<(), BenchError> {
    let traffic = Traffic::new(served.client.clone(), opts);
    let plan = LoadPlan {
        label: "chaos/hang".into(),
        concurrency: opts.concurrency,
        duration: Duration::from_millis(opts.heartbeat_timeout_ms * 2 + 2000),
        progress: opts.progress,
    };
    let load = traffic.start(plan);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let w0 = served
        .client
        .workers()
        .await
        .map_err(|e| BenchError::Target(e.to_string()))?
        .workers
        .into_iter()
        .find(|w| w.id == 0)
        .and_then(|w| w.pid)
        .ok_or_else(|| BenchError::Target("worker 0 has no pid".into()))?;
    signal(w0, libc::SIGSTOP);
    let stopped = Instant::now();
    let limit = Duration::from_millis(opts.heartbeat_timeout_ms * 3 + 5000);
    let detected = loop {
        let gone = served.client.workers().await.ok().is_some_and(|l| {
            l.workers
                .iter()
                .any(|w| w.id == 0 && (w.state != WorkerState::Running || w.pid != Some(w0)))
        });
        if gone {
            break stopped.elapsed();
        }
        if stopped.elapsed() > limit {
            signal(w0, libc::SIGCONT);
            break limit;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let measured = load
        .await
        .map_err(|e| BenchError::Target(format!("the load task failed: {e}")))?;
    served.all_running(Duration::from_secs(30)).await?;
    report.figures.push(Figure::new("chaos/hang", &measured));
    // The hub checks silence every 50 ms at most; then the supervisor
    // kills the process and the API (polled every 10 ms) shows it. On a
    // loaded two-core machine each step can wait its turn: 250 ms of that
    // past the timeout and the check period is on time.
    let slack = (opts.heartbeat_timeout_ms / 8).min(50) + 250;
    report.checks.push(Check {
        name: "seconds until a SIGSTOPped worker is declared dead".into(),
        value: detected.as_secs_f64(),
        target: format!(
            "<= {} (heartbeat timeout + check period + 250 ms)",
            (opts.heartbeat_timeout_ms + slack) as f64 / 1000.0
        ),
        met: detected <= Duration::from_millis(opts.heartbeat_timeout_ms + slack),
    });
    Ok(())
}

async fn master_kills(
    opts: &ChaosOptions,
    dir: &Path,
    report: &mut Report,
) -> Result<(), BenchError> {
    let acknowledged: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let mut lost_total = 0u64;
    let mut acked_total = 0u64;
    let mut writes = crate::bench::load::Measured::default();
    let started = Instant::now();
    for round in 0..=opts.master_rounds {
        let mut served = Served::start(&opts.exe, opts.workers, opts.heartbeat_timeout_ms, dir)?;
        // What the previous master acknowledged must all be here.
        let checked: Vec<(String, u64)> = std::mem::take(&mut *acknowledged.lock().unwrap());
        let mut lost = 0u64;
        for (key, n) in &checked {
            match served.client.kv_get("chaos", "writes", "w", key).await {
                Ok(Some(r)) if r.value == *n => {}
                _ => lost += 1,
            }
        }
        if round > 0 {
            report.checks.push(Check {
                name: format!(
                    "acknowledged writes lost when the master was SIGKILLed (round {round}, of {})",
                    checked.len()
                ),
                value: lost as f64,
                target: "0".into(),
                met: lost == 0,
            });
            lost_total += lost;
            acked_total += checked.len() as u64;
        }
        if round == opts.master_rounds {
            break;
        }
        let plan = LoadPlan {
            label: format!("chaos/master-kill-{}", round + 1),
            concurrency: opts.writers,
            duration: opts.write_for + Duration::from_millis(500),
            progress: opts.progress,
        };
        let client = served.client.clone();
        let acks = Arc::clone(&acknowledged);
        let load = tokio::spawn(async move {
            drive(&plan, move |seq| {
                let (client, acks) = (client.clone(), Arc::clone(&acks));
                async move {
                    let key = format!("r{round}-{seq}");
                    let value = serde_json::Value::from(seq);
                    match client.kv_set("chaos", "writes", "w", &key, &value).await {
                        Ok(_) => {
                            acks.lock().unwrap().push((key, seq));
                            Ok(())
                        }
                        Err(e) => {
                            // The master is gone: stop hammering its port.
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            Err(kind(&e))
                        }
                    }
                }
            })
            .await
        });
        tokio::time::sleep(opts.write_for).await;
        served.kill();
        let m = load
            .await
            .map_err(|e| BenchError::Target(format!("the writers failed: {e}")))?;
        writes.ok += m.ok;
        let _ = writes.latencies_ns.add(&m.latencies_ns);
    }
    writes.elapsed = started.elapsed();
    let mut figure = Figure::new("chaos/durable-writes", &writes);
    // Errors after the kill are the point of the exercise, not failures.
    figure.errors.clear();
    report.figures.push(figure);
    report.checks.push(Check {
        name: format!("acknowledged writes lost in all ({acked_total} acknowledged)"),
        value: lost_total as f64,
        target: "0".into(),
        met: lost_total == 0,
    });
    Ok(())
}
