//! The worker's side of Mesophyll: keep one WebSocket to the master open,
//! hand every request to a [`Handler`], send answers and heartbeats back.
//!
//! The client reconnects on its own, with [`Backoff::reconnect`] (about
//! 100 ms doubling to 10 s, jittered), and resets the backoff once a
//! connection has stayed up for [`HEALTHY_AFTER`]. A refusal at upgrade
//! (401 wrong token, 404 unknown id) is final: retrying cannot fix it, and a
//! supervised worker that exits is respawned with a fresh token.
//!
//! This module knows nothing of what the requests mean: the handler does.

use crate::mesophyll::auth::{WORKER_ID_HEADER, WORKER_TOKEN_HEADER};
use crate::mesophyll::backoff::Backoff;
use crate::mesophyll::bad_frames::BadFrames;
use crate::mesophyll::codec::{self, MAX_FRAME_BYTES};
use crate::mesophyll::message::{
    ClientMessage, LoadFigures, PROTOCOL_VERSION, RemoteError, ServerMessage,
};
use crate::mesophyll::writer::{BatchEnd, Batched, write_batch};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

/// A connection that stayed up this long resets the reconnect backoff.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(5);

/// Answers queued towards the master before the handler waits for room.
const OUTBOX_DEPTH: usize = 4096;

/// Where and who the worker is.
#[derive(Clone)]
pub struct UplinkConfig {
    /// The hub's address, `host:port`.
    pub master: String,
    /// This worker's id.
    pub worker_id: u32,
    /// The token the master issued for this worker. Never logged.
    pub token: String,
}

impl std::fmt::Debug for UplinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UplinkConfig")
            .field("master", &self.master)
            .field("worker_id", &self.worker_id)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// Why the client stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    /// The master refused the upgrade (401 or 404): retrying cannot help.
    #[error("the master refused this worker: HTTP {0}")]
    Refused(u16),
    /// The master speaks another protocol revision.
    #[error("the master speaks protocol {theirs}, this worker {ours}")]
    ProtocolMismatch {
        /// What the master announced.
        theirs: u32,
        /// [`PROTOCOL_VERSION`].
        ours: u32,
    },
}

/// What runs the requests.
pub trait Handler: Send + Sync + 'static {
    /// Takes one request (anything but `Hello`). Called on the connection's
    /// reader task: it must hand the work off (spawn) and return at once.
    fn handle(&self, msg: ServerMessage, outbox: Outbox);

    /// Figures for the next heartbeat.
    fn load(&self) -> LoadFigures;

    /// Called after every (re)connection, once `Hello` is in: the place to
    /// resynchronise what may have changed while disconnected. Must not
    /// block (spawn).
    fn connected(&self) {}
}

/// The way back to the master for one connection's answers.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Outgoing>,
}

/// What the connection's writer takes, in order.
enum Outgoing {
    Message(ClientMessage),
    /// Close the socket cleanly, after everything queued before, and stop.
    Close,
}

impl Outbox {
    /// Sends the answer to `req_id`. When the connection is gone the answer
    /// is dropped: the master has already failed the request.
    pub async fn reply(&self, req_id: u64, result: Result<Value, RemoteError>) {
        let _ = self
            .tx
            .send(Outgoing::Message(ClientMessage::DispatchResponse {
                req_id,
                result,
            }))
            .await;
    }

    /// Like [`Outbox::reply`] but never waits: used to refuse work when the
    /// worker is saturated.
    pub fn try_reply(&self, req_id: u64, result: Result<Value, RemoteError>) {
        let _ = self
            .tx
            .try_send(Outgoing::Message(ClientMessage::DispatchResponse {
                req_id,
                result,
            }));
    }

    /// Sends what is queued, closes the connection with a WebSocket close
    /// frame, and makes [`run`] return `Ok(())` instead of reconnecting: the
    /// end of an orderly shutdown.
    pub async fn close(&self) {
        let _ = self.tx.send(Outgoing::Close).await;
    }
}

