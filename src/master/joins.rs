//! Workers that join from other machines: join tokens, the slots they take,
//! and the sessions that hold them.
//!
//! The slots for joining are the `--external-workers` ones (the highest
//! ids). A worker presents a join token at `POST /join` on the Mesophyll
//! port ([`crate::mesophyll::join`] has the exchange); it gets a slot and a
//! session token, minted here as a token of role `worker`, stored hashed
//! with the slot it holds ([`SessionGrant`]) and handed to the hub, which
//! then lets that worker in as it lets in any other.
//!
//! Which slot:
//! - the one named (`worker --worker-id`): taken over from whoever held
//!   it, whose session is revoked;
//! - else the lowest one that no session holds and no worker serves (one
//!   started by hand with the slot's token file holds no session);
//! - else one whose holder has been away for longer than [`Joins::lease`]
//!   (a machine that died; a worker restarted on a machine that kept no
//!   session); the one away longest first.
//!
//! Sessions are in the store, so a master that restarts lets its joined
//! workers back in; a slot's holder counts as away from the start until it
//! reconnects. Revoking a join token ([`Joins::revoke`]) revokes every
//! session it gave and closes their connections: those workers, refused on
//! reconnecting, stop.

use crate::master::access::Access;
use crate::master::store::{SessionGrant, StoreError};
use crate::mesophyll::db::DbErrorBody;
use crate::mesophyll::hub::{Hub, HubEvent, SessionHash, session_hash};
use crate::mesophyll::join::{JOIN_PATH, JoinGrant, JoinRequest};
use crate::mesophyll::message::PROTOCOL_VERSION;
use crate::rest::{JoinTokenInfo, JoinedWorker, Role, TokenInfo};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why a join was refused.
#[derive(Debug, thiserror::Error)]
pub enum JoinRefusal {
    /// No such join token, or revoked, or expired: 401.
    #[error("not a join token in force (unknown, revoked or expired)")]
    Unauthorized,
    /// A body that does not decode, another protocol, a slot not for
    /// joining: 400.
    #[error("{0}")]
    BadRequest(String),
    /// Every joinable slot is held: 409.
    #[error("{0}")]
    NoFreeSlot(String),
    /// The session could not be stored: 500.
    #[error("the store failed: {0}")]
    Store(#[from] StoreError),
}

impl IntoResponse for JoinRefusal {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            JoinRefusal::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            JoinRefusal::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            JoinRefusal::NoFreeSlot(_) => (StatusCode::CONFLICT, "no_free_slot"),
            JoinRefusal::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "store"),
        };
        let body = DbErrorBody {
            code: code.into(),
            message: self.to_string(),
        };
        let bytes = rmp_serde::to_vec_named(&body).expect("an error body always encodes");
        (
            status,
            [(header::CONTENT_TYPE, "application/msgpack")],
            bytes,
        )
            .into_response()
    }
}

/// The joinable slots and who holds them.
pub struct Joins {
    access: Arc<Access>,
    hub: Arc<Hub>,
    slots: Range<u32>,
    workers: u32,
    lease: Duration,
    /// Since when each slot's holder has been away (absent: connected).
    away: Mutex<HashMap<u32, Instant>>,
    /// One join at a time: choosing a slot and storing its session is one
    /// step.
    turn: tokio::sync::Mutex<()>,
}

