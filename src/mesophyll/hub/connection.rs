//! One worker's connection to the hub: the upgrade (with its credentials),
//! the writer that batches frames out, the reader that completes requests
//! and keeps the load figures, the liveness clock, and the clean-up that
//! fails whatever was pending and never evicts a newer connection.

use super::{DisconnectReason, Hub, HubError, HubEvent};
use crate::mesophyll::answers;
use crate::mesophyll::auth::Credentials;
use crate::mesophyll::budget::ByteBudget;
use crate::mesophyll::codec::{self, MAX_FRAME_BYTES};
use crate::mesophyll::correlation::Correlation;
use crate::mesophyll::message::{ClientMessage, LoadFigures, PROTOCOL_VERSION, ServerMessage};
use crate::wire::writer::{Batched, write_batch};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// One live WebSocket to one worker.
pub(super) struct Connection {
    pub(super) serial: u64,
    pub(super) worker: u32,
    outbound: mpsc::Sender<Vec<u8>>,
    pub(super) queued: Arc<ByteBudget>,
    pub(super) pending: Arc<Correlation>,
    opened: Instant,
    last_frame_ms: AtomicU64,
    pub(super) load: Mutex<LoadFigures>,
    pub(super) close: watch::Sender<Option<DisconnectReason>>,
    /// Where the worker connects from, when the server knows it.
    pub(super) peer: Option<SocketAddr>,
    /// The session token it came in with, for a joined worker.
    pub(super) session: Option<super::SessionHash>,
}

