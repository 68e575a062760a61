//! Tokens and the audit log: minting a token with a role (its secret shown
//! once), listing them without secrets, revoking one, and reading the audit
//! log page by page. All of it is `admin`'s.

use super::extract::Payload;
use super::{ApiError, ApiState};
use crate::master::store;
use crate::rest::{AuditPage, CreateToken, CreatedToken, TokenInfo, TokenList};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use std::sync::Arc;

/// The most audit entries one page holds.
const MAX_AUDIT_PAGE: usize = 1000;

pub(super) async fn create_token(
    State(state): State<Arc<ApiState>>,
    Payload(req): Payload<CreateToken>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    if let Some(name) = &req.name
        && (name.is_empty() || name.len() > 64 || name.chars().any(char::is_control))
    {
        return Err(ApiError::bad_request(
            "a token's name is 1 to 64 printable characters",
        ));
    }
    let (info, token) = state.access.create(req.role, req.name).await?;
    tracing::info!(id = %info.id, name = %info.name, role = %info.role, "token created");
    Ok((StatusCode::CREATED, Json(CreatedToken { info, token })))
}

pub(super) async fn list_tokens(State(state): State<Arc<ApiState>>) -> Json<TokenList> {
    Json(TokenList {
        tokens: state.access.list(),
    })
}

pub(super) async fn revoke_token(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<TokenInfo>, ApiError> {
    match state.access.revoke(&id).await? {
        Some(info) => {
            tracing::info!(id = %info.id, name = %info.name, "token revoked");
            Ok(Json(info))
        }
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no token {id:?}"),
        )),
    }
}

#[derive(serde::Deserialize)]
pub(super) struct AuditQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

pub(super) async fn audit(
    State(state): State<Arc<ApiState>>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_AUDIT_PAGE);
    let after = q.after;
    let entries = store::blocking(&state.store, move |s| s.audit(after, limit)).await?;
    let next = (entries.len() == limit)
        .then(|| entries.last().map(|e| e.seq))
        .flatten();
    Ok(Json(AuditPage { entries, next }))
}