fn hash_of_hex(hex: &str) -> Option<SessionHash> {
    let mut out = [0u8; 32];
    if hex.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl Joins {
    /// The joinable `slots` of a master with `workers` slots in all: hands
    /// the hub every stored session that holds one of them, and starts
    /// watching who is connected. A slot's holder may be away for `lease`
    /// before another worker may take it.
    pub fn start(
        access: Arc<Access>,
        hub: Arc<Hub>,
        slots: Range<u32>,
        workers: u32,
        lease: Duration,
    ) -> Arc<Self> {
        let now = Instant::now();
        let joins = Arc::new(Joins {
            away: Mutex::new(slots.clone().map(|s| (s, now)).collect()),
            access,
            hub,
            slots,
            workers,
            lease,
            turn: tokio::sync::Mutex::new(()),
        });
        joins.accept_stored_sessions();
        let watcher = Arc::downgrade(&joins);
        let mut events = joins.hub.subscribe();
        tokio::spawn(async move {
            loop {
                let event = match events.recv().await {
                    Ok(e) => e,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return,
                };
                let Some(joins) = watcher.upgrade() else {
                    return;
                };
                let mut away = joins.away.lock().unwrap();
                match event {
                    HubEvent::Connected { worker, .. } => {
                        away.remove(&worker);
                    }
                    HubEvent::Disconnected { worker, .. } if !joins.hub.is_connected(worker) => {
                        away.insert(worker, Instant::now());
                    }
                    HubEvent::Disconnected { .. } => {}
                }
            }
        });
        joins
    }

    /// Hands the hub every session [`Access`] holds for a joinable slot
    /// (at start, and when this master takes the lease over: the sessions
    /// the last leader gave are in the store).
    pub fn accept_stored_sessions(&self) {
        for (_, sha256, grant) in self.access.sessions() {
            match hash_of_hex(&sha256) {
                Some(hash) if self.slots.contains(&grant.slot) => {
                    self.hub.accept_session(grant.slot, hash)
                }
                _ => tracing::warn!(slot = grant.slot, "a stored session holds no joinable slot"),
            }
        }
    }

    /// How long a slot's holder may be away before another takes the slot.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// Who holds each joinable slot that a joined worker holds.
    pub fn holders(&self) -> HashMap<u32, JoinedWorker> {
        self.access
            .sessions()
            .into_iter()
            .filter(|(_, _, g)| self.slots.contains(&g.slot))
            .map(|(info, _, g)| (g.slot, joined(&info, &g)))
            .collect()
    }

    /// Lets a worker join with `presented` (a join token): the slot and its
    /// session token.
    ///
    /// Fails as [`JoinRefusal`] says.
    pub async fn join(
        &self,
        presented: &str,
        request: &JoinRequest,
    ) -> Result<JoinGrant, JoinRefusal> {
        let join_token = self
            .access
            .find(presented)
            .filter(|t| t.role == Role::Join)
            .ok_or(JoinRefusal::Unauthorized)?;
        if request.protocol != PROTOCOL_VERSION {
            return Err(JoinRefusal::BadRequest(format!(
                "the master speaks protocol {PROTOCOL_VERSION}, this worker {}",
                request.protocol
            )));
        }
        if request.host.len() > 255 || request.host.chars().any(char::is_control) {
            return Err(JoinRefusal::BadRequest(
                "a host name is at most 255 printable characters".into(),
            ));
        }
        let _turn = self.turn.lock().await;
        let slot = self.choose(request.worker_id)?;
        // The slot's previous session, if any, ends here.
        for (info, sha256, grant) in self.access.sessions() {
            if grant.slot == slot {
                self.end_session(&info.id, &sha256, grant.slot).await?;
            }
        }
        let grant = SessionGrant {
            slot,
            join_token: join_token.id.clone(),
            host: request.host.clone(),
            pid: request.pid,
        };
        let name = format!("worker-{slot}@{}", request.host);
        let (info, token) = self
            .access
            .mint(Role::Worker, Some(name), None, Some(grant))
            .await?;
        self.hub.accept_session(slot, session_hash(&token));
        tracing::info!(
            worker = slot,
            host = %request.host,
            join_token = %join_token.id,
            session = %info.id,
            "a worker joined"
        );
        Ok(JoinGrant {
            worker_id: slot,
            token,
            workers: self.workers,
        })
    }

    fn choose(&self, wanted: Option<u32>) -> Result<u32, JoinRefusal> {
        if let Some(slot) = wanted {
            if !self.slots.contains(&slot) {
                return Err(JoinRefusal::BadRequest(format!(
                    "worker {slot} is not a slot for joining (those are {}..{} of {}: \
                     serve --external-workers)",
                    self.slots.start, self.slots.end, self.workers
                )));
            }
            return Ok(slot);
        }
        let held = self.holders();
        // A slot is free when no session holds it and nobody serves it (a
        // worker started by hand with the slot's token file holds no
        // session).
        let free = self
            .slots
            .clone()
            .find(|s| !held.contains_key(s) && !self.hub.is_connected(*s));
        if let Some(free) = free {
            return Ok(free);
        }
        let away = self.away.lock().unwrap();
        let lapsed = self
            .slots
            .clone()
            .filter_map(|s| away.get(&s).map(|since| (s, *since)))
            .filter(|(_, since)| since.elapsed() >= self.lease)
            .min_by_key(|(_, since)| *since);
        match lapsed {
            Some((slot, _)) => Ok(slot),
            None => Err(JoinRefusal::NoFreeSlot(format!(
                "all {} slots for joining are held (a holder away for {:?} gives its slot up; \
                 --worker-id takes one over)",
                self.slots.len(),
                self.lease
            ))),
        }
    }

    /// Revokes session `id` and closes the connection that came in with it.
    async fn end_session(
        &self,
        id: &str,
        sha256: &str,
        slot: u32,
    ) -> Result<Option<TokenInfo>, StoreError> {
        let revoked = self.access.end_session(id).await?;
        if let Some(hash) = hash_of_hex(sha256) {
            self.hub.revoke_session(slot, hash);
        }
        Ok(revoked)
    }

    /// Revokes token `id` (any role); for a join token, also every session
    /// it gave, whose connections close. `None` when there is no such
    /// token.
    ///
    /// Fails when the store cannot keep a revocation.
    pub async fn revoke(&self, id: &str) -> Result<Option<TokenInfo>, StoreError> {
        let sessions = self.access.sessions();
        if let Some((session, sha256, grant)) = sessions.iter().find(|(s, _, _)| s.id == id) {
            return self.end_session(&session.id, sha256, grant.slot).await;
        }
        let Some(info) = self.access.revoke(id).await? else {
            return Ok(None);
        };
        for (session, sha256, grant) in sessions {
            if grant.join_token == info.id {
                self.end_session(&session.id, &sha256, grant.slot).await?;
            }
        }
        Ok(Some(info))
    }

    /// Every join token, oldest first, with the workers holding a slot
    /// through it.
    pub fn list(&self) -> Vec<JoinTokenInfo> {
        let holders = self.holders();
        self.access
            .list(&[Role::Join])
            .into_iter()
            .map(|info| {
                let mut workers: Vec<JoinedWorker> = holders
                    .values()
                    .filter(|w| w.join_token == info.id)
                    .cloned()
                    .collect();
                workers.sort_by_key(|w| w.worker_id);
                JoinTokenInfo { info, workers }
            })
            .collect()
    }

    /// `POST /join`, for the Mesophyll port's router.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route(JOIN_PATH, axum::routing::post(join_handler))
            .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
            .with_state(Arc::clone(self))
    }
}

