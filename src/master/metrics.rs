//! `GET /metrics`: the whole fleet in one Prometheus scrape (OpenMetrics
//! text, through `prometheus-client`).
//!
//! Two kinds of series:
//!
//! - **counted by the master** as it works (the families of [`Metrics`]):
//!   events by plugin and result code, dispatches by result with their
//!   latency, scripts by result, and the workers' KV operations through the
//!   DB endpoints by kind with their latency;
//! - **read at scrape time** (`Fleet`, a collector): every worker slot as
//!   the hub sees it (up, heartbeat age, VMs, RSS, requests in flight and
//!   awaited, bytes queued), restarts by cause from the supervisor, the
//!   hub's bad frames and requests lost with their worker, and what each
//!   worker reports in its heartbeats: filter calls by filter and outcome,
//!   its proxy-wasm filters' own metrics, the frames it could not decode.
//!
//! Worker-reported counters carry a `worker` label and start again from
//! zero with a new worker process, as Prometheus expects of a restarted
//! target (`rate()` and `increase()` take resets in their stride); they lag
//! by up to one heartbeat interval. No label names a tenant: a fleet's
//! tenants would each be a series.

use crate::master::supervisor::Supervisor;
use crate::mesophyll::hub::Hub;
use crate::mesophyll::message::PluginOutcome;
use crate::rest::TrafficSecond;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::borrow::Cow;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// The content type of a scrape's answer.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginCode {
    plugin: String,
    code: Cow<'static, str>,
}

/// Labels are looked up by value on every count: the common ones borrow
/// their text instead of allocating it per dispatch.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: Cow<'static, str>,
}

