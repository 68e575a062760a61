//! The DB endpoints on the Mesophyll port: workers read and write the store
//! here, over HTTP/2 (prior knowledge) with MessagePack bodies. The wire
//! types are in [`crate::mesophyll::db`].
//!
//! Every call is authenticated like the WebSocket (worker id and token
//! headers; 404 unknown worker, 401 wrong token), and a worker may only
//! touch the tenants of its own shard: the same [`shard::worker_for`] that
//! routes events decides, so routing and access can never disagree (403
//! otherwise). A malformed body is a 400 for that request only; the
//! connection and its other streams carry on.

use crate::master::catalogue::Catalogue;
use crate::master::shard;
use crate::master::store::{self, GlobalDelete, Store, StoreError};
use crate::mesophyll::auth::{Credentials, Refusal};
use crate::mesophyll::db::{
    DEFAULT_FIND_LIMIT, DbErrorBody, GlobalOp, GlobalReply, KvOp, KvRecord, KvReply,
    MAX_DB_BODY_BYTES, MAX_FIND_LIMIT, MAX_FIND_PAGE_BYTES, MAX_KEY_BYTES, MAX_SCOPE_BYTES,
    MAX_STATES_PAGE_BYTES, MAX_VALUE_BYTES, PublicGlobalOp, StateProblem, TenantStateEntry, like,
    like_prefix, valid_global_key,
};
use crate::mesophyll::hub::Hub;
use crate::mesophyll::message::{Tenant, TenantState};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// What the DB handlers share.
pub struct DbState {
    /// Who may call (worker ids and tokens).
    pub hub: Arc<Hub>,
    /// The store.
    pub store: Arc<dyn Store>,
    /// The shard count.
    pub workers: u32,
    /// The plugins and filters the workers run.
    pub catalogue: Arc<Catalogue>,
    /// Where KV operations are counted.
    pub metrics: Arc<crate::master::metrics::Metrics>,
    /// Plugin variables.
    pub vars: Arc<crate::master::vars::Vars>,
    /// How many handlers may emit an event in a row.
    pub max_event_hops: u32,
    /// Timers and schedules.
    pub timers: Arc<crate::master::timers::Timers>,
    /// The NATS bridge, with `serve --nats`.
    pub nats: Option<Arc<crate::master::nats::Bridge>>,
}

/// The `/db/...` routes.
pub fn router(state: Arc<DbState>) -> Router {
    Router::new()
        .route("/db/tenant-states", get(tenant_states))
        .route("/db/tenant-state", post(put_tenant_state))
        .route("/db/kv", post(kv))
        .route("/db/public-global-kv", post(public_global))
        .route("/db/global-kv", post(global))
        .route("/db/catalogue", get(catalogue))
        .route("/db/vars", get(vars))
        .route("/db/events", post(crate::master::emitted::events))
        .route("/db/timers", post(crate::master::timers::endpoint::timers))
        .route("/db/nats", post(crate::master::nats::endpoint::publish))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_DB_BODY_BYTES))
        .with_state(state)
}

/// A DB error: a status and a MessagePack [`DbErrorBody`].
#[derive(Debug)]
pub struct EndpointError {
    status: StatusCode,
    body: DbErrorBody,
}

impl EndpointError {
    pub(super) fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        EndpointError {
            status,
            body: DbErrorBody {
                code: code.into(),
                message: message.into(),
            },
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable code and the message.
    pub fn body(&self) -> &DbErrorBody {
        &self.body
    }

    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
    }
}

impl From<StoreError> for EndpointError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Exists(_) => Self::new(StatusCode::CONFLICT, "conflict", e.to_string()),
            StoreError::Limit { code, message } => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, code, message)
            }
            _ => Self::new(StatusCode::INTERNAL_SERVER_ERROR, "store", e.to_string()),
        }
    }
}

impl IntoResponse for EndpointError {
    fn into_response(self) -> Response {
        msgpack(self.status, &self.body)
    }
}

fn msgpack<T: Serialize>(status: StatusCode, v: &T) -> Response {
    let bytes = rmp_serde::to_vec_named(v).expect("DB answers always encode");
    (
        status,
        [(header::CONTENT_TYPE, "application/msgpack")],
        bytes,
    )
        .into_response()
}

pub(super) fn ok<T: Serialize>(v: &T) -> Response {
    msgpack(StatusCode::OK, v)
}

/// Checks the caller's credentials; returns its worker id.
pub(super) fn caller(state: &DbState, headers: &HeaderMap) -> Result<u32, EndpointError> {
    state
        .hub
        .authenticate(&Credentials::read(headers, None))
        .map_err(|refusal| {
            let code = match refusal {
                Refusal::UnknownWorker => "unknown_worker",
                Refusal::WrongToken => "unauthorized",
            };
            EndpointError::new(refusal.status(), code, refusal.to_string())
        })
}

