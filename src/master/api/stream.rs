//! `GET /api/v1/stream`: the binary client API, a WebSocket of
//! MessagePack frames ([`crate::rest::StreamRequest`] in,
//! [`crate::rest::StreamAnswer`] out) on which an application keeps many
//! dispatches in flight over one connection.
//!
//! Each request runs as its own task through the same dispatch as REST
//! (`tenants::dispatch_to`: metrics, console, logs), and its answer is
//! queued for the connection's writer as soon as it is ready, so a slow
//! tenant never holds up a fast one. The writer flushes what is queued in
//! batches, as the hub does. At most [`MAX_IN_FLIGHT`] requests of one
//! connection run at once; past that a request is answered `overloaded`
//! at once instead of queueing without bound. A frame that is not a request
//! is answered with `bad_frame` (echoing its `id` when it has one) and the
//! connection carries on. When the client goes, requests already running
//! finish (they may have run; nothing is replayed) and their answers are
//! dropped.
//!
//! The token is checked once, at the upgrade; a token revoked later keeps
//! the streams it opened until they close.

use super::tenants::{Delivered, dispatch_to};
use super::{ApiError, ApiState};
use crate::mesophyll::message::Packed;
use crate::mesophyll::writer::{Batched, drain};
use crate::rest::{
    DispatchRequest, ErrorDetail, MAX_BODY_BYTES, StreamAnswer, StreamError, StreamRequest,
};
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::Response;
use futures::StreamExt;
use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc};

/// Requests of one connection running at once.
pub const MAX_IN_FLIGHT: usize = 4096;

/// Room for one request's frame: the REST body limit plus its envelope.
const MAX_FRAME_BYTES: usize = MAX_BODY_BYTES + 4096;

pub(super) async fn upgrade(State(state): State<Arc<ApiState>>, ws: WebSocketUpgrade) -> Response {
    ws.max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| serve(state, socket))
}

fn encode(answer: &StreamAnswer<Packed>) -> Vec<u8> {
    use serde::Serialize;
    let mut bytes = Vec::with_capacity(crate::mesophyll::codec::FRAME_START);
    answer
        .serialize(&mut rmp_serde::Serializer::new(&mut bytes).with_struct_map())
        .expect("answers encode");
    bytes
}

fn refused(id: u64, status: StatusCode, code: &str, message: impl Into<String>) -> Vec<u8> {
    encode(&StreamAnswer {
        id,
        done: None,
        accepted: None,
        error: Some(StreamError {
            status: status.as_u16(),
            detail: ErrorDetail {
                code: code.into(),
                message: message.into(),
            },
        }),
    })
}

fn answer(id: u64, outcome: Result<Delivered, ApiError>) -> Vec<u8> {
    match outcome {
        Ok(Delivered::Done(d)) => encode(&StreamAnswer {
            id,
            done: Some(d),
            accepted: None,
            error: None,
        }),
        Ok(Delivered::Accepted(a)) => encode(&StreamAnswer {
            id,
            done: None,
            accepted: Some(a),
            error: None,
        }),
        Err(e) => refused(id, e.status(), e.code(), e.message()),
    }
}

/// The `id` of a frame that is not a whole request, if it has one.
fn id_of(frame: &[u8]) -> u64 {
    #[derive(serde::Deserialize)]
    struct JustId {
        id: u64,
    }
    rmp_serde::from_slice::<JustId>(frame).map_or(0, |j| j.id)
}

async fn serve(state: Arc<ApiState>, socket: WebSocket) {
    let (mut sink, mut frames) = socket.split();
    let (tx, mut queue) = mpsc::channel::<Vec<u8>>(1024);
    let writer = tokio::spawn(async move {
        let frame = |f: Vec<u8>| Batched::Frame(Message::Binary(f.into()));
        let _ = drain(&mut sink, &mut queue, frame).await;
    });
    let running = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(Ok(message)) = frames.next().await {
        let bytes = match message {
            Message::Binary(b) => b,
            Message::Text(_) => {
                let bad = refused(
                    0,
                    StatusCode::BAD_REQUEST,
                    "bad_frame",
                    "send binary MessagePack frames",
                );
                let _ = tx.send(bad).await;
                continue;
            }
            Message::Close(_) => break,
            // Pings are answered by the WebSocket layer.
            _ => continue,
        };
        let request: StreamRequest<Packed> = match rmp_serde::from_slice(&bytes) {
            Ok(r) => r,
            Err(e) => {
                let bad = refused(
                    id_of(&bytes),
                    StatusCode::BAD_REQUEST,
                    "bad_frame",
                    format!("not a stream request: {e}"),
                );
                let _ = tx.send(bad).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&running).try_acquire_owned() else {
            let busy = refused(
                request.id,
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                format!("{MAX_IN_FLIGHT} requests of this connection are running"),
            );
            let _ = tx.send(busy).await;
            continue;
        };
        let (state, tx) = (Arc::clone(&state), tx.clone());
        tokio::spawn(async move {
            let StreamRequest {
                id,
                tenant,
                name,
                data,
                wait,
                timeout_ms,
            } = request;
            let req = DispatchRequest {
                name,
                data,
                wait,
                timeout_ms,
            };
            let outcome = dispatch_to(&state, tenant.kind, tenant.id, req).await;
            drop(permit);
            let _ = tx.send(answer(id, outcome)).await;
        });
    }
    // The writer ends once the last running request has sent its answer
    // (or found the connection gone).
    drop(tx);
    let _ = writer.await;
}
