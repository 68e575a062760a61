//! The master's side of `events.emit` (`POST /db/events`): what a
//! handler of a worker's shard emitted, checked (the emitting tenant is
//! the caller's, the hops within the fleet's limit) and queued, each event
//! to the worker that owns its tenant, fire-and-forget. Counted in
//! `meshplay_emitted_events_total{result}`; a dropped event is logged.

use crate::master::db::{DbState, EndpointError, body, caller, ok, owned};
use crate::master::shard;
use crate::mesophyll::db::{EmitReply, EmittedEvent};
use crate::mesophyll::message::ServerMessage;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use std::sync::Arc;

/// The budget of an emitted event's handlers (it is fire-and-forget, as a
/// REST dispatch with `wait = false` and no `timeout_ms`).
const EMITTED_DEADLINE_MS: u64 = 5000;

/// The most events one `POST /db/events` may carry (a worker sends one
/// handler call's, at most 16).
const MAX_EMITTED: usize = 64;

/// `POST /db/events`: what a handler of the caller's shard emitted, each
/// queued to the worker that owns its tenant.
pub(crate) async fn events(
    State(state): State<Arc<DbState>>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, EndpointError> {
    let id = caller(&state, &headers)?;
    let events: Vec<EmittedEvent> = body(&bytes)?;
    if events.len() > MAX_EMITTED {
        return Err(EndpointError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("{} events (at most {MAX_EMITTED} a call)", events.len()),
        ));
    }
    for e in &events {
        owned(&state, id, &e.from)?;
        if e.event.hops > state.max_event_hops || e.event.name.is_empty() {
            return Err(EndpointError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!(
                    "an event needs a name and at most {} hops (this one: {:?}, {})",
                    state.max_event_hops, e.event.name, e.event.hops
                ),
            ));
        }
    }
    let mut reply = EmitReply {
        queued: 0,
        dropped: 0,
    };
    for e in events {
        let worker = shard::worker_for(&e.to, state.workers);
        let (to, plugin) = (e.to.clone(), e.plugin.clone());
        let msg = ServerMessage::DispatchEvent {
            req_id: None,
            tenant: e.to,
            event: e.event,
            deadline_ms: EMITTED_DEADLINE_MS,
        };
        match state.hub.send(worker, &msg) {
            Ok(()) => {
                reply.queued += 1;
                state.metrics.emitted("queued");
            }
            Err(err) => {
                reply.dropped += 1;
                let code = crate::master::api::error::ApiError::from(err);
                state.metrics.emitted(code.code());
                tracing::warn!(from = %e.from, %to, %plugin, "an emitted event was dropped: {}", code.message());
            }
        }
    }
    Ok(ok(&reply))
}