/// Checks the caller's credentials and that the tenant named in the query
/// belongs to its shard.
fn caller_for(
    state: &DbState,
    headers: &HeaderMap,
    q: TenantQuery,
) -> Result<Tenant, EndpointError> {
    let id = caller(state, headers)?;
    let tenant = tenant_of(q)?;
    owned(state, id, &tenant)?;
    Ok(tenant)
}

/// Checks that `tenant` belongs to worker `id`'s shard.
pub(super) fn owned(state: &DbState, id: u32, tenant: &Tenant) -> Result<(), EndpointError> {
    let owner = shard::worker_for(tenant, state.workers);
    if owner == id {
        Ok(())
    } else {
        Err(EndpointError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("tenant {tenant} belongs to worker {owner}, not {id}"),
        ))
    }
}

pub(super) fn body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, EndpointError> {
    rmp_serde::from_slice(bytes).map_err(|e| EndpointError::bad(format!("malformed body: {e}")))
}

#[derive(serde::Deserialize)]
struct TenantQuery {
    tenant_type: Option<String>,
    tenant_id: Option<String>,
}

fn tenant_of(q: TenantQuery) -> Result<Tenant, EndpointError> {
    match (q.tenant_type, q.tenant_id) {
        (Some(kind), Some(id)) if !kind.is_empty() && !id.is_empty() => Ok(Tenant::new(kind, id)),
        _ => Err(EndpointError::bad("tenant_type and tenant_id are required")),
    }
}

