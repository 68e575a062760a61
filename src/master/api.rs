//! The REST API: what applications, tooling and the CLI talk to.
//!
//! ```text
//! GET    /api/system/version                    no auth
//! GET    /healthz                               no auth
//! GET    /api/v1/workers
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
//! GET    /api/v1/filters                                        -> 200 FilterList
//! PUT    /api/v1/filters/{name}  the module's bytes             -> 200 Changed | 400
//! DELETE /api/v1/filters/{name}                                 -> 200 Changed | 404 | 409
//! ```
//!
//! A catalogue change is stored, then broadcast to the workers
//! (`PluginsChanged`); they reload without restarting.
//!
//! Bodies are JSON, or MessagePack with `content-type: application/msgpack`;
//! answers are JSON ([`crate::rest`] has every shape). `/api/v1` wants
//! `authorization: Bearer <admin token>`, compared in constant time.
//!
//! Status codes: 400 bad body or tenant, 401 no or wrong token, 404 no such
//! route or no plugin for the event, 413 body over [`MAX_BODY_BYTES`], 422
//! the script failed (runtime, syntax, memory), 503 the owning worker is down
//! or overloaded, 504 the tenant code or the worker ran past the deadline.

use crate::master::catalogue::{Catalogue, CatalogueError};
use crate::master::db;
use crate::master::shard;
use crate::master::store::{Store, StoreError};
use crate::master::supervisor::Supervisor;
use crate::mesophyll::db::KvRecord;
use crate::mesophyll::db::{DEFAULT_SCOPE, KvOp, KvReply, TenantState, TenantStateEntry};
use crate::mesophyll::hub::{Hub, HubError};
use crate::mesophyll::message::{
    ErrorKind, Event, PROTOCOL_VERSION, PluginOutcome, RemoteError, ServerMessage, Tenant,
};
use crate::rest::{
    self, Accepted, Changed, Deleted, DispatchRequest, Dispatched, Dropped, ErrorBody, ErrorDetail,
    FilterList, Health, KvPage, MAX_BODY_BYTES, MAX_TIMEOUT_MS, PluginList, PluginUpload,
    ScriptRequest, ScriptResult, Version, WorkerInfo, WorkerState, Workers,
};
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;

/// The largest filter module the API accepts.
pub const MAX_FILTER_BYTES: usize = 8 * 1024 * 1024;

/// The longest tenant type or id, in bytes.
pub const MAX_TENANT_PART: usize = 256;

/// How much longer the master waits for a worker than the tenant code's own
/// deadline, so that the worker's precise "timeout" arrives before the hub's
/// blunt "deadline exceeded".
const ANSWER_SLACK: Duration = Duration::from_secs(1);

/// What the handlers share.
pub struct ApiState {
    /// The Mesophyll hub.
    pub hub: Arc<Hub>,
    /// The supervisor of the spawned workers.
    pub supervisor: Arc<Supervisor>,
    /// Workers in total (spawned and external): the shard count.
    pub workers: u32,
    /// The admin bearer token.
    pub token: String,
    /// The store, for tenant state and KV browsing.
    pub store: Arc<dyn Store>,
    /// Plugins and filters.
    pub catalogue: Arc<Catalogue>,
}

/// The API's router.
pub fn router(state: Arc<ApiState>) -> Router {
    let v1 = Router::new()
        .route("/workers", get(workers))
        .route("/tenants/{type}/{id}/events", post(dispatch))
        .route("/tenants/{type}/{id}/scripts", post(run_script))
        .route("/tenants/{type}/{id}/vm", delete(drop_vm))
        .route("/tenants/{type}/{id}/state", get(get_state).put(put_state))
        .route("/plugins", get(list_plugins))
        .route(
            "/plugins/{name}",
            axum::routing::put(put_plugin).delete(delete_plugin),
        )
        .route("/filters", get(list_filters))
        .route(
            "/filters/{name}",
            axum::routing::put(put_filter)
                .delete(delete_filter)
                .layer(axum::extract::DefaultBodyLimit::max(MAX_FILTER_BYTES)),
        )
        .route("/tenants/{type}/{id}/kv", get(find_kv))
        .route(
            "/tenants/{type}/{id}/kv/{scope}/{key}",
            get(get_kv).put(put_kv).delete(delete_kv),
        )
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            authorize,
        ));
    Router::new()
        .route("/api/system/version", get(version))
        .route("/healthz", get(health))
        .nest("/api/v1", v1)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .with_state(state)
}

/// An error answer: a status, a stable code and a message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    detail: ErrorDetail,
}

