//! The bearer token every `/api/v1` route wants, its role checked against
//! the route's ([`crate::master::access::required`]), and every change,
//! allowed or refused, written to the audit log before the answer leaves.
//!
//! A missing, wrong or revoked token is 401 with `WWW-Authenticate:
//! Bearer`; a token whose role is too small is 403 `forbidden`.

use super::{ApiError, ApiState};
use crate::master::access::{audited, required, tenant_of};
use crate::rest::AuditEntry;
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

pub(super) async fn authorize(
    State(state): State<Arc<ApiState>>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    // Read from the request rather than extracted: extractors would copy
    // the header map and the URI of every request.
    let presented = crate::master::access::bearer(req.headers());
    let caller = match presented {
        Some(t) => state.access.identify(t).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "wrong or revoked bearer token",
            )
        })?,
        None => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing `authorization: Bearer <token>` (see admin-token in the data directory)",
            ));
        }
    };
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    // The route the router matched, not the raw path: a tenant named
    // `kv` or `events` must not change what its routes need. (This layer
    // runs only on routes that matched, so there always is one.)
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_default();
    let needed = required(&method, &route);
    let response = if caller.role >= needed {
        // For what stays open on this token (the binary stream, the
        // console): it ends when the token is revoked.
        let mut req = req;
        req.extensions_mut().insert(caller.clone());
        next.run(req).await
    } else {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "token {:?} is {}; {method} {path} needs {needed}",
                caller.name, caller.role
            ),
        )
        .into_response()
    };
    if audited(&method, &route) {
        let entry = AuditEntry {
            seq: 0,
            at: crate::clock::unix_millis(),
            token: caller.name,
            method: method.to_string(),
            tenant: tenant_of(&path).map(|t| bounded(t, MAX_AUDIT_FIELD)),
            route: bounded(path, MAX_AUDIT_FIELD),
            status: response.status().as_u16(),
        };
        // Durable before the answer: a change nobody can find in the log
        // must not have happened silently.
        if let Err(e) = state.store.audit_append(entry).await {
            tracing::error!("cannot write the audit log: {e}");
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "audit_failed",
                format!("the change was made, but the audit log could not record it: {e}"),
            ));
        }
    }
    Ok(response)
}

/// The longest path or tenant an audit entry keeps, in bytes; longer ones
/// are cut (at a character boundary) and end in `...`, so that refused
/// requests with huge paths cannot make each entry huge.
pub(super) const MAX_AUDIT_FIELD: usize = 512;

/// `text`, cut to at most `max` bytes.
fn bounded(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max - 3;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    text
}
