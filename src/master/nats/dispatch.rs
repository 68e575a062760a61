//! Dispatch over NATS request/reply: the queue subscription on
//! `meshplay.dispatch.>` and what each message becomes.
//!
//! A message with a reply subject is a waited dispatch, answered with the
//! REST answer's body (`{"tenant","worker","results","request_id"}`), or
//! `{"error": {"code","message"}}` with the header `meshplay-error:
//! <code>`. One without is fire-and-forget. Headers a request may carry:
//! `content-type: application/msgpack` (payload and reply in MessagePack),
//! `timeout-ms` (the handlers' budget, as REST's `timeout_ms`).
//!
//! The tenant's type and id and the event's name are tokens of the
//! subject, so here they cannot hold a `.`.

use super::{Bridge, DISPATCH_SUBJECTS};
use crate::master::api::ApiState;
use crate::master::api::error::ApiError;
use crate::master::api::tenants::{Delivered, dispatch_to};
use crate::mesophyll::message::Packed;
use crate::rest::{DispatchRequest, ErrorBody, ErrorDetail};
use futures::StreamExt;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Requests handled at once; more wait in the subscription.
const IN_FLIGHT: usize = 1024;

/// The content type that asks for MessagePack.
const MSGPACK: &str = "application/msgpack";

/// Whether `t` can be one token of a subject.
pub fn token_ok(t: &str) -> bool {
    !t.is_empty()
        && !t.bytes().any(|b| {
            matches!(b, b'.' | b'*' | b'>') || b.is_ascii_whitespace() || b.is_ascii_control()
        })
}

impl Bridge {
    /// Serves dispatch requests for `state` until the task is aborted;
    /// a subscription that fails is made again a second later.
    pub fn serve(self: &Arc<Self>, state: Arc<ApiState>) -> tokio::task::JoinHandle<()> {
        let bridge = Arc::clone(self);
        tokio::spawn(async move {
            let permits = Arc::new(Semaphore::new(IN_FLIGHT));
            loop {
                let group = bridge.config.queue_group.clone();
                match bridge
                    .client
                    .queue_subscribe(DISPATCH_SUBJECTS, group)
                    .await
                {
                    Ok(mut sub) => {
                        while let Some(msg) = sub.next().await {
                            let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                                return;
                            };
                            let (bridge, state) = (Arc::clone(&bridge), Arc::clone(&state));
                            tokio::spawn(async move {
                                bridge.handle(&state, msg).await;
                                drop(permit);
                            });
                        }
                    }
                    Err(e) => tracing::warn!("NATS: cannot subscribe to {DISPATCH_SUBJECTS}: {e}"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    }

    async fn handle(&self, state: &ApiState, msg: async_nats::Message) {
        let header = |name: &str| {
            msg.headers
                .as_ref()
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_owned())
        };
        let msgpack = header("content-type").is_some_and(|c| c == MSGPACK);
        let timeout_ms = header("timeout-ms").and_then(|t| t.parse().ok());
        let answer = match request(&msg.subject, &msg.payload, msgpack) {
            // Past its lease, a leader dispatches nothing (it unsubscribes
            // as it stands down).
            Ok(_) if !state.leadership.leads() => Err(ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                crate::mesophyll::addresses::NOT_LEADER,
                "this master no longer leads",
            )),
            Ok((kind, id, name, data)) => {
                let req = DispatchRequest {
                    name,
                    data,
                    wait: msg.reply.is_some(),
                    timeout_ms,
                };
                dispatch_to(state, kind, id, req).await
            }
            Err(e) => Err(e),
        };
        self.metrics.count(
            "dispatch",
            match &answer {
                Ok(_) => "ok",
                Err(e) => e.code(),
            },
        );
        let Some(reply) = msg.reply else {
            return;
        };
        let mut headers = async_nats::HeaderMap::new();
        let body = match &answer {
            Ok(Delivered::Done(d)) => encode(d, msgpack),
            Ok(Delivered::Accepted(a)) => encode(a, msgpack),
            Err(e) => {
                headers.insert("meshplay-error", e.code());
                encode(
                    &ErrorBody {
                        error: ErrorDetail {
                            code: e.code().to_owned(),
                            message: e.message().to_owned(),
                        },
                    },
                    msgpack,
                )
            }
        };
        if msgpack {
            headers.insert("content-type", MSGPACK);
        }
        if let Err(e) = self
            .client
            .publish_with_headers(reply, headers, body.into())
            .await
        {
            tracing::info!("NATS: a dispatch's reply was not sent: {e}");
        }
    }
}

/// The tenant, event and data a request names.
fn request(
    subject: &str,
    payload: &[u8],
    msgpack: bool,
) -> Result<(String, String, String, Packed), ApiError> {
    let parts: Vec<&str> = subject.split('.').collect();
    let [_, _, kind, id, name] = parts.as_slice() else {
        return Err(ApiError::bad_request(format!(
            "{subject:?}: a dispatch subject is meshplay.dispatch.<type>.<id>.<event>"
        )));
    };
    let data = if payload.is_empty() {
        Packed::nil()
    } else if msgpack {
        Packed::from_msgpack(payload.to_vec())
            .map_err(|e| ApiError::bad_request(format!("the payload is not MessagePack: {e}")))?
    } else {
        serde_json::from_slice::<Packed>(payload)
            .map_err(|e| ApiError::bad_request(format!("the payload is not JSON: {e}")))?
    };
    Ok((kind.to_string(), id.to_string(), name.to_string(), data))
}

fn encode<T: Serialize>(v: &T, msgpack: bool) -> Vec<u8> {
    if msgpack {
        rmp_serde::to_vec_named(v).unwrap_or_default()
    } else {
        serde_json::to_vec(v).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_name_the_tenant_and_the_event() {
        let (kind, id, name, data) =
            request("meshplay.dispatch.user.42.echo", br#"{"x":1}"#, false).unwrap();
        assert_eq!(
            (kind.as_str(), id.as_str(), name.as_str()),
            ("user", "42", "echo")
        );
        assert_eq!(data.to_value(), serde_json::json!({"x": 1}));
        assert!(request("meshplay.dispatch.user.42", b"", false).is_err());
        assert!(request("meshplay.dispatch.user.4.2.echo", b"", false).is_err());
        assert!(request("meshplay.dispatch.user.42.echo", b"{", false).is_err());
        assert!(!token_ok("a.b") && !token_ok("") && token_ok("member_join"));
    }
}
