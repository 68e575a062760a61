//! How a request finds the leading master: [`ApiClient::send`] tries the
//! master that is current, follows a standby's `not_leader` to the leader
//! it names (only among the addresses given), and moves on to the next
//! master when one cannot be reached, sending a request again only when it
//! cannot have run twice (see [`ApiClient`]).

use super::{ApiClient, ApiClientError, error_of};
use crate::mesophyll::addresses::{LEADER_HEADER, NOT_LEADER};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, StatusCode, header};

impl ApiClient {
    /// Sends one request with a body of `content_type`, to whichever
    /// master leads (see [`ApiClient`] for what is sent again); an error
    /// status becomes [`ApiClientError::Api`].
    pub(super) async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        payload: Bytes,
    ) -> Result<(StatusCode, Bytes), ApiClientError> {
        let until = tokio::time::Instant::now() + self.failover_wait;
        let mut tried = 0usize;
        loop {
            let master = self.masters.current();
            let answer = self
                .send_to(&master, &method, path, content_type, payload.clone())
                .await;
            let again = self.masters.several() && tokio::time::Instant::now() < until;
            let leader = match answer {
                Attempt::Answered(status, headers, bytes) => {
                    self.failed.lock().unwrap().take_if(|f| *f == master);
                    if status.is_success() {
                        return Ok((status, bytes));
                    }
                    let error = error_of(status, &bytes);
                    if !(again && error.code() == Some(NOT_LEADER)) {
                        return Err(error);
                    }
                    headers
                        .get(LEADER_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                }
                Attempt::Failed(e) => {
                    *self.failed.lock().unwrap() = Some(master.clone());
                    self.masters.next_after(&master);
                    if !(again && (e.unsent || method == Method::GET)) {
                        return Err(ApiClientError::Connect {
                            addr: self.url_of(&master),
                            message: e.message,
                        });
                    }
                    tried += 1;
                    if tried.is_multiple_of(self.masters.all().len()) {
                        tokio::time::sleep(FAILOVER_POLL).await;
                    }
                    continue;
                }
            };
            match leader {
                // The named leader just failed us: its lease has not run
                // out yet; this standby will lead once it has.
                Some(l) if self.failed.lock().unwrap().as_ref() == Some(&l) => {
                    tokio::time::sleep(FAILOVER_POLL).await;
                    continue;
                }
                Some(l) if l != master && self.masters.follow(&l) => continue,
                _ => {}
            }
            self.masters.next_after(&master);
            tried += 1;
            // Every master tried: a takeover is under way.
            if tried.is_multiple_of(self.masters.all().len()) {
                tokio::time::sleep(FAILOVER_POLL).await;
            }
        }
    }

    /// One attempt at `master`.
    async fn send_to(
        &self,
        master: &str,
        method: &Method,
        path: &str,
        content_type: &str,
        payload: Bytes,
    ) -> Attempt {
        let req = Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", self.url_of(master)))
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
            .header(header::CONTENT_TYPE, content_type)
            .body(Full::new(payload));
        let req = match req {
            Ok(r) => r,
            Err(e) => {
                return Attempt::Failed(crate::http::ExchangeError {
                    message: e.to_string(),
                    unsent: false,
                });
            }
        };
        let exchange = self.http.exchange_once(req);
        let answer = match self.request_timeout {
            Some(limit) => tokio::time::timeout(limit, exchange)
                .await
                .unwrap_or_else(|_| {
                    Err(crate::http::ExchangeError {
                        message: format!("no answer within {limit:?}"),
                        unsent: false,
                    })
                }),
            None => exchange.await,
        };
        match answer {
            Ok((status, headers, bytes)) => Attempt::Answered(status, headers, bytes),
            Err(e) => Attempt::Failed(e),
        }
    }
}

/// How long a request may move from master to master unless told.
pub(super) const FAILOVER_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The pause after every master was tried once: about a standby's poll.
pub(super) const FAILOVER_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// What one attempt at one master came to.
enum Attempt {
    Answered(StatusCode, hyper::HeaderMap, Bytes),
    Failed(crate::http::ExchangeError),
}

/// `[http[s]://]host:port` as whether it is TLS and its authority.
pub(super) fn parse_api_url(url: &str) -> Result<(bool, String), ApiClientError> {
    let (https, authority) = match url.split_once("://") {
        Some(("https", rest)) => (true, rest),
        Some(("http", rest)) => (false, rest),
        Some((scheme, _)) => {
            return Err(ApiClientError::Setup(format!(
                "{url}: the API speaks http:// or https://, not {scheme}://"
            )));
        }
        None => (false, url),
    };
    let authority = authority.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') || !authority.contains(':') {
        return Err(ApiClientError::Setup(format!(
            "{url}: give the API's address as [https://]HOST:PORT"
        )));
    }
    Ok((https, authority.to_owned()))
}
