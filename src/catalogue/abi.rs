//! Filter ABI v1 as data: what a filter is handed (MessagePack of
//! [`FilterInput`]) and what it answers ([`Verdict`], or its own error).
//! The exports and imports a module must have are checked in
//! [`crate::catalogue::filter`]; `filters/README.md` describes both for
//! authors.

use crate::mesophyll::message::{Event, Tenant};
use serde::{Deserialize, Serialize};

/// What a filter sees.
#[derive(Debug, Clone, Serialize)]
pub struct FilterInput<'a> {
    /// Whose event.
    pub tenant: &'a Tenant,
    /// The event.
    pub event: &'a Event,
    /// The filter's configuration.
    pub config: &'a serde_json::Value,
    /// The plugin whose manifest applies the filter (`None` under
    /// `filters.run`). proxy-wasm filters read it as the `plugin_name`
    /// property; it is not part of ABI v1's input.
    #[serde(skip)]
    pub plugin: Option<&'a str>,
    /// The master's id of the request the call serves, for the filter's
    /// log lines; not part of ABI v1's input either.
    #[serde(skip)]
    pub request: Option<u64>,
}

/// A filter's decision.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Go on, with the event rewritten or (`None`) as it was.
    Continue {
        /// The rewritten event.
        #[serde(default)]
        event: Option<Event>,
    },
    /// Stop, for this reason.
    Reject {
        /// Why.
        reason: String,
        /// The HTTP status of a proxy-wasm filter's local response; ABI v1
        /// filters may set it too.
        #[serde(default)]
        status: Option<u32>,
    },
}

/// The guest's own error report, decoded beside [`Verdict`].
#[derive(Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
enum GuestError {
    Error { message: String },
}

/// A filter's answer, as it left the guest's memory: a verdict, or why
/// there is none (the guest's own error report, or bytes that are neither).
/// Never panics, whatever the bytes.
pub fn decode_verdict(bytes: &[u8]) -> Result<Verdict, String> {
    match rmp_serde::from_slice::<Verdict>(bytes) {
        Ok(v) => Ok(v),
        Err(e) => match rmp_serde::from_slice::<GuestError>(bytes) {
            Ok(GuestError::Error { message }) => Err(message),
            Err(_) => Err(format!("not a verdict: {e}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_errors_and_garbage() {
        let reject =
            rmp_serde::to_vec_named(&serde_json::json!({"verdict": "reject", "reason": "no"}))
                .unwrap();
        assert_eq!(
            decode_verdict(&reject),
            Ok(Verdict::Reject {
                reason: "no".into(),
                status: None
            })
        );
        let own = rmp_serde::to_vec_named(
            &serde_json::json!({"verdict": "error", "message": "bad config"}),
        )
        .unwrap();
        assert_eq!(decode_verdict(&own), Err("bad config".into()));
        assert!(
            decode_verdict(b"\xc1")
                .unwrap_err()
                .starts_with("not a verdict")
        );
    }
}
