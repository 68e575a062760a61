//! Egress: the HTTP requests tenants' code makes (`http.fetch`), and
//! everything that bounds them.
//!
//! One [`Egress`] per worker holds the policy its master sent in `Hello`
//! (flags `serve --egress-*`, the same for the whole fleet), one pooled
//! HTTP client (HTTP/1.1 and HTTP/2 by ALPN, TLS with Mozilla's roots)
//! whose every connection goes through the [`guard`], and the worker's
//! count of fetches by plugin and outcome for `/metrics`.
//!
//! A fetch is checked in this order, each step with its own error code
//! ([`FetchError::code`]):
//!
//! 1. the URL parses (`bad_request`), and the options do;
//! 2. egress is on and the running plugin's `allowed_hosts` allows the
//!    origin (`egress_denied`, naming the line that would allow it);
//! 3. the call has fetches left, the tenant a slot, the worker a
//!    connection (`too_many_fetches`, `overloaded`);
//! 4. every address of the host passes the guard at connect time
//!    (`egress_denied`);
//! 5. the answer comes before the timeout, which is never later than the
//!    handler's deadline (`timeout`), and its body is within the limit
//!    (`too_large`); a failed connection or exchange is `network`;
//! 6. a redirect is followed (at most [`MAX_REDIRECTS`]) only through
//!    steps 2 to 5 again, without `authorization` and `cookie` once the
//!    origin changes.
//!
//! Modules:
//!
//! - [`fetch`]: one fetch, from the checked request to the read body,
//!   redirects followed hop by hop through the same checks (see `super` for
//!   the order);
//! - [`script`]: `http.fetch(url [, options])`, as a script calls it;
//! - [`stand_in`]: the outside world as a plugin's tests see it.

pub mod fetch;
pub mod guard;
pub mod script;
pub mod stand_in;

use crate::mesophyll::message::{EgressCalls, EgressPolicy};
use bytes::Bytes;
use guard::{Guard, GuardedConnector};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::Semaphore;

pub use fetch::{FetchError, FetchRequest, FetchResponse, MAX_REDIRECTS};

/// Idle pooled connections kept per origin.
const IDLE_PER_ORIGIN: usize = 8;
/// How long a pooled connection may idle before it is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The HTTP client of the egress, over the guarded connector.
pub(crate) type EgressClient = Client<HttpsConnector<GuardedConnector>, Full<Bytes>>;

/// A worker's egress: policy, client, counts.
pub struct Egress {
    active: RwLock<Arc<Active>>,
    /// Fetches since the worker started, by plugin, then outcome.
    calls: Mutex<BTreeMap<String, BTreeMap<&'static str, u64>>>,
    /// Answers in place of the network, under `meshplay test`.
    stand_in: RwLock<Option<Arc<stand_in::StandIn>>>,
}

/// What a policy made: its guard, a client through it, and the worker's
/// connection slots.
pub(crate) struct Active {
    pub(crate) policy: EgressPolicy,
    pub(crate) client: EgressClient,
    pub(crate) connections: Arc<Semaphore>,
}

impl Active {
    fn new(policy: EgressPolicy) -> Active {
        let guard = Arc::new(Guard::new(&policy));
        let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            })
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(GuardedConnector::new(guard));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(IDLE_TIMEOUT)
            .pool_max_idle_per_host(IDLE_PER_ORIGIN)
            .build(connector);
        let connections = Arc::new(Semaphore::new(policy.max_per_worker as usize));
        Active {
            policy,
            client,
            connections,
        }
    }
}

impl Default for Egress {
    fn default() -> Self {
        Egress::new(EgressPolicy::off())
    }
}

impl Egress {
    /// An egress following `policy`.
    pub fn new(policy: EgressPolicy) -> Self {
        Egress {
            active: RwLock::new(Arc::new(Active::new(policy))),
            calls: Mutex::default(),
            stand_in: RwLock::default(),
        }
    }

    /// Follows `policy` from now on (a master's `Hello`). Fetches already
    /// running finish under the policy they started with; an unchanged
    /// policy keeps the pooled connections.
    pub fn set_policy(&self, policy: &EgressPolicy) {
        if self.active.read().unwrap().policy == *policy {
            return;
        }
        tracing::info!(
            enabled = policy.enabled,
            open = ?policy.open_networks,
            "egress policy from the master"
        );
        *self.active.write().unwrap() = Arc::new(Active::new(policy.clone()));
    }

    /// Answers fetches from `stand_in` instead of the network from now on
    /// (a plugin's tests, [`stand_in`]).
    pub fn use_stand_in(&self, stand_in: Arc<stand_in::StandIn>) {
        *self.stand_in.write().unwrap() = Some(stand_in);
    }

    pub(crate) fn stand_in(&self) -> Option<Arc<stand_in::StandIn>> {
        self.stand_in.read().unwrap().clone()
    }

    pub(crate) fn active(&self) -> Arc<Active> {
        Arc::clone(&self.active.read().unwrap())
    }

    /// Counts one fetch of `plugin` that ended as `outcome`.
    pub(crate) fn count(&self, plugin: &str, outcome: &'static str) {
        let mut calls = self.calls.lock().unwrap();
        match calls.get_mut(plugin) {
            Some(by) => *by.entry(outcome).or_default() += 1,
            None => {
                calls.insert(plugin.to_owned(), BTreeMap::from([(outcome, 1)]));
            }
        }
    }

    /// Fetches since the worker started, for its heartbeat.
    pub fn calls(&self) -> Vec<EgressCalls> {
        let calls = self.calls.lock().unwrap();
        calls
            .iter()
            .flat_map(|(plugin, by)| {
                by.iter().map(|(outcome, n)| EgressCalls {
                    plugin: plugin.clone(),
                    outcome: (*outcome).to_owned(),
                    calls: *n,
                })
            })
            .collect()
    }
}
