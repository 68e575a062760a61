//! The binary client API from Rust: [`StreamClient`] keeps one WebSocket
//! to `/api/v1/stream` and any number of dispatches in flight on it, each
//! answered as soon as its tenant's plugins are done, whatever the order.
//!
//! ```no_run
//! # async fn run() -> Result<(), meshplay::client::ApiClientError> {
//! use meshplay::client::{ApiClient, StreamClient};
//! use meshplay::rest::DispatchRequest;
//!
//! let api = ApiClient::from_data_dir(std::path::Path::new("/root/.meshplay"))?;
//! let stream = StreamClient::connect(&api).await?;
//! let echo = |i: u64| DispatchRequest {
//!     name: "echo".into(),
//!     data: i.into(),
//!     wait: true,
//!     timeout_ms: None,
//! };
//! // A thousand events in flight on one connection.
//! let stream = &stream;
//! let answers = futures::future::join_all((0..1000).map(|i| async move {
//!     let id = i.to_string();
//!     stream.dispatch("user", &id, echo(i)).await
//! }))
//! .await;
//! # Ok(()) }
//! ```
//!
//! Errors are [`ApiClientError`]s as with REST: an `Api` error carries the
//! status and code REST would have answered with; a request pending when
//! the connection ends fails with `Connect` (it may have run).

use super::{ApiClient, ApiClientError, DispatchOutcome};
use crate::mesophyll::message::Tenant;
use crate::rest::{DispatchRequest, StreamAnswer, StreamRequest};
use crate::wire::writer::{Batched, drain};
use futures::{SinkExt, StreamExt};
use hyper::StatusCode;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Waiting = Arc<Mutex<Option<HashMap<u64, oneshot::Sender<StreamAnswer>>>>>;

/// One connection to the binary client API. Cheap to share by reference
/// (its methods take `&self`); dropping it closes the connection.
pub struct StreamClient {
    addr: String,
    outbox: mpsc::Sender<Vec<u8>>,
    /// `None` once the connection has ended: nothing more will be answered.
    waiting: Waiting,
    next_id: AtomicU64,
}

impl std::fmt::Debug for StreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamClient")
            .field("addr", &self.addr)
            .finish()
    }
}

fn lost(addr: &str, why: &str) -> ApiClientError {
    ApiClientError::Connect {
        addr: addr.to_owned(),
        message: why.into(),
    }
}

impl StreamClient {
    /// Opens the stream of the master `api` talks to, with its token.
    ///
    /// Fails with `Connect` when the master cannot be reached, and with
    /// `Api` (401, 403) when it refuses the token or its role.
    ///
    /// With several masters it opens the leader's: a master that cannot be
    /// reached or stands by (`not_leader`) is passed over for the next,
    /// for up to the client's failover wait. A stream that breaks is not
    /// opened again: what was in flight on it may have run.
    pub async fn connect(api: &ApiClient) -> Result<StreamClient, ApiClientError> {
        let until = tokio::time::Instant::now() + api.failover_wait;
        let mut tried = 0usize;
        loop {
            let master = api.masters.current();
            let error = match Self::connect_at(api, &master).await {
                Ok(stream) => return Ok(stream),
                Err(e) => e,
            };
            let moves = matches!(error, ApiClientError::Connect { .. })
                || error.code() == Some(crate::mesophyll::addresses::NOT_LEADER);
            if !(moves && api.masters.several() && tokio::time::Instant::now() < until) {
                return Err(error);
            }
            api.masters.next_after(&master);
            tried += 1;
            if tried.is_multiple_of(api.masters.all().len()) {
                tokio::time::sleep(super::failover::FAILOVER_POLL).await;
            }
        }
    }

