//! Webhooks in: `POST /hooks/{type}/{id}/{event}`, for services that call
//! a URL and can hold no token.
//!
//! The route has no bearer token, so the host decides what it may reach
//! and how often:
//!
//! 1. the calling address's rate (`--webhook-address-rate` a second,
//!    bursts of twice that), before anything is read;
//! 2. the event must be one that some plugin in force lists in its
//!    manifest's `webhooks` (else 404), and on the worker only those
//!    plugins run for it ([`crate::mesophyll::webhook`]);
//! 3. the tenant's rate (`--webhook-tenant-rate`);
//! 4. the body, at most `--webhook-max-body-bytes` (413 past it).
//!
//! The handler gets the request as `event.http` and checks its signature
//! itself (`crypto.hmac_sha256` over `event.http.body` with a secret
//! variable); what it returns becomes the answer ([`answer`]).
//!
//! Modules:
//!
//! - [`rate`]: rates of webhook requests, per tenant and per calling
//!   address.

pub mod answer;
pub mod rate;

use crate::master::api::ApiState;
use crate::master::api::error::ApiError;
use crate::master::shard;
use crate::mesophyll::answers;
use crate::mesophyll::message::{Event, PluginOutcome, ServerMessage, Tenant};
use crate::mesophyll::webhook::HttpCall;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use rate::Rate;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The handlers' budget for one webhook.
pub const WEBHOOK_DEADLINE: Duration = Duration::from_secs(10);

/// Time a worker's answer may take beyond the handlers' deadline.
const ANSWER_SLACK: Duration = Duration::from_secs(1);

/// How webhooks are bounded: `serve --webhook-*`.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// The largest body read.
    pub max_body_bytes: usize,
    /// Requests a second per tenant.
    pub tenant_rate: u32,
    /// Requests a second per calling address.
    pub address_rate: u32,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            max_body_bytes: 1024 * 1024,
            tenant_rate: 20,
            address_rate: 50,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

/// The master's webhooks: their bounds and their count.
#[derive(Debug)]
pub struct Webhooks {
    config: WebhookConfig,
    per_tenant: Rate,
    per_address: Rate,
    results: Family<ResultLabel, Counter>,
}

impl Webhooks {
    /// Registers `meshplay_webhooks_total` in `registry`.
    pub fn new(config: WebhookConfig, registry: &mut Registry) -> Webhooks {
        let results = Family::<ResultLabel, Counter>::default();
        registry.register(
            "webhooks",
            "Webhook requests by result: ok (the handler answered), or the error's code (handler_failed, rate_limited, not_found, too_large, ...)",
            results.clone(),
        );
        Webhooks {
            per_tenant: Rate::new(config.tenant_rate),
            per_address: Rate::new(config.address_rate),
            config,
            results,
        }
    }

    fn count(&self, result: &str) {
        self.results
            .get_or_create(&ResultLabel {
                result: result.to_owned(),
            })
            .inc();
    }
}

fn rate_limited(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("too many webhook requests from this {what}; slow down"),
    )
}

/// `POST /hooks/{type}/{id}/{event}`.
pub async fn hook(
    State(state): State<Arc<ApiState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((kind, id, event)): Path<(String, String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let hooks = &state.webhooks;
    let answer = admit(&state, peer, kind, id, &event, &headers).await;
    let answer = match answer {
        Ok(tenant) => match read_body(body, hooks.config.max_body_bytes).await {
            Ok(body) => {
                let call = HttpCall {
                    method: "POST".into(),
                    headers: header_map(&headers),
                    body,
                    query: query_map(&uri),
                };
                deliver(&state, tenant, event, call).await
            }
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    match answer {
        Ok((result, response)) => {
            hooks.count(result);
            response
        }
        Err(e) => {
            hooks.count(e.code());
            e.into_response()
        }
    }
}

/// The checks before the body is read: rates, and a plugin that takes it.
async fn admit(
    state: &ApiState,
    peer: SocketAddr,
    kind: String,
    id: String,
    event: &str,
    headers: &HeaderMap,
) -> Result<Tenant, ApiError> {
    let hooks = &state.webhooks;
    let now = Instant::now();
    if !hooks.per_address.admit(&peer.ip().to_string(), now) {
        return Err(rate_limited("address"));
    }
    let tenant = crate::master::api::extract::tenant(kind, id)?;
    if !state.catalogue.takes_webhook(event) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no plugin takes webhook {event:?}"),
        ));
    }
    if !hooks.per_tenant.admit(&tenant.to_string(), now) {
        return Err(rate_limited("tenant"));
    }
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > hooks.config.max_body_bytes) {
        return Err(too_large(hooks.config.max_body_bytes));
    }
    Ok(tenant)
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("a webhook's body may hold at most {limit} bytes (--webhook-max-body-bytes)"),
    )
}

async fn read_body(body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    axum::body::to_bytes(body, limit)
        .await
        .map(|b| b.to_vec())
        .map_err(|_| too_large(limit))
}

/// Header names lower-case, repeated values joined with `, `.
fn header_map(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        out.entry(name.as_str().to_owned())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    out
}

/// The query's parameters, the last of a repeated name; none when it
/// does not decode.
fn query_map(uri: &Uri) -> BTreeMap<String, String> {
    Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map(|Query(pairs)| pairs.into_iter().collect())
        .unwrap_or_default()
}

/// Dispatches the webhook and makes the answer of its (first) plugin's
/// result.
async fn deliver(
    state: &ApiState,
    tenant: Tenant,
    name: String,
    call: HttpCall,
) -> Result<(&'static str, Response), ApiError> {
    let worker = shard::worker_for(&tenant, state.workers);
    let event = Event {
        name,
        http: Some(call),
        ..Default::default()
    };
    let deadline_ms = WEBHOOK_DEADLINE.as_millis() as u64;
    let (sent, answer) = state
        .hub
        .request_with_id(worker, WEBHOOK_DEADLINE + ANSWER_SLACK, |req_id| {
            ServerMessage::DispatchEvent {
                req_id: Some(req_id),
                tenant: tenant.clone(),
                event,
                deadline_ms,
            }
        })
        .await;
    let value = answer?;
    let outcomes: Vec<PluginOutcome> = answers::decode_outcomes(&value)
        .map_or_else(|| value.decode(), Ok)
        .map_err(|e| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "bad_worker_answer",
                format!("worker {worker} answered something that is not a result list: {e}"),
            )
        })?;
    let Some(first) = outcomes.into_iter().next() else {
        return Ok(("ok", answer::from_value(serde_json::Value::Null)));
    };
    match first.result {
        Ok(v) => Ok(("ok", answer::from_value(v.to_value()))),
        Err(e) => {
            let req_id = sent.map(crate::mesophyll::correlation::request_label);
            tracing::info!(?req_id, plugin = %first.plugin, %tenant, code = e.kind.as_str(), "webhook handler failed: {}", e.message);
            Ok(("handler_failed", answer::failed(e.kind.as_str())))
        }
    }
}
