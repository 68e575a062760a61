//! What `/metrics` shows of timers and schedules: deliveries by outcome,
//! how late they fired, what the master holds of the near future.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

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
    }

    /// What the near future holds now.
    pub fn sizes(&self, held: usize, in_flight: usize) {
        self.held.set(held as i64);
        self.in_flight.set(in_flight as i64);
    }
}