fn joined(session: &TokenInfo, grant: &SessionGrant) -> JoinedWorker {
    JoinedWorker {
        worker_id: grant.slot,
        host: grant.host.clone(),
        pid: grant.pid,
        join_token: grant.join_token.clone(),
        joined_at: session.created_at,
    }
}

async fn join_handler(
    State(joins): State<Arc<Joins>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, JoinRefusal> {
    let presented = crate::master::access::bearer(&headers).ok_or(JoinRefusal::Unauthorized)?;
    let request: JoinRequest = rmp_serde::from_slice(&body)
        .map_err(|e| JoinRefusal::BadRequest(format!("not a join request: {e}")))?;
    let grant = joins.join(presented, &request).await.inspect_err(|e| {
        tracing::warn!(host = %request.host, "refused a join: {e}");
    })?;
    let bytes = rmp_serde::to_vec_named(&grant).expect("a grant always encodes");
    Ok(([(header::CONTENT_TYPE, "application/msgpack")], bytes).into_response())
}

#[cfg(test)]
mod tests {
    #[test]
    fn hashes_read_back_from_hex() {
        let hash = super::session_hash("secret");
        let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(super::hash_of_hex(&hex), Some(hash));
        assert_eq!(super::hash_of_hex("zz"), None);
        assert_eq!(super::hash_of_hex(&"g".repeat(64)), None);
    }
}
