//! A tenant's KV store, browsed and edited: the same operations as the
//! workers' DB endpoint, with the same limits.

use super::extract::{Payload, tenant};
use super::{ApiError, ApiState};
use crate::master::db;
use crate::mesophyll::db::{DEFAULT_SCOPE, KvOp, KvRecord, KvReply};
use crate::rest::{Deleted, KvPage};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use std::sync::Arc;

/// `GET .../kv` query.
#[derive(serde::Deserialize)]
pub(super) struct FindQuery {
    pub(super) scope: Option<String>,
    pub(super) pattern: Option<String>,
    pub(super) limit: Option<u32>,
    pub(super) after: Option<String>,
}

pub(super) async fn find_kv(
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
    match db::run_kv(&state.store, &tenant, op).await? {
        KvReply::Found { records, next } => Ok(Json(KvPage { records, next })),
        _ => unreachable!("Find answers Found"),
    }
}

pub(super) async fn get_kv(
    State(state): State<Arc<ApiState>>,
    Path((kind, id, scope, key)): Path<(String, String, String, String)>,
) -> Result<Json<KvRecord>, ApiError> {
    let tenant = tenant(kind, id)?;
    match db::run_kv(
        &state.store,
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

pub(super) async fn put_kv(
    State(state): State<Arc<ApiState>>,
    Path((kind, id, scope, key)): Path<(String, String, String, String)>,
    Payload(value): Payload<serde_json::Value>,
) -> Result<Json<KvRecord>, ApiError> {
    let tenant = tenant(kind, id)?;
    match db::run_kv(&state.store, &tenant, KvOp::Set { scope, key, value }).await? {
        KvReply::Stored(r) => Ok(Json(r)),
        _ => unreachable!("Set answers Stored"),
    }
}

pub(super) async fn delete_kv(
    State(state): State<Arc<ApiState>>,
    Path((kind, id, scope, key)): Path<(String, String, String, String)>,
) -> Result<Json<Deleted>, ApiError> {
    let tenant = tenant(kind, id)?;
    match db::run_kv(&state.store, &tenant, KvOp::Delete { scope, key }).await? {
        KvReply::Deleted(deleted) => Ok(Json(Deleted { deleted })),
        _ => unreachable!("Delete answers Deleted"),
    }
}
