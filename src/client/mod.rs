//! A typed client for the REST API, used by the CLI, the examples and the
//! integration tests. With the crate's `client` feature alone it builds
//! without any of the master's or workers' runtime (no wasmtime, no Luau,
//! no sled).
//!
//! ```no_run
//! # async fn demo() -> Result<(), meshplay::client::ApiClientError> {
//! use meshplay::client::ApiClient;
//! use meshplay::rest::DispatchRequest;
//!
//! // Finds the running master through its data directory.
//! let client = ApiClient::from_data_dir(&meshplay::datadir::default_path())?;
//! let answer = client
//!     .dispatch("user", "42", &DispatchRequest {
//!         name: "echo".into(),
//!         data: serde_json::json!({"x": 1}),
//!         wait: true,
//!         timeout_ms: None,
//!     })
//!     .await?;
//! println!("{answer:?}");
//! # Ok(()) }
//! ```
//!
//! Every error response of the API becomes [`ApiClientError::Api`] with its
//! status, code and message; anything that never got an answer is
//! [`ApiClientError::Connect`].
//!
//! Modules:
//!
//! - `access`: the admin's calls;
//! - `deploy`: the typed client's calls for `meshplay diff` and `meshplay
//!   deploy`;
//! - `failover`: how a request finds the leading master;
//! - `hooks`: `POST /hooks/{type}/{id}/{event}` as an outside service calls
//!   it;
//! - `schedules`: the typed client's calls for a tenant's schedules and
//!   pending timers (`/api/v1/tenants/{type}/{id}/schedules`, `.../timers`);
//! - `stream`: the binary client API from Rust;
//! - `vars`: the typed client's calls for plugin variables
//!   (`/api/v1/plugins/{name}/vars`, admin tokens only).

mod access;
mod deploy;
mod failover;
mod hooks;
mod schedules;
mod stream;
pub use hooks::HookAnswer;
mod vars;

pub use stream::StreamClient;

use crate::datadir::{DataDir, DataDirError};
use crate::http::HttpClient;
use crate::mesophyll::addresses::Addresses;
use crate::mesophyll::db::{KvRecord, TenantStateEntry};
use crate::mesophyll::message::TenantState;
use crate::rest::{
    Accepted, Changed, Deleted, DispatchRequest, Dispatched, Dropped, ErrorBody, FilterList,
    Health, KvPage, LiveTenantList, PluginList, PluginUpload, ScriptRequest, ScriptResult, Status,
    Traffic, Version, Workers,
};
use crate::tls::{TlsClient, Trust};
use crate::uri::encode_component;
use bytes::Bytes;
use failover::{FAILOVER_WAIT, parse_api_url};
use hyper::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

/// What went wrong talking to the API.
#[derive(Debug, thiserror::Error)]
pub enum ApiClientError {
    /// The master's address or token could not be found.
    #[error(
        "cannot find the master: {0} (is `meshplay serve` running? --api-addr and --api-token override)"
    )]
    Locate(#[from] DataDirError),
    /// The address or the TLS settings are unusable (a bad URL, an
    /// `https://` address without a CA to check it against, a CA file
    /// that does not parse).
    #[error("{0}")]
    Setup(String),
    /// No answer: the master is not running, the network failed, or the
    /// master's certificate was not trusted.
    #[error("cannot reach the master at {addr}: {message}")]
    Connect {
        /// Where we tried (`http://host:port` or `https://host:port`).
        addr: String,
        /// Why it failed.
        message: String,
    },
    /// The API answered with an error.
    #[error("{status}: {code}: {message}")]
    Api {
        /// The HTTP status.
        status: StatusCode,
        /// The stable error code.
        code: String,
        /// The API's message.
        message: String,
    },
    /// The API answered something this client does not understand.
    #[error("unexpected answer ({status}): {message}")]
    Decode {
        /// The HTTP status.
        status: StatusCode,
        /// What did not parse.
        message: String,
    },
}

