//! The REST API's request and response bodies, owned here and shared by the
//! server (`master::api`) and the typed client ([`crate::client`]) so the
//! two cannot drift apart. It depends on nothing but the protocol's value
//! types, so an application that only talks to the API builds it alone.
//!
//! Everything here is JSON on the wire (MessagePack is accepted for request
//! bodies). Errors always have the shape of [`ErrorBody`]: a stable `code`
//! for programs and a `message` for people.
//!
//! Modules:
//!
//! - `access`: the bodies of tokens, join tokens and the audit log;
//! - `deploy`: `POST /api/v1/catalogue`;
//! - `leadership`: what `/api/v1/status` says of leadership when masters
//!   share one PostgreSQL (`serve --standby`);
//! - `live`: the shapes of what the dashboard watches live;
//! - `schedules`: bodies of the schedules and timers routes
//!   (`/api/v1/tenants/{type}/{id}/schedules[/{name}]`, `.../timers`);
//! - `stream`: the frames of the binary client API (`GET /api/v1/stream`, a
//!   WebSocket on the API port);
//! - `vars`: the REST API's types for plugin variables
//!   (`/api/v1/plugins/{name}/vars`).

mod access;
mod deploy;
mod leadership;
mod live;
mod schedules;
mod stream;
mod vars;
pub use access::{
    AuditEntry, AuditPage, CreateJoinToken, CreateToken, CreatedToken, JoinTokenInfo,
    JoinTokenList, JoinedWorker, TokenInfo, TokenList,
};
pub use deploy::{Deployed, Deployment, MAX_DEPLOY_BYTES};
pub use leadership::{LeadershipStatus, MasterSeen};
pub use schedules::{ScheduleList, SchedulePut, TimerList};
pub use vars::{VarChange, VarChanged, VarInfo, VarList, VarOverride};

pub use live::{ConsoleEntry, LiveTenantInfo, LiveTenantList, Traffic, TrafficSecond};
pub use stream::{StreamAnswer, StreamError, StreamRequest};

use crate::mesophyll::db::KvRecord;
use crate::mesophyll::message::{ErrorKind, Event, Packed, PluginOutcome, RemoteError, Tenant};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How long a waiting dispatch or a script may run when the caller does not
/// say.
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;

/// The longest `timeout_ms` the API accepts.
pub const MAX_TIMEOUT_MS: u64 = 600_000;

/// The largest request body the API reads, in bytes.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// `GET /api/system/version`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Version {
    /// Always `meshplay`.
    pub name: String,
    /// The crate version of the running master.
    pub version: String,
    /// The Mesophyll protocol revision it speaks.
    pub protocol: u32,
}

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Health {
    /// `ok` when every worker is connected, `degraded` otherwise.
    pub status: String,
    /// Workers the master expects.
    pub workers: u32,
    /// Workers connected to the hub now.
    pub connected: u32,
}

/// `GET /readyz`: 200 when every worker slot is served, 503 before.
///
/// A worker connects only once it has loaded the catalogue and the tenant
/// states of its shard, so a connected slot is one that can run events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Readiness {
    /// Whether every slot is served.
    pub ready: bool,
    /// Worker slots the master has.
    pub workers: u32,
    /// Slots served now.
    pub connected: u32,
    /// The slots not served, by id.
    pub waiting_for: Vec<u32>,
    /// A standby master is never ready: it routes nothing.
    #[serde(default)]
    pub standby: bool,
}

/// `GET /api/v1/status`: the master on one screen (`meshplay status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Status {
    /// The master's version.
    pub version: String,
    /// The Mesophyll protocol version.
    pub protocol: u32,
    /// Seconds since the master started.
    pub uptime_s: f64,
    /// The store, as a URL (`sled:PATH`).
    pub store: String,
    /// Worker slots.
    pub workers: u32,
    /// Slots served now.
    pub running: u32,
    /// Restarts of spawned workers since the master started.
    pub restarts: u32,
    /// The plugins in force, by name.
    pub plugins: Vec<String>,
    /// The filters in force, by name.
    pub filters: Vec<String>,
    /// Events and errors of the last 60 seconds.
    pub last_minute: LastMinute,
    /// Which master leads, with `serve --standby`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leadership: Option<LeadershipStatus>,
}

/// The last minute's traffic: plugin results of waited dispatches,
/// fire-and-forget dispatches, and dispatches that failed as a whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct LastMinute {
    /// Events in the last 60 s.
    pub events: u64,
    /// Of those, the ones that ended in an error.
    pub errors: u64,
    /// `events` / 60.
    pub events_per_s: f64,
    /// `errors` / `events` (0 without events).
    pub error_ratio: f64,
}

