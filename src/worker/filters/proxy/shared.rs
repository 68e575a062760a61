//! What outlives one proxy-wasm call inside a worker: shared data, scoped
//! to the tenant, and the metrics filters define.
//!
//! **Shared data** is Envoy's per-VM key-value store, cut to one tenant:
//! every proxy-wasm filter that runs for tenant T reads and writes T's
//! entries, and no other tenant's. A tenant's events all go to one worker
//! (sharding), so the worker's copy is the whole of it; it lives in memory
//! as long as the worker process (a restarted worker starts empty), at most
//! [`MAX_TENANT_BYTES`] per tenant and [`MAX_WORKER_BYTES`] for all. It is
//! keyed by the [`Tenant`] itself, never by its `type:id` text, which two
//! tenants can share (`user`, `a:b` and `user:a`, `b`).
//!
//! **Metrics** are the worker's, by filter and name (no tenant: labels per
//! tenant would not scale). A filter sees only the ids it defined, defines
//! at most [`MAX_METRICS_PER_FILTER`] with names of at most
//! [`MAX_METRIC_NAME`] bytes, and the worker keeps at most [`MAX_METRICS`],
//! so that no filter (whatever names its input makes it define) uses up
//! the others'.

use super::Status;
use crate::mesophyll::message::Tenant;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The most bytes of keys and values one tenant's shared data may hold.
pub const MAX_TENANT_BYTES: usize = 1024 * 1024;

/// The most bytes of keys and values all tenants' shared data may hold in
/// one worker.
pub const MAX_WORKER_BYTES: usize = 64 * 1024 * 1024;

/// The most metrics one worker keeps.
pub const MAX_METRICS: usize = 1024;

/// The most metrics one filter may define.
pub const MAX_METRICS_PER_FILTER: usize = 64;

/// The longest metric name, in bytes.
pub const MAX_METRIC_NAME: usize = 256;

/// Shared data and metrics of one worker's proxy-wasm filters.
#[derive(Default)]
pub struct ProxyShared {
    data: Mutex<SharedData>,
    metrics: Mutex<Vec<Metric>>,
}

/// Every tenant's shared data, and the bytes of all of it.
#[derive(Default)]
struct SharedData {
    tenants: HashMap<Tenant, TenantData>,
    bytes: usize,
}

#[derive(Default)]
struct TenantData {
    entries: HashMap<Vec<u8>, (Vec<u8>, u32)>,
    bytes: usize,
}

/// What a metric counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up.
    Counter,
    /// Set, or moved either way.
    Gauge,
    /// A distribution of recorded values (kept as count and sum).
    Histogram,
}

/// One metric as it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// The filter that defined it.
    pub filter: Arc<str>,
    /// Its name, as the filter gave it.
    pub name: String,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// A counter's or gauge's value; a histogram's sum.
    pub value: i64,
    /// How many values a histogram recorded.
    pub count: u64,
}

impl ProxyShared {
    /// Tenant `tenant`'s value under `key` and its compare-and-swap token.
    pub fn get(&self, tenant: &Tenant, key: &[u8]) -> Option<(Vec<u8>, u32)> {
        let data = self.data.lock().unwrap();
        data.tenants.get(tenant)?.entries.get(key).cloned()
    }

    /// Sets tenant `tenant`'s `key` to `value`. A non-zero `cas` must match
    /// the entry's token (as Envoy does, a key that does not exist yet is
    /// created whatever the token).
    ///
    /// Fails with `CAS_MISMATCH` when the entry changed since it was read,
    /// `INTERNAL_FAILURE` when the tenant's budget or the worker's would be
    /// exceeded.
    pub fn set(&self, tenant: &Tenant, key: &[u8], value: &[u8], cas: u32) -> Result<(), Status> {
        let mut data = self.data.lock().unwrap();
        let (old_bytes, token, tenant_bytes) = match data.tenants.get(tenant) {
            Some(t) => match t.entries.get(key) {
                Some((_, token)) if cas != 0 && cas != *token => return Err(Status::CasMismatch),
                Some((old, token)) => (key.len() + old.len(), *token, t.bytes),
                None => (0, 0, t.bytes),
            },
            None => (0, 0, 0),
        };
        let new_bytes = key.len() + value.len();
        let tenant_bytes = tenant_bytes - old_bytes + new_bytes;
        let worker_bytes = data.bytes - old_bytes + new_bytes;
        if tenant_bytes > MAX_TENANT_BYTES || worker_bytes > MAX_WORKER_BYTES {
            return Err(Status::InternalFailure);
        }
        let next = token.wrapping_add(1).max(1);
        data.bytes = worker_bytes;
        let t = data.tenants.entry(tenant.clone()).or_default();
        t.entries.insert(key.to_vec(), (value.to_vec(), next));
        t.bytes = tenant_bytes;
        Ok(())
    }