impl ApiError {
    fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            detail: ErrorDetail {
                code: code.to_owned(),
                message: message.into(),
            },
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (self.status, Json(ErrorBody { error: self.detail })).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                "Bearer".parse().expect("static header"),
            );
        }
        res
    }
}

impl From<RemoteError> for ApiError {
    fn from(e: RemoteError) -> Self {
        let status = match e.kind {
            ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::Memory
            | ErrorKind::Runtime
            | ErrorKind::Syntax
            | ErrorKind::TooLarge
            | ErrorKind::Rejected
            | ErrorKind::Filter => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::NotSubscribed => StatusCode::CONFLICT,
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::Overloaded | ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Internal | ErrorKind::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError {
            status,
            detail: e.into(),
        }
    }
}

impl From<HubError> for ApiError {
    fn from(e: HubError) -> Self {
        match e {
            HubError::Remote(remote) => remote.into(),
            HubError::UnknownWorker(_) | HubError::WorkerUnavailable { .. } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "worker_unavailable",
                e.to_string(),
            ),
            HubError::Overloaded(_) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", e.to_string())
            }
            HubError::DeadlineExceeded { .. } => Self::new(
                StatusCode::GATEWAY_TIMEOUT,
                "deadline_exceeded",
                e.to_string(),
            ),
            HubError::Codec(c) => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", c.to_string())
            }
        }
    }
}

impl From<db::DbError> for ApiError {
    fn from(e: db::DbError) -> Self {
        ApiError::new(e.status(), &e.body().code, e.body().message.clone())
    }
}

impl From<CatalogueError> for ApiError {
    fn from(e: CatalogueError) -> Self {
        match e {
            CatalogueError::Invalid(m) => ApiError::bad_request(m),
            CatalogueError::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, "not_found", m),
            CatalogueError::FromFolder(m) => ApiError::new(StatusCode::CONFLICT, "from_folder", m),
            CatalogueError::InUse(m) => ApiError::new(StatusCode::CONFLICT, "in_use", m),
            CatalogueError::Store(e) => e.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        db::DbError::from(e).into()
    }
}

async fn authorize(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(t) if bool::from(t.as_bytes().ct_eq(state.token.as_bytes())) => {
            Ok(next.run(req).await)
        }
        Some(_) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "wrong bearer token",
        )),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing `authorization: Bearer <token>` (see admin-token in the data directory)",
        )),
    }
}

/// A request body in JSON or MessagePack, with errors as [`ApiError`]s.
struct Payload<T>(T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Payload<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        let msgpack = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.starts_with("application/msgpack") || v.starts_with("application/x-msgpack")
            });
        let bytes = axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES)
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("the body is over {MAX_BODY_BYTES} bytes"),
                )
            })?;
        let parsed = if msgpack {
            rmp_serde::from_slice(&bytes).map_err(|e| e.to_string())
        } else {
            serde_json::from_slice(&bytes).map_err(|e| e.to_string())
        };
        parsed
            .map(Payload)
            .map_err(|e| ApiError::bad_request(format!("malformed body: {e}")))
    }
}

fn tenant(kind: String, id: String) -> Result<Tenant, ApiError> {
    for (what, part) in [("type", &kind), ("id", &id)] {
        if part.is_empty() || part.len() > MAX_TENANT_PART || part.chars().any(char::is_control) {
            return Err(ApiError::bad_request(format!(
                "tenant {what} must be 1-{MAX_TENANT_PART} bytes without control characters"
            )));
        }
    }
    Ok(Tenant::new(kind, id))
}

fn timeout(ms: Option<u64>) -> Result<Duration, ApiError> {
    match ms.unwrap_or(rest::DEFAULT_TIMEOUT_MS) {
        0 => Err(ApiError::bad_request("timeout_ms must be positive")),
        ms if ms > MAX_TIMEOUT_MS => Err(ApiError::bad_request(format!(
            "timeout_ms must be at most {MAX_TIMEOUT_MS}"
        ))),
        ms => Ok(Duration::from_millis(ms)),
    }
}

async fn version() -> Json<Version> {
    Json(Version {
        name: "meshplay".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        protocol: PROTOCOL_VERSION,
    })
}

async fn health(State(state): State<Arc<ApiState>>) -> Json<Health> {
    let connected = state.hub.workers().iter().filter(|w| w.connected).count() as u32;
    Json(Health {
        status: if connected == state.workers {
            "ok"
        } else {
            "degraded"
        }
        .into(),
        workers: state.workers,
        connected,
    })
}