impl ResultLabel {
    fn of(result: &str) -> ResultLabel {
        let result = match result {
            "ok" => Cow::Borrowed("ok"),
            "accepted" => Cow::Borrowed("accepted"),
            other => Cow::Owned(other.to_owned()),
        };
        ResultLabel { result }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    op: String,
}

fn latency_histogram() -> Histogram {
    // 50 µs to about 26 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

/// The master's metrics registry.
pub struct Metrics {
    registry: Registry,
    events: Family<PluginCode, Counter>,
    dispatches: Family<ResultLabel, Counter>,
    dispatch_seconds: Family<ResultLabel, Histogram>,
    scripts: Family<ResultLabel, Counter>,
    emitted: Family<ResultLabel, Counter>,
    kv: Family<OpLabel, Counter>,
    kv_seconds: Family<OpLabel, Histogram>,
    supervisor: Arc<OnceLock<Arc<Supervisor>>>,
    timers: crate::master::timers::TimerMetrics,
    webhooks: Arc<crate::master::webhooks::Webhooks>,
    nats: crate::master::nats::NatsMetrics,
    /// Events, errors and dispatch latency per second of the last minute,
    /// by second modulo 60 (`meshplay status`, the dashboard's charts).
    minute: Mutex<[Second; 60]>,
}

/// One second's events, errors and dispatches.
#[derive(Debug, Clone, Copy, Default)]
struct Second {
    at: u64,
    events: u64,
    errors: u64,
    dispatches: u64,
    latency_us_sum: u64,
    latency_us_max: u64,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// The `plugin` label of results from plugins the catalogue does not
/// have (deleted while the event ran, or named by a worker's answer).
pub const UNKNOWN_PLUGIN: &str = "(unknown)";

impl Metrics {
    /// A registry with the master's families and the fleet's collector
    /// (restarts appear once [`Metrics::watch`] gives it the supervisor,
    /// which starts after the hub).
    pub fn new(
        hub: Arc<Hub>,
        workers: u32,
        webhooks: crate::master::webhooks::WebhookConfig,
        leadership: crate::master::leadership::LeaderGate,
    ) -> Self {
        let supervisor = Arc::new(OnceLock::new());
        let mut registry = Registry::with_prefix("meshplay");
        let events = Family::<PluginCode, Counter>::default();
        registry.register(
            "events",
            "Plugin results of waited dispatches, by plugin and result code (ok, or the error's code)",
            events.clone(),
        );
        let dispatches = Family::<ResultLabel, Counter>::default();
        registry.register(
            "dispatches",
            "Dispatches by result: ok (the worker answered; see events), accepted (fire-and-forget) or the API error's code",
            dispatches.clone(),
        );
        let dispatch_seconds =
            Family::<ResultLabel, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        registry.register(
            "dispatch_duration_seconds",
            "Time from the API's receipt of a dispatch to its answer, by result",
            dispatch_seconds.clone(),
        );
        let scripts = Family::<ResultLabel, Counter>::default();
        registry.register(
            "scripts",
            "RunScript requests by result: ok or the error's code",
            scripts.clone(),
        );
        let emitted = Family::<ResultLabel, Counter>::default();
        registry.register(
            "emitted_events",
            "Events handlers emitted (events.emit), by result: queued to the owning worker, or the error's code",
            emitted.clone(),
        );
        let kv = Family::<OpLabel, Counter>::default();
        registry.register(
            "kv_operations",
            "Workers' KV operations through the DB endpoints, by kind",
            kv.clone(),
        );
        let kv_seconds =
            Family::<OpLabel, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        registry.register(
            "kv_operation_duration_seconds",
            "Time the DB endpoints took for one KV operation, by kind",
            kv_seconds.clone(),
        );
        let timers = crate::master::timers::TimerMetrics::register(&mut registry);
        let webhooks = Arc::new(crate::master::webhooks::Webhooks::new(
            webhooks,
            &mut registry,
        ));
        let nats = crate::master::nats::NatsMetrics::register(&mut registry);
        registry.register_collector(Box::new(leadership));
        registry.register_collector(Box::new(Fleet {
            hub,
            supervisor: Arc::clone(&supervisor),
            workers,
        }));
        Metrics {
            registry,
            events,
            dispatches,
            dispatch_seconds,
            scripts,
            emitted,
            kv,
            kv_seconds,
            supervisor,
            timers,
            webhooks,
            nats,
            minute: Mutex::new([Second::default(); 60]),
        }
    }

    /// Events and errors of the last 60 seconds: every plugin result of a
    /// waited dispatch (an error when it failed), every fire-and-forget
    /// dispatch, and every dispatch that failed as a whole (an error).
    pub fn last_minute(&self) -> (u64, u64) {
        let now = crate::clock::unix_millis() as u64 / 1000;
        let minute = self.minute.lock().unwrap();
        minute
            .iter()
            .filter(|s| s.at + 60 > now && s.at <= now)
            .fold((0, 0), |(e, x), s| (e + s.events, x + s.errors))
    }

    /// The last 60 seconds, one entry per second (the oldest first, the
    /// current, still counting, last; seconds without traffic are zeros).
    pub fn traffic(&self) -> Vec<TrafficSecond> {
        let now = crate::clock::unix_millis() as u64 / 1000;
        let minute = self.minute.lock().unwrap();
        (now - 59..=now)
            .map(|at| {
                let s = minute[(at % 60) as usize];
                let s = if s.at == at { s } else { Second::default() };
                TrafficSecond {
                    at,
                    events: s.events,
                    errors: s.errors,
                    dispatches: s.dispatches,
                    mean_ms: if s.dispatches == 0 {
                        0.0
                    } else {
                        s.latency_us_sum as f64 / s.dispatches as f64 / 1000.0
                    },
                    max_ms: s.latency_us_max as f64 / 1000.0,
                }
            })
            .collect()
    }

    fn count_second(&self, events: u64, errors: u64, elapsed: Duration) {
        let now = crate::clock::unix_millis() as u64 / 1000;
        let us = elapsed.as_micros() as u64;
        let mut minute = self.minute.lock().unwrap();
        let second = &mut minute[(now % 60) as usize];
        if second.at != now {
            *second = Second {
                at: now,
                ..Second::default()
            };
        }
        second.events += events;
        second.errors += errors;
        second.dispatches += 1;
        second.latency_us_sum += us;
        second.latency_us_max = second.latency_us_max.max(us);
    }

    /// Shows the restarts `supervisor` counts from now on.
    pub fn watch(&self, supervisor: Arc<Supervisor>) {
        let _ = self.supervisor.set(supervisor);
    }

    /// Counts one dispatch that ended with `result` after `elapsed`, and
    /// the plugin results it carried. A result of a plugin `known` does not
    /// know (a name only a worker's answer carried) is counted under
    /// [`UNKNOWN_PLUGIN`]: series are made for plugins the catalogue has,
    /// never for what a worker says.
    pub fn dispatched(
        &self,
        result: &str,
        outcomes: &[PluginOutcome],
        elapsed: Duration,
        known: impl Fn(&str) -> bool,
    ) {
        let label = ResultLabel::of(result);
        self.dispatches.get_or_create(&label).inc();
        self.dispatch_seconds
            .get_or_create(&label)
            .observe(elapsed.as_secs_f64());
        let (events, errors) = match result {
            "ok" => (
                outcomes.len() as u64,
                outcomes.iter().filter(|o| o.result.is_err()).count() as u64,
            ),
            "accepted" => (1, 0),
            _ => (1, 1),
        };
        self.count_second(events, errors, elapsed);
        for o in outcomes {
            let code = Cow::Borrowed(match &o.result {
                Ok(_) => "ok",
                Err(e) => e.kind.as_str(),
            });
            let plugin = if known(&o.plugin) {
                o.plugin.clone()
            } else {
                UNKNOWN_PLUGIN.to_owned()
            };
            self.events
                .get_or_create(&PluginCode { plugin, code })
                .inc();
        }
    }

    /// Counts one script that ended with `result`.
    pub fn scripted(&self, result: &str) {
        self.scripts.get_or_create(&ResultLabel::of(result)).inc();
    }

    /// The webhooks' bounds and counts (registered here, used by the
    /// hooks route).
    pub fn webhooks(&self) -> &Arc<crate::master::webhooks::Webhooks> {
        &self.webhooks
    }

    /// The NATS bridge's family.
    pub fn nats(&self) -> &crate::master::nats::NatsMetrics {
        &self.nats
    }

    /// The timer families.
    pub fn timers(&self) -> &crate::master::timers::TimerMetrics {
        &self.timers
    }

    /// Counts one emitted event that ended with `result` (`queued`, or
    /// why not).
    pub fn emitted(&self, result: &str) {
        self.emitted.get_or_create(&ResultLabel::of(result)).inc();
    }

    /// Counts one KV operation of kind `op` that took `elapsed`.
    pub fn kv_done(&self, op: &str, elapsed: Duration) {
        let label = OpLabel { op: op.to_owned() };
        self.kv.get_or_create(&label).inc();
        self.kv_seconds
            .get_or_create(&label)
            .observe(elapsed.as_secs_f64());
    }

    /// Everything, in the OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// The fleet as it stands at a scrape: the hub's view of each worker, the
/// supervisor's restarts, and the figures workers send in heartbeats.
struct Fleet {
    hub: Arc<Hub>,
    supervisor: Arc<OnceLock<Arc<Supervisor>>>,
    workers: u32,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("workers", &self.workers)
            .finish()
    }
}

/// Writes one family of constant values, one per label set.
fn family<L: EncodeLabelSet, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (L, M)>,
) -> Result<(), std::fmt::Error> {
    let mut values = values.into_iter().peekable();
    let Some((_, first)) = values.peek() else {
        return Ok(());
    };
    let mut metric = encoder.encode_descriptor(name, help, None, first.metric_type())?;
    for (labels, value) in values {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

type WorkerView = crate::mesophyll::hub::WorkerView;

/// The `worker` label of one slot.
fn slot(id: u32) -> Vec<(&'static str, String)> {
    vec![("worker", id.to_string())]
}

impl Collector for Fleet {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let views = self.hub.workers();
        let connected: Vec<_> = views.iter().filter(|w| w.connected).collect();
        self.encode_slots(&mut encoder, &views, &connected)?;
        encode_reported(&mut encoder, &connected)?;
        self.encode_hub(&mut encoder)
    }
}

impl Fleet {
    /// What the master knows of each worker slot: up, heartbeat age, the
    /// load figures, restarts.
    fn encode_slots(
        &self,
        encoder: &mut DescriptorEncoder,
        views: &[WorkerView],
        connected: &[&WorkerView],
    ) -> Result<(), std::fmt::Error> {
        let view = |id: u32| views.iter().find(|w| w.id == id);
        let ids = 0..self.workers;
        family(
            encoder,
            "worker_up",
            "1 while the worker slot has a live connection",
            ids.clone().map(|id| {
                let up = view(id).is_some_and(|w| w.connected);
                (slot(id), ConstGauge::new(i64::from(up)))
            }),
        )?;
        family(
            encoder,
            "worker_heartbeat_age_seconds",
            "Seconds since the worker's last frame",
            connected.iter().map(|w| {
                let age = w.since_last_frame_s.unwrap_or_default();
                (slot(w.id), ConstGauge::new(age))
            }),
        )?;
        for (name, help, value) in [
            (
                "worker_vms",
                "Tenant VMs alive in the worker (its last heartbeat)",
                (|w: &WorkerView| w.load.vms) as fn(&_) -> u64,
            ),
            (
                "worker_rss_bytes",
                "The worker process's resident memory (its last heartbeat)",
                |w| w.load.rss_bytes,
            ),
            (
                "worker_in_flight",
                "Requests running in the worker (its last heartbeat)",
                |w| w.load.in_flight,
            ),
            (
                "worker_awaited",
                "Requests the master awaits the worker's answer to",
                |w| w.awaiting as u64,
            ),
            (
                "worker_queued_bytes",
                "Bytes queued for the worker, not yet written to its socket",
                |w| w.queued_bytes,
            ),
        ] {
            family(
                encoder,
                name,
                help,
                connected
                    .iter()
                    .map(|w| (slot(w.id), ConstGauge::new(value(w) as i64))),
            )?;
        }
        let mut restarts = Vec::new();
        for id in ids {
            if let Some(status) = self.supervisor.get().and_then(|s| s.status(id)) {
                for (cause, n) in status.causes.labelled() {
                    let labels = vec![("worker", id.to_string()), ("cause", cause.to_owned())];
                    restarts.push((labels, ConstCounter::new(u64::from(n))));
                }
            }
        }
        family(
            encoder,
            "worker_restarts",
            "Restarts of spawned workers, by what ended the life before (exited, hung, never_connected)",
            restarts,
        )
    }

    /// The hub's own counts.
    fn encode_hub(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let none: Vec<(&str, String)> = Vec::new();
        family(
            encoder,
            "hub_bad_frames",
            "Frames from workers the hub could not decode",
            [(none.clone(), ConstCounter::new(self.hub.bad_frames()))],
        )?;
        family(
            encoder,
            "lost_in_flight",
            "Requests that were running on a worker when its connection ended",
            [(none, ConstCounter::new(self.hub.lost_in_flight()))],
        )
    }
}

/// What the connected workers report in their heartbeats.
fn encode_reported(
    encoder: &mut DescriptorEncoder,
    connected: &[&WorkerView],
) -> Result<(), std::fmt::Error> {
    family(
        encoder,
        "filter_calls",
        "Filter calls by worker, filter and outcome (continue, reject, failure, overloaded), since the worker started",
        connected.iter().flat_map(|w| {
            w.load.filters.iter().map(|f| {
                let labels = vec![
                    ("worker", w.id.to_string()),
                    ("filter", f.filter.clone()),
                    ("outcome", f.outcome.clone()),
                ];
                (labels, ConstCounter::new(f.calls))
            })
        }),
    )?;
    family(
        encoder,
        "event_hop_limit",
        "events.emit calls refused for the hop limit (serve --max-event-hops), by worker, since the worker started",
        connected
            .iter()
            .map(|w| (slot(w.id), ConstCounter::new(w.load.hop_limited))),
    )?;
    family(
        encoder,
        "egress_fetches",
        "http.fetch calls by worker, plugin and outcome (response, egress_denied, too_large, timeout, network, overloaded, too_many_fetches, bad_request), since the worker started",
        connected.iter().flat_map(|w| {
            w.load.egress.iter().map(|c| {
                let labels = vec![
                    ("worker", w.id.to_string()),
                    ("plugin", c.plugin.clone()),
                    ("outcome", c.outcome.clone()),
                ];
                (labels, ConstCounter::new(c.calls))
            })
        }),
    )?;
    family(
        encoder,
        "filter_metric",
        "Metrics proxy-wasm filters defined, by worker, filter, name and kind (a histogram's sum)",
        connected.iter().flat_map(|w| {
            w.load.filter_metrics.iter().map(|m| {
                let labels = vec![
                    ("worker", w.id.to_string()),
                    ("filter", m.filter.clone()),
                    ("name", m.name.clone()),
                    ("kind", m.kind.clone()),
                ];
                (labels, ConstGauge::new(m.value))
            })
        }),
    )?;
    family(
        encoder,
        "worker_bad_frames",
        "Frames from the master the worker could not decode, since it started",
        connected
            .iter()
            .map(|w| (slot(w.id), ConstCounter::new(w.load.bad_frames))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesophyll::hub::HubConfig;
    use crate::mesophyll::message::Packed;

    #[test]
    fn plugin_names_only_a_worker_said_make_no_series() {
        let metrics = Metrics::new(
            Hub::new(HubConfig::default()),
            1,
            crate::master::webhooks::WebhookConfig::default(),
            crate::master::leadership::LeaderGate::sole(),
        );
        let outcomes: Vec<PluginOutcome> = ["echo", "made-up-1", "made-up-2"]
            .into_iter()
            .map(|plugin| PluginOutcome {
                plugin: plugin.into(),
                result: Ok(Packed::from_value(&serde_json::json!(1))),
            })
            .collect();
        metrics.dispatched("ok", &outcomes, Duration::from_millis(1), |p| p == "echo");
        let text = metrics.render();
        assert!(text.contains(r#"plugin="echo""#), "{text}");
        assert!(!text.contains("made-up"), "{text}");
        assert!(
            text.contains(&format!(r#"plugin="{UNKNOWN_PLUGIN}""#)),
            "{text}"
        );
    }
}
