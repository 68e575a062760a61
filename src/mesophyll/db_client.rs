//! The worker's client for the DB endpoints: HTTP/2 with prior knowledge,
//! one multiplexed connection to the master, MessagePack bodies.
//!
//! hyper's pooled client keeps that one connection, multiplexes concurrent
//! calls over it, and opens a new one when it breaks, so a restarted master
//! is picked up by the next call. Every call has a deadline (the caller's,
//! for a script: its remaining time); none waits forever.

use crate::http::HttpClient;
use crate::mesophyll::addresses::{Addresses, NOT_LEADER};
use crate::mesophyll::auth::{WORKER_ID_HEADER, WORKER_TOKEN_HEADER};
use crate::mesophyll::db::{
    CatalogueSnapshot, DbErrorBody, EmitReply, EmittedEvent, GlobalOp, GlobalReply, KvOp, KvReply,
    PublicGlobalOp, TenantStateEntry, TenantStatesPage, VarValue,
};
use crate::mesophyll::message::Tenant;
use crate::tls::TlsClient;
use crate::uri::encode_component;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::time::Duration;

/// Why a DB call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DbClientError {
    /// The master refused our credentials (401/404): fatal for a worker.
    #[error("the master refused this worker's credentials ({0})")]
    Refused(u16),
    /// The tenant is outside this worker's shard (403).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The request was malformed (400).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A key or value over its limit (413).
    #[error("too large: {0}")]
    TooLarge(String),
    /// The global key exists already (409).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A per-tenant cap would be passed (429): `too_many_timers`,
    /// `too_many_schedules`.
    #[error("{code}: {message}")]
    Limit {
        /// The master's stable code.
        code: String,
        /// What was passed.
        message: String,
    },
    /// The store failed (500).
    #[error("store error: {0}")]
    Store(String),
    /// No answer: the master is unreachable or the connection broke.
    #[error("master unreachable: {0}")]
    Transport(String),
    /// The master stands by (503 `not_leader`): another one leads, and
    /// the worker's uplink is on its way to it.
    #[error("not the leader: {0}")]
    NotLeader(String),
    /// No answer within the deadline.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// The DB client of one worker. Cheap to clone.
#[derive(Clone)]
pub struct DbClient {
    scheme: &'static str,
    masters: Addresses,
    worker_id: String,
    token: String,
    http: HttpClient,
}

impl fmt::Debug for DbClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbClient")
            .field("master", &self.masters.current())
            .field("worker_id", &self.worker_id)
            .field("token", &"<redacted>")
            .finish()
    }
}

fn query_tenant(t: &Tenant) -> String {
    format!(
        "tenant_type={}&tenant_id={}",
        encode_component(&t.kind),
        encode_component(&t.id)
    )
}

impl DbClient {
    /// A client for the master that is current in `masters` at each call
    /// (`host:port`), as worker `id`; `https://` with `tls`.
    pub fn new(masters: &Addresses, worker_id: u32, token: &str, tls: Option<&TlsClient>) -> Self {
        DbClient {
            scheme: if tls.is_some() { "https" } else { "http" },
            masters: masters.clone(),
            worker_id: worker_id.to_string(),
            token: token.to_owned(),
            http: HttpClient::http2(tls),
        }
    }

