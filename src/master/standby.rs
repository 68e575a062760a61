//! What a standby master answers: `503 not_leader`, naming the leader.
//!
//! A standby has its listeners up and its catalogue loaded, but the only
//! master that may act is the one that holds the lease
//! ([`crate::master::leadership`]). It does not forward: a forwarding
//! standby hides from a client which master ran its request, adds a hop
//! that can fail on its own, and cannot tell a request that failed on the
//! way from one that ran. It refuses instead, at once, saying where the
//! leader is, and the caller (a worker's uplink, the CLI, [`crate::client`])
//! moves there:
//!
//! - on the API, everything but `/healthz`, `/metrics`, `/api/system/version`,
//!   `/api/v1/status` and the dashboard's page (`/`, `/dashboard/*`) answers `503` with code
//!   `not_leader`, the leader's API in the [`LEADER_HEADER`] header and in
//!   the message; `/readyz` answers `503` too, so a load balancer routes
//!   to the leader alone;
//! - on the hub's port (the workers' WebSocket, joins, the DB endpoints)
//!   every request answers `503` `not_leader` with the leader's hub in the
//!   header, in MessagePack as the DB endpoints' errors are.
//!
//! The gate is asked at every request, and answers by the lease as of that
//! instant: a leader that wakes from a pause past its lease refuses at
//! once, before its leadership task has run.

use crate::master::leadership::LeaderGate;
use crate::mesophyll::addresses::{LEADER_HEADER, NOT_LEADER};
use crate::mesophyll::db::DbErrorBody;
use crate::rest::{ErrorBody, ErrorDetail};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// API paths a standby serves itself: its own health, metrics and
/// status, which say who leads, and the contract, which is the same on
/// every master of a release.
fn open_on_standby(path: &str) -> bool {
    matches!(
        path,
        "/healthz"
            | "/readyz"
            | "/metrics"
            | "/api/system/version"
            | "/api/v1/status"
            | "/api/v1/openapi.json"
    ) || path == "/"
        || path.starts_with("/dashboard/")
}

/// What the message says of the leader.
fn leader_words(leader: Option<&str>) -> String {
    match leader {
        Some(addr) => format!("this master stands by; the leader is at {addr}"),
        None => "this master stands by, and no master leads at the moment (a takeover takes \
                 up to the lease's length): try again shortly"
            .into(),
    }
}

fn with_leader(mut res: Response, leader: Option<&str>) -> Response {
    if let Some(value) = leader.and_then(|l| HeaderValue::from_str(l).ok()) {
        res.headers_mut().insert(LEADER_HEADER, value);
    }
    res
}

/// The API's refusal while standing by.
pub fn api_refusal(gate: &LeaderGate) -> Response {
    let leader = gate.leader().map(|l| l.api_addr);
    let body = ErrorBody {
        error: ErrorDetail {
            code: NOT_LEADER.into(),
            message: leader_words(leader.as_deref()),
        },
    };
    let res = (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    with_leader(res, leader.as_deref())
}

/// The API's `router` behind [`api_gate`] when this master takes part in
/// leadership, as it is otherwise: a master that leads alone pays nothing.
pub fn gate_api(router: axum::Router, gate: &LeaderGate) -> axum::Router {
    if !gate.takes_part() {
        return router;
    }
    router.layer(axum::middleware::from_fn_with_state(gate.clone(), api_gate))
}

/// The hub port's `router` behind [`hub_gate`], likewise.
pub fn gate_hub(router: axum::Router, gate: &LeaderGate) -> axum::Router {
    if !gate.takes_part() {
        return router;
    }
    router.layer(axum::middleware::from_fn_with_state(gate.clone(), hub_gate))
}

/// The API's gate: lets a request through while this master leads, or
/// when a standby serves it itself.
pub async fn api_gate(State(gate): State<LeaderGate>, req: Request, next: Next) -> Response {
    if gate.leads() || open_on_standby(req.uri().path()) {
        return next.run(req).await;
    }
    api_refusal(&gate)
}

/// The hub port's gate: nothing there is served by a standby.
pub async fn hub_gate(State(gate): State<LeaderGate>, req: Request, next: Next) -> Response {
    if gate.leads() {
        return next.run(req).await;
    }
    let leader = gate.leader().map(|l| l.mesophyll_addr);
    let body = DbErrorBody {
        code: NOT_LEADER.into(),
        message: leader_words(leader.as_deref()),
    };
    let bytes = rmp_serde::to_vec_named(&body).expect("an error body always encodes");
    let res = (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::CONTENT_TYPE, "application/msgpack")],
        bytes,
    )
        .into_response();
    with_leader(res, leader.as_deref())
}

#[cfg(test)]
mod tests {
    use super::open_on_standby;

    #[test]
    fn a_standby_serves_only_what_says_who_leads() {
        for open in [
            "/healthz",
            "/readyz",
            "/metrics",
            "/api/v1/status",
            "/dashboard/app.js",
        ] {
            assert!(open_on_standby(open), "{open}");
        }
        for refused in [
            "/api/v1/tenants/user/1/events",
            "/api/v1/workers",
            "/hooks/user/1/x",
            "/dashboardx",
            "/api/v1/status/x",
        ] {
            assert!(!open_on_standby(refused), "{refused}");
        }
    }
}