impl ApiClientError {
    /// The API's error code, for [`ApiClientError::Api`].
    pub fn code(&self) -> Option<&str> {
        match self {
            ApiClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The HTTP status, when the API answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ApiClientError::Api { status, .. } | ApiClientError::Decode { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }
}

/// The answer to a dispatch: results when waited for, an acknowledgement
/// otherwise.
#[derive(Debug, Clone, PartialEq)]
pub enum DispatchOutcome {
    /// 200: every plugin's result.
    Done(Dispatched),
    /// 202: queued on its worker.
    Accepted(Accepted),
}

/// A REST API client. Cheap to clone; connections are pooled.
///
/// Given several masters (a leader and its standbys on one PostgreSQL:
/// `connect_to("http://a:9081,http://b:9081", ...)`), it talks to whichever
/// leads. A request is sent again to the next master, for up to
/// [`ApiClient::with_failover_wait`] (10 s by default), only when it
/// cannot have run twice:
///
/// - no connection could be made (the master is down): any request;
/// - a standby refused it (`503 not_leader`, which runs nothing): any
///   request, to the leader it names when that is one of the list;
/// - the connection broke after the request went out: only `GET`, which
///   changes nothing. A `POST` (a dispatch, a script), `PUT` or `DELETE`
///   that may have run fails with [`ApiClientError::Connect`], for the
///   caller to decide.
#[derive(Clone)]
pub struct ApiClient {
    /// Every master's `host:port`, one of them current.
    masters: Addresses,
    tls: Option<TlsClient>,
    token: String,
    http: HttpClient,
    failover_wait: std::time::Duration,
    request_timeout: Option<std::time::Duration>,
    /// The master that last failed to answer: a standby that still names
    /// it as the leader is asked again rather than followed back to it.
    failed: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiClient")
            .field("url", &self.url())
            .field("masters", &self.masters.all())
            .field("token", &"<redacted>")
            .finish()
    }
}

impl ApiClient {
    /// A client for the plaintext API at `addr` with bearer `token`.
    pub fn new(addr: SocketAddr, token: impl Into<String>) -> Self {
        Self::with_tls(Addresses::one(addr.to_string()), None, token.into())
    }

    fn with_tls(masters: Addresses, tls: Option<TlsClient>, token: String) -> Self {
        ApiClient {
            http: HttpClient::http1(tls.as_ref()),
            masters,
            tls,
            token,
            failover_wait: FAILOVER_WAIT,
            request_timeout: None,
            failed: Default::default(),
        }
    }

    /// Gives every attempt at one master `timeout` to answer; past it the
    /// attempt fails as a broken connection does (it may have run), and
    /// the next request goes to another master. None by default: a
    /// waited dispatch takes as long as its handlers.
    pub fn with_request_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// How long a request may keep moving from master to master while
    /// leadership moves (with several masters).
    pub fn with_failover_wait(mut self, wait: std::time::Duration) -> Self {
        self.failover_wait = wait;
        self
    }