async fn workers(State(state): State<Arc<ApiState>>) -> Json<Workers> {
    let workers = state
        .hub
        .workers()
        .into_iter()
        .map(|w| {
            let managed = state.supervisor.status(w.id);
            let lifecycle = match managed {
                _ if w.connected => WorkerState::Running,
                Some(s) => s.state,
                None => WorkerState::Disconnected,
            };
            WorkerInfo {
                id: w.id,
                state: lifecycle,
                managed: managed.is_some(),
                pid: managed.and_then(|s| s.pid),
                restarts: managed.map_or(0, |s| s.restarts),
                since_heartbeat_s: w.since_last_frame_s,
                in_flight: w.awaiting as u64,
                vms: w.load.vms,
                rss_bytes: w.load.rss_bytes,
            }
        })
        .collect();
    Json(Workers {
        workers,
        bad_frames: state.hub.bad_frames(),
    })
}

async fn dispatch(
    State(state): State<Arc<ApiState>>,
    Path((kind, id)): Path<(String, String)>,
    Payload(req): Payload<DispatchRequest>,
) -> Result<Response, ApiError> {
    let tenant = tenant(kind, id)?;
    if req.name.is_empty() {
        return Err(ApiError::bad_request("the event needs a name"));
    }
    let budget = timeout(req.timeout_ms)?;
    let worker = shard::worker_for(&tenant, state.workers);
    let event = Event {
        name: req.name,
        data: req.data,
    };
    let deadline_ms = budget.as_millis() as u64;
    if !req.wait {
        state.hub.send(
            worker,
            &ServerMessage::DispatchEvent {
                req_id: None,
                tenant: tenant.clone(),
                event,
                deadline_ms,
            },
        )?;
        return Ok((StatusCode::ACCEPTED, Json(Accepted { tenant, worker })).into_response());
    }
    let value = state
        .hub
        .request(worker, budget + ANSWER_SLACK, |req_id| {
            ServerMessage::DispatchEvent {
                req_id: Some(req_id),
                tenant: tenant.clone(),
                event,
                deadline_ms,
            }
        })
        .await?;
    let outcomes: Vec<PluginOutcome> = serde_json::from_value(value).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "bad_worker_answer",
            format!("worker {worker} answered something that is not a result list: {e}"),
        )
    })?;
    Ok(Json(Dispatched {
        tenant,
        worker,
        results: outcomes.into_iter().map(Into::into).collect(),
    })
    .into_response())
}

async fn run_script(
    State(state): State<Arc<ApiState>>,
    Path((kind, id)): Path<(String, String)>,
    Payload(req): Payload<ScriptRequest>,
) -> Result<Json<ScriptResult>, ApiError> {
    let tenant = tenant(kind, id)?;
    let budget = timeout(req.timeout_ms)?;
    let worker = shard::worker_for(&tenant, state.workers);
    let result = state
        .hub
        .request(worker, budget + ANSWER_SLACK, |req_id| {
            ServerMessage::RunScript {
                req_id,
                tenant: tenant.clone(),
                name: req.name.unwrap_or_else(|| "script".into()),
                code: req.code,
                event: req.event.unwrap_or_default(),
                deadline_ms: budget.as_millis() as u64,
            }
        })
        .await?;
    Ok(Json(ScriptResult {
        tenant,
        worker,
        result,
    }))
}

async fn drop_vm(
    State(state): State<Arc<ApiState>>,
    Path((kind, id)): Path<(String, String)>,
) -> Result<Json<Dropped>, ApiError> {
    let tenant = tenant(kind, id)?;
    let worker = shard::worker_for(&tenant, state.workers);
    state
        .hub
        .request(
            worker,
            Duration::from_millis(rest::DEFAULT_TIMEOUT_MS),
            |req_id| ServerMessage::DropTenant {
                req_id,
                tenant: tenant.clone(),
            },
        )
        .await?;
    Ok(Json(Dropped { tenant, worker }))
}

async fn get_state(
    State(state): State<Arc<ApiState>>,
    Path((kind, id)): Path<(String, String)>,
) -> Result<Json<TenantStateEntry>, ApiError> {
    let tenant = tenant(kind, id)?;
    let current = state.store.tenant_state(&tenant)?.unwrap_or_default();
    Ok(Json(TenantStateEntry {
        tenant,
        state: current,
    }))
}

async fn put_state(
    State(state): State<Arc<ApiState>>,
    Path((kind, id)): Path<(String, String)>,
    Payload(new): Payload<TenantState>,
) -> Result<Json<TenantStateEntry>, ApiError> {
    let tenant = tenant(kind, id)?;
    state.store.put_tenant_state(&tenant, &new).await?;
    // The owning worker applies it to the next event; if it is down now, it
    // reloads every state of its shard when it reconnects.
    let worker = shard::worker_for(&tenant, state.workers);
    let _ = state.hub.send(
        worker,
        &ServerMessage::TenantStateChanged {
            tenant: tenant.clone(),
            state: Some(new.clone()),
        },
    );
    Ok(Json(TenantStateEntry { tenant, state: new }))
}

