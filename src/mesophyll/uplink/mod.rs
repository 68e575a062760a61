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

use crate::mesophyll::addresses::{Addresses, LEADER_HEADER};
use crate::mesophyll::answers;
use crate::mesophyll::auth::{WORKER_ID_HEADER, WORKER_TOKEN_HEADER};
use crate::mesophyll::bad_frames::BadFrames;
use crate::mesophyll::budget::ByteBudget;
use crate::mesophyll::codec::{self, MAX_FRAME_BYTES};
use crate::mesophyll::message::{
    ClientMessage, DEFAULT_MAX_EVENT_HOPS, EgressPolicy, LoadFigures, PROTOCOL_VERSION,
    RemoteError, ServerMessage,
};
use crate::mesophyll::packed::Packed;
use crate::tls::TlsClient;
use crate::wire::backoff::Backoff;
use crate::wire::writer::{BatchEnd, Batched, write_batch};
use futures::{SinkExt, StreamExt};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

/// A connection that stayed up this long resets the reconnect backoff.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(5);

/// The pause before dialling the leader a standby named (never none: two
/// standbys naming each other must not spin).
const FOLLOW_DELAY: Duration = Duration::from_millis(20);

/// Answers queued towards the master before the handler waits for room.
const OUTBOX_DEPTH: usize = 4096;

/// Bytes of answers queued towards the master before an answer is replaced
/// by an `overloaded` error.
const OUTBOX_BYTES: usize = 64 * 1024 * 1024;

/// Where and who the worker is.
#[derive(Clone)]
pub struct UplinkConfig {
    /// The hubs' addresses, `host:port`: one, or several masters of which
    /// one leads.
    pub masters: Addresses,
    /// This worker's id.
    pub worker_id: u32,
    /// The token the master issued for this worker. Never logged.
    pub token: String,
    /// How long connecting, upgrading and waiting for `Hello` may take
    /// before the attempt is given up and retried.
    pub connect_timeout: Duration,
    /// `wss://` with these settings; `None` is `ws://`.
    pub tls: Option<TlsClient>,
}

/// What [`UplinkConfig::connect_timeout`] is unless told otherwise.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl std::fmt::Debug for UplinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UplinkConfig")
            .field("masters", &self.masters.all())
            .field("worker_id", &self.worker_id)
            .field("token", &"<redacted>")
            .field("tls", &self.tls.is_some())
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

    /// Called after every (re)connection, once `Hello` is in, with what it
    /// said: the place to take the master's settings and to resynchronise
    /// what may have changed while disconnected. Must not block (spawn).
    fn connected(&self, _welcome: &Welcome) {}
}

/// The way back to the master for one connection's answers: bounded in
/// answers (`OUTBOX_DEPTH`) and in bytes (`OUTBOX_BYTES`). An answer
/// that would go past the byte budget is replaced by a short `overloaded`
/// error, so the master always hears back and memory never grows.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Outgoing>,
    queued: Arc<ByteBudget>,
}

/// What the connection's writer takes, in order.
enum Outgoing {
    /// An encoded answer.
    Frame(Vec<u8>),
    /// Close the socket cleanly, after everything queued before, and stop.
    Close,
}

impl Outbox {
    fn new(tx: mpsc::Sender<Outgoing>, budget: usize) -> Self {
        Outbox {
            tx,
            queued: Arc::new(ByteBudget::new(budget)),
        }
    }

    /// The frame of the answer to `req_id`, within the byte budget.
    fn frame(&self, req_id: u64, result: Result<Packed, RemoteError>) -> Vec<u8> {
        let frame = answer_frame(req_id, result);
        if self.queued.try_take(frame.len()) {
            return frame;
        }
        let refusal = answer_frame(
            req_id,
            Err(RemoteError::new(
                crate::mesophyll::message::ErrorKind::Overloaded,
                format!(
                    "the worker's answers to the master hold {} bytes already",
                    self.queued.used()
                ),
            )),
        );
        // A refusal is small and always goes: the master must hear back.
        self.queued.take(refusal.len());
        refusal
    }