/// The life-cycle state of one worker, as the master sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    /// Spawned (or expected), not connected yet.
    Starting,
    /// Connected to the hub.
    Running,
    /// Dead; waiting out its back-off before the next spawn.
    Restarting,
    /// Started by someone else (`--external-workers`) and not connected.
    Disconnected,
    /// The master is shutting down.
    Stopped,
}

/// One row of `GET /api/v1/workers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct WorkerInfo {
    /// The worker id (its shard number).
    pub id: u32,
    /// Where it is in its life cycle.
    pub state: WorkerState,
    /// Whether the master spawned it (false for `--external-workers`).
    pub managed: bool,
    /// The process id, for a worker the master spawned and that runs now.
    pub pid: Option<u32>,
    /// The address its connection comes from (IP), when connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// For a slot a worker joined: who holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joined: Option<JoinedWorker>,
    /// How many times the master has restarted it.
    pub restarts: u32,
    /// Seconds since its last frame (heartbeat or answer), when connected.
    pub since_heartbeat_s: Option<f64>,
    /// Requests the master awaits from it now.
    pub in_flight: u64,
    /// Tenant VMs alive in it, from its last heartbeat.
    pub vms: u64,
    /// Its resident memory, from its last heartbeat.
    pub rss_bytes: u64,
}

/// `GET /api/v1/workers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Workers {
    /// Every worker, by id.
    pub workers: Vec<WorkerInfo>,
    /// Frames the hub could not decode since the master started (all
    /// workers together). They are dropped, never fatal.
    pub bad_frames: u64,
    /// Requests that had been sent to a worker whose connection then ended
    /// (killed, hung, cut), failed at once with `worker_unavailable`, since
    /// the master started. They may have run; they are never replayed.
    #[serde(default)]
    pub lost_in_flight: u64,
}

/// `serde(default)` for the `wait` flags: a dispatch waits unless told not to.
pub(crate) fn yes() -> bool {
    true
}

/// `POST /api/v1/tenants/{type}/{id}/events`.
///
/// Generic over how the payload is held: [`Value`] for applications, and
/// [`Packed`] in the master, which only passes it on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(
    deny_unknown_fields,
    bound(deserialize = "V: Deserialize<'de> + Default")
)]
pub struct DispatchRequest<V = Value> {
    /// The event's name.
    pub name: String,
    /// Its payload.
    #[serde(default)]
    pub data: V,
    /// Wait for the plugins' results (200) or return at once (202).
    #[serde(default = "yes")]
    pub wait: bool,
    /// Budget for all the plugins together ([`DEFAULT_TIMEOUT_MS`] when
    /// absent).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// One plugin's answer in a [`Dispatched`]: exactly one of `value` and
/// `error` is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(bound(deserialize = "V: Deserialize<'de>"))]
pub struct PluginResult<V = Value> {
    /// The plugin.
    pub plugin: String,
    /// What its handler returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<V>,
    /// Why it returned nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

/// As the master passes it on (`V = Packed`) or as an application reads
/// it (`V = Value`).
impl<V: From<Packed>> From<PluginOutcome> for PluginResult<V> {
    fn from(o: PluginOutcome) -> Self {
        match o.result {
            Ok(v) => PluginResult {
                plugin: o.plugin,
                value: Some(v.into()),
                error: None,
            },
            Err(e) => PluginResult {
                plugin: o.plugin,
                value: None,
                error: Some(e.into()),
            },
        }
    }
}

/// 200 answer of a waiting dispatch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Dispatched<V = Value> {
    /// Who got the event.
    pub tenant: Tenant,
    /// The worker that ran it.
    pub worker: u32,
    /// One entry per plugin that handles the event, in catalogue order.
    pub results: Vec<PluginResult<V>>,
    /// The id master and worker logs carry for this request (16 hex digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// 202 answer of a fire-and-forget dispatch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Accepted {
    /// Who gets the event.
    pub tenant: Tenant,
    /// The worker it was queued to.
    pub worker: u32,
}

/// `POST /api/v1/tenants/{type}/{id}/scripts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ScriptRequest {
    /// Chunk name shown in error messages (`script` when absent).
    #[serde(default)]
    pub name: Option<String>,
    /// The Luau source.
    pub code: String,
    /// Passed to the script as `...`.
    #[serde(default)]
    pub event: Option<Event>,
    /// Budget ([`DEFAULT_TIMEOUT_MS`] when absent).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// 200 answer of a script.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct ScriptResult<V = Value> {
    /// Who ran it.
    pub tenant: Tenant,
    /// The worker that ran it.
    pub worker: u32,
    /// What the script returned (`null` for nothing).
    pub result: V,
    /// The id master and worker logs carry for this request (16 hex digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// 200 answer of `DELETE /api/v1/tenants/{type}/{id}/vm`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Dropped {
    /// Whose VM went.
    pub tenant: Tenant,
    /// The worker that held it.
    pub worker: u32,
}

