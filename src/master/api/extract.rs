//! What handlers take from a request: a body in JSON or MessagePack, a
//! tenant from the path, a timeout from the body, each refused with a
//! `bad_request` (or `too_large`) that says why.

use super::{ApiError, MAX_TENANT_PART};
use crate::mesophyll::message::Tenant;
use crate::rest::{self, MAX_BODY_BYTES, MAX_TIMEOUT_MS};
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;
use std::time::Duration;

/// A request body in JSON or MessagePack of at most `LIMIT` bytes, with
/// errors as [`ApiError`]s.
pub(super) struct Payload<T, const LIMIT: usize = MAX_BODY_BYTES>(pub(super) T);

impl<T: DeserializeOwned, S: Send + Sync, const LIMIT: usize> FromRequest<S> for Payload<T, LIMIT> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        let msgpack = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.starts_with("application/msgpack") || v.starts_with("application/x-msgpack")
            });
        let bytes = axum::body::to_bytes(req.into_body(), LIMIT)
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("the body is over {LIMIT} bytes"),
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

pub(crate) fn tenant(kind: String, id: String) -> Result<Tenant, ApiError> {
    for (what, part) in [("type", &kind), ("id", &id)] {
        if part.is_empty() || part.len() > MAX_TENANT_PART || part.chars().any(char::is_control) {
            return Err(ApiError::bad_request(format!(
                "tenant {what} must be 1-{MAX_TENANT_PART} bytes without control characters"
            )));
        }
    }
    Ok(Tenant::new(kind, id))
}

pub(super) fn timeout(ms: Option<u64>) -> Result<Duration, ApiError> {
    match ms.unwrap_or(rest::DEFAULT_TIMEOUT_MS) {
        0 => Err(ApiError::bad_request("timeout_ms must be positive")),
        ms if ms > MAX_TIMEOUT_MS => Err(ApiError::bad_request(format!(
            "timeout_ms must be at most {MAX_TIMEOUT_MS}"
        ))),
        ms => Ok(Duration::from_millis(ms)),
    }
}
