//! The load generator: C concurrent callers of one async operation for a
//! fixed time, each call timed, errors counted by kind.
//!
//! Every benchmark that calls something over the network (the REST API, the
//! hub, the DB endpoints, and their raw baselines) goes through [`drive`], so
//! that figures and their limits are measured the same way.

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How to drive one operation.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    /// What the progress line calls it.
    pub label: String,
    /// Callers at once.
    pub concurrency: usize,
    /// How long to run.
    pub duration: Duration,
    /// Print a progress line to stderr every second.
    pub progress: bool,
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct Measured {
    /// Calls that succeeded.
    pub ok: u64,
    /// Wall-clock time of the run.
    pub elapsed: Duration,
    /// Latency of every call (successful or not), in nanoseconds: fixed
    /// memory however long the run, 3 significant digits, mergeable across
    /// callers.
    pub latencies_ns: Histogram<u64>,
    /// Failed calls by kind.
    pub errors: BTreeMap<String, u64>,
}

impl Default for Measured {
    fn default() -> Self {
        Measured {
            ok: 0,
            elapsed: Duration::ZERO,
            latencies_ns: Histogram::new(3).expect("3 significant digits is a valid precision"),
            errors: BTreeMap::new(),
        }
    }
}

impl Measured {
    /// Records one call that took `took`.
    pub fn record(&mut self, took: Duration) {
        // An auto-resizing histogram only fails on a value it cannot hold
        // (u64::MAX), which no call takes.
        let _ = self.latencies_ns.record(took.as_nanos().max(1) as u64);
    }

    /// Calls made, successful or not.
    pub fn calls(&self) -> u64 {
        self.latencies_ns.len()
    }

    /// Successful calls per second.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `q` quantile (0..=1) of the latencies, in microseconds.
    pub fn quantile_us(&self, q: f64) -> f64 {
        if self.latencies_ns.is_empty() {
            return 0.0;
        }
        self.latencies_ns.value_at_quantile(q) as f64 / 1000.0
    }

    /// Folds the measurements of one caller in.
    fn absorb(&mut self, other: Measured) {
        self.ok += other.ok;
        // Both histograms auto-resize, so adding cannot overflow a bucket.
        let _ = self.latencies_ns.add(&other.latencies_ns);
        for (k, n) in other.errors {
            *self.errors.entry(k).or_default() += n;
        }
    }
}

/// Calls `op(seq)` from `load.concurrency` tasks until `load.duration` has
/// passed; `seq` counts calls across all tasks from 0. `op` fails with the
/// kind of its error (`timeout`, `overloaded`, ...).
pub async fn drive<F, Fut>(load: &LoadPlan, op: F) -> Measured
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let op = Arc::new(op);
    let seq = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let until = start + load.duration;
    let mut tasks = Vec::with_capacity(load.concurrency);
    for _ in 0..load.concurrency.max(1) {
        let (op, seq, done, failed) = (op.clone(), seq.clone(), done.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let mut mine = Measured::default();
            while Instant::now() < until {
                let n = seq.fetch_add(1, Ordering::Relaxed);
                let t0 = Instant::now();
                let result = op(n).await;
                mine.record(t0.elapsed());
                match result {
                    Ok(()) => {
                        mine.ok += 1;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(kind) => {
                        *mine.errors.entry(kind).or_default() += 1;
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            mine
        }));
    }
    let progress = load.progress.then(|| {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix}: {elapsed} {msg}")
                .expect("a valid template"),
        );
        bar.set_prefix(load.label.clone());
        let (bar2, done, failed, stop) = (bar.clone(), done.clone(), failed.clone(), stop.clone());
        let ticker = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let n = done.load(Ordering::Relaxed);
                bar2.set_message(format!(
                    "{n} ok ({:.0}/s), {} errors",
                    n as f64 / start.elapsed().as_secs_f64().max(1e-3),
                    failed.load(Ordering::Relaxed)
                ));
                bar2.tick();
            }
        });
        (bar, ticker)
    });
    let mut all = Measured::default();
    for t in tasks {
        if let Ok(m) = t.await {
            all.absorb(m);
        }
    }
    all.elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    if let Some((bar, ticker)) = progress {
        ticker.abort();
        bar.finish_and_clear();
    }
    all
}

/// Times `f` called back to back on this thread for `duration` (at least
/// once): for the in-process baselines (a Luau call, a WASM call, sled).
pub fn spin<F: FnMut() -> Result<(), String>>(duration: Duration, mut f: F) -> Measured {
    let mut m = Measured::default();
    let start = Instant::now();
    loop {
        let t0 = Instant::now();
        let r = f();
        m.record(t0.elapsed());
        match r {
            Ok(()) => m.ok += 1,
            Err(kind) => *m.errors.entry(kind).or_default() += 1,
        }
        if start.elapsed() >= duration {
            break;
        }
    }
    m.elapsed = start.elapsed();
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_calls_and_errors_by_kind() {
        let load = LoadPlan {
            label: "t".into(),
            concurrency: 4,
            duration: Duration::from_millis(50),
            progress: false,
        };
        let m = drive(&load, |n| async move {
            tokio::task::yield_now().await;
            if n % 10 == 0 {
                Err("tenth".into())
            } else {
                Ok(())
            }
        })
        .await;
        let errors = m.errors.get("tenth").copied().unwrap_or(0);
        assert!(m.ok > 0 && errors > 0);
        assert_eq!(m.calls(), m.ok + errors);
        assert!(m.quantile_us(0.5) <= m.quantile_us(0.99));
    }

    #[test]
    fn quantiles_come_from_the_recorded_latencies() {
        let mut m = Measured {
            ok: 5,
            elapsed: Duration::from_secs(1),
            ..Measured::default()
        };
        for us in [1, 2, 3, 4, 100] {
            m.record(Duration::from_micros(us));
        }
        // Three significant digits: within 0.1% of the true value.
        assert!(
            (m.quantile_us(0.5) - 3.0).abs() < 0.01,
            "{}",
            m.quantile_us(0.5)
        );
        assert!(
            (m.quantile_us(1.0) - 100.0).abs() < 0.1,
            "{}",
            m.quantile_us(1.0)
        );
        assert_eq!(m.calls(), 5);
        assert_eq!(m.rate(), 5.0);
    }
}
