//! The REST API: what applications, tooling and the CLI talk to.
//!
//! ```text
//! GET    /api/system/version                    no auth
//! GET    /healthz                               no auth (liveness)
//! GET    /readyz                                no auth; 503 until every worker slot is served
//! GET    /metrics                               no auth; Prometheus (OpenMetrics text)
//! GET    /api/v1/openapi.json                   no auth; this API's contract, OpenAPI 3.1
//! GET    /api/v1/workers
//! GET    /api/v1/status                                         -> 200 Status
//! GET    /api/v1/traffic                                        -> 200 Traffic
//! GET    /api/v1/console                       server-sent events: dispatches, workers
//! GET    /api/v1/tenants?limit=                                 -> 200 LiveTenantList
//! GET    /api/v1/stream            WebSocket: StreamRequest frames -> StreamAnswer frames
//! POST   /api/v1/graphql                        GraphQL queries (the REST reads' twins)
//! GET    /api/v1/graphql                        WebSocket: GraphQL subscriptions (the console)
//! POST   /api/v1/tenants/{type}/{id}/events     DispatchRequest -> 200 Dispatched | 202 Accepted
//! POST   /api/v1/tenants/{type}/{id}/scripts    ScriptRequest   -> 200 ScriptResult
//! DELETE /api/v1/tenants/{type}/{id}/vm                         -> 200 Dropped
//! GET    /api/v1/tenants/{type}/{id}/state                      -> 200 TenantStateEntry
//! PUT    /api/v1/tenants/{type}/{id}/state      TenantState     -> 200 TenantStateEntry
//! GET    /api/v1/tenants/{type}/{id}/kv?scope=&pattern=&limit=&after= -> 200 KvPage
//! GET    /api/v1/tenants/{type}/{id}/kv/{scope}/{key}           -> 200 KvRecord | 404
//! PUT    /api/v1/tenants/{type}/{id}/kv/{scope}/{key}  any JSON -> 200 KvRecord
//! DELETE /api/v1/tenants/{type}/{id}/kv/{scope}/{key}           -> 200 Deleted
//! GET    /api/v1/plugins                                        -> 200 PluginList
//! PUT    /api/v1/plugins/{name}  PluginUpload                   -> 200 Changed | 400
//! DELETE /api/v1/plugins/{name}                                 -> 200 Changed | 404 | 409
//! GET    /api/v1/plugins/{name}/vars                            -> 200 VarList | 404
//! PUT    /api/v1/plugins/{name}/vars/{var}  VarChange           -> 200 VarChanged | 400 | 404
//! DELETE /api/v1/plugins/{name}/vars/{var}?tenant_type=&tenant_id= -> 200 VarChanged | 404
//! GET    /api/v1/filters                                        -> 200 FilterList
//! PUT    /api/v1/filters/{name}  the module's bytes             -> 200 Changed | 400
//! DELETE /api/v1/filters/{name}                                 -> 200 Changed | 404 | 409
//! POST   /api/v1/tokens          CreateToken                    -> 201 CreatedToken
//! GET    /api/v1/tokens                                         -> 200 TokenList
//! DELETE /api/v1/tokens/{id}                                    -> 200 TokenInfo | 404
//! POST   /api/v1/join-tokens     CreateJoinToken                -> 201 CreatedToken
//! GET    /api/v1/join-tokens                                    -> 200 JoinTokenList
//! DELETE /api/v1/join-tokens/{id} (and its workers' sessions)   -> 200 TokenInfo | 404
//! GET    /api/v1/audit?after=&limit=                            -> 200 AuditPage
//! ```
//!
//! A catalogue change is stored, then broadcast to the workers
//! (`CatalogueChanged`); they reload without restarting.
//!
//! One file per concern: [`error`] (the error answer and its codes),
//! `routes` (which handler answers each route), `auth` (the bearer token,
//! its role, the audit log), `extract` (bodies,
//! tenants, timeouts), and a file per resource group: `system`, `tenants`,
//! `kv`, `catalogue`, `access` (tokens and the audit log), `live` (what
//! the dashboard watches); the dashboard's page is [`crate::master::dashboard`].
//!
//! Bodies are JSON, or MessagePack with `content-type: application/msgpack`;
//! answers are JSON ([`crate::rest`] has every shape). `/api/v1` wants
//! `authorization: Bearer <token>`: the data directory's admin token, or one
//! minted with a role ([`crate::master::access`]); 403 `forbidden` when the
//! role does not reach the route.
//!
//! Every error answer is an [`ErrorBody`](crate::rest::ErrorBody), axum's
//! own refusals (a query that does not parse, an upgrade without its
//! headers) included ([`error`]'s `as_error_body`).
//!
//! Status codes: 400 bad body or tenant, 401 no, wrong or revoked token, 403
//! a role too small, 404 no such
//! route or no plugin for the event, 413 body over [`MAX_BODY_BYTES`](crate::rest::MAX_BODY_BYTES), 422
//! the script failed (runtime, syntax, memory), 503 the owning worker is down
//! or overloaded, 504 the tenant code or the worker ran past the deadline.
//!
//! Modules:
//!
//! - [`contract`]: the OpenAPI 3.1 document of every route, built from the
//!   `rest` types and a table of operations;
//! - [`graphql`]: `/api/v1/graphql`, queries twinning the REST reads and
//!   the live console as a subscription;
//! - `schedules`: a tenant's schedules and pending timers over REST;
//! - `stream`: `GET /api/v1/stream`;
//! - `stream_frames`: the binary client API's hot frames, read and written
//!   by hand so that a payload's bytes are copied whole where serde would
//!   replay them token by token;
//! - `vars`: plugin variables over REST (`/api/v1/plugins/{name}/vars`,
//!   admin only).