/// Connects, serves, reconnects, forever, or until the master refuses this
/// worker (see [`UplinkError`]).
pub async fn run(config: UplinkConfig, handler: Arc<dyn Handler>) -> Result<(), UplinkError> {
    let mut backoff = Backoff::reconnect();
    let bad_frames = BadFrames::default();
    loop {
        let started = Instant::now();
        match session(&config, &handler, &bad_frames).await {
            Ok(()) => tracing::warn!("connection to the master ended"),
            Err(SessionError::Fatal(e)) => return Err(e),
            Err(SessionError::Closed) => return Ok(()),
            Err(SessionError::Retry(e)) => tracing::warn!("master unreachable: {e}"),
        }
        if started.elapsed() >= HEALTHY_AFTER {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        tracing::debug!(?delay, "reconnecting");
        tokio::time::sleep(delay).await;
    }
}

enum SessionError {
    Fatal(UplinkError),
    /// The handler closed the connection on purpose.
    Closed,
    Retry(String),
}

async fn session(
    config: &UplinkConfig,
    handler: &Arc<dyn Handler>,
    bad_frames: &BadFrames,
) -> Result<(), SessionError> {
    let url = format!("ws://{}/ws", config.master);
    let mut request = url
        .into_client_request()
        .map_err(|e| SessionError::Retry(e.to_string()))?;
    let headers = request.headers_mut();
    headers.insert(WORKER_ID_HEADER, HeaderValue::from(config.worker_id));
    headers.insert(
        WORKER_TOKEN_HEADER,
        HeaderValue::from_str(&config.token)
            .map_err(|_| SessionError::Fatal(UplinkError::Refused(401)))?,
    );
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_BYTES + 1024))
        .max_frame_size(Some(MAX_FRAME_BYTES + 1024));
    let (socket, _) = tokio_tungstenite::connect_async_with_config(request, Some(ws_config), true)
        .await
        .map_err(|e| match e {
            tungstenite::Error::Http(resp) if resp.status() == 401 || resp.status() == 404 => {
                SessionError::Fatal(UplinkError::Refused(resp.status().as_u16()))
            }
            other => SessionError::Retry(other.to_string()),
        })?;
    let (mut sink, mut stream) = socket.split();

    // Hello comes first; everything else waits for it.
    let (interval, timeout) = loop {
        match stream.next().await {
            Some(Ok(Message::Binary(bytes))) => match codec::decode::<ServerMessage>(&bytes) {
                Ok(ServerMessage::Hello {
                    protocol,
                    heartbeat_interval_ms,
                    heartbeat_timeout_ms,
                    ..
                }) => {
                    if protocol != PROTOCOL_VERSION {
                        return Err(SessionError::Fatal(UplinkError::ProtocolMismatch {
                            theirs: protocol,
                            ours: PROTOCOL_VERSION,
                        }));
                    }
                    break (
                        Duration::from_millis(heartbeat_interval_ms.max(10)),
                        Duration::from_millis(heartbeat_timeout_ms.max(100)),
                    );
                }
                _ => return Err(SessionError::Retry("first frame was not Hello".into())),
            },
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(SessionError::Retry(e.to_string())),
            None => return Err(SessionError::Retry("closed before Hello".into())),
        }
    };
    tracing::info!(master = %config.master, "connected to the master");
    handler.connected();

    let (tx, mut rx) = mpsc::channel::<Outgoing>(OUTBOX_DEPTH);
    let outbox = Outbox { tx };
    let mut heartbeat = tokio::time::interval(interval);
    let mut last_from_master = Instant::now();

    loop {
        tokio::select! {
            frame = stream.next() => {
                last_from_master = Instant::now();
                match frame {
                    Some(Ok(Message::Binary(bytes))) => match codec::decode::<ServerMessage>(&bytes) {
                        Ok(ServerMessage::Hello { .. }) => {}
                        Ok(msg) => handler.handle(msg, outbox.clone()),
                        Err(e) => bad_frames.note("master", &e.to_string()),
                    },
                    Some(Ok(Message::Text(_))) => bad_frames.note("master", "text frame"),
                    Some(Ok(Message::Close(_))) | None => return Ok(()),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(SessionError::Retry(e.to_string())),
                }
            }
            Some(out) = rx.recv() => {
                let to_message = |out| match out {
                    Outgoing::Message(msg) => match answer_frame(msg) {
                        Some(frame) => Batched::Frame(Message::Binary(frame.into())),
                        None => Batched::Skip,
                    },
                    Outgoing::Close => Batched::Close,
                };
                match write_batch(&mut sink, out, || rx.try_recv().ok(), to_message).await {
                    Ok(BatchEnd::Flushed) => {}
                    Ok(BatchEnd::Close) => {
                        let _ = sink.send(Message::Close(None)).await;
                        let _ = sink.close().await;
                        return Err(SessionError::Closed);
                    }
                    Err(e) => return Err(SessionError::Retry(e.to_string())),
                }
            }
            _ = heartbeat.tick() => {
                let load = handler.load();
                let beat = ClientMessage::Heartbeat {
                    in_flight: load.in_flight,
                    vms: load.vms,
                    rss_bytes: load.rss_bytes,
                    bad_frames: bad_frames.count(),
                };
                let frame = codec::encode(&beat).expect("Heartbeat encodes");
                if let Err(e) = sink.send(Message::Binary(frame.into())).await {
                    return Err(SessionError::Retry(e.to_string()));
                }
                // The master sends nothing when idle, so silence alone is no
                // sign of trouble; a failed send above is. Past the timeout we
                // also probe with a ping so a half-open socket is noticed.
                if last_from_master.elapsed() > timeout
                    && sink.send(Message::Ping(Vec::new().into())).await.is_err()
                {
                    return Err(SessionError::Retry("ping failed".into()));
                }
            }
        }
    }
}

/// Encodes an outgoing message; an answer too large to send becomes a
/// `too_large` error for the master instead of being left to time out.
fn answer_frame(msg: ClientMessage) -> Option<Vec<u8>> {
    match codec::encode(&msg) {
        Ok(frame) => Some(frame),
        Err(e) => {
            let ClientMessage::DispatchResponse { req_id, .. } = msg else {
                return None;
            };
            let refusal = ClientMessage::DispatchResponse {
                req_id,
                result: Err(RemoteError::new(
                    crate::mesophyll::message::ErrorKind::TooLarge,
                    format!("the result cannot be sent: {e}"),
                )),
            };
            Some(codec::encode(&refusal).expect("a short error encodes"))
        }
    }
}