    /// The states of every tenant in this worker's shard, a page at a
    /// time ([`MAX_STATES_PAGE_BYTES`](crate::mesophyll::db::MAX_STATES_PAGE_BYTES)),
    /// each page within `deadline`: a
    /// shard of many states loads in many short answers rather than one
    /// that outgrows a body or its deadline.
    pub async fn tenant_states(
        &self,
        deadline: Duration,
    ) -> Result<Vec<TenantStateEntry>, DbClientError> {
        let mut states = Vec::new();
        let mut after: Option<Tenant> = None;
        loop {
            let path = match &after {
                None => "/db/tenant-states?page=1".to_owned(),
                Some(t) => format!("/db/tenant-states?page=1&{}", query_tenant(t)),
            };
            let page: TenantStatesPage =
                self.call(Method::GET, path, None::<&()>, deadline).await?;
            states.extend(page.states);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(states),
            }
        }
    }

    /// The plugin variables this worker's tenants may read: every plugin's
    /// own values and the overrides of the tenants of its shard.
    pub async fn vars(&self, deadline: Duration) -> Result<Vec<VarValue>, DbClientError> {
        self.call(Method::GET, "/db/vars".into(), None::<&()>, deadline)
            .await
    }

    /// Hands what a handler emitted to the master, which queues each event
    /// to the worker that owns its tenant.
    pub async fn emit(
        &self,
        events: &[EmittedEvent],
        deadline: Duration,
    ) -> Result<EmitReply, DbClientError> {
        self.call(Method::POST, "/db/events".into(), Some(&events), deadline)
            .await
    }

    /// One timer or schedule operation for a tenant of this shard.
    pub async fn timers(
        &self,
        req: &crate::mesophyll::timers::TimerRequest,
        deadline: Duration,
    ) -> Result<crate::mesophyll::timers::TimerReply, DbClientError> {
        self.call(Method::POST, "/db/timers".into(), Some(req), deadline)
            .await
    }

    /// Publishes one message on the master's NATS.
    pub async fn nats_publish(
        &self,
        msg: &crate::mesophyll::db::NatsPublish,
        deadline: Duration,
    ) -> Result<bool, DbClientError> {
        self.call(Method::POST, "/db/nats".into(), Some(msg), deadline)
            .await
    }

    /// Every plugin and filter, as the master has them now.
    pub async fn catalogue(&self, deadline: Duration) -> Result<CatalogueSnapshot, DbClientError> {
        self.call(Method::GET, "/db/catalogue".into(), None::<&()>, deadline)
            .await
    }

    /// Upserts one tenant's state.
    pub async fn put_tenant_state(
        &self,
        entry: &TenantStateEntry,
        deadline: Duration,
    ) -> Result<TenantStateEntry, DbClientError> {
        self.call(
            Method::POST,
            "/db/tenant-state".into(),
            Some(entry),
            deadline,
        )
        .await
    }

    /// One tenant KV operation.
    pub async fn kv(
        &self,
        tenant: &Tenant,
        op: &KvOp,
        deadline: Duration,
    ) -> Result<KvReply, DbClientError> {
        let path = format!("/db/kv?{}", query_tenant(tenant));
        self.call(Method::POST, path, Some(op), deadline).await
    }

    /// One global KV operation on behalf of `tenant`.
    pub async fn global(
        &self,
        tenant: &Tenant,
        op: &GlobalOp,
        deadline: Duration,
    ) -> Result<GlobalReply, DbClientError> {
        let path = format!("/db/global-kv?{}", query_tenant(tenant));
        self.call(Method::POST, path, Some(op), deadline).await
    }

    /// One read of the public global KV.
    pub async fn public_global(
        &self,
        op: &PublicGlobalOp,
        deadline: Duration,
    ) -> Result<GlobalReply, DbClientError> {
        self.call(
            Method::POST,
            "/db/public-global-kv".into(),
            Some(op),
            deadline,
        )
        .await
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: String,
        body: Option<&B>,
        deadline: Duration,
    ) -> Result<T, DbClientError> {
        let payload = match body {
            Some(b) => Bytes::from(
                rmp_serde::to_vec_named(b).map_err(|e| DbClientError::BadRequest(e.to_string()))?,
            ),
            None => Bytes::new(),
        };
        let req = Request::builder()
            .method(method)
            .uri(format!(
                "{}://{}{path}",
                self.scheme,
                self.masters.current()
            ))
            .header(WORKER_ID_HEADER, &self.worker_id)
            .header(WORKER_TOKEN_HEADER, &self.token)
            .header("content-type", "application/msgpack")
            .body(Full::new(payload))
            .map_err(|e| DbClientError::BadRequest(e.to_string()))?;
        let (status, bytes) = tokio::time::timeout(deadline, self.http.exchange(req))
            .await
            .map_err(|_| DbClientError::Timeout(deadline))?
            .map_err(DbClientError::Transport)?;
        if status.is_success() {
            return rmp_serde::from_slice(&bytes)
                .map_err(|e| DbClientError::Transport(format!("undecodable answer: {e}")));
        }
        let (code, message) = rmp_serde::from_slice::<DbErrorBody>(&bytes)
            .map(|b| (b.code, b.message))
            .unwrap_or_else(|_| (String::new(), String::from_utf8_lossy(&bytes).into_owned()));
        Err(match status {
            StatusCode::UNAUTHORIZED | StatusCode::NOT_FOUND => {
                DbClientError::Refused(status.as_u16())
            }
            StatusCode::FORBIDDEN => DbClientError::Forbidden(message),
            StatusCode::BAD_REQUEST => DbClientError::BadRequest(message),
            StatusCode::PAYLOAD_TOO_LARGE => DbClientError::TooLarge(message),
            StatusCode::CONFLICT => DbClientError::Conflict(message),
            StatusCode::TOO_MANY_REQUESTS => DbClientError::Limit { code, message },
            StatusCode::SERVICE_UNAVAILABLE if code == NOT_LEADER => {
                DbClientError::NotLeader(message)
            }
            _ => DbClientError::Store(message),
        })
    }
}
