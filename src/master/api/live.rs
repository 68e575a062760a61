//! What the dashboard watches: `GET /api/v1/console` (every dispatch as it
//! is answered, and workers coming and going, as server-sent events),
//! `GET /api/v1/traffic` (the last minute per second) and
//! `GET /api/v1/tenants` (the tenants with a live VM, asked of each
//! worker).
//!
//! The console is a stream over a plain GET with the same bearer token as
//! every other route (a page reads it with `fetch`, which can send the
//! header; `EventSource` cannot, and a token in the URL would end up in
//! logs). Its events:
//!
//! ```text
//! event: hello     data: {"workers":2}
//! event: dispatch  data: ConsoleEntry
//! event: worker    data: {"worker":0,"state":"disconnected","reason":"closed"}
//! event: lagged    data: {"skipped":17}
//! ```

use super::{ApiError, ApiState};
use crate::master::access::Caller;
use crate::mesophyll::hub::{DisconnectReason, HubEvent};
use crate::mesophyll::message::{LiveTenants, ServerMessage};
use crate::rest::{LiveTenantInfo, LiveTenantList, Traffic};
use axum::Extension;
use axum::Json;
use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::Deserialize;
use serde_json::json;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// How long a worker has to list its tenants.
const LIST_DEADLINE: Duration = Duration::from_secs(2);

/// The most tenants one worker lists unless asked for fewer.
const MAX_LIST: u32 = 1000;

pub(super) async fn traffic(State(state): State<Arc<ApiState>>) -> Json<Traffic> {
    Json(Traffic {
        seconds: state.metrics.traffic(),
    })
}

#[derive(Deserialize)]
pub(super) struct ListQuery {
    pub(super) limit: Option<u32>,
}

pub(super) async fn tenants(
    State(state): State<Arc<ApiState>>,
    Query(query): Query<ListQuery>,
) -> Result<Json<LiveTenantList>, ApiError> {
    let limit = query.limit.unwrap_or(100).min(MAX_LIST);
    let asks = (0..state.workers).map(|worker| {
        let hub = Arc::clone(&state.hub);
        async move {
            // A worker that is away is reported, not waited for.
            if !hub.is_connected(worker) {
                return (worker, None);
            }
            let answer = hub
                .request(worker, LIST_DEADLINE, |req_id| ServerMessage::ListTenants {
                    req_id,
                    limit,
                })
                .await
                .ok()
                .and_then(|v| v.decode::<LiveTenants>().ok());
            (worker, answer)
        }
    });
    let mut list = LiveTenantList {
        total: 0,
        tenants: Vec::new(),
        unavailable: Vec::new(),
    };
    for (worker, answer) in futures::future::join_all(asks).await {
        let Some(live) = answer else {
            list.unavailable.push(worker);
            continue;
        };
        list.total += live.total;
        list.tenants
            .extend(live.tenants.into_iter().map(|t| LiveTenantInfo {
                tenant: t.tenant,
                worker,
                busy: t.busy,
                queued: t.queued,
            }));
    }
    Ok(Json(list))
}

fn reason(r: DisconnectReason) -> &'static str {
    match r {
        DisconnectReason::HeartbeatTimeout => "heartbeat_timeout",
        DisconnectReason::Replaced => "replaced",
        DisconnectReason::Closed => "closed",
        DisconnectReason::Kicked => "kicked",
    }
}

/// One thing the console says, whichever way it is carried (server-sent
/// events here, a GraphQL subscription in [`super::graphql`]).
pub(super) enum ConsoleItem {
    /// First: how many worker slots there are.
    Hello { workers: u32 },
    /// A dispatch was answered.
    Dispatch(Arc<crate::rest::ConsoleEntry>),
    /// A worker came or went.
    Worker(HubEvent),
    /// This many items were skipped: the reader fell behind.
    Lagged(u64),
}

impl ConsoleItem {
    /// Its name (the SSE event's) and its data, as JSON.
    pub(super) fn named(&self) -> (&'static str, serde_json::Value) {
        match self {
            ConsoleItem::Hello { workers } => ("hello", json!({ "workers": workers })),
            ConsoleItem::Dispatch(entry) => (
                "dispatch",
                serde_json::to_value(&**entry).unwrap_or_default(),
            ),
            ConsoleItem::Worker(HubEvent::Connected { worker, .. }) => {
                ("worker", json!({"worker": worker, "state": "connected"}))
            }
            ConsoleItem::Worker(HubEvent::Disconnected {
                worker, reason: r, ..
            }) => (
                "worker",
                json!({"worker": worker, "state": "disconnected", "reason": reason(*r)}),
            ),
            ConsoleItem::Lagged(skipped) => ("lagged", json!({ "skipped": skipped })),
        }
    }
}

/// The console as `caller` may read it: hello, then dispatches and worker
/// changes as they happen, bounded by the broadcast channels (a reader
/// that falls behind is told how much it missed), until the caller's
/// token is revoked.
pub(super) fn console_items(
    state: Arc<ApiState>,
    caller: Caller,
) -> impl Stream<Item = ConsoleItem> + Send + 'static {
    let dispatches = state.console.subscribe();
    let workers = state.hub.subscribe();
    let revocations = state.access.revocations();
    let hello = ConsoleItem::Hello {
        workers: state.workers,
    };
    let next = futures::stream::unfold(
        (dispatches, workers, revocations),
        move |(mut dispatches, mut workers, mut revocations)| {
            let (state, caller) = (Arc::clone(&state), caller.clone());
            async move {
                loop {
                    let item = tokio::select! {
                        // The console ends with its token.
                        Ok(()) = revocations.changed() => {
                            if state.access.in_force(&caller) {
                                continue;
                            }
                            tracing::info!(token = %caller.name, "a console closed: its token was revoked");
                            return None;
                        }
                        d = dispatches.recv() => match d {
                            Ok(entry) => ConsoleItem::Dispatch(entry),
                            Err(RecvError::Lagged(n)) => ConsoleItem::Lagged(n),
                            Err(RecvError::Closed) => return None,
                        },
                        w = workers.recv() => match w {
                            Ok(e) => ConsoleItem::Worker(e),
                            Err(RecvError::Lagged(n)) => ConsoleItem::Lagged(n),
                            Err(RecvError::Closed) => return None,
                        },
                    };
                    return Some((item, (dispatches, workers, revocations)));
                }
            }
        },
    );
    futures::stream::StreamExt::chain(futures::stream::once(async move { hello }), next)
}

pub(super) async fn console(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let events = futures::stream::StreamExt::map(console_items(state, caller), |item| {
        let (name, data) = item.named();
        Ok(Event::default().event(name).data(data.to_string()))
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}
