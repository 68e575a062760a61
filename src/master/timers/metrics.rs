//! What `/metrics` shows of timers and schedules: deliveries by outcome,
//! how late they fired, what the master holds of the near future.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

/// The timer families of the master's registry.
#[derive(Debug, Clone)]
pub struct TimerMetrics {
    deliveries: Family<Outcome, Counter>,
    written: Family<Outcome, Counter>,
    lateness: Histogram,
    held: Gauge,
    in_flight: Gauge,
    /// Lateness in microseconds, kept exactly while a benchmark asks
    /// ([`TimerMetrics::sample_lateness`]): the histogram above has only
    /// its buckets.
    sampled: Arc<Mutex<Option<hdrhistogram::Histogram<u64>>>>,
}

impl TimerMetrics {
    /// Registers the families in `registry`.
    pub fn register(registry: &mut Registry) -> TimerMetrics {
        let m = TimerMetrics {
            deliveries: Family::default(),
            written: Family::default(),
            // 1 ms to about 65 s.
            lateness: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
            held: Gauge::default(),
            in_flight: Gauge::default(),
            sampled: Arc::default(),
        };
        registry.register(
            "timer_deliveries",
            "Timer and schedule deliveries by outcome: delivered, retried (failed, tried again later) or dropped (failed its last attempt)",
            m.deliveries.clone(),
        );
        registry.register(
            "timers_written",
            "Timers and schedules written by handlers and the API, by outcome: set, scheduled, or the refusal's code",
            m.written.clone(),
        );
        registry.register(
            "timer_lateness_seconds",
            "How long after its due time a timer's delivery started",
            m.lateness.clone(),
        );
        registry.register(
            "timers_held",
            "Pending timers of the near future held in the master's memory",
            m.held.clone(),
        );
        registry.register(
            "timers_in_flight",
            "Timers being delivered",
            m.in_flight.clone(),
        );
        m
    }

    /// Counts a delivery that ended with `outcome`.
    pub fn delivered(&self, outcome: &'static str) {
        self.deliveries.get_or_create(&Outcome { outcome }).inc();
    }

    /// Counts a write that ended with `outcome`.
    pub fn written(&self, outcome: &'static str) {
        self.written.get_or_create(&Outcome { outcome }).inc();
    }

    /// Notes a delivery that started `late_ms` after its due time.
    pub fn started_late(&self, late_ms: i64) {
        self.lateness.observe(late_ms.max(0) as f64 / 1000.0);
        let mut sampled = self.sampled.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = sampled.as_mut() {
            h.saturating_record(late_ms.max(0) as u64 * 1000);
        }
    }

    /// Starts keeping every delivery's lateness (anew).
    pub fn sample_lateness(&self) {
        let h = hdrhistogram::Histogram::new(3).expect("3 significant digits is valid");
        *self.sampled.lock().unwrap_or_else(|p| p.into_inner()) = Some(h);
    }

    /// What was kept since [`TimerMetrics::sample_lateness`], in
    /// microseconds (a copy; sampling goes on).
    pub fn sampled_lateness(&self) -> Option<hdrhistogram::Histogram<u64>> {
        self.sampled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// What the near future holds now.
    pub fn sizes(&self, held: usize, in_flight: usize) {
        self.held.set(held as i64);
        self.in_flight.set(in_flight as i64);
    }
}
