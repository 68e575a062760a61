//! `POST /db/nats`: a handler's `nats.publish`, checked (the tenant is the
//! caller's, the subject is one to publish to) and published through the
//! master's client. The grant (`publishes` in the manifest) is checked on
//! the worker, which knows the running plugin.

use crate::catalogue::subject::check_subject;
use crate::master::db::{DbState, EndpointError, body, caller, ok, owned};
use crate::mesophyll::db::NatsPublish;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use std::sync::Arc;

/// `POST /db/nats`.
pub(crate) async fn publish(
    State(state): State<Arc<DbState>>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, EndpointError> {
    let id = caller(&state, &headers)?;
    let msg: NatsPublish = body(&bytes)?;
    owned(&state, id, &msg.tenant)?;
    check_subject(&msg.subject)
        .map_err(|e| EndpointError::new(StatusCode::BAD_REQUEST, "bad_request", e))?;
    let Some(bridge) = &state.nats else {
        return Err(EndpointError::new(
            StatusCode::CONFLICT,
            "not_configured",
            "this master has no NATS (serve --nats URL)",
        ));
    };
    let result = bridge
        .client
        .publish(msg.subject.clone(), msg.payload.into())
        .await;
    match result {
        Ok(()) => {
            bridge.metrics.count("plugin", "ok");
            Ok(ok(&true))
        }
        Err(e) => {
            bridge.metrics.count("plugin", "unavailable");
            tracing::info!(tenant = %msg.tenant, plugin = %msg.plugin, "NATS: a publish failed: {e}");
            Err(EndpointError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("NATS did not take the message: {e}"),
            ))
        }
    }
}
