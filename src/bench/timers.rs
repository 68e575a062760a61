//! `meshplay bench timers`: many pending timers, loaded into the store and
//! fired by the master at a steady rate.
//!
//! A master starts in this process (sled in a temporary directory) with a
//! plugin whose handler does nothing. Then:
//!
//! 1. `timers/write`: `--timers` timers are written through the master's
//!    own path (as `POST /db/timers` does: checked, durable, noticed), 64
//!    at a time, spread over `--tenants` tenants, due one after another at
//!    `--rate` a second from a start far enough ahead for the writes to
//!    end first; beside it `baseline/sled-durable-set`, sled's insert and
//!    flush from one caller, measured in the same run;
//! 2. the master's RSS (this process) before and after the writes, and the
//!    timers it then holds in memory (the rest wait in the store);
//! 3. `timers/lateness`: how long after its due time each delivery
//!    started, over all of them; its rate is the firing rate reached.

use crate::bench::baseline;
use crate::bench::figures::{Figure, Report};
use crate::bench::load::Measured;
use crate::bench::{BenchError, InProcess, Launch};
use crate::master::timers::{TimerConfig, Timers, now_ms};
use crate::mesophyll::hub::HubConfig;
use crate::mesophyll::message::{Packed, Tenant};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the benchmark is told.
#[derive(Debug, Clone)]
pub struct TimersOptions {
    /// Worker processes.
    pub workers: u32,
    /// Timers written and fired.
    pub timers: u64,
    /// Tenants they are spread over.
    pub tenants: u64,
    /// Timers due per second.
    pub rate: u64,
    /// Print progress lines.
    pub progress: bool,
}

const WRITERS: u64 = 64;

const TICKER: &str = "return { tick = function() end }";

/// Runs the benchmark.
pub async fn run(opts: TimersOptions) -> Result<Report, BenchError> {
    if opts.timers == 0 || opts.tenants == 0 || opts.rate == 0 {
        return Err(BenchError::Usage(
            "--timers, --tenants and --rate must be positive".into(),
        ));
    }
    let per_tenant = opts.timers.div_ceil(opts.tenants) as usize;
    let fleet = InProcess::launch(Launch {
        workers: opts.workers,
        external: 0,
        store: None,
        worker_threads: 1,
        hub: HubConfig::default(),
        plugins: vec![(
            "ticker".into(),
            "name = \"ticker\"\nversion = \"1\"\nevents = [\"tick\"]\n".into(),
            TICKER.into(),
        )],
        timers: TimerConfig {
            max_per_tenant: per_tenant.max(1),
            concurrency: 1024,
            ..TimerConfig::default()
        },
        nats: None,
    })
    .await?;
    let measured = measure(&opts, &fleet.master.timers).await;
    fleet.stop().await;
    measured
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1024.0 * 1024.0))
}

async fn measure(opts: &TimersOptions, timers: &Arc<Timers>) -> Result<Report, BenchError> {
    let rss_before = crate::worker::rss_bytes();
    // Writes are timed at about 5,000 a second on this class of machine;
    // half that, plus 5 s, leaves them room to end before the first is due.
    let lead_ms = (opts.timers * 1000 / 2500 + 5000) as i64;
    let start = now_ms() + lead_ms;
    if opts.progress {
        eprintln!(
            "writing {} timers over {} tenants ...",
            opts.timers, opts.tenants
        );
    }
    let write = write_all(opts, timers, start).await?;
    let rss_after = crate::worker::rss_bytes();
    let held = timers.held();
    timers.metrics().sample_lateness();
    let span_ms = (opts.timers * 1000 / opts.rate) as i64;
    let until = Instant::now()
        + Duration::from_millis((start + span_ms - now_ms()).max(0) as u64)
        + Duration::from_secs(60);
    if opts.progress {
        eprintln!("firing them at {} a second ...", opts.rate);
    }
    let lateness = loop {
        let h = timers.metrics().sampled_lateness().unwrap_or_else(|| {
            hdrhistogram::Histogram::new(3).expect("3 significant digits is valid")
        });
        if h.len() >= opts.timers || Instant::now() > until {
            break h;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut fired = Measured {
        ok: lateness.len(),
        elapsed: Duration::from_millis(span_ms.max(1) as u64),
        ..Measured::default()
    };
    for v in lateness.iter_recorded() {
        let _ = fired
            .latencies_ns
            .record_n(v.value_iterated_to() * 1000, v.count_at_value());
    }
    let sled = tokio::task::spawn_blocking(|| baseline::sled_ops(Duration::from_secs(2), 64))
        .await
        .map_err(|e| BenchError::Usage(e.to_string()))??;
    let sled_set = Figure::new("baseline/sled-durable-set", &sled.0);
    let params = BTreeMap::from([
        ("timers".into(), opts.timers.to_string()),
        ("tenants".into(), opts.tenants.to_string()),
        ("rate".into(), opts.rate.to_string()),
        ("workers".into(), opts.workers.to_string()),
        ("rss_before_mib".into(), mib(rss_before)),
        ("rss_after_write_mib".into(), mib(rss_after)),
        ("held_in_memory".into(), held.to_string()),
        ("fired".into(), lateness.len().to_string()),
    ]);
    Ok(Report {
        bench: "timers".into(),
        params,
        figures: vec![
            Figure::new("timers/write", &write).against(&sled_set),
            sled_set,
            Figure::new("timers/lateness", &fired),
        ],
        checks: Vec::new(),
    })
}

/// Writes every timer, [`WRITERS`] at a time; each write's latency kept.
async fn write_all(
    opts: &TimersOptions,
    timers: &Arc<Timers>,
    start: i64,
) -> Result<Measured, BenchError> {
    let began = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (timers, opts) = (Arc::clone(timers), opts.clone());
        tasks.push(tokio::spawn(async move {
            let mut m = Measured::default();
            let mut i = w;
            while i < opts.timers {
                let tenant = Tenant::new("bench", (i % opts.tenants).to_string());
                let due = start + (i * 1000 / opts.rate) as i64;
                let t = Instant::now();
                match timers.set(&tenant, "tick".into(), Packed::nil(), due).await {
                    Ok(_) => {
                        m.ok += 1;
                        m.record(t.elapsed());
                    }
                    Err(e) => return Err(e.to_string()),
                }
                i += WRITERS;
            }
            Ok(m)
        }));
    }
    let mut all = Measured::default();
    for task in tasks {
        let m = task
            .await
            .map_err(|e| BenchError::Target(e.to_string()))?
            .map_err(BenchError::Target)?;
        all.ok += m.ok;
        all.latencies_ns.add(&m.latencies_ns).ok();
    }
    all.elapsed = began.elapsed();
    Ok(all)
}
