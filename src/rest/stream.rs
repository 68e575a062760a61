//! The frames of the binary client API (`GET /api/v1/stream`, a WebSocket
//! on the API port): one binary frame of MessagePack per request and per
//! answer, correlated by the `id` the client chose, so that one connection
//! carries any number of dispatches at once and their answers come back as
//! each is ready, in any order.
//!
//! Why a WebSocket rather than HTTP/2 with MessagePack bodies: a frame per
//! message and nothing else on the wire (HTTP/2 adds a HEADERS frame and a
//! stream's life to every request), the same stack and the same batching
//! writer as Mesophyll, and a browser can speak it too. The upgrade takes
//! the same bearer token as REST; it needs a role that may dispatch
//! (`app` or `admin`).
//!
//! Encoded with field names (MessagePack maps), so any language's
//! MessagePack library reads them without this crate.

use super::{Accepted, Dispatched, ErrorDetail};
use crate::mesophyll::message::Tenant;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Client -> master: dispatch one event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(bound(deserialize = "V: Deserialize<'de> + Default"))]
pub struct StreamRequest<V = Value> {
    /// Chosen by the client; its answer carries it back. Unique among the
    /// client's requests in flight.
    pub id: u64,
    /// Who gets the event.
    pub tenant: Tenant,
    /// The event's name.
    pub name: String,
    /// Its payload.
    #[serde(default)]
    pub data: V,
    /// Wait for the plugins' results (`done`) or only until it is queued
    /// (`accepted`).
    #[serde(default = "super::yes")]
    pub wait: bool,
    /// As in REST: how long the plugins may take (default 5 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// Master -> client: the answer to one request. Exactly one of `done`,
/// `accepted` and `error` is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct StreamAnswer<V = Value> {
    /// The request's `id`; 0 for a frame that did not even carry one.
    pub id: u64,
    /// What REST answers with 200.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done: Option<Dispatched<V>>,
    /// What REST answers with 202.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted: Option<Accepted>,
    /// What REST answers with an error status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<StreamError>,
}

/// A failed request: REST's error and the status REST would have given,
/// plus `bad_frame` (400) for a frame that is not a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct StreamError {
    /// The HTTP status the same request gets from REST.
    pub status: u16,
    #[serde(flatten)]
    /// Its code and message.
    pub detail: ErrorDetail,
}