/// `GET .../kv` query.
#[derive(serde::Deserialize)]
struct FindQuery {
    scope: Option<String>,
    pattern: Option<String>,
    limit: Option<u32>,
    after: Option<String>,
}

async fn find_kv(
    State(state): State<Arc<ApiState>>,
    Path((kind, id)): Path<(String, String)>,
    Query(q): Query<FindQuery>,
) -> Result<Json<KvPage>, ApiError> {
    let tenant = tenant(kind, id)?;
    let op = KvOp::Find {
        scope: q.scope.unwrap_or_else(|| DEFAULT_SCOPE.into()),
        pattern: q.pattern.unwrap_or_else(|| "%".into()),
        limit: q.limit,
        after: q.after,
    };
    match db::run_kv(state.store.as_ref(), &tenant, op).await? {
        KvReply::Found { records, next } => Ok(Json(KvPage { records, next })),
        _ => unreachable!("Find answers Found"),
    }
}

async fn get_kv(
    State(state): State<Arc<ApiState>>,
    Path((kind, id, scope, key)): Path<(String, String, String, String)>,
) -> Result<Json<KvRecord>, ApiError> {
    let tenant = tenant(kind, id)?;
    match db::run_kv(
        state.store.as_ref(),
        &tenant,
        KvOp::Get {
            scope: scope.clone(),
            key: key.clone(),
        },
    )
    .await?
    {
        KvReply::Record(Some(r)) => Ok(Json(r)),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no key {key:?} in scope {scope:?} of {tenant}"),
        )),
    }
}

async fn put_kv(
    State(state): State<Arc<ApiState>>,
    Path((kind, id, scope, key)): Path<(String, String, String, String)>,
    Payload(value): Payload<serde_json::Value>,
) -> Result<Json<KvRecord>, ApiError> {
    let tenant = tenant(kind, id)?;
    match db::run_kv(
        state.store.as_ref(),
        &tenant,
        KvOp::Set { scope, key, value },
    )
    .await?
    {
        KvReply::Stored(r) => Ok(Json(r)),
        _ => unreachable!("Set answers Stored"),
    }
}

async fn delete_kv(
    State(state): State<Arc<ApiState>>,
    Path((kind, id, scope, key)): Path<(String, String, String, String)>,
) -> Result<Json<Deleted>, ApiError> {
    let tenant = tenant(kind, id)?;
    match db::run_kv(state.store.as_ref(), &tenant, KvOp::Delete { scope, key }).await? {
        KvReply::Deleted(deleted) => Ok(Json(Deleted { deleted })),
        _ => unreachable!("Delete answers Deleted"),
    }
}

async fn list_plugins(State(state): State<Arc<ApiState>>) -> Result<Json<PluginList>, ApiError> {
    Ok(Json(PluginList {
        revision: state.catalogue.revision(),
        plugins: state.catalogue.plugins()?,
    }))
}

async fn list_filters(State(state): State<Arc<ApiState>>) -> Result<Json<FilterList>, ApiError> {
    Ok(Json(FilterList {
        revision: state.catalogue.revision(),
        filters: state.catalogue.filters()?,
    }))
}

/// Tells every worker about a new catalogue revision.
fn changed(state: &ApiState, revision: u64) -> Json<Changed> {
    let told = state
        .hub
        .broadcast(&ServerMessage::PluginsChanged { revision });
    tracing::info!(revision, workers = told, "catalogue changed");
    Json(Changed { revision })
}

async fn put_plugin(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
    Payload(upload): Payload<PluginUpload>,
) -> Result<Json<Changed>, ApiError> {
    let revision = state
        .catalogue
        .put_plugin(&name, upload.manifest, upload.files)
        .await?;
    Ok(changed(&state, revision))
}

async fn delete_plugin(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
) -> Result<Json<Changed>, ApiError> {
    let revision = state.catalogue.delete_plugin(&name).await?;
    Ok(changed(&state, revision))
}

async fn put_filter(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Changed>, ApiError> {
    let revision = state.catalogue.put_filter(&name, body.to_vec()).await?;
    Ok(changed(&state, revision))
}

async fn delete_filter(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
) -> Result<Json<Changed>, ApiError> {
    let revision = state.catalogue.delete_filter(&name).await?;
    Ok(changed(&state, revision))
}
