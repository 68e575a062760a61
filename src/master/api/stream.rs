//! `GET /api/v1/stream`: the binary client API, a WebSocket of
//! MessagePack frames ([`crate::rest::StreamRequest`] in,
//! [`crate::rest::StreamAnswer`] out) on which an application keeps many
//! dispatches in flight over one connection.
//!
//! Each request runs through the same dispatch as REST
//! (`tenants::dispatch_to`: metrics, console, logs) as one of the
//! connection task's futures, and its answer is queued for the
//! connection's writer as soon as it is ready, so a slow tenant never
//! holds up a fast one. The writer flushes what is queued in
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

use super::stream_frames as frames;
use super::tenants::{Delivered, dispatch_to};
use super::{ApiError, ApiState};
use crate::master::access::Caller;
use crate::mesophyll::message::Packed;
use crate::rest::{
    DispatchRequest, ErrorDetail, MAX_BODY_BYTES, StreamAnswer, StreamError, StreamRequest,
};
use crate::wire::writer::{Batched, drain};
use axum::Extension;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::Response;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Requests of one connection running at once.
pub(super) const MAX_IN_FLIGHT: usize = 4096;

/// Room for one request's frame: the REST body limit plus its envelope.
const MAX_FRAME_BYTES: usize = MAX_BODY_BYTES + 4096;

pub(super) async fn upgrade(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    ws: WebSocketUpgrade,
) -> Response {
    ws.read_buffer_size(crate::mesophyll::codec::READ_BUFFER_BYTES)
        .max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| serve(state, caller, socket))
}

fn refused(id: u64, status: StatusCode, code: &str, message: impl Into<String>) -> Vec<u8> {
    frames::encode(&StreamAnswer {
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
        Ok(Delivered::Done(d)) => frames::encode_done(id, &d),
        Ok(Delivered::Accepted(a)) => frames::encode(&StreamAnswer {
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

/// What a frame asks of the connection.
enum Frame {
    /// Dispatch this.
    Request(StreamRequest<Packed>),
    /// Answer this at once (a refusal).
    Refused(Vec<u8>),
    /// Nothing (a ping or pong).
    Skip,
    /// The client closed.
    Close,
}

fn read(message: Message) -> Frame {
    let bytes = match message {
        Message::Binary(b) => b,
        Message::Text(_) => {
            return Frame::Refused(refused(
                0,
                StatusCode::BAD_REQUEST,
                "bad_frame",
                "send binary MessagePack frames",
            ));
        }
        Message::Close(_) => return Frame::Close,
        // Pings are answered by the WebSocket layer.
        _ => return Frame::Skip,
    };
    if let Some(request) = frames::decode_request(&bytes) {
        return Frame::Request(request);
    }
    match rmp_serde::from_slice(&bytes) {
        Ok(r) => Frame::Request(r),
        Err(e) => Frame::Refused(refused(
            id_of(&bytes),
            StatusCode::BAD_REQUEST,
            "bad_frame",
            format!("not a stream request: {e}"),
        )),
    }
}

async fn run(state: &ApiState, request: StreamRequest<Packed>) -> Vec<u8> {
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
    answer(id, dispatch_to(state, tenant.kind, tenant.id, req).await)
}

/// Reads requests and runs them, all in this task: a request's dispatch is
/// a future polled beside the others rather than a task of its own, which
/// spared the allocation and the wake-up across tasks that were a tenth of
/// the master's time under the binary benchmark.
async fn serve(state: Arc<ApiState>, caller: Caller, socket: WebSocket) {
    let mut revocations = state.access.revocations();
    let (mut sink, mut frames) = socket.split();
    let (tx, mut queue) = mpsc::channel::<Vec<u8>>(1024);
    let writer = tokio::spawn(async move {
        let frame = |f: Vec<u8>| Batched::Frame(Message::Binary(f.into()));
        let _ = drain(&mut sink, &mut queue, frame).await;
    });
    let mut running = FuturesUnordered::new();
    let mut reading = true;
    while reading || !running.is_empty() {
        tokio::select! {
            message = frames.next(), if reading => {
                let frame = match message {
                    Some(Ok(m)) => read(m),
                    _ => Frame::Close,
                };
                match frame {
                    Frame::Request(request) if running.len() >= MAX_IN_FLIGHT => {
                        let busy = refused(
                            request.id,
                            StatusCode::SERVICE_UNAVAILABLE,
                            "overloaded",
                            format!("{MAX_IN_FLIGHT} requests of this connection are running"),
                        );
                        let _ = tx.send(busy).await;
                    }
                    Frame::Request(request) => running.push(run(&state, request)),
                    Frame::Refused(bad) => {
                        let _ = tx.send(bad).await;
                    }
                    Frame::Skip => {}
                    // Requests already running finish (they may have run;
                    // nothing is replayed); their answers go nowhere.
                    Frame::Close => reading = false,
                }
            }
            Some(answer) = running.next() => {
                let _ = tx.send(answer).await;
            }
            Ok(()) = revocations.changed(), if reading => {
                if !state.access.in_force(&caller) {
                    tracing::info!(token = %caller.name, "a binary stream closed: its token was revoked");
                    let gone = refused(0, StatusCode::UNAUTHORIZED, "unauthorized", "the token was revoked");
                    let _ = tx.send(gone).await;
                    // What runs finishes; nothing new is read.
                    reading = false;
                }
            }
        }
    }
    // The writer ends once the last answer is written (or the connection
    // found gone).
    drop(tx);
    let _ = writer.await;
}
