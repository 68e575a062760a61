//! Joining: how a worker the master did not start gets a slot.
//!
//! `POST /join` on the Mesophyll port, with the join token as a bearer
//! (`authorization: Bearer ...`) and a MessagePack [`JoinRequest`]; the
//! answer is a [`JoinGrant`]: the slot (worker id) the worker serves and a
//! session token of its own, which it then presents as any worker presents
//! its token (on the upgrade and every DB call). The join token is spent on
//! nothing: the same one lets a fleet join, until it expires or is revoked.
//!
//! Refusals carry a [`DbErrorBody`] with a stable code:
//!
//! | status | code | what the worker does |
//! |---|---|---|
//! | 401 | `unauthorized` | no such token, revoked, or expired: stops |
//! | 400 | `bad_request` | a body that does not decode, a slot that is not for joining: stops |
//! | 409 | `no_free_slot` | every joinable slot is held: tries again later |
//!
//! The session token is kept by the master only as its hash, and outlives a
//! master restart: a joined worker reconnects with it, keeping its slot and
//! its tenants' VMs. Revoking the join token revokes the sessions it gave
//! and closes their connections.

use crate::mesophyll::db::DbErrorBody;
use serde::{Deserialize, Serialize};

/// The path on the Mesophyll port.
pub const JOIN_PATH: &str = "/join";

/// What a joining worker says of itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// [`crate::mesophyll::message::PROTOCOL_VERSION`] of the worker.
    pub protocol: u32,
    /// The slot wanted (`worker --worker-id`); `None` takes a free one.
    /// Naming a slot takes it over from whoever held it.
    pub worker_id: Option<u32>,
    /// The worker machine's hostname, for `meshplay workers`.
    pub host: String,
    /// The worker's process id there.
    pub pid: u32,
}

/// What the master grants.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinGrant {
    /// The slot to serve: the worker id to connect as.
    pub worker_id: u32,
    /// The session token to connect with. Never logged.
    pub token: String,
    /// Slots in all (the shard count).
    pub workers: u32,
}

impl std::fmt::Debug for JoinGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinGrant")
            .field("worker_id", &self.worker_id)
            .field("token", &"<redacted>")
            .field("workers", &self.workers)
            .finish()
    }
}

/// Why a join did not get a slot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// The master refused the token or the request: trying again cannot
    /// help.
    #[error("the master refused to let this worker join: {0}")]
    Refused(String),
    /// Every joinable slot is held now.
    #[error("no free slot: {0}")]
    NoFreeSlot(String),
    /// No answer (the master is away, the network or TLS failed).
    #[error("master unreachable: {0}")]
    Transport(String),
}

impl JoinError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        !matches!(self, JoinError::Refused(_))
    }
}

/// The error an answer with a failure `status` stands for.
pub fn refusal(status: u16, body: &[u8]) -> JoinError {
    let message = rmp_serde::from_slice::<DbErrorBody>(body)
        .map(|b| format!("{} ({})", b.message, b.code))
        .unwrap_or_else(|_| format!("HTTP {status}: {}", String::from_utf8_lossy(body)));
    match status {
        409 => JoinError::NoFreeSlot(message),
        400..=499 => JoinError::Refused(message),
        _ => JoinError::Transport(message),
    }
}

/// Asks the master at `master` (`host:port`; `https://` with `tls`) for a
/// slot, with `join_token`, within `deadline`.
///
/// Fails as [`JoinError`] says.
pub async fn join(
    master: &str,
    tls: Option<&crate::tls::TlsClient>,
    join_token: &str,
    request: &JoinRequest,
    deadline: std::time::Duration,
) -> Result<JoinGrant, JoinError> {
    use bytes::Bytes;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let body = rmp_serde::to_vec_named(request).expect("a join request always encodes");
    let req = hyper::Request::builder()
        .method(hyper::Method::POST)
        .uri(format!("{scheme}://{master}{JOIN_PATH}"))
        .header(hyper::header::AUTHORIZATION, format!("Bearer {join_token}"))
        .header(hyper::header::CONTENT_TYPE, "application/msgpack")
        .body(http_body_util::Full::new(Bytes::from(body)))
        .map_err(|e| JoinError::Refused(format!("cannot make the request: {e}")))?;
    let http = crate::http::HttpClient::http1(tls);
    let (status, bytes) = tokio::time::timeout(deadline, http.exchange(req))
        .await
        .map_err(|_| JoinError::Transport(format!("no answer within {deadline:?}")))?
        .map_err(JoinError::Transport)?;
    if !status.is_success() {
        return Err(refusal(status.as_u16(), &bytes));
    }
    rmp_serde::from_slice(&bytes)
        .map_err(|e| JoinError::Transport(format!("undecodable answer: {e}")))
}