    /// Opens the stream of the master at `master`.
    async fn connect_at(api: &ApiClient, master: &str) -> Result<StreamClient, ApiClientError> {
        let addr = api.url_of(master);
        let scheme = if api.tls.is_some() { "wss" } else { "ws" };
        let mut request = format!("{scheme}://{master}/api/v1/stream")
            .into_client_request()
            .map_err(|e| lost(&addr, &e.to_string()))?;
        let bearer = format!("Bearer {}", api.token)
            .parse()
            .map_err(|_| lost(&addr, "the token is not a valid header value"))?;
        request.headers_mut().insert("authorization", bearer);
        // Nagle off (`connect` sets it): a lone small frame must not wait
        // for the last one's ACK.
        let tcp = crate::tls::connect(master, api.tls.as_ref())
            .await
            .map_err(|e| lost(&addr, &e.to_string()))?;
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .read_buffer_size(crate::mesophyll::codec::READ_BUFFER_BYTES);
        let connected =
            tokio_tungstenite::client_async_with_config(request, tcp, Some(config)).await;
        let (socket, _) = match connected {
            Ok(s) => s,
            Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
                let status = res.status();
                let body = res.body().as_deref().unwrap_or_default();
                return Err(super::error_of(status, body));
            }
            Err(e) => return Err(lost(&addr, &e.to_string())),
        };
        let (mut sink, mut frames) = socket.split();
        let (outbox, mut queue) = mpsc::channel::<Vec<u8>>(1024);
        let waiting: Waiting = Arc::new(Mutex::new(Some(HashMap::new())));
        tokio::spawn(async move {
            let frame = |f: Vec<u8>| Batched::Frame(Message::Binary(f.into()));
            let _ = drain(&mut sink, &mut queue, frame).await;
            let _ = sink.close().await;
        });
        let answers = Arc::clone(&waiting);
        tokio::spawn(async move {
            while let Some(Ok(message)) = frames.next().await {
                let Message::Binary(bytes) = message else {
                    continue;
                };
                let Ok(answer) = rmp_serde::from_slice::<StreamAnswer>(&bytes) else {
                    continue;
                };
                let to = answers
                    .lock()
                    .unwrap()
                    .as_mut()
                    .and_then(|w| w.remove(&answer.id));
                if let Some(to) = to {
                    let _ = to.send(answer);
                }
            }
            // Everyone still waiting learns the connection is gone.
            answers.lock().unwrap().take();
        });
        Ok(StreamClient {
            addr,
            outbox,
            waiting,
            next_id: AtomicU64::new(1),
        })
    }

    /// Dispatches `req` to tenant `kind:id` and waits for its answer; other
    /// calls proceed meanwhile on the same connection.
    ///
    /// Fails with `Api` as the REST route would (the same status and code),
    /// and with `Connect` when the connection ends first.
    pub async fn dispatch(
        &self,
        kind: &str,
        id: &str,
        req: DispatchRequest,
    ) -> Result<DispatchOutcome, ApiClientError> {
        let request_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = rmp_serde::to_vec_named(&StreamRequest {
            id: request_id,
            tenant: Tenant::new(kind, id),
            name: req.name,
            data: req.data,
            wait: req.wait,
            timeout_ms: req.timeout_ms,
        })
        .map_err(|e| lost(&self.addr, &format!("cannot encode the request: {e}")))?;
        let (tx, rx) = oneshot::channel();
        match self.waiting.lock().unwrap().as_mut() {
            Some(w) => w.insert(request_id, tx),
            None => return Err(lost(&self.addr, "the stream has closed")),
        };
        if self.outbox.send(frame).await.is_err() {
            return Err(lost(&self.addr, "the stream has closed"));
        }
        let answer = rx
            .await
            .map_err(|_| lost(&self.addr, "the stream closed with the request pending"))?;
        match answer {
            StreamAnswer { done: Some(d), .. } => Ok(DispatchOutcome::Done(d)),
            StreamAnswer {
                accepted: Some(a), ..
            } => Ok(DispatchOutcome::Accepted(a)),
            StreamAnswer { error: Some(e), .. } => Err(ApiClientError::Api {
                status: StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_GATEWAY),
                code: e.detail.code,
                message: e.detail.message,
            }),
            _ => Err(ApiClientError::Decode {
                status: StatusCode::OK,
                message: "a stream answer with nothing in it".into(),
            }),
        }
    }
}
