//! What a webhook's caller gets back, from what the handler returned:
//!
//! - a table with a numeric `status` sets the answer: `status` (100-599),
//!   `headers` (names and string values; hop-by-hop and length headers are
//!   the server's own and left out), `body` (a string as it is, anything
//!   else as JSON);
//! - `nil`: 204 with no body;
//! - any other value: 200 with it as JSON.
//!
//! A handler that failed answers 502 with its error's code alone: the
//! message may hold what the caller should not see (it is in the master's
//! log, with the request id).

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::Value;

/// Headers the server sets itself, never from a handler.
const RESERVED: &[&str] = &[
    "connection",
    "content-length",
    "keep-alive",
    "transfer-encoding",
    "upgrade",
    "trailer",
    "te",
    "proxy-connection",
];

/// The answer for a handler that returned `value`.
pub fn from_value(value: Value) -> Response {
    let Value::Object(mut map) = value else {
        return match value {
            Value::Null => status_only(StatusCode::NO_CONTENT),
            other => json(StatusCode::OK, &other),
        };
    };
    let Some(status) = map.get("status").and_then(Value::as_u64) else {
        return json(StatusCode::OK, &Value::Object(map));
    };
    let status = u16::try_from(status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = match map.remove("body") {
        None | Some(Value::Null) => status_only(status),
        Some(Value::String(text)) => with_body(status, "text/plain; charset=utf-8", text.into()),
        Some(other) => json(status, &other),
    };
    if let Some(Value::Object(headers)) = map.remove("headers") {
        for (name, value) in headers {
            let (Ok(name), Some(value)) = (
                HeaderName::try_from(name.to_ascii_lowercase()),
                value.as_str().and_then(|v| HeaderValue::from_str(v).ok()),
            ) else {
                continue;
            };
            if !RESERVED.contains(&name.as_str()) {
                response.headers_mut().insert(name, value);
            }
        }
    }
    response
}

/// The answer for a handler that failed with `code`.
pub fn failed(code: &str) -> Response {
    json(
        StatusCode::BAD_GATEWAY,
        &serde_json::json!({ "code": code, "message": "the webhook's handler failed" }),
    )
}

fn status_only(status: StatusCode) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    r
}

fn with_body(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    r
}

fn json(status: StatusCode, value: &Value) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    with_body(status, "application/json", body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_status_table_sets_the_answer_and_reserved_headers_stay_ours() {
        let r = from_value(json!({
            "status": 401, "body": "bad signature",
            "headers": { "X-Reason": "hmac", "content-length": "1", "bad\nname": "x" },
        }));
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()["x-reason"], "hmac");
        assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
        assert!(r.headers().get("content-length").is_none());
    }

    #[test]
    fn nil_is_204_other_values_are_json_and_odd_statuses_500() {
        assert_eq!(from_value(Value::Null).status(), StatusCode::NO_CONTENT);
        let r = from_value(json!({ "ok": true }));
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["content-type"], "application/json");
        assert_eq!(
            from_value(json!({ "status": 99999 })).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(
            from_value(json!({ "status": 202, "body": [1] })).status(),
            StatusCode::ACCEPTED
        );
    }
}
