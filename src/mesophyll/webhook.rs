//! A webhook on the wire: the outside request that `POST
//! /hooks/{type}/{id}/{event}` turned into an event, as a handler finds it
//! in `event.http`.
//!
//! Only plugins whose manifest lists the event in `webhooks` run for it:
//! the worker checks `http` on every event, so no path but the hooks route
//! makes one ([`crate::rest`] dispatches carry none).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The request as it came: method, headers (lower-case names; a name sent
/// twice has its values joined with `, `), the raw body, the query's
/// parameters (the last of a repeated name).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct HttpCall {
    /// `POST`.
    pub method: String,
    /// By lower-case name.
    pub headers: BTreeMap<String, String>,
    /// The body's bytes (a Luau string: signatures are checked over these).
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// The query string's parameters, decoded.
    pub query: BTreeMap<String, String>,
}