    /// The id of `filter`'s metric `name` of `kind`, defined now if it is
    /// new. Every call of a filter defines its metrics again (a fresh
    /// instance each time), so a name keeps its id.
    ///
    /// Fails with `BAD_ARGUMENT` when the name is taken by another kind or
    /// is longer than [`MAX_METRIC_NAME`], `INTERNAL_FAILURE` past
    /// [`MAX_METRICS_PER_FILTER`] or [`MAX_METRICS`].
    pub fn define(&self, filter: &Arc<str>, kind: MetricKind, name: &str) -> Result<u32, Status> {
        if name.len() > MAX_METRIC_NAME {
            return Err(Status::BadArgument);
        }
        let mut metrics = self.metrics.lock().unwrap();
        if let Some(i) = metrics
            .iter()
            .position(|m| m.filter == *filter && m.name == name)
        {
            return if metrics[i].kind == kind {
                Ok(i as u32 + 1)
            } else {
                Err(Status::BadArgument)
            };
        }
        let mine = metrics.iter().filter(|m| m.filter == *filter).count();
        if metrics.len() >= MAX_METRICS || mine >= MAX_METRICS_PER_FILTER {
            return Err(Status::InternalFailure);
        }
        metrics.push(Metric {
            filter: Arc::clone(filter),
            name: name.to_owned(),
            kind,
            value: 0,
            count: 0,
        });
        Ok(metrics.len() as u32)
    }

    /// Runs `f` on metric `id` if `filter` defined it (`NOT_FOUND` otherwise).
    fn with<T>(
        &self,
        filter: &str,
        id: u32,
        f: impl FnOnce(&mut Metric) -> Result<T, Status>,
    ) -> Result<T, Status> {
        let mut metrics = self.metrics.lock().unwrap();
        match metrics.get_mut((id as usize).wrapping_sub(1)) {
            Some(m) if &*m.filter == filter => f(m),
            _ => Err(Status::NotFound),
        }
    }

    /// Moves metric `id` by `delta`; a counter cannot go down
    /// (`BAD_ARGUMENT`), a histogram is recorded, not moved.
    pub fn increment(&self, filter: &str, id: u32, delta: i64) -> Result<(), Status> {
        self.with(filter, id, |m| match m.kind {
            MetricKind::Counter if delta < 0 => Err(Status::BadArgument),
            MetricKind::Histogram => Err(Status::BadArgument),
            _ => {
                m.value = m.value.saturating_add(delta);
                Ok(())
            }
        })
    }

    /// Sets metric `id` to `value` (a histogram records it).
    pub fn record(&self, filter: &str, id: u32, value: u64) -> Result<(), Status> {
        let value = i64::try_from(value).unwrap_or(i64::MAX);
        self.with(filter, id, |m| {
            if m.kind == MetricKind::Histogram {
                m.value = m.value.saturating_add(value);
                m.count += 1;
            } else {
                m.value = value;
            }
            Ok(())
        })
    }

    /// Metric `id`'s value; a histogram has none to give (`BAD_ARGUMENT`).
    pub fn value(&self, filter: &str, id: u32) -> Result<u64, Status> {
        self.with(filter, id, |m| match m.kind {
            MetricKind::Histogram => Err(Status::BadArgument),
            _ => Ok(m.value.max(0) as u64),
        })
    }

