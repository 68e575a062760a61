//! The messages of the Mesophyll protocol, master -> worker and worker -> master.
//!
//! Every WebSocket binary frame carries exactly one of these, encoded by
//! [`crate::mesophyll::codec`] as MessagePack with structs as maps, so that a
//! field can be added later without breaking an older peer (unknown fields are
//! ignored, new optional fields default).
//!
//! Payload values (event data, results) are JSON-shaped and travel as
//! [`Packed`] (their MessagePack encoding, written inline in the frame as
//! the value itself): what people send through the REST API is what a
//! script receives, with no lossy step in between, and the master never
//! takes a payload apart.

pub use crate::mesophyll::packed::Packed;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

/// The protocol revision spoken by this build. A worker refuses a `Hello`
/// with another number rather than guessing.
pub const PROTOCOL_VERSION: u32 = 1;

/// A tenant: the unit that owns a Luau VM, state and KV.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Tenant {
    /// What kind of tenant this is (`user`, `guild`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// The tenant's id within its kind.
    pub id: String,
}

impl Tenant {
    /// Builds a tenant from its kind and id.
    pub fn new(kind: impl Into<String>, id: impl Into<String>) -> Self {
        Tenant {
            kind: kind.into(),
            id: id.into(),
        }
    }
}

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.id)
    }
}

/// An event as tenant code sees it: a name and free-form data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Event {
    /// The event's name; plugins declare which names they handle.
    pub name: String,
    /// The event's payload (nil when it has none).
    #[serde(default)]
    pub data: Packed,
    /// Headers a proxy-wasm filter added or changed (lower-case names; a
    /// name set twice has its values joined with `, `). Absent from the
    /// wire when empty, so events without them encode as before.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// How many handlers emitted it in a row (`events.emit`): 0 for an
    /// event from outside. Absent from the wire when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub hops: u32,
    /// The timer that fired it (`event.timer`), absent from the wire for
    /// any other event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timer: Option<crate::mesophyll::timers::TimerInfo>,
    /// The outside request of a webhook (`event.http`), absent for any
    /// other event; only plugins that declare the event in `webhooks` run
    /// for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<crate::mesophyll::webhook::HttpCall>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// How many handlers may emit an event in a row unless `serve
/// --max-event-hops` says otherwise.
pub const DEFAULT_MAX_EVENT_HOPS: u32 = 8;

