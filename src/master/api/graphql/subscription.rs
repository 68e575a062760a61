//! `subscription { console }`: the live console over a GraphQL WebSocket,
//! the same items as `GET /api/v1/console`'s server-sent events, each a
//! `ConsoleEvent` whose `kind` is the SSE event's name (`hello`,
//! `dispatch`, `worker`, `lagged`) and whose field of that name holds its
//! data.
//!
//! Bounded like the SSE stream: each subscription reads the same bounded
//! broadcast channels (one that falls behind gets `lagged` with what it
//! missed), and one connection holds at most [`MAX_SUBSCRIPTIONS`] at
//! once.

use super::super::ApiState;
use super::super::live::console_items;
use crate::master::access::Caller;
use async_graphql::ErrorExtensions;
use async_graphql::dynamic::{SubscriptionField, SubscriptionFieldFuture, TypeRef};
use futures::StreamExt;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The most subscriptions one WebSocket holds at once; one more is
/// refused with `too_many_subscriptions`.
pub const MAX_SUBSCRIPTIONS: usize = 4;

/// The subscriptions a connection may still start: one permit each,
/// given back when the subscription ends.
#[derive(Clone)]
pub struct Held(Arc<Semaphore>);

impl Default for Held {
    fn default() -> Self {
        Held(Arc::new(Semaphore::new(MAX_SUBSCRIPTIONS)))
    }
}

impl Held {
    fn take(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.0).try_acquire_owned().ok()
    }
}

/// The schemas of `ConsoleEvent` and what it holds, beside the
/// contract's (which has `ConsoleEntry`).
pub fn schemas() -> Map<String, Value> {
    let nullable = |r: &str| json!({"oneOf": [{"type": "null"}, {"$ref": format!("#/components/schemas/{r}")}]});
    let count = json!({"type": ["integer", "null"], "format": "int64"});
    let event = json!({
        "type": "object",
        "description": "One item of the live console: `kind` names it, the field of that name holds it.",
        "required": ["kind"],
        "properties": {
            "kind": {"type": "string", "description": "hello, dispatch, worker or lagged"},
            "hello": nullable("ConsoleHello"),
            "dispatch": nullable("ConsoleEntry"),
            "worker": nullable("WorkerChange"),
            "lagged": nullable("ConsoleLagged"),
        },
    });
    let change = json!({
        "type": "object",
        "description": "A worker connected or disconnected.",
        "required": ["worker", "state"],
        "properties": {
            "worker": {"type": "integer", "format": "int64"},
            "state": {"type": "string", "description": "connected or disconnected"},
            "reason": {"type": ["string", "null"], "description": "Why it went: heartbeat_timeout, replaced, closed or kicked."},
        },
    });
    let hello = json!({
        "type": "object",
        "description": "First on every console: how many worker slots there are.",
        "properties": {"workers": count},
    });
    let lagged = json!({
        "type": "object",
        "description": "This reader fell behind and missed this many items.",
        "properties": {"skipped": count},
    });
    let mut all = Map::new();
    all.insert("ConsoleHello".into(), hello);
    all.insert("ConsoleLagged".into(), lagged);
    all.insert("ConsoleEvent".into(), event);
    all.insert("WorkerChange".into(), change);
    all
}

/// The `console` subscription field.
pub fn console() -> SubscriptionField {
    SubscriptionField::new("console", TypeRef::named_nn("ConsoleEvent"), |ctx| {
        SubscriptionFieldFuture::new(async move {
            let state = Arc::clone(ctx.data::<Arc<ApiState>>()?);
            let caller = ctx.data::<Caller>()?.clone();
            let holding = ctx.data::<Held>()?.take().ok_or_else(|| {
                async_graphql::Error::new(format!(
                    "a connection holds at most {MAX_SUBSCRIPTIONS} subscriptions"
                ))
                .extend_with(|_, e| e.set("code", "too_many_subscriptions"))
            })?;
            Ok(console_items(state, caller).map(move |item| {
                let _held = &holding;
                let (kind, data) = item.named();
                let mut event = json!({ "kind": kind });
                event[kind] = data;
                Ok(async_graphql::dynamic::FieldValue::owned_any(event))
            }))
        })
    })
}
