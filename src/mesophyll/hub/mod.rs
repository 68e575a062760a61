//! The master's side of Mesophyll: one WebSocket per worker, request/response
//! correlation over it, and liveness.
//!
//! The [`Hub`] knows which worker ids exist and the token each must present
//! ([`Hub::register_worker`]); a worker connects to `GET /ws` with its id and
//! token (headers `x-meshplay-worker-id` / `x-meshplay-token`, or the query
//! parameters `?id=&token=`). Unknown id: 404. Wrong token: 401, compared in
//! constant time. Nothing about the token is ever logged.
//!
//! Per connection:
//! - an outbound queue bounded in frames and bytes ([`HubConfig::send_queue`],
//!   [`HubConfig::send_queue_bytes`]); a full queue makes
//!   the request fail at once with [`HubError::Overloaded`];
//! - a [`Correlation`](crate::mesophyll::correlation::Correlation) table; when the connection ends, for whatever reason,
//!   every request pending on it fails at once;
//! - a liveness clock: any frame counts; after
//!   [`HubConfig::heartbeat_timeout`] of silence the connection is declared
//!   dead, closed, and a [`HubEvent::Disconnected`] with
//!   [`DisconnectReason::HeartbeatTimeout`] tells the supervisor to restart
//!   the process;
//! - text frames and undecodable binary frames are counted and logged (at
//!   most once per [`crate::mesophyll::bad_frames::LOG_EVERY`]), never fatal;
//! - a frame over [`MAX_FRAME_BYTES`](crate::mesophyll::codec::MAX_FRAME_BYTES) is the one exception: it cannot be
//!   skipped without reading it whole, so it ends the connection (its pending
//!   requests fail at once; a real worker reconnects). Honest workers never
//!   send one: their encoder refuses oversized answers and sends an error
//!   instead.
//!
//! A request for a worker that has no connection (restarting, or not joined
//! yet) waits for its next one within the request's deadline; so does one
//! that finds its connection closing before it was sent. Once sent, a
//! request whose connection ends fails at once (and is counted in
//! [`Hub::lost_in_flight`]): it may have run, so it is never replayed.
//!
//! A worker that connects again replaces its previous connection. Every
//! connection has a unique serial number and clean-up only removes the slot's
//! connection if it still carries its own serial, so the old connection's
//! clean-up can never evict the new one.
//!
//! Modules:
//!
//! - `connection`: one worker's connection to the hub.

mod connection;

use connection::Connection;

use crate::mesophyll::auth::{Credentials, Refusal};
use crate::mesophyll::bad_frames::BadFrames;
use crate::mesophyll::codec::{self, CodecError};
use crate::mesophyll::correlation::WaitError;
use crate::mesophyll::message::{EgressPolicy, LoadFigures, RemoteError, ServerMessage};
use crate::mesophyll::packed::Packed;
use axum::Router;
use axum::routing::get;
use dashmap::DashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
use tokio::sync::{broadcast, watch};

/// Timing and sizing of the hub.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// How often workers must send a heartbeat (sent to them in `Hello`).
    pub heartbeat_interval: Duration,
    /// Silence after which a worker is declared dead.
    pub heartbeat_timeout: Duration,
    /// Frames queued for one worker before requests answer "overloaded".
    pub send_queue: usize,
    /// Bytes of frames queued for one worker before requests answer
    /// "overloaded".
    pub send_queue_bytes: usize,
    /// What the workers' `http.fetch` may do (sent to them in `Hello`).
    pub egress: EgressPolicy,
    /// How many handlers may emit an event in a row (sent in `Hello`).
    pub max_event_hops: u32,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(5),
            send_queue: 4096,
            send_queue_bytes: 64 * 1024 * 1024,
            egress: EgressPolicy::default(),
            max_event_hops: crate::mesophyll::message::DEFAULT_MAX_EVENT_HOPS,
        }
    }
}

/// Why a request to a worker produced no answer.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The worker id is not one the hub knows.
    #[error("no worker {0}")]
    UnknownWorker(u32),
    /// The worker is not connected, or its connection ended mid-request.
    #[error("worker {worker} unavailable: {reason}")]
    WorkerUnavailable {
        /// The worker asked.
        worker: u32,
        /// What happened to it.
        reason: String,
    },
    /// The worker's outbound queue is full.
    #[error("worker {0} overloaded: its send queue is full")]
    Overloaded(u32),
    /// The worker did not answer within the deadline.
    #[error("worker {worker} did not answer within {after:?}")]
    DeadlineExceeded {
        /// The worker asked.
        worker: u32,
        /// The deadline that passed.
        after: Duration,
    },
    /// The worker answered with an error.
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// The request could not be encoded (too large, most likely).
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    /// No frame within the heartbeat timeout: the worker is presumed hung.
    HeartbeatTimeout,
    /// The same worker connected again.
    Replaced,
    /// The socket closed or failed.
    Closed,
    /// The hub closed it on purpose (shutdown, [`Hub::disconnect`]).
    Kicked,
}