/// Master -> worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ServerMessage {
    /// First frame on every connection: what the master expects of the worker.
    Hello {
        /// Must equal [`PROTOCOL_VERSION`].
        protocol: u32,
        /// The id the master knows this connection by.
        worker_id: u32,
        /// How often the worker must send a `Heartbeat`.
        heartbeat_interval_ms: u64,
        /// After this long without any frame, the master declares the worker dead.
        heartbeat_timeout_ms: u64,
        /// What the worker's `http.fetch` may do: the master's flags, so
        /// that the whole fleet follows them. Absent (an older master):
        /// no egress.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        egress: Option<EgressPolicy>,
        /// How many handlers may emit an event in a row
        /// ([`DEFAULT_MAX_EVENT_HOPS`] when absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_event_hops: Option<u32>,
    },
    /// Run every plugin that handles `event` for `tenant`.
    DispatchEvent {
        /// `None`: fire-and-forget, the worker sends no answer.
        req_id: Option<u64>,
        /// Whose VM runs the handlers.
        tenant: Tenant,
        /// What happened.
        event: Event,
        /// Wall-clock budget for all the handlers together.
        deadline_ms: u64,
    },
    /// Run ad-hoc Luau in the tenant's VM (internal tooling).
    RunScript {
        /// Correlates the `DispatchResponse`.
        req_id: u64,
        /// Whose VM runs the script.
        tenant: Tenant,
        /// A name for the chunk, shown in error messages.
        name: String,
        /// The Luau source.
        code: String,
        /// Passed to the script as `...` (its first vararg).
        event: Event,
        /// Wall-clock budget for the script.
        deadline_ms: u64,
    },
    /// Drop the tenant's VM; the next event creates a fresh one.
    DropTenant {
        /// Correlates the `DispatchResponse`.
        req_id: u64,
        /// Whose VM goes.
        tenant: Tenant,
    },
    /// Which tenants have a live task in the worker (the dashboard's live
    /// tenants); answered with [`LiveTenants`], the most recently used
    /// first, at most `limit` of them.
    ListTenants {
        /// Correlates the `DispatchResponse`.
        req_id: u64,
        /// The most tenants listed.
        limit: u32,
    },
    /// A tenant's state changed (or was removed: `None`); the owning worker
    /// applies it to the next events. A worker also reloads every state of
    /// its shard when it (re)connects, so a missed one heals.
    TenantStateChanged {
        /// When set, the worker answers once the state is applied.
        #[serde(default)]
        req_id: Option<u64>,
        /// Whose state.
        tenant: Tenant,
        /// The new state.
        state: Option<TenantState>,
    },
    /// The catalogue (plugins and filters) changed: reload it. Its name on
    /// the wire is the one it had when it spoke of plugins alone.
    #[serde(rename = "PluginsChanged")]
    CatalogueChanged {
        /// Monotonic catalogue revision.
        revision: u64,
    },
    /// A plugin variable was set or unset: reload them (`GET /db/vars`).
    VarsChanged {
        /// When set, the worker answers once the new values are in force.
        #[serde(default)]
        req_id: Option<u64>,
        /// The plugin whose variables changed.
        plugin: String,
    },
    /// Finish what is running (up to `grace_ms`) and exit.
    Shutdown {
        /// How long in-flight work may still take.
        grace_ms: u64,
    },
}

impl ServerMessage {
    /// Puts `id` in the message's `req_id` (a request re-sent on a new
    /// connection gets a new id there); messages without one are unchanged.
    pub fn set_req_id(&mut self, id: u64) {
        match self {
            ServerMessage::DispatchEvent { req_id, .. }
            | ServerMessage::TenantStateChanged { req_id, .. }
            | ServerMessage::VarsChanged { req_id, .. } => *req_id = Some(id),
            ServerMessage::RunScript { req_id, .. }
            | ServerMessage::DropTenant { req_id, .. }
            | ServerMessage::ListTenants { req_id, .. } => *req_id = id,
            _ => {}
        }
    }
}

/// Worker -> master.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ClientMessage {
    /// The answer to any request that carried a `req_id`.
    DispatchResponse {
        /// The request this answers.
        req_id: u64,
        /// The request's outcome.
        result: Result<Packed, RemoteError>,
    },
    /// Liveness plus a few load figures.
    Heartbeat {
        /// Requests the worker is running now.
        #[serde(default)]
        in_flight: u64,
        /// Tenant VMs alive in the worker.
        #[serde(default)]
        vms: u64,
        /// Resident memory of the worker process, in bytes.
        #[serde(default)]
        rss_bytes: u64,
        /// Frames from the master the worker could not decode.
        #[serde(default)]
        bad_frames: u64,
        /// Filter calls since the worker started, by filter and outcome.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        filters: Vec<FilterCalls>,
        /// The metrics its proxy-wasm filters defined, as they stand.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        filter_metrics: Vec<FilterMetric>,
        /// `http.fetch` calls since the worker started, by plugin and
        /// outcome.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        egress: Vec<EgressCalls>,
        /// `events.emit` calls refused for the hop limit, since the worker
        /// started.
        #[serde(default)]
        hop_limited: u64,
    },
}

/// A worker's answer to `ListTenants`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveTenants {
    /// Tenants with a live task in the worker (may exceed the list).
    pub total: u64,
    /// The most recently used first.
    pub tenants: Vec<LiveTenant>,
}

/// One tenant with a live task in a worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveTenant {
    /// Who.
    pub tenant: Tenant,
    /// Running a job now.
    pub busy: bool,
    /// Jobs waiting in its queue.
    pub queued: u64,
}

