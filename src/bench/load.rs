//! The load generator: C concurrent callers of one async operation for a
//! fixed time, each call timed, errors counted by kind.
//!
//! Every benchmark that calls something over the network (the REST API, the
//! hub, the DB endpoints, and their raw baselines) goes through [`drive`], so
//! that figures and their limits are measured the same way.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How to drive one operation.
#[derive(Debug, Clone)]
pub struct Load {
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
#[derive(Debug, Clone, Default)]
pub struct Measured {
    /// Calls that succeeded.
    pub ok: u64,
    /// Wall-clock time of the run.
    pub elapsed: Duration,
    /// Latency of every call (successful or not), in nanoseconds, sorted.
    pub latencies_ns: Vec<u64>,
    /// Failed calls by kind.
    pub errors: BTreeMap<String, u64>,
}

impl Measured {
    /// Successful calls per second.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `q` quantile (0..=1) of the latencies, in microseconds.
    pub fn quantile_us(&self, q: f64) -> f64 {
        if self.latencies_ns.is_empty() {
            return 0.0;
        }
        let i = ((self.latencies_ns.len() - 1) as f64 * q).round() as usize;
        self.latencies_ns[i] as f64 / 1000.0
    }

    /// Folds the measurements of one caller in.
    fn absorb(&mut self, other: Measured) {
        self.ok += other.ok;
        self.latencies_ns.extend(other.latencies_ns);
        for (k, n) in other.errors {
            *self.errors.entry(k).or_default() += n;
        }
    }
}

/// Calls `op(seq)` from `load.concurrency` tasks until `load.duration` has
/// passed; `seq` counts calls across all tasks from 0. `op` fails with the
/// kind of its error (`timeout`, `overloaded`, ...).
pub async fn drive<F, Fut>(load: &Load, op: F) -> Measured
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
                mine.latencies_ns.push(t0.elapsed().as_nanos() as u64);
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
        let (label, done, failed, stop) = (
            load.label.clone(),
            done.clone(),
            failed.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let secs = start.elapsed().as_secs_f64();
                let n = done.load(Ordering::Relaxed);
                eprint!(
                    "\r{label}: {secs:4.1}s {n} ok ({:.0}/s), {} errors   ",
                    n as f64 / secs,
                    failed.load(Ordering::Relaxed)
                );
                let _ = std::io::stderr().flush();
            }
        })
    });
    let mut all = Measured::default();
    for t in tasks {
        if let Ok(m) = t.await {
            all.absorb(m);
        }
    }
    all.elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    if let Some(p) = progress {
        p.abort();
        eprint!("\r{:78}\r", "");
    }
    all.latencies_ns.sort_unstable();
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
        m.latencies_ns.push(t0.elapsed().as_nanos() as u64);
        match r {
            Ok(()) => m.ok += 1,
            Err(kind) => *m.errors.entry(kind).or_default() += 1,
        }
        if start.elapsed() >= duration {
            break;
        }
    }
    m.elapsed = start.elapsed();
    m.latencies_ns.sort_unstable();
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_calls_and_errors_by_kind() {
        let load = Load {
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
        assert_eq!(m.latencies_ns.len() as u64, m.ok + errors);
        assert!(m.latencies_ns.windows(2).all(|w| w[0] <= w[1]));
        assert!(m.quantile_us(0.5) <= m.quantile_us(0.99));
    }

    #[test]
    fn quantiles_pick_from_the_sorted_latencies() {
        let m = Measured {
            ok: 5,
            elapsed: Duration::from_secs(1),
            latencies_ns: vec![1000, 2000, 3000, 4000, 100_000],
            errors: BTreeMap::new(),
        };
        assert_eq!(m.quantile_us(0.5), 3.0);
        assert_eq!(m.quantile_us(1.0), 100.0);
        assert_eq!(m.rate(), 5.0);
    }
}