impl Connection {
    fn touch(&self) {
        self.last_frame_ms
            .store(self.opened.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    pub(super) fn silence(&self) -> Duration {
        let last = Duration::from_millis(self.last_frame_ms.load(Ordering::Relaxed));
        self.opened.elapsed().saturating_sub(last)
    }

    pub(super) fn enqueue(&self, frame: Vec<u8>) -> Result<(), HubError> {
        let len = frame.len();
        if !self.queued.try_take(len) {
            return Err(HubError::Overloaded(self.worker));
        }
        self.outbound.try_send(frame).map_err(|e| {
            self.queued.give_back(len);
            match e {
                mpsc::error::TrySendError::Full(_) => HubError::Overloaded(self.worker),
                mpsc::error::TrySendError::Closed(_) => HubError::WorkerUnavailable {
                    worker: self.worker,
                    reason: "connection closing".into(),
                },
            }
        })
    }
}

impl Hub {
    /// Runs one upgraded connection to its end.
    async fn serve(
        self: Arc<Self>,
        (worker, session): (u32, Option<super::SessionHash>),
        socket: WebSocket,
        peer: Option<SocketAddr>,
    ) {
        let serial = self.serials.fetch_add(1, Ordering::Relaxed);
        let (outbound, mut queue) = mpsc::channel::<Vec<u8>>(self.config.send_queue);
        let (close, mut closed) = watch::channel(None);
        let queued = Arc::new(ByteBudget::new(self.config.send_queue_bytes));
        let conn = Arc::new(Connection {
            serial,
            worker,
            outbound,
            queued: Arc::clone(&queued),
            pending: Correlation::new(),
            opened: Instant::now(),
            last_frame_ms: AtomicU64::new(0),
            load: Mutex::new(LoadFigures::default()),
            close,
            peer,
            session,
        });

        // The queue is empty and nobody else holds it yet: Hello goes first.
        let _ = conn.enqueue(codec::encode(&self.hello(worker)).expect("Hello encodes"));

        let replaced = {
            let Some(mut slot) = self.slots.get_mut(&worker) else {
                return;
            };
            slot.connections += 1;
            let replaced = slot.conn.replace(Arc::clone(&conn));
            slot.up.send_replace(serial);
            replaced
        };
        if let Some(old) = replaced {
            let _ = old.close.send(Some(DisconnectReason::Replaced));
        }
        tracing::info!(worker, conn = serial, "worker connected");
        let _ = self.events.send(HubEvent::Connected {
            worker,
            conn: serial,
        });

        let (mut sink, mut stream) = socket.split();
        let writer = tokio::spawn(async move {
            while let Some(frame) = queue.recv().await {
                let to_message = |f: Vec<u8>| {
                    queued.give_back(f.len());
                    Batched::Frame(Message::Binary(f.into()))
                };
                if write_batch(&mut sink, frame, || queue.try_recv().ok(), to_message)
                    .await
                    .is_err()
                {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        let reason = self.read(&conn, &mut stream, &mut closed).await;
        self.forget(&conn, reason);
        writer.abort();
        tracing::info!(worker, conn = serial, ?reason, "worker disconnected");
        let _ = self.events.send(HubEvent::Disconnected {
            worker,
            conn: serial,
            reason,
        });
    }

    /// The first frame of a connection to `worker`: what it must hold to.
    fn hello(&self, worker: u32) -> ServerMessage {
        ServerMessage::Hello {
            protocol: PROTOCOL_VERSION,
            worker_id: worker,
            heartbeat_interval_ms: self.config.heartbeat_interval.as_millis() as u64,
            heartbeat_timeout_ms: self.config.heartbeat_timeout.as_millis() as u64,
            egress: Some(self.config.egress.clone()),
            max_event_hops: Some(self.config.max_event_hops),
        }
    }

    /// Reads `conn`'s frames until it closes, falls silent past the
    /// heartbeat timeout, or the hub closes it; why it ended.
    async fn read(
        &self,
        conn: &Connection,
        stream: &mut futures::stream::SplitStream<WebSocket>,
        closed: &mut watch::Receiver<Option<DisconnectReason>>,
    ) -> DisconnectReason {
        let (worker, serial) = (conn.worker, conn.serial);
        // Silence is checked often enough that a dead worker is declared
        // within 50 ms of its timeout (a tick per connection costs little);
        // at least 1 ms: a zero period would panic the connection's task.
        let check_every = (self.config.heartbeat_timeout / 8)
            .min(Duration::from_millis(50))
            .max(Duration::from_millis(1));
        let mut ticker = tokio::time::interval(check_every);
        loop {
            tokio::select! {
                frame = stream.next() => match frame {
                    Some(Ok(Message::Binary(bytes))) => {
                        conn.touch();
                        self.on_frame(conn, &bytes);
                    }
                    Some(Ok(Message::Text(_))) => {
                        conn.touch();
                        self.bad_frames.note(&format!("worker {worker}"), "text frame");
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => conn.touch(),
                    Some(Ok(Message::Close(_))) | None => break DisconnectReason::Closed,
                    Some(Err(e)) => {
                        tracing::warn!(worker, conn = serial, "connection failed: {e}");
                        break DisconnectReason::Closed;
                    }
                },
                _ = ticker.tick() => {
                    if conn.silence() > self.config.heartbeat_timeout {
                        tracing::warn!(
                            worker, conn = serial,
                            "no frame for {:?}: declaring the worker dead",
                            self.config.heartbeat_timeout
                        );
                        break DisconnectReason::HeartbeatTimeout;
                    }
                }
                _ = closed.changed() => {
                    break closed.borrow().unwrap_or(DisconnectReason::Kicked);
                }
            }
        }
    }

    /// Fails what was pending on `conn` and frees its slot, unless a newer
    /// connection holds it already.
    fn forget(&self, conn: &Connection, reason: DisconnectReason) {
        let lost = conn.pending.fail_all(match reason {
            DisconnectReason::HeartbeatTimeout => "missed its heartbeats",
            DisconnectReason::Replaced => "reconnected on a new connection",
            DisconnectReason::Closed => "connection closed",
            DisconnectReason::Kicked => "disconnected by the master",
        });
        self.lost_in_flight
            .fetch_add(lost as u64, Ordering::Relaxed);
        if let Some(mut slot) = self.slots.get_mut(&conn.worker)
            && slot.conn.as_ref().is_some_and(|c| c.serial == conn.serial)
        {
            slot.conn = None;
        }
    }

    fn on_frame(&self, conn: &Connection, bytes: &[u8]) {
        // Most frames are answers: their values are copied out whole.
        if let Some((req_id, value)) = answers::decode_answer(bytes) {
            if !conn.pending.complete(req_id, Ok(value)) {
                tracing::debug!(worker = conn.worker, req_id, "late or unknown response");
            }
            return;
        }
        match codec::decode::<ClientMessage>(bytes) {
            Ok(ClientMessage::DispatchResponse { req_id, result }) => {
                if !conn.pending.complete(req_id, result) {
                    tracing::debug!(worker = conn.worker, req_id, "late or unknown response");
                }
            }
            Ok(ClientMessage::Heartbeat {
                in_flight,
                vms,
                rss_bytes,
                bad_frames,
                filters,
                filter_metrics,
                egress,
                hop_limited,
            }) => {
                *conn.load.lock().unwrap() = LoadFigures {
                    in_flight,
                    vms,
                    rss_bytes,
                    bad_frames,
                    filters,
                    filter_metrics,
                    egress,
                    hop_limited,
                };
            }
            Err(e) => self
                .bad_frames
                .note(&format!("worker {}", conn.worker), &e.to_string()),
        }
    }
}

pub(super) async fn upgrade(
    State(hub): State<Arc<Hub>>,
    extensions: axum::http::Extensions,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let creds = Credentials::read(&headers, Some(&query));
    let id = match hub.authenticate_session(&creds) {
        Ok(id) => id,
        Err(refusal) => {
            tracing::warn!(worker = ?creds.id, %refusal, "refused a worker connection");
            return (refusal.status(), refusal.to_string()).into_response();
        }
    };
    let Ok(ws) = ws else {
        return (StatusCode::BAD_REQUEST, "expected a WebSocket upgrade").into_response();
    };
    // Present when the hub is served with connect info (the master does).
    let peer = extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0);
    ws.read_buffer_size(crate::mesophyll::codec::READ_BUFFER_BYTES)
        .max_message_size(MAX_FRAME_BYTES + 1024)
        .max_frame_size(MAX_FRAME_BYTES + 1024)
        .on_upgrade(move |socket| hub.serve(id, socket, peer))
}
