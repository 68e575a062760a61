//! What a benchmark prints: each figure with its rate, its latencies and,
//! where there is one, its ratio to the raw limit measured in the same run.

use crate::bench::load::Measured;
use serde::Serialize;
use std::collections::BTreeMap;

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// What was measured (`dispatch/rest`, `baseline/ws-echo`, ...).
    pub name: String,
    /// Successful operations.
    pub ok: u64,
    /// Seconds it ran.
    pub seconds: f64,
    /// Operations per second.
    pub rate: f64,
    /// Latency quantiles, microseconds.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Slowest call.
    pub max_us: f64,
    /// Failed operations by kind.
    pub errors: BTreeMap<String, u64>,
    /// The figure this one is compared to, and the ratio of the rates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vs: Option<Ratio>,
}

/// A figure's rate over its limit's.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    /// The limit's name.
    pub limit: String,
    /// This rate / the limit's rate.
    pub rate_ratio: f64,
}

impl Figure {
    /// A figure from a measurement.
    pub fn new(name: impl Into<String>, m: &Measured) -> Figure {
        Figure {
            name: name.into(),
            ok: m.ok,
            seconds: m.elapsed.as_secs_f64(),
            rate: m.rate(),
            p50_us: m.quantile_us(0.5),
            p99_us: m.quantile_us(0.99),
            p999_us: m.quantile_us(0.999),
            max_us: m.quantile_us(1.0),
            errors: m.errors.clone(),
            vs: None,
        }
    }

    /// Compares this figure's rate to `limit`'s.
    pub fn against(mut self, limit: &Figure) -> Figure {
        self.vs = Some(Ratio {
            limit: limit.name.clone(),
            rate_ratio: self.rate / limit.rate.max(1e-9),
        });
        self
    }
}

/// A benchmark's whole answer.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Which benchmark.
    pub bench: String,
    /// Its parameters, for the record.
    pub params: BTreeMap<String, String>,
    /// The figures, limits included.
    pub figures: Vec<Figure>,
    /// Derived checks against the targets (name, value, target, met).
    pub checks: Vec<Check>,
}

/// One target, checked.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What it checks.
    pub name: String,
    /// The measured value.
    pub value: f64,
    /// The target it is held to.
    pub target: String,
    /// Whether it was met.
    pub met: bool,
}

impl Check {
    /// `value / limit` held to at least `min` (a rate against its limit or
    /// peer).
    pub fn ratio_at_least(name: impl Into<String>, value: f64, limit: f64, min: f64) -> Check {
        let ratio = value / limit.max(1e-9);
        Check {
            name: name.into(),
            value: ratio,
            target: format!(">= {min}"),
            met: ratio >= min,
        }
    }
}

fn human(us: f64) -> String {
    if us >= 1000.0 {
        format!("{:.2}ms", us / 1000.0)
    } else {
        format!("{us:.1}µs")
    }
}

impl Report {
    /// Prints the report for people.
    pub fn print(&self) {
        let params: Vec<String> = self
            .params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!("meshplay bench {} ({})", self.bench, params.join(" "));
        if !self.figures.is_empty() {
            println!(
                "{:<24} {:>12} {:>9} {:>9} {:>9} {:>9} {:>7}  vs limit",
                "figure", "ops/s", "p50", "p99", "p99.9", "max", "errors"
            );
        }
        for f in &self.figures {
            let errors: u64 = f.errors.values().sum();
            let vs =
                f.vs.as_ref()
                    .map(|r| format!("{:.1}% of {}", r.rate_ratio * 100.0, r.limit))
                    .unwrap_or_default();
            println!(
                "{:<24} {:>12.0} {:>9} {:>9} {:>9} {:>9} {:>7}  {vs}",
                f.name,
                f.rate,
                human(f.p50_us),
                human(f.p99_us),
                human(f.p999_us),
                human(f.max_us),
                errors
            );
            for (kind, n) in &f.errors {
                println!("{:<24}   error {kind}: {n}", "");
            }
        }
        for c in &self.checks {
            println!(
                "{} {}: {:.3} (target {})",
                if c.met { "met   " } else { "MISSED" },
                c.name,
                c.value,
                c.target
            );
        }
    }

    /// Prints the report as one JSON document.
    pub fn print_json(&self) {
        println!(
            "{}",
            serde_json::to_string_pretty(self).expect("reports serialise")
        );
    }
}
