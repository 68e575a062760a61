//! A tenant's schedules and pending timers over REST: put, list and delete
//! schedules (`app` to change, `read` to list), list pending timers. The
//! same operations as a handler's `timers.*`, through the same
//! [`crate::master::timers::Timers`].

use super::extract::{Payload, tenant};
use super::{ApiError, ApiState};
use crate::master::timers::TimerError;
use crate::master::timers::endpoint::LIST_LIMIT;
use crate::mesophyll::packed::Packed;
use crate::mesophyll::timers::{ScheduleSpec, UTC};
use crate::rest::{Deleted, ScheduleList, SchedulePut, TimerList};
use axum::Json;
use axum::extract::{Path, State};
use std::sync::Arc;

impl From<TimerError> for ApiError {
    fn from(e: TimerError) -> Self {
        match e {
            TimerError::Store(e) => e.into(),
            other => ApiError::bad_request(other.to_string()),
        }
    }
}

pub(super) async fn put_schedule(
    State(state): State<Arc<ApiState>>,
    Path((kind, id, name)): Path<(String, String, String)>,
    Payload(body): Payload<SchedulePut>,
) -> Result<Json<crate::mesophyll::timers::Schedule>, ApiError> {
    let tenant = tenant(kind, id)?;
    let spec = ScheduleSpec {
        name,
        cron: body.cron,
        event: body.event,
        data: Packed::from_value(&body.data),
        timezone: body.timezone.unwrap_or_else(|| UTC.to_owned()),
    };
    Ok(Json(state.timers.put_schedule(&tenant, spec).await?))
}

pub(super) async fn delete_schedule(
    State(state): State<Arc<ApiState>>,
    Path((kind, id, name)): Path<(String, String, String)>,
) -> Result<Json<Deleted>, ApiError> {
    let tenant = tenant(kind, id)?;
    let deleted = state.timers.delete_schedule(&tenant, &name).await?;
    Ok(Json(Deleted { deleted }))
}

pub(super) async fn list_schedules(
    State(state): State<Arc<ApiState>>,
    Path((kind, id)): Path<(String, String)>,
) -> Result<Json<ScheduleList>, ApiError> {
    let tenant = tenant(kind, id)?;
    let (_, schedules) = state.timers.list(&tenant, 0).await?;
    Ok(Json(ScheduleList {
        schedules: schedules.iter().map(|s| s.listed()).collect(),
    }))
}

pub(super) async fn list_timers(
    State(state): State<Arc<ApiState>>,
    Path((kind, id)): Path<(String, String)>,
) -> Result<Json<TimerList>, ApiError> {
    let tenant = tenant(kind, id)?;
    let (timers, _) = state.timers.list(&tenant, LIST_LIMIT).await?;
    Ok(Json(TimerList {
        timers: timers.iter().map(|t| t.pending()).collect(),
    }))
}
