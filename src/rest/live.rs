//! The shapes of what the dashboard watches live: the console's stream of
//! dispatches (`GET /api/v1/console`, server-sent events), the last
//! minute's traffic per second (`GET /api/v1/traffic`) and the tenants
//! with a live VM (`GET /api/v1/tenants`).

use super::{ErrorDetail, PluginResult};
use crate::mesophyll::message::Tenant;
use serde::{Deserialize, Serialize};

/// One dispatch as the console shows it: the `data` of an SSE event named
/// `dispatch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct ConsoleEntry {
    /// When the answer left the master (Unix milliseconds).
    pub at_ms: u64,
    /// Who got the event (`type:id`, as sent when it was refused before
    /// being read as a tenant).
    pub tenant: String,
    /// The event's name.
    pub event: String,
    /// The worker of the tenant's shard (none when refused before that).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<u32>,
    /// The id the logs carry for it, when it was sent and waited for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// `ok`, `accepted` (fire-and-forget) or the API error's code.
    pub result: String,
    /// From the API's receipt to its answer.
    pub elapsed_ms: f64,
    /// The plugins' results of a waited dispatch, unless they were larger
    /// than [`ConsoleEntry::MAX_RESULTS_BYTES`] (then `truncated`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<PluginResult>,
    /// The results were left out for their size.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// Why the dispatch failed as a whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

impl ConsoleEntry {
    /// The largest results (as JSON) the console carries: a console is for
    /// watching, the API's answer has everything.
    pub const MAX_RESULTS_BYTES: usize = 4096;
}

/// `GET /api/v1/traffic`: the last minute, second by second.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Traffic {
    /// Sixty entries, the oldest first; the last is the second under way.
    pub seconds: Vec<TrafficSecond>,
}

/// One second of dispatches.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct TrafficSecond {
    /// The second (Unix time).
    pub at: u64,
    /// Events (as in [`super::LastMinute`]).
    pub events: u64,
    /// Of which errors.
    pub errors: u64,
    /// Dispatch requests answered.
    pub dispatches: u64,
    /// Their mean latency, in milliseconds (0 without dispatches).
    pub mean_ms: f64,
    /// Their largest latency, in milliseconds.
    pub max_ms: f64,
}

/// `GET /api/v1/tenants?limit=`: tenants with a live VM, across workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct LiveTenantList {
    /// Tenants with a live task, all workers that answered together.
    pub total: u64,
    /// Up to `limit` per worker, each worker's most recently used first.
    pub tenants: Vec<LiveTenantInfo>,
    /// Workers that could not be asked (down, or no answer in time).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unavailable: Vec<u32>,
}

/// One tenant with a live VM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct LiveTenantInfo {
    /// Who.
    pub tenant: Tenant,
    /// The worker whose VM it is.
    pub worker: u32,
    /// Running a job now.
    pub busy: bool,
    /// Jobs waiting in its queue.
    pub queued: u64,
}
