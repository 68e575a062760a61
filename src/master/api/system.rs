//! `/api/system/version`, `/healthz`, `/readyz`, `/metrics`,
//! `/api/v1/workers` and `/api/v1/status`: what the master is and how its
//! workers are.
//!
//! `/healthz` is liveness: it answers 200 while the master answers at all
//! (its body says `degraded` while a worker is away). `/readyz` is
//! readiness: 503 until every worker slot is served, as a load balancer or
//! an orchestrator wants it.

use super::{ApiError, ApiState};
use crate::master::catalogue::Catalogue;
use crate::mesophyll::message::PROTOCOL_VERSION;
use crate::rest::{
    Health, LastMinute, Readiness, Status, Version, WorkerInfo, WorkerState, Workers,
};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use std::sync::Arc;

pub(super) async fn version() -> Json<Version> {
    Json(Version {
        name: "meshplay".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        protocol: PROTOCOL_VERSION,
    })
}

pub(super) async fn health(State(state): State<Arc<ApiState>>) -> Json<Health> {
    let connected = state.hub.workers().iter().filter(|w| w.connected).count() as u32;
    Json(Health {
        status: if connected == state.workers {
            "ok"
        } else {
            "degraded"
        }
        .into(),
        workers: state.workers,
        connected,
    })
}

pub(super) async fn ready(State(state): State<Arc<ApiState>>) -> (StatusCode, Json<Readiness>) {
    let views = state.hub.workers();
    let waiting_for: Vec<u32> = (0..state.workers)
        .filter(|id| !views.iter().any(|w| w.id == *id && w.connected))
        .collect();
    let standby = !state.leadership.leads();
    let ready = waiting_for.is_empty() && !standby;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let readiness = Readiness {
        ready,
        workers: state.workers,
        connected: state.workers - waiting_for.len() as u32,
        waiting_for,
        standby,
    };
    (status, Json(readiness))
}

pub(super) async fn metrics(
    State(state): State<Arc<ApiState>>,
) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            crate::master::metrics::CONTENT_TYPE,
        )],
        state.metrics.render(),
    )
}

pub(super) async fn status(State(state): State<Arc<ApiState>>) -> Result<Json<Status>, ApiError> {
    let (plugins, filters) =
        Catalogue::blocking(&state.catalogue, |r| Ok((r.plugins()?, r.filters()?))).await?;
    let views = state.hub.workers();
    let restarts = (0..state.workers)
        .filter_map(|id| state.supervisor.status(id))
        .map(|s| s.restarts)
        .sum();
    let (events, errors) = state.metrics.last_minute();
    Ok(Json(Status {
        version: env!("CARGO_PKG_VERSION").into(),
        protocol: PROTOCOL_VERSION,
        uptime_s: state.started.elapsed().as_secs_f64(),
        store: state.store_url.clone(),
        workers: state.workers,
        running: views.iter().filter(|w| w.connected).count() as u32,
        restarts,
        plugins: plugins.into_iter().map(|p| p.name).collect(),
        filters: filters.into_iter().map(|f| f.name).collect(),
        last_minute: LastMinute {
            events,
            errors,
            events_per_s: events as f64 / 60.0,
            error_ratio: if events == 0 {
                0.0
            } else {
                errors as f64 / events as f64
            },
        },
        leadership: state.leadership.status(),
    }))
}

pub(super) async fn workers(State(state): State<Arc<ApiState>>) -> Json<Workers> {
    let mut holders = state.joins.holders();
    let workers = state
        .hub
        .workers()
        .into_iter()
        .map(|w| {
            let managed = state.supervisor.status(w.id);
            let joined = holders.remove(&w.id);
            let lifecycle = match managed {
                _ if w.connected => WorkerState::Running,
                Some(s) => s.state,
                None => WorkerState::Disconnected,
            };
            WorkerInfo {
                id: w.id,
                state: lifecycle,
                managed: managed.is_some(),
                pid: managed
                    .and_then(|s| s.pid)
                    .or(joined.as_ref().map(|j| j.pid)),
                joined,
                host: w.peer.map(|p| p.ip().to_string()),
                restarts: managed.map_or(0, |s| s.restarts),
                since_heartbeat_s: w.since_last_frame_s,
                in_flight: w.awaiting as u64,
                vms: w.load.vms,
                rss_bytes: w.load.rss_bytes,
            }
        })
        .collect();
    Json(Workers {
        workers,
        bad_frames: state.hub.bad_frames(),
        lost_in_flight: state.hub.lost_in_flight(),
    })
}