/// What the hub tells whoever watches it (the supervisor, the API).
#[derive(Debug, Clone)]
pub enum HubEvent {
    /// A worker completed the upgrade.
    Connected {
        /// Which worker.
        worker: u32,
        /// The connection's serial number.
        conn: u64,
    },
    /// A worker's connection ended.
    Disconnected {
        /// Which worker.
        worker: u32,
        /// The connection's serial number.
        conn: u64,
        /// Why.
        reason: DisconnectReason,
    },
}

/// A snapshot of one worker as the hub sees it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WorkerView {
    /// The worker id.
    pub id: u32,
    /// Whether a connection is up.
    pub connected: bool,
    /// Seconds since the last frame, when connected.
    pub since_last_frame_s: Option<f64>,
    /// Requests awaiting this worker's answer.
    pub awaiting: usize,
    /// The last heartbeat's figures.
    pub load: LoadFigures,
    /// Bytes queued for the worker, not yet written to its socket.
    pub queued_bytes: u64,
    /// Connections this worker has made since the master started.
    pub connections: u64,
    /// The address its connection comes from, when connected (and the hub
    /// is served with connect info).
    pub peer: Option<std::net::SocketAddr>,
}

struct Slot {
    token: Vec<u8>,
    /// The SHA-256 of each session token a joined worker may present for
    /// this slot ([`Hub::accept_session`]).
    sessions: Vec<SessionHash>,
    conn: Option<Arc<Connection>>,
    connections: u64,
    /// Bumped on every new connection: requests that arrived while the
    /// worker was away wait on it.
    up: watch::Sender<u64>,
}

/// The SHA-256 of a session token: the hub keeps no session secret.
pub type SessionHash = [u8; 32];

/// The hash [`Hub::accept_session`] takes for `token`.
pub fn session_hash(token: &str) -> SessionHash {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}

/// The master's end of Mesophyll. Cheap to share (`Arc<Hub>`).
pub struct Hub {
    config: HubConfig,
    slots: DashMap<u32, Slot>,
    serials: AtomicU64,
    bad_frames: BadFrames,
    lost_in_flight: AtomicU64,
    events: broadcast::Sender<HubEvent>,
}

impl Hub {
    /// A hub with no workers registered yet.
    pub fn new(config: HubConfig) -> Arc<Self> {
        Arc::new(Hub {
            config,
            slots: DashMap::new(),
            serials: AtomicU64::new(1),
            bad_frames: BadFrames::default(),
            lost_in_flight: AtomicU64::new(0),
            events: broadcast::channel(1024).0,
        })
    }

    /// The hub's timing.
    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// Declares worker `id` and the token it must present. Calling it again
    /// (a respawn with a fresh token) replaces the token; a connection that
    /// is up stays up until it ends or is [`Hub::disconnect`]ed.
    pub fn register_worker(&self, id: u32, token: &str) {
        self.slot(id).token = token.as_bytes().to_vec();
    }

