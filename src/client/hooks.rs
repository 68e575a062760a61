//! `POST /hooks/{type}/{id}/{event}` as an outside service calls it: no
//! API token, any body and headers, and the answer the plugin gave
//! (whatever its status) rather than an error.

use super::{ApiClient, ApiClientError};
use crate::uri::encode_component;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request};

/// What a webhook was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookAnswer {
    /// The status.
    pub status: u16,
    /// The headers, lower-case names.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
}

impl ApiClient {
    /// Posts `body` with `headers` to `event` of tenant `kind`/`id` as a
    /// webhook. Fails only when the master cannot be reached or a header
    /// is not one HTTP allows; every status is an answer.
    pub async fn post_webhook(
        &self,
        (kind, id, event): (&str, &str, &str),
        headers: &[(String, String)],
        body: Bytes,
    ) -> Result<HookAnswer, ApiClientError> {
        let base = self.url();
        let failed = |message: String| ApiClientError::Connect {
            addr: base.clone(),
            message,
        };
        let path = format!(
            "/hooks/{}/{}/{}",
            encode_component(kind),
            encode_component(id),
            encode_component(event)
        );
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(format!("{base}{path}"));
        for (name, value) in headers {
            req = req.header(name.as_str(), value.as_str());
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| failed(e.to_string()))?;
        let (status, headers, body) = self.http.exchange_with_headers(req).await.map_err(failed)?;
        Ok(HookAnswer {
            status: status.as_u16(),
            headers: headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body,
        })
    }
}
