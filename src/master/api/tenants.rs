//! What reaches one tenant: events, scripts and drops (through the hub, to
//! the worker of its shard), and its state (in the store, then told to that
//! worker).

use super::extract::{Payload, tenant, timeout};
use super::{ApiError, ApiState};
use crate::master::console::Dispatch;
use crate::master::{shard, store};
use crate::mesophyll::answers;
use crate::mesophyll::correlation::request_label;
use crate::mesophyll::db::TenantStateEntry;
use crate::mesophyll::hub::HubError;
use crate::mesophyll::message::{Event, Packed, PluginOutcome, ServerMessage, TenantState};
use crate::rest::{
    self, Accepted, DispatchRequest, Dispatched, Dropped, ErrorDetail, ScriptRequest, ScriptResult,
};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How much longer the master waits for a worker than the tenant code's own
/// deadline, so that the worker's precise "timeout" arrives before the hub's
/// blunt "deadline exceeded".
const ANSWER_SLACK: Duration = Duration::from_secs(1);

/// How long a connected worker has to confirm a state change.
const STATE_ACK: Duration = Duration::from_secs(5);

/// What is left of `budget` since `started`, for the worker: a request that
/// waited for its worker to come back has that much less to run.
fn left(started: Instant, budget: Duration) -> u64 {
    budget.saturating_sub(started.elapsed()).as_millis().max(1) as u64
}

pub(super) async fn dispatch(
    State(state): State<Arc<ApiState>>,
    Path((kind, id)): Path<(String, String)>,
    Payload(req): Payload<DispatchRequest<Packed>>,
) -> Result<Response, ApiError> {
    Ok(match dispatch_to(&state, kind, id, req).await? {
        Delivered::Done(d) => Json(d).into_response(),
        Delivered::Accepted(a) => (StatusCode::ACCEPTED, Json(a)).into_response(),
    })
}

/// What a dispatch came to: the plugins' results, or queued (no wait).
pub(crate) enum Delivered {
    Done(Dispatched<Packed>),
    Accepted(Accepted),
}

/// One dispatch, whichever way it came (REST or the stream), counted in
/// the metrics, shown on the console, and logged when it fails.
pub(crate) async fn dispatch_to(
    state: &ApiState,
    kind: String,
    id: String,
    req: DispatchRequest<Packed>,
) -> Result<Delivered, ApiError> {
    let started = Instant::now();
    let mut sent = None;
    // The tenant and event as asked, for the console, should it fail.
    let asked = state
        .console
        .watched()
        .then(|| (kind.clone(), id.clone(), req.name.clone()));
    let name = state.nats.as_ref().map(|_| req.name.clone());
    let answer = deliver(state, kind, id, req, started, &mut sent).await;
    if let (Some(nats), Some(name), Ok(Delivered::Done(d))) = (&state.nats, name, &answer) {
        nats.answered(&name, d);
    }
    if let Err(e) = &answer {
        state
            .metrics
            .dispatched(e.code(), &[], started.elapsed(), |_| true);
        failed("dispatch", sent, e);
        if let Some((kind, id, event)) = asked {
            let worker = tenant(kind.clone(), id.clone())
                .ok()
                .map(|t| shard::worker_for(&t, state.workers));
            let seen = Dispatch {
                tenant: format!("{kind}:{id}"),
                event,
                worker,
                request_id: sent.map(request_label),
                elapsed: started.elapsed(),
                outcomes: &[],
            };
            let error = ErrorDetail {
                code: e.code().to_owned(),
                message: e.message().to_owned(),
            };
            state.console.publish(seen, e.code(), Some(error));
        }
    }
    answer
}

/// Logs a request that failed, with the id the worker's logs carry for it
/// (none when it was never sent). A span per request would carry it too,
/// but costs every request; failures are what an operator looks up.
fn failed(what: &str, sent: Option<u64>, e: &ApiError) {
    match sent {
        Some(id) => {
            let req_id = request_label(id);
            tracing::info!(%req_id, code = e.code(), "{what} failed: {}", e.message());
        }
        None => tracing::info!(code = e.code(), "{what} failed: {}", e.message()),
    }
}

/// A dispatch to the tenant's worker; its successes are counted here, its
/// errors by the caller.
async fn deliver(
    state: &ApiState,
    kind: String,
    id: String,
    req: DispatchRequest<Packed>,
    started: Instant,
    sent: &mut Option<u64>,
) -> Result<Delivered, ApiError> {
    let tenant = tenant(kind, id)?;
    if req.name.is_empty() {
        return Err(ApiError::bad_request("the event needs a name"));
    }
    let budget = timeout(req.timeout_ms)?;
    let worker = shard::worker_for(&tenant, state.workers);
    let watched = state.console.watched().then(|| req.name.clone());
    let seen = |request_id, outcomes| Dispatch {
        tenant: tenant.to_string(),
        event: watched.clone().unwrap_or_default(),
        worker: Some(worker),
        request_id,
        elapsed: started.elapsed(),
        outcomes,
    };
    let event = Event {
        name: req.name,
        data: req.data,
        ..Default::default()
    };
    if !req.wait {
        let queued = || ServerMessage::DispatchEvent {
            req_id: None,
            tenant: tenant.clone(),
            event,
            deadline_ms: left(started, budget),
        };
        state.hub.send_within(worker, budget, queued).await?;
        state
            .metrics
            .dispatched("accepted", &[], started.elapsed(), |_| true);
        if watched.is_some() {
            state.console.publish(seen(None, &[]), "accepted", None);
        }
        return Ok(Delivered::Accepted(Accepted { tenant, worker }));
    }
    let (request, value) = state
        .hub
        .request_with_id(worker, budget + ANSWER_SLACK, |req_id| {
            ServerMessage::DispatchEvent {
                req_id: Some(req_id),
                tenant: tenant.clone(),
                event,
                deadline_ms: left(started, budget),
            }
        })
        .await;
    *sent = request;
    let value = value?;
    let outcomes = answers::decode_outcomes(&value).map_or_else(|| value.decode(), Ok);
    let outcomes: Vec<PluginOutcome> = outcomes.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "bad_worker_answer",
            format!("worker {worker} answered something that is not a result list: {e}"),
        )
    })?;
    let catalogue = &state.catalogue;
    state
        .metrics
        .dispatched("ok", &outcomes, started.elapsed(), |p| {
            catalogue.has_plugin(p)
        });
    if watched.is_some() {
        let request_id = request.map(request_label);
        state
            .console
            .publish(seen(request_id, &outcomes), "ok", None);
    }
    Ok(Delivered::Done(Dispatched {
        tenant,
        worker,
        results: outcomes.into_iter().map(Into::into).collect(),
        request_id: request.map(request_label),
    }))
}