    fn slot(&self, id: u32) -> dashmap::mapref::one::RefMut<'_, u32, Slot> {
        self.slots.entry(id).or_insert_with(|| Slot {
            token: Vec::new(),
            sessions: Vec::new(),
            conn: None,
            connections: 0,
            up: watch::Sender::new(0),
        })
    }

    /// Lets a joined worker into slot `id` with the session token whose
    /// hash is `hash`, besides the slot's own token.
    pub fn accept_session(&self, id: u32, hash: SessionHash) {
        let mut slot = self.slot(id);
        if !slot.sessions.contains(&hash) {
            slot.sessions.push(hash);
        }
    }

    /// Refuses that session token from now on, and closes the connection
    /// that came in with it (its pending requests fail at once).
    pub fn revoke_session(&self, id: u32, hash: SessionHash) {
        if let Some(mut slot) = self.slots.get_mut(&id) {
            slot.sessions.retain(|h| *h != hash);
            if let Some(conn) = &slot.conn
                && conn.session == Some(hash)
            {
                let _ = conn.close.send(Some(DisconnectReason::Kicked));
            }
        }
    }

    /// Subscribes to connection events.
    pub fn subscribe(&self) -> broadcast::Receiver<HubEvent> {
        self.events.subscribe()
    }

    /// Total text or undecodable frames received since start.
    pub fn bad_frames(&self) -> u64 {
        self.bad_frames.count()
    }

    /// Requests that were waiting on a connection when it ended, and so
    /// failed with "worker unavailable", since start.
    pub fn lost_in_flight(&self) -> u64 {
        self.lost_in_flight.load(Ordering::Relaxed)
    }

    /// The axum router serving `GET /ws`.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/ws", get(connection::upgrade))
            .with_state(Arc::clone(self))
    }

    /// Sends the message `build` makes (with the request id of each attempt
    /// put in it) to `worker` and waits for its answer, at most
    /// `deadline` in all.
    ///
    /// A worker that is not connected (restarting, or not joined yet) is
    /// waited for within the deadline; past it the request fails with
    /// [`HubError::WorkerUnavailable`]. Once sent, a request whose
    /// connection ends fails at once with [`HubError::WorkerUnavailable`]
    /// (it may have run: it is never replayed). Fails with
    /// [`HubError::Overloaded`] when the worker's queue is full, with
    /// [`HubError::DeadlineExceeded`] when no answer comes in time, and with
    /// [`HubError::Remote`] when the worker answers with an error.
    pub async fn request(
        &self,
        worker: u32,
        deadline: Duration,
        build: impl FnOnce(u64) -> ServerMessage,
    ) -> Result<Packed, HubError> {
        self.request_with_id(worker, deadline, build).await.1
    }

    /// [`Hub::request`], also returning the id the request was last sent
    /// with (`None` when it was never sent): the worker runs the request in
    /// a span carrying that id (as [`request_label`] writes it), so a
    /// caller that logs it lines its logs up with the worker's.
    ///
    /// [`request_label`]: crate::mesophyll::correlation::request_label
    pub async fn request_with_id(
        &self,
        worker: u32,
        deadline: Duration,
        build: impl FnOnce(u64) -> ServerMessage,
    ) -> (Option<u64>, Result<Packed, HubError>) {
        let mut sent = None;
        let answer = self.send_and_wait(worker, deadline, build, &mut sent).await;
        (sent, answer)
    }

    async fn send_and_wait(
        &self,
        worker: u32,
        deadline: Duration,
        build: impl FnOnce(u64) -> ServerMessage,
        sent: &mut Option<u64>,
    ) -> Result<Packed, HubError> {
        let until = Instant::now() + deadline;
        let mut conn = self.connection_by(worker, until, None).await?;
        // Built once a connection is there (what it carries may account for
        // the wait); each attempt puts its own request id in it.
        let mut msg = build(0);
        let pending = loop {
            // A connection that is closing takes nothing more: wait for the
            // worker's next one instead of failing a request never sent.
            if let Ok(pending) = conn.pending.register() {
                msg.set_req_id(pending.id());
                *sent = Some(pending.id());
                match conn.enqueue(codec::encode(&msg)?) {
                    Ok(()) => break pending,
                    Err(HubError::WorkerUnavailable { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            conn = self.connection_by(worker, until, Some(conn.serial)).await?;
        };
        drop(conn);
        let deadline = until.saturating_duration_since(Instant::now());
        match pending.wait(deadline).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(remote)) => Err(HubError::Remote(remote)),
            Err(WaitError::DeadlineExceeded(after)) => {
                Err(HubError::DeadlineExceeded { worker, after })
            }
            Err(e) => Err(unavailable(worker, e)),
        }
    }

    /// Sends `msg` without waiting for an answer (fire-and-forget dispatch,
    /// `CatalogueChanged`, `Shutdown`). Fails as [`Hub::request`] does, minus
    /// the deadline.
    pub fn send(&self, worker: u32, msg: &ServerMessage) -> Result<(), HubError> {
        let conn = self.connection(worker)?;
        conn.enqueue(codec::encode(msg)?)
    }

    /// Like [`Hub::send`], but waits (at most `deadline`) for a worker that
    /// is not connected: a fire-and-forget event for a restarting worker is
    /// delivered once it is back, not refused.
    /// The message is built once the connection is there, so that what it
    /// carries (a remaining deadline) can account for the wait.
    pub async fn send_within(
        &self,
        worker: u32,
        deadline: Duration,
        build: impl FnOnce() -> ServerMessage,
    ) -> Result<(), HubError> {
        let until = Instant::now() + deadline;
        let mut conn = self.connection_by(worker, until, None).await?;
        let msg = build();
        loop {
            match conn.enqueue(codec::encode(&msg)?) {
                Err(HubError::WorkerUnavailable { .. }) => {
                    conn = self.connection_by(worker, until, Some(conn.serial)).await?;
                }
                other => return other,
            }
        }
    }

    /// Sends `msg` to every connected worker; returns how many got it queued.
    pub fn broadcast(&self, msg: &ServerMessage) -> usize {
        let ids: Vec<u32> = self.slots.iter().map(|s| *s.key()).collect();
        ids.into_iter()
            .filter(|&id| self.send(id, msg).is_ok())
            .count()
    }

    /// Closes worker `id`'s connection, if any, failing what is pending on it.
    pub fn disconnect(&self, id: u32, reason: DisconnectReason) {
        if let Some(slot) = self.slots.get(&id)
            && let Some(conn) = &slot.conn
        {
            let _ = conn.close.send(Some(reason));
        }
    }

    /// Closes every worker's connection (a master that stops leading lets
    /// its workers go, so that they find the new leader).
    pub fn disconnect_all(&self, reason: DisconnectReason) {
        for slot in self.slots.iter() {
            if let Some(conn) = &slot.conn {
                let _ = conn.close.send(Some(reason));
            }
        }
    }

    /// Whether worker `id` has a live connection.
    pub fn is_connected(&self, id: u32) -> bool {
        self.slots.get(&id).is_some_and(|s| s.conn.is_some())
    }

    /// A snapshot of every registered worker, by id.
    pub fn workers(&self) -> Vec<WorkerView> {
        let mut out: Vec<WorkerView> = self
            .slots
            .iter()
            .map(|s| {
                let conn = s.conn.as_ref();
                WorkerView {
                    id: *s.key(),
                    connected: conn.is_some(),
                    since_last_frame_s: conn.map(|c| c.silence().as_secs_f64()),
                    awaiting: conn.map_or(0, |c| c.pending.len()),
                    load: conn
                        .map(|c| c.load.lock().unwrap().clone())
                        .unwrap_or_default(),
                    queued_bytes: conn.map_or(0, |c| c.queued.used() as u64),
                    connections: s.connections,
                    peer: conn.and_then(|c| c.peer),
                }
            })
            .collect();
        out.sort_by_key(|w| w.id);
        out
    }

    /// Worker `worker`'s connection, waiting for one until `until` if it has
    /// none now (or only the one numbered `stale`, which is closing).
    async fn connection_by(
        &self,
        worker: u32,
        until: Instant,
        stale: Option<u64>,
    ) -> Result<Arc<Connection>, HubError> {
        loop {
            let mut up = {
                let slot = self
                    .slots
                    .get(&worker)
                    .ok_or(HubError::UnknownWorker(worker))?;
                if let Some(conn) = &slot.conn
                    && Some(conn.serial) != stale
                {
                    return Ok(Arc::clone(conn));
                }
                slot.up.subscribe()
            };
            match tokio::time::timeout_at(until.into(), up.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => {
                    return Err(HubError::WorkerUnavailable {
                        worker,
                        reason: "not connected within the deadline".into(),
                    });
                }
            }
        }
    }

    fn connection(&self, worker: u32) -> Result<Arc<Connection>, HubError> {
        let slot = self
            .slots
            .get(&worker)
            .ok_or(HubError::UnknownWorker(worker))?;
        slot.conn
            .clone()
            .ok_or_else(|| HubError::WorkerUnavailable {
                worker,
                reason: "not connected".into(),
            })
    }

    /// Checks a caller's worker id and token (in constant time): the id of
    /// the worker, or why it is refused. The upgrade and every DB call use
    /// it.
    pub fn authenticate(&self, creds: &Credentials) -> Result<u32, Refusal> {
        self.authenticate_session(creds).map(|(id, _)| id)
    }

    /// [`Hub::authenticate`], also saying which session token, if any, the
    /// caller presented.
    fn authenticate_session(
        &self,
        creds: &Credentials,
    ) -> Result<(u32, Option<SessionHash>), Refusal> {
        let id = creds.id.ok_or(Refusal::UnknownWorker)?;
        let slot = self.slots.get(&id).ok_or(Refusal::UnknownWorker)?;
        if creds.token.is_empty() {
            return Err(Refusal::WrongToken);
        }
        if !slot.token.is_empty() && bool::from(slot.token.as_slice().ct_eq(creds.token.as_bytes()))
        {
            return Ok((id, None));
        }
        // Compared by hash: how long the search takes says nothing of a
        // secret.
        let hash = session_hash(&creds.token);
        if slot.sessions.contains(&hash) {
            return Ok((id, Some(hash)));
        }
        Err(Refusal::WrongToken)
    }
}

fn unavailable(worker: u32, e: WaitError) -> HubError {
    HubError::WorkerUnavailable {
        worker,
        reason: e.to_string(),
    }
}