mod access;
mod auth;
mod catalogue;
pub mod contract;
pub mod error;
pub(crate) mod extract;
pub mod graphql;
mod kv;
mod live;
mod routes;
mod schedules;
mod stream;
mod stream_frames;
mod system;
pub(crate) mod tenants;
mod vars;

pub use error::ApiError;

use crate::master::access::Access;
use crate::master::catalogue::Catalogue;
use crate::master::metrics::Metrics;
use crate::master::store::Store;
use crate::master::supervisor::Supervisor;
use crate::mesophyll::hub::Hub;
use std::sync::Arc;

/// The largest filter module the API accepts.
pub const MAX_FILTER_BYTES: usize = 8 * 1024 * 1024;

/// The longest tenant type or id, in bytes.
pub const MAX_TENANT_PART: usize = 256;

/// What the handlers share.
pub struct ApiState {
    /// The Mesophyll hub.
    pub hub: Arc<Hub>,
    /// The supervisor of the spawned workers.
    pub supervisor: Arc<Supervisor>,
    /// Workers in total (spawned and external): the shard count.
    pub workers: u32,
    /// The tokens and what they may do.
    pub access: Arc<Access>,
    /// Join tokens and the slots joined workers hold.
    pub joins: Arc<crate::master::joins::Joins>,
    /// The store, for tenant state and KV browsing.
    pub store: Arc<dyn Store>,
    /// Plugins and filters.
    pub catalogue: Arc<Catalogue>,
    /// One state change per tenant at a time.
    pub state_turns: TenantTurns,
    /// What `/metrics` shows.
    pub metrics: Arc<Metrics>,
    /// When the master started.
    pub started: std::time::Instant,
    /// The store, as a URL.
    pub store_url: String,
    /// The live console's dispatches.
    pub console: crate::master::console::Console,
    /// Plugin variables.
    pub vars: Arc<crate::master::vars::Vars>,
    /// Timers and schedules (the schedules routes).
    pub timers: Arc<crate::master::timers::Timers>,
    /// Webhooks' bounds and counts (the hooks route).
    pub webhooks: Arc<crate::master::webhooks::Webhooks>,
    /// The NATS bridge, with `serve --nats`: answered dispatches are
    /// published on it.
    pub nats: Option<Arc<crate::master::nats::Bridge>>,
    /// Whether this master leads ([`crate::master::leadership`]): `/readyz`
    /// and the status say it.
    pub leadership: crate::master::leadership::LeaderGate,
}

/// A turn per tenant, striped: changes to one tenant's state are stored
/// and announced one at a time, in the same order.
pub struct TenantTurns([tokio::sync::Mutex<()>; 64]);

impl Default for TenantTurns {
    fn default() -> Self {
        TenantTurns(std::array::from_fn(|_| tokio::sync::Mutex::new(())))
    }
}

impl TenantTurns {
    /// Waits for `tenant`'s turn.
    pub async fn turn(
        &self,
        tenant: &crate::mesophyll::message::Tenant,
    ) -> tokio::sync::MutexGuard<'_, ()> {
        let i = crate::master::shard::tenant_key(tenant) as usize % self.0.len();
        self.0[i].lock().await
    }
}

pub use routes::router;