fn check_scope_key(scope: &str, key: &str) -> Result<(), EndpointError> {
    if scope.is_empty() || scope.len() > MAX_SCOPE_BYTES {
        return Err(EndpointError::bad(format!(
            "a scope is 1-{MAX_SCOPE_BYTES} bytes"
        )));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(EndpointError::too_large(format!(
            "key of {} bytes; the limit is {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    if key.is_empty() {
        return Err(EndpointError::bad("a key cannot be empty"));
    }
    Ok(())
}

fn check_value(value: &serde_json::Value) -> Result<(), EndpointError> {
    let size = rmp_serde::to_vec_named(value)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > MAX_VALUE_BYTES {
        return Err(EndpointError::too_large(format!(
            "value of {size} bytes; the limit is {MAX_VALUE_BYTES}"
        )));
    }
    Ok(())
}

/// A tenant state as the store will take it, whichever way it came (REST
/// or a worker): [`crate::mesophyll::db::check_state`], as an endpoint
/// error.
pub fn check_state(state: &TenantState) -> Result<(), EndpointError> {
    crate::mesophyll::db::check_state(state).map_err(|e| match e {
        StateProblem::TooLarge(m) => EndpointError::too_large(m),
        StateProblem::Invalid(m) => EndpointError::bad(m),
    })
}

async fn catalogue(
    State(state): State<Arc<DbState>>,
    headers: HeaderMap,
) -> Result<Response, EndpointError> {
    caller(&state, &headers)?;
    let snapshot = Catalogue::blocking(&state.catalogue, |r| r.snapshot()).await?;
    Ok(ok(&snapshot))
}

/// `GET /db/vars`: the variables the caller's tenants' plugins may read.
async fn vars(
    State(state): State<Arc<DbState>>,
    headers: HeaderMap,
) -> Result<Response, EndpointError> {
    let id = caller(&state, &headers)?;
    let (vars, workers) = (Arc::clone(&state.vars), state.workers);
    let values = tokio::task::spawn_blocking(move || vars.for_worker(id, workers))
        .await
        .map_err(|e| {
            EndpointError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        })?
        .map_err(|e| {
            EndpointError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        })?;
    Ok(ok(&values))
}

/// `GET /db/tenant-states`: with `page=1`, one page of the caller's
/// shard's states after `tenant_type`/`tenant_id` (a
/// [`TenantStatesPage`](crate::mesophyll::db::TenantStatesPage)); without,
/// all of them at once, as workers before paging ask.
async fn tenant_states(
    State(state): State<Arc<DbState>>,
    headers: HeaderMap,
    Query(q): Query<StatesQuery>,
) -> Result<Response, EndpointError> {
    let id = caller(&state, &headers)?;
    let workers = state.workers;
    let mine = move |t: &Tenant| shard::worker_for(t, workers) == id;
    if q.page.is_none() {
        let all: Vec<TenantStateEntry> =
            store::blocking(&state.store, move |s| s.tenant_states(&mine)).await?;
        return Ok(ok(&all));
    }
    let after = match (q.tenant_type, q.tenant_id) {
        (Some(kind), Some(id)) => Some(Tenant::new(kind, id)),
        _ => None,
    };
    let page = store::blocking(&state.store, move |s| {
        s.tenant_states_page(&mine, after.as_ref(), MAX_STATES_PAGE_BYTES)
    })
    .await?;
    Ok(ok(&page))
}

/// The query of `GET /db/tenant-states`.
#[derive(serde::Deserialize)]
struct StatesQuery {
    page: Option<String>,
    tenant_type: Option<String>,
    tenant_id: Option<String>,
}

async fn put_tenant_state(
    State(state): State<Arc<DbState>>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, EndpointError> {
    let id = caller(&state, &headers)?;
    let entry: TenantStateEntry = body(&bytes)?;
    owned(&state, id, &entry.tenant)?;
    check_state(&entry.state)?;
    state
        .store
        .put_tenant_state(&entry.tenant, &entry.state)
        .await?;
    Ok(ok(&entry))
}

async fn kv(
    State(state): State<Arc<DbState>>,
    headers: HeaderMap,
    Query(q): Query<TenantQuery>,
    bytes: Bytes,
) -> Result<Response, EndpointError> {
    let tenant = caller_for(&state, &headers, q)?;
    let op: KvOp = body(&bytes)?;
    let kind = match &op {
        KvOp::Get { .. } => "get",
        KvOp::Set { .. } => "set",
        KvOp::Delete { .. } => "delete",
        KvOp::Find { .. } => "find",
        KvOp::ListScopes {} => "list_scopes",
    };
    let started = std::time::Instant::now();
    let reply = run_kv(&state.store, &tenant, op).await;
    state.metrics.kv_done(kind, started.elapsed());
    Ok(ok(&reply?))
}

/// Runs one KV operation for `tenant` (after auth and shard checks): the
/// DB endpoint and the REST API share it.
pub async fn run_kv(
    store: &Arc<dyn Store>,
    tenant: &Tenant,
    op: KvOp,
) -> Result<KvReply, EndpointError> {
    Ok(match op {
        KvOp::Get { scope, key } => {
            check_scope_key(&scope, &key)?;
            let tenant = tenant.clone();
            KvReply::Record(store::blocking(store, move |s| s.kv_get(&tenant, &scope, &key)).await?)
        }
        KvOp::Set { scope, key, value } => {
            check_scope_key(&scope, &key)?;
            check_value(&value)?;
            KvReply::Stored(
                store
                    .kv_set(tenant, &scope, &key, value, crate::clock::unix_millis())
                    .await?,
            )
        }
        KvOp::Delete { scope, key } => {
            check_scope_key(&scope, &key)?;
            KvReply::Deleted(store.kv_delete(tenant, &scope, &key).await?)
        }
        KvOp::Find {
            scope,
            pattern,
            limit,
            after,
        } => {
            check_scope_key(&scope, "-")?;
            let limit = limit.unwrap_or(DEFAULT_FIND_LIMIT).clamp(1, MAX_FIND_LIMIT) as usize;
            let tenant = tenant.clone();
            // A pattern with no literal prefix scans the whole scope: off
            // the async threads.
            store::blocking(store, move |s| {
                let mut records = Vec::new();
                let mut more = false;
                let mut bytes = 0;
                s.kv_scan(
                    &tenant,
                    &scope,
                    &like_prefix(&pattern),
                    after.as_deref(),
                    &mut |r| {
                        if !like(&pattern, &r.key) {
                            return true;
                        }
                        let size = record_bytes(&r);
                        let full = !records.is_empty() && bytes + size > MAX_FIND_PAGE_BYTES;
                        if records.len() == limit || full {
                            more = true;
                            return false;
                        }
                        bytes += size;
                        records.push(r);
                        true
                    },
                )?;
                let next = if more {
                    records.last().map(|r| r.key.clone())
                } else {
                    None
                };
                Ok(KvReply::Found { records, next })
            })
            .await?
        }
        KvOp::ListScopes {} => {
            let tenant = tenant.clone();
            KvReply::Scopes(store::blocking(store, move |s| s.kv_scopes(&tenant)).await?)
        }
    })
}

/// About what `r` weighs in a `Find` page: its key, scope and encoded
/// value.
fn record_bytes(r: &KvRecord) -> usize {
    let value = rmp_serde::to_vec(&r.value).map_or(0, |v| v.len());
    r.key.len() + r.scope.len() + value + 32
}

async fn public_global(
    State(state): State<Arc<DbState>>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, EndpointError> {
    caller(&state, &headers)?;
    let op: PublicGlobalOp = body(&bytes)?;
    let reply = match op {
        PublicGlobalOp::Get {
            key,
            version,
            scope,
        } => GlobalReply::Entry(
            store::blocking(&state.store, move |s| s.global_get(&scope, &key, version))
                .await?
                .filter(|e| e.public),
        ),
        PublicGlobalOp::Find { scope, query } => {
            // A substring search reads the whole scope: off the async threads.
            GlobalReply::Entries(
                store::blocking(&state.store, move |s| {
                    let mut out = Vec::new();
                    s.global_scan(&scope, &mut |e| {
                        if e.public && e.key.contains(&query) {
                            out.push(e);
                        }
                        out.len() < MAX_FIND_LIMIT as usize
                    })?;
                    Ok(out)
                })
                .await?,
            )
        }
    };
    Ok(ok(&reply))
}

async fn global(
    State(state): State<Arc<DbState>>,
    headers: HeaderMap,
    Query(q): Query<TenantQuery>,
    bytes: Bytes,
) -> Result<Response, EndpointError> {
    let tenant = caller_for(&state, &headers, q)?;
    let op: GlobalOp = body(&bytes)?;
    let reply = match op {
        GlobalOp::Create { mut entry } => {
            if !valid_global_key(&entry.key) {
                return Err(EndpointError::bad(format!(
                    "global key {:?} must be 3-64 characters of [A-Za-z0-9._-]",
                    entry.key
                )));
            }
            check_scope_key(&entry.scope, &entry.key)?;
            check_value(&entry.value)?;
            entry.owner = Some(tenant);
            entry.created_at = crate::clock::unix_millis();
            GlobalReply::Created(state.store.global_create(entry).await?)
        }
        GlobalOp::Delete {
            key,
            version,
            scope,
        } => match state
            .store
            .global_delete(&scope, &key, version, &tenant)
            .await?
        {
            GlobalDelete::Deleted => GlobalReply::Deleted(true),
            GlobalDelete::Missing => GlobalReply::Deleted(false),
            GlobalDelete::NotOwner => {
                return Err(EndpointError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    format!("{scope}/{key} version {version} belongs to another tenant"),
                ));
            }
        },
    };
    Ok(ok(&reply))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::master::store::SledStore;
    use std::time::{Duration, Instant};

    #[tokio::test(flavor = "current_thread")]
    async fn a_find_that_scans_a_whole_scope_leaves_the_async_thread_free() {
        let dir = tempfile::tempdir().unwrap();
        let sled = SledStore::open(&dir.path().join("store")).unwrap();
        let tenant = Tenant::new("user", "1");
        sled.fill(&tenant, "big", 60_000);
        let store: Arc<dyn Store> = Arc::new(sled);
        let find = {
            let (store, tenant) = (Arc::clone(&store), tenant.clone());
            tokio::spawn(async move {
                let op = KvOp::Find {
                    scope: "big".into(),
                    pattern: "%no such key%".into(),
                    limit: None,
                    after: None,
                };
                run_kv(&store, &tenant, op).await.unwrap();
                Instant::now()
            })
        };
        // One thread for both: the ticks can only end first if the scan
        // runs elsewhere.
        let ticks = tokio::spawn(async {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Instant::now()
        });
        let (found_at, ticked_at) = (find.await.unwrap(), ticks.await.unwrap());
        assert!(ticked_at < found_at, "the scan held the async thread");
    }

    #[tokio::test]
    async fn a_find_page_of_big_values_ends_at_its_byte_cap_and_says_where_to_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(&dir.path().join("store")).unwrap());
        let tenant = Tenant::new("user", "1");
        let big = serde_json::Value::String("x".repeat(MAX_VALUE_BYTES - 64));
        for i in 0..12 {
            let op = KvOp::Set {
                scope: "s".into(),
                key: format!("k{i:02}"),
                value: big.clone(),
            };
            run_kv(&store, &tenant, op).await.unwrap();
        }
        let (mut seen, mut after, mut pages) = (0, None, 0);
        loop {
            let op = KvOp::Find {
                scope: "s".into(),
                pattern: "%".into(),
                limit: Some(MAX_FIND_LIMIT),
                after: after.take(),
            };
            let KvReply::Found { records, next } = run_kv(&store, &tenant, op).await.unwrap()
            else {
                panic!("Find answers Found")
            };
            let bytes: usize = records.iter().map(record_bytes).sum();
            assert!(bytes <= MAX_FIND_PAGE_BYTES, "a page of {bytes} bytes");
            assert!(!records.is_empty());
            seen += records.len();
            pages += 1;
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(seen, 12, "every record, once");
        assert!(pages >= 3, "{pages} pages");
    }
}