/// `GET /api/v1/tenants/{type}/{id}/kv`: one page of records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct KvPage {
    /// The records, in key order.
    pub records: Vec<KvRecord>,
    /// Pass as `after` for the next page; absent on the last one.
    pub next: Option<String>,
}

/// `DELETE .../kv/{scope}/{key}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Deleted {
    /// Whether there was a value to delete.
    pub deleted: bool,
}

/// `PUT /api/v1/plugins/{name}`: a plugin as files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PluginUpload {
    /// `plugin.toml`, as text.
    pub manifest: String,
    /// Its `.luau` files by name, as text.
    pub files: std::collections::BTreeMap<String, String>,
}

/// The answer to a catalogue change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Changed {
    /// The catalogue's new revision (workers reload to it).
    pub revision: u64,
}

/// Where a catalogue entry comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The `--plugins` or `--filters` folder.
    Folder,
    /// Uploaded through the API.
    Uploaded,
}

/// A plugin as `GET /api/v1/plugins` shows it: one entry of the
/// catalogue in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct PluginInfo {
    /// Its name (its folder's, or the upload's).
    pub name: String,
    /// Its version, from its manifest.
    pub version: String,
    /// What it does, from its manifest.
    pub description: String,
    /// The events it handles.
    pub events: Vec<String>,
    /// The operations it offers.
    pub operations: Vec<OperationInfo>,
    /// The filters it applies, in order.
    pub filters: Vec<String>,
    /// Where it comes from.
    pub source: Source,
}

/// One operation a plugin offers, as its manifest describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct OperationInfo {
    /// The operation's name.
    pub name: String,
    /// What it does.
    pub description: String,
}

/// A filter as `GET /api/v1/filters` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct FilterInfo {
    /// Its name (its module's file name without `.wasm`).
    pub name: String,
    /// SHA-256 of the module, hex.
    pub sha256: String,
    /// Module size in bytes.
    pub size: usize,
    /// Where it comes from.
    pub source: Source,
}

/// `GET /api/v1/plugins`: the catalogue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct PluginList {
    /// The catalogue revision.
    pub revision: u64,
    /// Every plugin in force, with what it offers.
    pub plugins: Vec<PluginInfo>,
}

/// `GET /api/v1/filters`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct FilterList {
    /// The catalogue revision.
    pub revision: u64,
    /// Every filter in force.
    pub filters: Vec<FilterInfo>,
}

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// A stable `code` and a human `message`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// Stable, machine-readable: `unauthorized`, `not_found`, `bad_request`,
    /// `too_large`, `worker_unavailable`, `overloaded`, `deadline_exceeded`,
    /// or a tenant-code error kind (`timeout`, `memory`, `runtime`,
    /// `syntax`, ...).
    pub code: String,
    /// For people.
    pub message: String,
}

impl From<RemoteError> for ErrorDetail {
    fn from(e: RemoteError) -> Self {
        ErrorDetail {
            code: e.kind.as_str().to_owned(),
            message: e.message,
        }
    }
}

impl ErrorDetail {
    /// The tenant-code error kind this code names, if it names one.
    pub fn kind(&self) -> Option<ErrorKind> {
        serde_json::from_value(Value::String(self.code.clone()))
            .ok()
            .filter(|k| *k != ErrorKind::Unknown)
    }
}

/// What a token may do. `admin`: everything; `app`: dispatch events, read
/// and write tenants' KV and state, and read everything else; `read`: `GET`
/// only. Tokens and the audit log are the admin's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A joined worker's session: opens the Mesophyll port for one slot,
    /// nothing of the API.
    Worker,
    /// A join token: lets workers on other machines join, nothing of the
    /// API.
    Join,
    /// `GET` routes, but tokens and the audit log.
    Read,
    /// What `read` may, plus dispatches and tenant KV and state writes.
    App,
    /// Everything.
    Admin,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Worker => "worker",
            Role::Join => "join",
            Role::Read => "read",
            Role::App => "app",
            Role::Admin => "admin",
        })
    }
}