/// The egress settings a master hands its workers in `Hello` (`serve
/// --egress-*`); docs/operations.md says what each one bounds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressPolicy {
    /// `false` (`--no-egress`): every fetch is refused `egress_denied`.
    pub enabled: bool,
    /// Networks opened to fetches although the guard refuses them by
    /// default (`--egress-allow-cidr`), as `10.1.0.0/16`.
    #[serde(default)]
    pub open_networks: Vec<String>,
    /// The master's own ports (API and hub), refused whatever is open.
    #[serde(default)]
    pub master_addrs: Vec<std::net::SocketAddr>,
    /// The most bytes of one response's body.
    pub max_response_bytes: u64,
    /// The most fetches one handler call (or script) may make.
    pub max_fetches_per_call: u32,
    /// The most fetches one tenant may have in flight.
    pub max_per_tenant: u32,
    /// The most fetches one worker may have in flight (each holds a
    /// connection).
    pub max_per_worker: u32,
}

impl EgressPolicy {
    /// Egress off: what a worker assumes until its master says otherwise.
    pub fn off() -> Self {
        EgressPolicy {
            enabled: false,
            open_networks: Vec::new(),
            master_addrs: Vec::new(),
            max_response_bytes: 0,
            max_fetches_per_call: 0,
            max_per_tenant: 0,
            max_per_worker: 0,
        }
    }
}

impl Default for EgressPolicy {
    /// Egress on, nothing opened, the documented limits: 10 MiB a
    /// response, 50 fetches a call, 4 in flight a tenant, 256 a worker.
    fn default() -> Self {
        EgressPolicy {
            enabled: true,
            open_networks: Vec::new(),
            master_addrs: Vec::new(),
            max_response_bytes: 10 * 1024 * 1024,
            max_fetches_per_call: 50,
            max_per_tenant: 4,
            max_per_worker: 256,
        }
    }
}

/// How often one plugin's fetches ended one way in a worker, since it
/// started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressCalls {
    /// The plugin that fetched (`-` for a script).
    pub plugin: String,
    /// `response`, `egress_denied`, `too_large`, `timeout`, `network`,
    /// `overloaded` or `bad_request`.
    pub outcome: String,
    /// Fetches that ended so.
    pub calls: u64,
}

/// How often one filter ended one way in a worker, since it started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterCalls {
    /// The filter's name.
    pub filter: String,
    /// `continue`, `reject`, `failure` or `overloaded`.
    pub outcome: String,
    /// Calls that ended so.
    pub calls: u64,
}

/// A metric a proxy-wasm filter defined in a worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterMetric {
    /// The filter that defined it.
    pub filter: String,
    /// Its name, as the filter gave it.
    pub name: String,
    /// `counter`, `gauge` or `histogram`.
    pub kind: String,
    /// A counter's or gauge's value; a histogram's sum.
    pub value: i64,
    /// A histogram's number of values (0 for the others).
    pub count: u64,
}

/// An error that crossed the wire: a stable kind plus a human message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct RemoteError {
    /// Stable, machine-readable.
    pub kind: ErrorKind,
    /// For people; may change between versions.
    pub message: String,
}

impl RemoteError {
    /// Builds an error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        RemoteError {
            kind,
            message: message.into(),
        }
    }
}