    /// A client for the API at `url`: `host:port` or `http://host:port`
    /// (plaintext), or `https://host:port`, which needs `trust` (the
    /// master's CA, or its pinned certificate); several, comma separated,
    /// for a leader and its standbys (all `https://` or none).
    ///
    /// Fails with `Setup` when a URL is not one of those, when an
    /// `https://` URL comes without `trust`, or when its file is unusable.
    pub fn connect_to(
        url: &str,
        token: impl Into<String>,
        trust: Option<&Trust>,
    ) -> Result<Self, ApiClientError> {
        let parsed = url
            .split(',')
            .map(|u| parse_api_url(u.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        let https = parsed.first().is_some_and(|(https, _)| *https);
        if parsed.iter().any(|(h, _)| *h != https) {
            return Err(ApiClientError::Setup(format!(
                "{url}: give every master as https:// or every one as http://"
            )));
        }
        let tls = match (https, trust) {
            (false, _) => None,
            (true, Some(trust)) => {
                Some(TlsClient::new(trust).map_err(|e| ApiClientError::Setup(e.to_string()))?)
            }
            (true, None) => {
                return Err(ApiClientError::Setup(format!(
                    "{url}: https needs the master's CA to check it against: --ca-file FILE \
                     (the master's <data-dir>/tls/ca.pem)"
                )));
            }
        };
        let masters = Addresses::new(parsed.into_iter().map(|(_, a)| a).collect());
        Ok(Self::with_tls(masters, tls, token.into()))
    }

    /// A client for the master whose data directory is `dir`: its address
    /// from `endpoint.json`, its token from `admin-token`, and, when it
    /// serves TLS, the certificate it serves (`tls/cert.pem`) pinned.
    pub fn from_data_dir(dir: &Path) -> Result<Self, ApiClientError> {
        let dir = DataDir::at(dir);
        let endpoint = dir.endpoint()?;
        let token = dir.admin_token()?;
        if !endpoint.tls {
            return Ok(Self::new(endpoint.api_addr, token));
        }
        let pinned = Trust::Pinned(dir.path().join(crate::datadir::TLS_CERT));
        Self::connect_to(
            &format!("https://{}", endpoint.api_addr),
            token,
            Some(&pinned),
        )
    }

    /// The API's `host:port` (the master talked to now).
    pub fn addr(&self) -> String {
        self.masters.current()
    }

    /// The API's base URL: `http://host:port` or `https://host:port`.
    pub fn url(&self) -> String {
        self.url_of(&self.masters.current())
    }

    fn url_of(&self, authority: &str) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{authority}")
    }

    /// `GET /api/system/version`.
    pub async fn version(&self) -> Result<Version, ApiClientError> {
        self.call(Method::GET, "/api/system/version", None::<&()>)
            .await
            .map(|(_, v)| v)
    }

    /// `GET /healthz`.
    pub async fn health(&self) -> Result<Health, ApiClientError> {
        self.call(Method::GET, "/healthz", None::<&()>)
            .await
            .map(|(_, v)| v)
    }

    /// `GET /api/v1/workers`.
    pub async fn workers(&self) -> Result<Workers, ApiClientError> {
        self.call(Method::GET, "/api/v1/workers", None::<&()>)
            .await
            .map(|(_, v)| v)
    }

    /// `GET /api/v1/status`: the master, its store, workers, catalogue and
    /// the last minute's traffic.
    pub async fn status(&self) -> Result<Status, ApiClientError> {
        self.call(Method::GET, "/api/v1/status", None::<&()>)
            .await
            .map(|(_, v)| v)
    }

    /// `GET /api/v1/traffic`: the last minute, second by second.
    pub async fn traffic(&self) -> Result<Traffic, ApiClientError> {
        self.call(Method::GET, "/api/v1/traffic", None::<&()>)
            .await
            .map(|(_, v)| v)
    }

    /// `GET /api/v1/tenants?limit=`: the tenants with a live VM, up to
    /// `limit` per worker.
    pub async fn live_tenants(&self, limit: u32) -> Result<LiveTenantList, ApiClientError> {
        let path = format!("/api/v1/tenants?limit={limit}");
        self.call(Method::GET, &path, None::<&()>)
            .await
            .map(|(_, v)| v)
    }

    /// `POST /api/v1/tenants/{kind}/{id}/events`.
    pub async fn dispatch(
        &self,
        kind: &str,
        id: &str,
        req: &DispatchRequest,
    ) -> Result<DispatchOutcome, ApiClientError> {
        let path = tenant_path(kind, id, "events");
        let (status, body) = self.raw(Method::POST, &path, Some(req)).await?;
        if status == StatusCode::ACCEPTED {
            decode(status, &body).map(DispatchOutcome::Accepted)
        } else {
            decode(status, &body).map(DispatchOutcome::Done)
        }
    }

    /// `POST /api/v1/tenants/{kind}/{id}/scripts`.
    pub async fn run_script(
        &self,
        kind: &str,
        id: &str,
        req: &ScriptRequest,
    ) -> Result<ScriptResult, ApiClientError> {
        let path = tenant_path(kind, id, "scripts");
        self.call(Method::POST, &path, Some(req))
            .await
            .map(|(_, v)| v)
    }

    /// `DELETE /api/v1/tenants/{kind}/{id}/vm`.
    pub async fn drop_tenant(&self, kind: &str, id: &str) -> Result<Dropped, ApiClientError> {
        let path = tenant_path(kind, id, "vm");
        self.call(Method::DELETE, &path, None::<&()>)
            .await
            .map(|(_, v)| v)
    }

    /// `GET /api/v1/plugins`.
    pub async fn plugins(&self) -> Result<PluginList, ApiClientError> {
        self.call(Method::GET, "/api/v1/plugins", None::<&()>)
            .await
            .map(|(_, v)| v)
    }

    /// `PUT /api/v1/plugins/{name}`.
    pub async fn put_plugin(
        &self,
        name: &str,
        upload: &PluginUpload,
    ) -> Result<Changed, ApiClientError> {
        let path = format!("/api/v1/plugins/{}", encode_component(name));
        self.call(Method::PUT, &path, Some(upload))
            .await
            .map(|(_, v)| v)
    }

    /// `DELETE /api/v1/plugins/{name}`.
    pub async fn delete_plugin(&self, name: &str) -> Result<Changed, ApiClientError> {
        let path = format!("/api/v1/plugins/{}", encode_component(name));
        self.call(Method::DELETE, &path, None::<&()>)
            .await
            .map(|(_, v)| v)
    }

    /// `GET /api/v1/filters`.
    pub async fn filters(&self) -> Result<FilterList, ApiClientError> {
        self.call(Method::GET, "/api/v1/filters", None::<&()>)
            .await
            .map(|(_, v)| v)
    }

    /// `PUT /api/v1/filters/{name}` with the module's bytes.
    pub async fn put_filter(&self, name: &str, module: Vec<u8>) -> Result<Changed, ApiClientError> {
        let path = format!("/api/v1/filters/{}", encode_component(name));
        let (status, bytes) = self
            .send(Method::PUT, &path, "application/wasm", Bytes::from(module))
            .await?;
        decode(status, &bytes)
    }

    /// `DELETE /api/v1/filters/{name}`.
    pub async fn delete_filter(&self, name: &str) -> Result<Changed, ApiClientError> {
        let path = format!("/api/v1/filters/{}", encode_component(name));
        self.call(Method::DELETE, &path, None::<&()>)
            .await
            .map(|(_, v)| v)
    }

    /// `GET /api/v1/tenants/{kind}/{id}/state`.
    pub async fn tenant_state(
        &self,
        kind: &str,
        id: &str,
    ) -> Result<TenantStateEntry, ApiClientError> {
        let path = tenant_path(kind, id, "state");
        self.call(Method::GET, &path, None::<&()>)
            .await
            .map(|(_, v)| v)
    }

    /// `PUT /api/v1/tenants/{kind}/{id}/state`.
    pub async fn put_tenant_state(
        &self,
        kind: &str,
        id: &str,
        state: &TenantState,
    ) -> Result<TenantStateEntry, ApiClientError> {
        let path = tenant_path(kind, id, "state");
        self.call(Method::PUT, &path, Some(state))
            .await
            .map(|(_, v)| v)
    }

    /// `GET /api/v1/tenants/{kind}/{id}/kv/{scope}/{key}`: `None` when the key
    /// does not exist.
    pub async fn kv_get(
        &self,
        kind: &str,
        id: &str,
        scope: &str,
        key: &str,
    ) -> Result<Option<KvRecord>, ApiClientError> {
        let path = kv_key_path(kind, id, scope, key);
        match self.call(Method::GET, &path, None::<&()>).await {
            Ok((_, v)) => Ok(Some(v)),
            Err(e) if e.code() == Some("not_found") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `PUT /api/v1/tenants/{kind}/{id}/kv/{scope}/{key}`.
    pub async fn kv_set(
        &self,
        kind: &str,
        id: &str,
        scope: &str,
        key: &str,
        value: &serde_json::Value,
    ) -> Result<KvRecord, ApiClientError> {
        let path = kv_key_path(kind, id, scope, key);
        self.call(Method::PUT, &path, Some(value))
            .await
            .map(|(_, v)| v)
    }

    /// `DELETE /api/v1/tenants/{kind}/{id}/kv/{scope}/{key}`.
    pub async fn kv_delete(
        &self,
        kind: &str,
        id: &str,
        scope: &str,
        key: &str,
    ) -> Result<Deleted, ApiClientError> {
        let path = kv_key_path(kind, id, scope, key);
        self.call(Method::DELETE, &path, None::<&()>)
            .await
            .map(|(_, v)| v)
    }

    /// `GET /api/v1/tenants/{kind}/{id}/kv?scope=&pattern=`: one page.
    pub async fn kv_find(
        &self,
        kind: &str,
        id: &str,
        scope: &str,
        pattern: &str,
        after: Option<&str>,
    ) -> Result<KvPage, ApiClientError> {
        let mut query = format!(
            "kv?scope={}&pattern={}",
            encode_component(scope),
            encode_component(pattern)
        );
        if let Some(a) = after {
            query.push_str(&format!("&after={}", encode_component(a)));
        }
        let path = tenant_path(kind, id, &query);
        self.call(Method::GET, &path, None::<&()>)
            .await
            .map(|(_, v)| v)
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<(StatusCode, T), ApiClientError> {
        let (status, bytes) = self.raw(method, path, body).await?;
        decode(status, &bytes).map(|v| (status, v))
    }

    /// Sends one request; an error status becomes [`ApiClientError::Api`].
    async fn raw<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<(StatusCode, Bytes), ApiClientError> {
        let payload = match body {
            Some(b) => Bytes::from(serde_json::to_vec(b).expect("request types always serialise")),
            None => Bytes::new(),
        };
        self.send(method, path, "application/json", payload).await
    }
}

/// The error an answer with a failure `status` and body `bytes` stands for.
fn error_of(status: StatusCode, bytes: &[u8]) -> ApiClientError {
    match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(e) => ApiClientError::Api {
            status,
            code: e.error.code,
            message: e.error.message,
        },
        Err(_) => ApiClientError::Decode {
            status,
            message: String::from_utf8_lossy(bytes).into_owned(),
        },
    }
}

/// `/api/v1/tenants/{kind}/{id}/{rest}`, with the tenant's parts escaped
/// (`rest` is taken as it is).
fn tenant_path(kind: &str, id: &str, rest: &str) -> String {
    format!(
        "/api/v1/tenants/{}/{}/{rest}",
        encode_component(kind),
        encode_component(id)
    )
}

/// The path of one KV record of a tenant.
fn kv_key_path(kind: &str, id: &str, scope: &str, key: &str) -> String {
    tenant_path(
        kind,
        id,
        &format!("kv/{}/{}", encode_component(scope), encode_component(key)),
    )
}

fn decode<T: DeserializeOwned>(status: StatusCode, bytes: &[u8]) -> Result<T, ApiClientError> {
    serde_json::from_slice(bytes).map_err(|e| ApiClientError::Decode {
        status,
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn tenant_paths_escape_every_part() {
        assert_eq!(
            super::kv_key_path("a b", "user-42_x.y", "s/c", "k?"),
            "/api/v1/tenants/a%20b/user-42_x.y/kv/s%2Fc/k%3F"
        );
    }
}