    /// Every metric as it stands.
    pub fn metrics(&self) -> Vec<Metric> {
        self.metrics.lock().unwrap().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_data_is_per_tenant_and_compare_and_swapped() {
        let s = ProxyShared::default();
        let (one, two) = (Tenant::new("user", "1"), Tenant::new("user", "2"));
        s.set(&one, b"k", b"v1", 0).unwrap();
        let (v, cas) = s.get(&one, b"k").unwrap();
        assert_eq!(v, b"v1");
        assert_eq!(s.get(&two, b"k"), None);
        s.set(&one, b"k", b"v2", cas).unwrap();
        assert_eq!(s.set(&one, b"k", b"v3", cas), Err(Status::CasMismatch));
        assert_eq!(s.get(&one, b"k").unwrap().0, b"v2");
        let big = vec![0u8; MAX_TENANT_BYTES];
        assert_eq!(s.set(&one, b"big", &big, 0), Err(Status::InternalFailure));
        // Another tenant's budget is its own.
        s.set(&two, b"b", &big[..MAX_TENANT_BYTES - 1], 0).unwrap();
    }

    #[test]
    fn tenants_whose_text_is_the_same_do_not_share_data() {
        let s = ProxyShared::default();
        let (a, b) = (Tenant::new("user", "a:b"), Tenant::new("user:a", "b"));
        assert_eq!(a.to_string(), b.to_string(), "the clash this guards");
        s.set(&a, b"k", b"mine", 0).unwrap();
        assert_eq!(s.get(&b, b"k"), None);
    }

    #[test]
    fn all_tenants_together_stay_within_the_workers_budget() {
        let s = ProxyShared::default();
        let value = vec![0u8; MAX_TENANT_BYTES - 16];
        let fit = MAX_WORKER_BYTES / MAX_TENANT_BYTES;
        for i in 0..fit {
            s.set(&Tenant::new("user", i.to_string()), b"k", &value, 0)
                .unwrap();
        }
        let one_more = Tenant::new("user", "one-more");
        assert_eq!(
            s.set(&one_more, b"k", &value, 0),
            Err(Status::InternalFailure)
        );
        // Overwriting in place is no growth.
        s.set(&Tenant::new("user", "0"), b"k", &value, 0).unwrap();
    }

    #[test]
    fn no_filter_defines_more_than_its_share_of_metrics() {
        let s = ProxyShared::default();
        let (greedy, other): (Arc<str>, Arc<str>) = (Arc::from("greedy"), Arc::from("other"));
        for i in 0..MAX_METRICS_PER_FILTER {
            s.define(&greedy, MetricKind::Counter, &format!("m{i}"))
                .unwrap();
        }
        assert_eq!(
            s.define(&greedy, MetricKind::Counter, "one-more"),
            Err(Status::InternalFailure)
        );
        s.define(&other, MetricKind::Counter, "mine").unwrap();
        let long = "x".repeat(MAX_METRIC_NAME + 1);
        assert_eq!(
            s.define(&other, MetricKind::Counter, &long),
            Err(Status::BadArgument)
        );
    }

    #[test]
    fn metrics_belong_to_the_filter_that_defined_them() {
        let s = ProxyShared::default();
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        let id = s.define(&a, MetricKind::Counter, "hits").unwrap();
        assert_eq!(s.define(&a, MetricKind::Counter, "hits"), Ok(id));
        assert_eq!(
            s.define(&a, MetricKind::Gauge, "hits"),
            Err(Status::BadArgument)
        );
        s.increment("a", id, 2).unwrap();
        assert_eq!(s.increment("a", id, -1), Err(Status::BadArgument));
        assert_eq!(s.increment("b", id, 1), Err(Status::NotFound));
        assert_eq!(s.value("a", id), Ok(2));
        let h = s.define(&b, MetricKind::Histogram, "size").unwrap();
        s.record("b", h, 10).unwrap();
        s.record("b", h, 30).unwrap();
        let m = s.metrics();
        assert_eq!((m[1].value, m[1].count), (40, 2));
        assert_eq!(s.value("b", 99), Err(Status::NotFound));
    }
}