    /// Sends the answer to `req_id`. When the connection is gone the answer
    /// is dropped: the master has already failed the request.
    pub async fn reply(&self, req_id: u64, result: Result<Packed, RemoteError>) {
        let frame = self.frame(req_id, result);
        let len = frame.len();
        if self.tx.send(Outgoing::Frame(frame)).await.is_err() {
            self.queued.give_back(len);
        }
    }

    /// Like [`Outbox::reply`] but never waits: used to refuse work when the
    /// worker is saturated.
    pub fn try_reply(&self, req_id: u64, result: Result<Packed, RemoteError>) {
        let frame = self.frame(req_id, result);
        let len = frame.len();
        if self.tx.try_send(Outgoing::Frame(frame)).is_err() {
            self.queued.give_back(len);
        }
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
    // The master whose connection failed last: a standby that still names
    // it as the leader (its lease has not run out yet) is not followed
    // back to it, but asked again until it leads itself.
    let mut failed: Option<String> = None;
    // Sessions that failed in a row.
    let mut misses = 0usize;
    loop {
        let started = Instant::now();
        let master = config.masters.current();
        let mut delay = None;
        let mut reached = false;
        let ended = connection(&config, &master, &handler, &bad_frames, &mut reached).await;
        if reached {
            misses = 0;
        }
        match ended {
            Ok(()) => tracing::warn!(%master, "connection to the master ended"),
            Err(ConnectionEnd::Fatal(e)) => return Err(e),
            Err(ConnectionEnd::Closed) => return Ok(()),
            Err(ConnectionEnd::Retry(e)) => tracing::warn!(%master, "master unreachable: {e}"),
            Err(ConnectionEnd::NotLeader(leader)) => {
                tracing::info!(%master, leader = leader.as_deref().unwrap_or("unknown"), "that master stands by");
                // A takeover takes a lease's time, not a back-off's.
                let poll = Backoff::standby_poll();
                match leader {
                    Some(l) if failed.as_ref() == Some(&l) => {
                        tokio::time::sleep(poll).await;
                        continue;
                    }
                    Some(l) if config.masters.follow(&l) => {
                        tokio::time::sleep(FOLLOW_DELAY).await;
                        continue;
                    }
                    _ => delay = Some(poll),
                }
            }
        }
        if delay.is_none() {
            failed = Some(master.clone());
            misses += 1;
        }
        // Another master may lead now: try the next one.
        config.masters.next_after(&master);
        if started.elapsed() >= HEALTHY_AFTER {
            backoff.reset();
        }
        // The back-off is for a master that stays away: the next of
        // several is tried at once, the back-off once all were.
        let next_at_once =
            config.masters.several() && !misses.is_multiple_of(config.masters.all().len());
        let delay = delay.unwrap_or_else(|| {
            if next_at_once {
                FOLLOW_DELAY
            } else {
                backoff.next_delay()
            }
        });
        tracing::debug!(?delay, "reconnecting");
        tokio::time::sleep(delay).await;
    }
}

/// How one connection to a master ended.
enum ConnectionEnd {
    /// The worker must stop (refused for good).
    Fatal(UplinkError),
    /// The handler closed the connection on purpose.
    Closed,
    /// It broke; the worker connects again.
    Retry(String),
    /// A standby master, naming the leader's hub when it knows it.
    NotLeader(Option<String>),
}

/// The next heartbeat frame, with the handler's load figures. Too many or
/// too long filter metrics for a frame: the beat still goes, without them,
/// rather than the worker dying of it.
fn heartbeat_frame(
    handler: &dyn Handler,
    bad_frames: &BadFrames,
) -> Result<Vec<u8>, ConnectionEnd> {
    let load = handler.load();
    let beat = |filter_metrics| ClientMessage::Heartbeat {
        in_flight: load.in_flight,
        vms: load.vms,
        rss_bytes: load.rss_bytes,
        bad_frames: bad_frames.count(),
        filters: load.filters.clone(),
        filter_metrics,
        egress: load.egress.clone(),
        hop_limited: load.hop_limited,
    };
    codec::encode(&beat(load.filter_metrics.clone())).or_else(|e| {
        tracing::warn!("the heartbeat is sent without its filter metrics: {e}");
        codec::encode(&beat(Vec::new())).map_err(|e| ConnectionEnd::Retry(e.to_string()))
    })
}

/// The upgrade request to `master`'s hub, with this worker's id and
/// token.
fn upgrade_request(
    config: &UplinkConfig,
    master: &str,
) -> Result<tungstenite::handshake::client::Request, ConnectionEnd> {
    let scheme = if config.tls.is_some() { "wss" } else { "ws" };
    let mut request = format!("{scheme}://{master}/ws")
        .into_client_request()
        .map_err(|e| ConnectionEnd::Retry(e.to_string()))?;
    let headers = request.headers_mut();
    headers.insert(WORKER_ID_HEADER, HeaderValue::from(config.worker_id));
    headers.insert(
        WORKER_TOKEN_HEADER,
        HeaderValue::from_str(&config.token)
            .map_err(|_| ConnectionEnd::Fatal(UplinkError::Refused(401)))?,
    );
    Ok(request)
}

/// What a failed upgrade means: refused for good (401, 404), a standby
/// naming the leader (503), or worth another try.
fn upgrade_refusal(e: tungstenite::Error) -> ConnectionEnd {
    match e {
        tungstenite::Error::Http(resp) if resp.status() == 401 || resp.status() == 404 => {
            ConnectionEnd::Fatal(UplinkError::Refused(resp.status().as_u16()))
        }
        tungstenite::Error::Http(resp) if resp.status() == 503 => ConnectionEnd::NotLeader(
            resp.headers()
                .get(LEADER_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        ),
        other => ConnectionEnd::Retry(other.to_string()),
    }
}

/// One connection to `master`, served until it ends; `reached` is set
/// once the master said `Hello`.
async fn connection(
    config: &UplinkConfig,
    master: &str,
    handler: &Arc<dyn Handler>,
    bad_frames: &BadFrames,
    reached: &mut bool,
) -> Result<(), ConnectionEnd> {
    let request = upgrade_request(config, master)?;
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(crate::mesophyll::codec::READ_BUFFER_BYTES)
        .max_message_size(Some(MAX_FRAME_BYTES + 1024))
        .max_frame_size(Some(MAX_FRAME_BYTES + 1024));
    let opening = async {
        let tcp = crate::tls::connect(master, config.tls.as_ref())
            .await
            .map_err(|e| ConnectionEnd::Retry(e.to_string()))?;
        let (socket, _) =
            tokio_tungstenite::client_async_with_config(request, tcp, Some(ws_config))
                .await
                .map_err(upgrade_refusal)?;
        let (sink, mut stream) = socket.split();
        let welcome = hello(&mut stream).await?;
        Ok::<_, ConnectionEnd>((sink, stream, welcome))
    };
    // A master that accepts TCP and then says nothing (wedged, or a
    // half-open socket) must not hold the worker forever.
    let (mut sink, mut stream, welcome) = tokio::time::timeout(config.connect_timeout, opening)
        .await
        .map_err(|_| {
            ConnectionEnd::Retry(format!(
                "no Hello within {:?} of connecting",
                config.connect_timeout
            ))
        })??;
    tracing::info!(%master, "connected to the master");
    *reached = true;
    handler.connected(&welcome);
    let (interval, timeout) = (welcome.heartbeat_interval, welcome.heartbeat_timeout);

    let (tx, mut rx) = mpsc::channel::<Outgoing>(OUTBOX_DEPTH);
    let outbox = Outbox::new(tx, OUTBOX_BYTES);
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
                    Some(Err(e)) => return Err(ConnectionEnd::Retry(e.to_string())),
                }
            }
            Some(out) = rx.recv() => {
                let to_message = |out| match out {
                    Outgoing::Frame(frame) => {
                        outbox.queued.give_back(frame.len());
                        Batched::Frame(Message::Binary(frame.into()))
                    }
                    Outgoing::Close => Batched::Close,
                };
                match write_batch(&mut sink, out, || rx.try_recv().ok(), to_message).await {
                    Ok(BatchEnd::Flushed) => {}
                    Ok(BatchEnd::Close) => {
                        let _ = sink.send(Message::Close(None)).await;
                        let _ = sink.close().await;
                        return Err(ConnectionEnd::Closed);
                    }
                    Err(e) => return Err(ConnectionEnd::Retry(e.to_string())),
                }
            }
            _ = heartbeat.tick() => {
                // The master sends nothing of its own when idle, but answers
                // every ping with a pong: silence past the timeout means it
                // is wedged or the link is half-open (writes still succeed
                // into the kernel's buffer), so leave for a new connection.
                if last_from_master.elapsed() > timeout {
                    return Err(ConnectionEnd::Retry(format!(
                        "nothing from the master for {:?}",
                        last_from_master.elapsed()
                    )));
                }
                let frame = heartbeat_frame(handler.as_ref(), bad_frames)?;
                sink.feed(Message::Binary(frame.into()))
                    .await
                    .and(sink.send(Message::Ping(Vec::new().into())).await)
                    .map_err(|e| ConnectionEnd::Retry(e.to_string()))?;
            }
        }
    }
}