/// The stable error kinds of the protocol. The REST API exposes them as the
/// `code` of its errors, so they are part of the public contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The tenant code ran past its deadline.
    Timeout,
    /// The tenant VM ran out of its memory allowance (the VM was recycled).
    Memory,
    /// The Luau code raised an error.
    Runtime,
    /// The Luau code did not compile.
    Syntax,
    /// No plugin handles the event, or the named thing does not exist.
    NotFound,
    /// A bounded queue was full; retry later.
    Overloaded,
    /// The request itself was malformed.
    BadRequest,
    /// A value (an event, a result) exceeds a size limit.
    TooLarge,
    /// The tenant's state does not subscribe it to the event.
    NotSubscribed,
    /// The plugin lacks a required variable (`meshplay vars set`).
    NotConfigured,
    /// A filter rejected the event (the message says which and why).
    Rejected,
    /// A filter failed (trap, timeout, bad verdict) and its plugin's policy
    /// is to reject.
    Filter,
    /// The worker is shutting down or otherwise cannot take the request.
    Unavailable,
    /// A bug or an unexpected failure inside the worker.
    Internal,
    /// A kind this build does not know (sent by a newer peer).
    #[serde(other)]
    Unknown,
}

impl ErrorKind {
    /// The kind's wire name (`timeout`, `memory`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Memory => "memory",
            ErrorKind::Runtime => "runtime",
            ErrorKind::Syntax => "syntax",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::NotSubscribed => "not_subscribed",
            ErrorKind::NotConfigured => "not_configured",
            ErrorKind::Rejected => "rejected",
            ErrorKind::Filter => "filter",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Internal => "internal",
            ErrorKind::Unknown => "unknown",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one plugin made of one event: the element type of a
/// `DispatchEvent`'s result array.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PluginOutcome {
    /// The plugin's name.
    pub plugin: String,
    /// Its handler's return value, or why there is none.
    pub result: Result<Packed, RemoteError>,
}

/// What a tenant is subscribed to, and its own free-form data.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TenantState {
    /// When set, only these events run; others are answered `not_subscribed`
    /// without starting a VM.
    #[serde(default)]
    pub events: Option<Vec<String>>,
    /// When set, only these plugins run for the tenant.
    #[serde(default)]
    pub plugins: Option<Vec<String>>,
    /// Anything the tenant's owner wants to keep with it.
    #[serde(default)]
    pub data: Value,
}

/// What a worker reports of its load in each heartbeat, and what the hub
/// keeps of the latest one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LoadFigures {
    /// Requests running in the worker.
    pub in_flight: u64,
    /// Tenant VMs alive.
    pub vms: u64,
    /// Resident memory, bytes.
    pub rss_bytes: u64,
    /// Frames from the master the worker could not decode.
    pub bad_frames: u64,
    /// Filter calls since the worker started.
    pub filters: Vec<FilterCalls>,
    /// Its proxy-wasm filters' metrics.
    pub filter_metrics: Vec<FilterMetric>,
    /// `http.fetch` calls since the worker started.
    pub egress: Vec<EgressCalls>,
    /// `events.emit` calls refused for the hop limit.
    pub hop_limited: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker of the last release still reads the renamed message.
    #[test]
    fn catalogue_changed_keeps_its_wire_name() {
        let frame = rmp_serde::to_vec_named(&ServerMessage::CatalogueChanged { revision: 3 })
            .expect("encodes");
        let text = String::from_utf8_lossy(&frame);
        assert!(text.contains("PluginsChanged"), "{text}");
    }

    /// The hub sends every request with the id it registered: a message
    /// that keeps a different id is answered into the void (as
    /// `VarsChanged` was, so `vars set` waited out its 5 s per worker).
    #[test]
    fn every_request_takes_the_id_it_is_sent_with() {
        let tenant = Tenant::new("user", "1");
        let mut messages = vec![
            ServerMessage::VarsChanged {
                req_id: Some(0),
                plugin: "p".into(),
            },
            ServerMessage::TenantStateChanged {
                req_id: Some(0),
                tenant: tenant.clone(),
                state: Some(TenantState::default()),
            },
            ServerMessage::DropTenant { req_id: 0, tenant },
        ];
        for m in &mut messages {
            m.set_req_id(42);
            let encoded = serde_json::to_value(&*m).unwrap();
            let id = encoded.as_object().unwrap().values().next().unwrap()["req_id"].clone();
            assert_eq!(id, serde_json::json!(42), "{m:?}");
        }
    }
}
