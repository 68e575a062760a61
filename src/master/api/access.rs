//! Tokens and the audit log: minting a token with a role (its secret shown
//! once), listing them without secrets, revoking one, and reading the audit
//! log page by page; join tokens (`/join-tokens`) likewise. All of it is
//! `admin`'s.

use super::extract::Payload;
use super::{ApiError, ApiState};
use crate::master::store;
use crate::rest::{
    AuditPage, CreateJoinToken, CreateToken, CreatedToken, JoinTokenList, Role, TokenInfo,
    TokenList,
};
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
    check_name(req.name.as_deref())?;
    if req.role < Role::Read {
        return Err(ApiError::bad_request(format!(
            "a {} token is not an API token: join tokens come from /api/v1/join-tokens, \
             worker sessions from joining",
            req.role
        )));
    }
    let (info, token) = state.access.create(req.role, req.name).await?;
    tracing::info!(id = %info.id, name = %info.name, role = %info.role, "token created");
    Ok((StatusCode::CREATED, Json(CreatedToken { info, token })))
}

fn check_name(name: Option<&str>) -> Result<(), ApiError> {
    match name {
        Some(name) if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) => {
            Err(ApiError::bad_request(
                "a token's name is 1 to 64 printable characters",
            ))
        }
        _ => Ok(()),
    }
}

pub(super) async fn list_tokens(State(state): State<Arc<ApiState>>) -> Json<TokenList> {
    Json(TokenList {
        tokens: state.access.list(&[Role::Read, Role::App, Role::Admin]),
    })
}

/// What a join token lets workers join for unless told.
const JOIN_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

pub(super) async fn create_join_token(
    State(state): State<Arc<ApiState>>,
    Payload(req): Payload<CreateJoinToken>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    check_name(req.name.as_deref())?;
    let ttl = req.ttl_s.map_or(JOIN_TTL, std::time::Duration::from_secs);
    if ttl.is_zero() || ttl > std::time::Duration::from_secs(366 * 24 * 3600) {
        return Err(ApiError::bad_request(
            "a join token lives 1 second to 366 days",
        ));
    }
    let expires_at = crate::clock::unix_millis() + ttl.as_millis() as i64;
    let (info, token) = state
        .access
        .mint(Role::Join, req.name, Some(expires_at), None)
        .await?;
    tracing::info!(id = %info.id, name = %info.name, ?ttl, "join token created");
    Ok((StatusCode::CREATED, Json(CreatedToken { info, token })))
}

pub(super) async fn list_join_tokens(State(state): State<Arc<ApiState>>) -> Json<JoinTokenList> {
    Json(JoinTokenList {
        tokens: state.joins.list(),
    })
}

pub(super) async fn revoke_token(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<TokenInfo>, ApiError> {
    // Through the joins: a join token takes its workers' sessions with it.
    match state.joins.revoke(&id).await? {
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
