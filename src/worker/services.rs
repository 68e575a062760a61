//! What every tenant actor and VM of a worker shares: who the worker is,
//! its store client, its filter engine, and the current catalogue.
//!
//! The catalogue is swapped whole ([`Services::set_catalogue`]); whoever
//! holds the previous `Arc<LoadedCatalogue>` (a running event) keeps using it, so
//! events finish on the plugin and filter versions they started with.

use crate::catalogue::manifest::DEFAULT_FILTER_TIMEOUT;
use crate::mesophyll::db_client::DbClient;
use crate::mesophyll::message::DEFAULT_MAX_EVENT_HOPS;
use crate::mesophyll::message::{FilterCalls, FilterMetric};
use crate::worker::egress::Egress;
use crate::worker::filters::proxy::shared::MetricKind;
use crate::worker::filters::{FilterEngine, FilterError, FilterInput, Verdict};
use crate::worker::loaded::LoadedCatalogue;
use crate::worker::vars::VarsBook;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// How a filter call can end, as the metrics label it.
const OUTCOMES: [&str; 4] = ["continue", "reject", "failure", "overloaded"];

/// The shared services of one worker.
pub struct Services {
    /// The worker's id (scripts see it as `meshplay.worker_id`).
    pub worker_id: u32,
    /// The store; `None` in unit tests, where `kv` calls fail clearly.
    pub db: Option<DbClient>,
    /// The filter runtime; `None` where filters are not wanted (tests).
    pub engine: Option<FilterEngine>,
    /// Outbound HTTP (`http.fetch`): off until the master's `Hello` says.
    pub egress: Egress,
    /// Plugin variables, as the master last handed them.
    pub vars: Arc<VarsBook>,
    /// How many handlers may emit an event in a row (the master's
    /// `Hello`).
    max_event_hops: AtomicU32,
    /// Emits refused for that limit, since the worker started.
    hop_limited: AtomicU64,
    catalogue: RwLock<Arc<LoadedCatalogue>>,
    /// Filter calls since the worker started, by filter and then by
    /// [`OUTCOMES`]: what the heartbeats carry to the master's metrics.
    calls: Mutex<BTreeMap<String, [u64; OUTCOMES.len()]>>,
}

impl Services {
    /// Services running `catalogue`.
    pub fn new(
        worker_id: u32,
        db: Option<DbClient>,
        engine: Option<FilterEngine>,
        catalogue: LoadedCatalogue,
    ) -> Arc<Self> {
        Arc::new(Services {
            worker_id,
            db,
            engine,
            egress: Egress::default(),
            vars: Arc::default(),
            max_event_hops: AtomicU32::new(DEFAULT_MAX_EVENT_HOPS),
            hop_limited: AtomicU64::new(0),
            catalogue: RwLock::new(Arc::new(catalogue)),
            calls: Mutex::default(),
        })
    }

    /// Services with no store, no filters and no plugins (unit tests).
    pub fn bare() -> Arc<Self> {
        Self::new(0, None, None, LoadedCatalogue::default())
    }

    /// How many handlers may emit an event in a row.
    pub fn max_event_hops(&self) -> u32 {
        self.max_event_hops.load(Ordering::Relaxed)
    }

    /// Takes the master's hop limit.
    pub fn set_max_event_hops(&self, hops: u32) {
        self.max_event_hops.store(hops, Ordering::Relaxed);
    }

    /// Counts an emit refused for the hop limit.
    pub fn note_hop_limited(&self) {
        self.hop_limited.fetch_add(1, Ordering::Relaxed);
    }

    /// Emits refused for the hop limit since the worker started.
    pub fn hop_limited(&self) -> u64 {
        self.hop_limited.load(Ordering::Relaxed)
    }

    /// The catalogue now.
    pub fn catalogue(&self) -> Arc<LoadedCatalogue> {
        Arc::clone(&self.catalogue.read().unwrap())
    }

    /// Swaps in a new catalogue for the next events.
    pub fn set_catalogue(&self, catalogue: LoadedCatalogue) {
        *self.catalogue.write().unwrap() = Arc::new(catalogue);
    }

    /// Runs filter `name` of `catalogue` on `input`, within `timeout`
    /// ([`DEFAULT_FILTER_TIMEOUT`] when `None`).
    ///
    /// Runs on the calling thread. On a multi-threaded tokio runtime (a
    /// worker's) the thread first hands its other tasks to the rest of the
    /// runtime, so a filter that spins to its deadline stalls only the
    /// tenant it runs for.
    pub fn run_filter(
        &self,
        catalogue: &LoadedCatalogue,
        name: &str,
        input: &FilterInput<'_>,
        timeout: Option<Duration>,
    ) -> Result<Verdict, FilterError> {
        let filter = catalogue
            .filter(name)
            .ok_or_else(|| FilterError::Missing(name.to_owned()))?;
        let engine = self
            .engine
            .as_ref()
            .ok_or_else(|| FilterError::Missing(name.to_owned()))?;
        let call = || engine.run(filter, input, timeout.unwrap_or(DEFAULT_FILTER_TIMEOUT));
        let multi_threaded = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let verdict = if multi_threaded {
            tokio::task::block_in_place(call)
        } else {
            call()
        };
        let outcome = match &verdict {
            Ok(Verdict::Continue { .. }) => 0,
            Ok(Verdict::Reject { .. }) => 1,
            Err(FilterError::Overloaded(_)) => 3,
            Err(_) => 2,
        };
        let mut calls = self.calls.lock().unwrap();
        // No allocation once a filter has been called.
        match calls.get_mut(name) {
            Some(counts) => counts[outcome] += 1,
            None => {
                let mut counts = [0; OUTCOMES.len()];
                counts[outcome] = 1;
                calls.insert(name.to_owned(), counts);
            }
        }
        drop(calls);
        verdict
    }

    /// Filter calls since the worker started, by filter and outcome.
    pub fn filter_calls(&self) -> Vec<FilterCalls> {
        let calls = self.calls.lock().unwrap();
        calls
            .iter()
            .flat_map(|(filter, counts)| {
                OUTCOMES
                    .iter()
                    .zip(counts)
                    .filter(|(_, n)| **n > 0)
                    .map(|(outcome, n)| FilterCalls {
                        filter: filter.clone(),
                        outcome: (*outcome).to_owned(),
                        calls: *n,
                    })
            })
            .collect()
    }

    /// The metrics the worker's proxy-wasm filters defined, as they stand.
    pub fn filter_metrics(&self) -> Vec<FilterMetric> {
        let Some(engine) = &self.engine else {
            return Vec::new();
        };
        engine
            .proxy_shared
            .metrics()
            .into_iter()
            .map(|m| FilterMetric {
                filter: m.filter.to_string(),
                name: m.name,
                kind: match m.kind {
                    MetricKind::Counter => "counter",
                    MetricKind::Gauge => "gauge",
                    MetricKind::Histogram => "histogram",
                }
                .to_owned(),
                value: m.value,
                count: m.count,
            })
            .collect()
    }
}