/// What a master's `Hello` says, as its workers use it.
#[derive(Debug, Clone)]
pub struct Welcome {
    /// How often to send a heartbeat.
    pub heartbeat_interval: Duration,
    /// How long the master waits for a frame before it declares us dead.
    pub heartbeat_timeout: Duration,
    /// What `http.fetch` may do ([`EgressPolicy::off`] from a master that
    /// does not say).
    pub egress: EgressPolicy,
    /// How many handlers may emit an event in a row.
    pub max_event_hops: u32,
}

/// Waits for the master's `Hello`; everything else waits for it.
async fn hello<S>(stream: &mut S) -> Result<Welcome, ConnectionEnd>
where
    S: futures::Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    loop {
        match stream.next().await {
            Some(Ok(Message::Binary(bytes))) => match codec::decode::<ServerMessage>(&bytes) {
                Ok(ServerMessage::Hello {
                    protocol,
                    heartbeat_interval_ms,
                    heartbeat_timeout_ms,
                    egress,
                    max_event_hops,
                    ..
                }) => {
                    if protocol != PROTOCOL_VERSION {
                        return Err(ConnectionEnd::Fatal(UplinkError::ProtocolMismatch {
                            theirs: protocol,
                            ours: PROTOCOL_VERSION,
                        }));
                    }
                    return Ok(Welcome {
                        heartbeat_interval: Duration::from_millis(heartbeat_interval_ms.max(10)),
                        heartbeat_timeout: Duration::from_millis(heartbeat_timeout_ms.max(100)),
                        egress: egress.unwrap_or_else(EgressPolicy::off),
                        max_event_hops: max_event_hops.unwrap_or(DEFAULT_MAX_EVENT_HOPS),
                    });
                }
                _ => return Err(ConnectionEnd::Retry("first frame was not Hello".into())),
            },
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(ConnectionEnd::Retry(e.to_string())),
            None => return Err(ConnectionEnd::Retry("closed before Hello".into())),
        }
    }
}

/// Encodes an answer; one too large to send becomes a `too_large` error
/// for the master instead of being left to time out.
fn answer_frame(req_id: u64, result: Result<Packed, RemoteError>) -> Vec<u8> {
    let encoded = match &result {
        Ok(value) => answers::encode_answer(req_id, value),
        Err(_) => codec::encode(&ClientMessage::DispatchResponse { req_id, result }),
    };
    encoded.unwrap_or_else(|e| {
        let refusal = ClientMessage::DispatchResponse {
            req_id,
            result: Err(RemoteError::new(
                crate::mesophyll::message::ErrorKind::TooLarge,
                format!("the result cannot be sent: {e}"),
            )),
        };
        codec::encode(&refusal).expect("a short error encodes")
    })
}

#[cfg(test)]
mod tests;