pub(super) async fn run_script(
    State(state): State<Arc<ApiState>>,
    Path((kind, id)): Path<(String, String)>,
    Payload(req): Payload<ScriptRequest>,
) -> Result<Json<ScriptResult<Packed>>, ApiError> {
    let mut sent = None;
    let answer = run_script_on_worker(&state, kind, id, req, &mut sent).await;
    state.metrics.scripted(match &answer {
        Ok(_) => "ok",
        Err(e) => e.code(),
    });
    if let Err(e) = &answer {
        failed("script", sent, e);
    }
    answer
}

async fn run_script_on_worker(
    state: &ApiState,
    kind: String,
    id: String,
    req: ScriptRequest,
    sent: &mut Option<u64>,
) -> Result<Json<ScriptResult<Packed>>, ApiError> {
    let tenant = tenant(kind, id)?;
    let budget = timeout(req.timeout_ms)?;
    let worker = shard::worker_for(&tenant, state.workers);
    let started = Instant::now();
    let (request, result) = state
        .hub
        .request_with_id(worker, budget + ANSWER_SLACK, |req_id| {
            ServerMessage::RunScript {
                req_id,
                tenant: tenant.clone(),
                name: req.name.unwrap_or_else(|| "script".into()),
                code: req.code,
                event: req.event.unwrap_or_default(),
                deadline_ms: left(started, budget),
            }
        })
        .await;
    *sent = request;
    let result = result?;
    Ok(Json(ScriptResult {
        tenant,
        worker,
        result,
        request_id: request.map(request_label),
    }))
}

pub(super) async fn drop_vm(
    State(state): State<Arc<ApiState>>,
    Path((kind, id)): Path<(String, String)>,
) -> Result<Json<Dropped>, ApiError> {
    let tenant = tenant(kind, id)?;
    let worker = shard::worker_for(&tenant, state.workers);
    state
        .hub
        .request(
            worker,
            Duration::from_millis(rest::DEFAULT_TIMEOUT_MS),
            |req_id| ServerMessage::DropTenant {
                req_id,
                tenant: tenant.clone(),
            },
        )
        .await?;
    Ok(Json(Dropped { tenant, worker }))
}

pub(super) async fn get_state(
    State(state): State<Arc<ApiState>>,
    Path((kind, id)): Path<(String, String)>,
) -> Result<Json<TenantStateEntry>, ApiError> {
    let tenant = tenant(kind, id)?;
    let current = {
        let tenant = tenant.clone();
        store::blocking(&state.store, move |s| s.tenant_state(&tenant))
            .await?
            .unwrap_or_default()
    };
    Ok(Json(TenantStateEntry {
        tenant,
        state: current,
    }))
}

pub(super) async fn put_state(
    State(state): State<Arc<ApiState>>,
    Path((kind, id)): Path<(String, String)>,
    Payload(new): Payload<TenantState>,
) -> Result<Json<TenantStateEntry>, ApiError> {
    let tenant = tenant(kind, id)?;
    crate::master::db::check_state(&new)?;
    // One change of a tenant's state at a time, so that the worker is told
    // in the order the store took them.
    let _turn = state.state_turns.turn(&tenant).await;
    state.store.put_tenant_state(&tenant, &new).await?;
    let worker = shard::worker_for(&tenant, state.workers);
    // A worker that is not connected loads every state of its shard when
    // it connects (the store has this one already); a connected one is told
    // and must confirm, or the answer says it was not.
    if state.hub.is_connected(worker) {
        let told = state
            .hub
            .request(worker, STATE_ACK, |req_id| {
                ServerMessage::TenantStateChanged {
                    req_id: Some(req_id),
                    tenant: tenant.clone(),
                    state: Some(new.clone()),
                }
            })
            .await;
        match told {
            Ok(_) | Err(HubError::WorkerUnavailable { .. } | HubError::UnknownWorker(_)) => {}
            Err(e) => {
                let e = ApiError::from(e);
                return Err(e.with_message(|m| {
                    format!("the state is stored, but worker {worker} did not confirm it ({m}); PUT it again")
                }));
            }
        }
    }
    Ok(Json(TenantStateEntry { tenant, state: new }))
}
