//! `POST /db/timers`: what a handler asks of its tenant's timers and
//! schedules ([`TimerRequest`]), checked to be a tenant of the calling
//! worker's shard, answered with a [`TimerReply`].

use super::{TimerError, now_ms};
use crate::master::db::{DbState, EndpointError, body, caller, ok, owned};
use crate::mesophyll::timers::{TimerOp, TimerReply, TimerRequest, When};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use std::sync::Arc;

/// The most pending timers `timers.list` returns.
pub const LIST_LIMIT: usize = 1000;

impl From<TimerError> for EndpointError {
    fn from(e: TimerError) -> Self {
        match e {
            TimerError::Store(e) => e.into(),
            TimerError::Bad(_) | TimerError::Cadence(_) => {
                EndpointError::new(StatusCode::BAD_REQUEST, "bad_request", e.to_string())
            }
        }
    }
}

/// `POST /db/timers`.
pub(crate) async fn timers(
    State(state): State<Arc<DbState>>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, EndpointError> {
    let id = caller(&state, &headers)?;
    let req: TimerRequest = body(&bytes)?;
    owned(&state, id, &req.tenant)?;
    let timers = &state.timers;
    let tenant = &req.tenant;
    let reply = match req.op {
        TimerOp::Set { event, data, when } => {
            let due_at = match when {
                When::After(ms) => now_ms().saturating_add(ms.min(i64::MAX as u64) as i64),
                When::At(at) => at,
            };
            let t = timers.set(tenant, event, data, due_at).await?;
            TimerReply::Set { id: t.id }
        }
        TimerOp::Cancel { id } => TimerReply::Removed(timers.cancel(tenant, id).await?),
        TimerOp::Every(spec) => TimerReply::Scheduled(timers.put_schedule(tenant, spec).await?),
        TimerOp::Unschedule { name } => {
            TimerReply::Removed(timers.delete_schedule(tenant, &name).await?)
        }
        TimerOp::List => {
            let (pending, schedules) = timers.list(tenant, LIST_LIMIT).await?;
            TimerReply::Listed {
                timers: pending.iter().map(|t| t.pending()).collect(),
                schedules: schedules.iter().map(|s| s.listed()).collect(),
            }
        }
    };
    Ok(ok(&reply))
}
