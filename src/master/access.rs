//! Who may do what through the REST API: bearer tokens with a role, kept
//! hashed in the store, and the rule of which role each route needs.
//!
//! Two kinds of token open `/api/v1`:
//!
//! - the data directory's admin token (`admin-token`, or `--api-token`),
//!   compared in constant time, role `admin`, named `admin-token`;
//! - tokens minted through `POST /api/v1/tokens` (`meshplay tokens
//!   create`): 64 random characters, shown once, stored as their SHA-256,
//!   looked up by that hash, revocable. A revoked token is refused.
//!
//! [`ROUTES`] says what each route needs, by the pattern the router
//! matched: `read` for `GET` (but tokens and the audit log, which are
//! `admin`), `app` to dispatch events and to write a tenant's KV and state,
//! `admin` for everything else (scripts, VM drops, uploads and removals,
//! tokens). [`audited`] says which answers go to the audit log: every
//! change, allowed or refused, but dispatches (traffic, not changes, and
//! counted in `/metrics`).

use crate::catalogue::filter::sha256_hex;
use crate::master::datadir::fresh_token;
use crate::master::store::{SessionGrant, Store, StoreError, StoredToken};
use crate::rest::{Role, TokenInfo};
use axum::http::Method;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use subtle::ConstantTimeEq;

/// The name the data directory's admin token goes by in the audit log.
pub const ADMIN_TOKEN_NAME: &str = "admin-token";

/// Who asked: a token's name and role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name, as the audit log shows it.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// The SHA-256 of a minted token (`None`: the admin token), by which
    /// [`Access::in_force`] tells whether it was revoked since. Never
    /// logged.
    pub sha256: Option<String>,
}

/// The tokens in force: the admin token, and the minted ones by hash.
pub struct Access {
    admin_token: String,
    by_hash: RwLock<HashMap<String, TokenInfo>>,
    /// What each joined worker's session holds, by its token's hash.
    sessions: RwLock<HashMap<String, SessionGrant>>,
    store: Arc<dyn Store>,
    /// Bumped at every revocation, so that what a token holds open (a
    /// binary stream, a console) can check at once whether it still may.
    revocations: tokio::sync::watch::Sender<u64>,
}

impl Access {
    /// Loads the minted tokens from `store`.
    ///
    /// Fails when the store cannot be read.
    pub fn load(admin_token: String, store: Arc<dyn Store>) -> Result<Self, StoreError> {
        let (by_hash, sessions) = Self::read(store.as_ref())?;
        Ok(Access {
            admin_token,
            by_hash: RwLock::new(by_hash),
            sessions: RwLock::new(sessions),
            store,
            revocations: tokio::sync::watch::Sender::new(0),
        })
    }

    /// Reads the tokens again: a master taking the lease over learns what
    /// the last leader minted and revoked.
    ///
    /// Fails when the store cannot be read (then nothing changes).
    pub fn reload(&self) -> Result<(), StoreError> {
        let (by_hash, sessions) = Self::read(self.store.as_ref())?;
        *self.by_hash.write().unwrap() = by_hash;
        *self.sessions.write().unwrap() = sessions;
        self.revocations.send_modify(|n| *n += 1);
        Ok(())
    }

    /// The stored tokens by hash, and the sessions among them.
    #[allow(clippy::type_complexity)]
    fn read(
        store: &dyn Store,
    ) -> Result<(HashMap<String, TokenInfo>, HashMap<String, SessionGrant>), StoreError> {
        let mut by_hash = HashMap::new();
        let mut sessions = HashMap::new();
        for t in store.tokens()? {
            if let Some(grant) = t.session {
                sessions.insert(t.sha256.clone(), grant);
            }
            by_hash.insert(t.sha256, t.info);
        }
        Ok((by_hash, sessions))
    }

    /// Who `presented` is, if anybody: the admin token, or a minted token
    /// that is not revoked.
    pub fn identify(&self, presented: &str) -> Option<Caller> {
        if bool::from(presented.as_bytes().ct_eq(self.admin_token.as_bytes())) {
            return Some(Caller {
                name: ADMIN_TOKEN_NAME.into(),
                role: Role::Admin,
                sha256: None,
            });
        }
        // Join tokens and workers' sessions open nothing of the API.
        self.find(presented)
            .filter(|t| t.role >= Role::Read)
            .map(|t| Caller {
                name: t.name.clone(),
                role: t.role,
                sha256: Some(sha256_hex(presented.as_bytes())),
            })
    }

    /// Whether `caller`'s token is still in force (not revoked, not
    /// expired): what a connection it opened checks on every
    /// [`Access::revocations`] change.
    pub fn in_force(&self, caller: &Caller) -> bool {
        let Some(sha256) = &caller.sha256 else {
            return true;
        };
        let tokens = self.by_hash.read().unwrap();
        tokens
            .get(sha256)
            .is_some_and(|t| !t.is_spent(crate::clock::unix_millis()))
    }

    /// Changes at every revocation.
    pub fn revocations(&self) -> tokio::sync::watch::Receiver<u64> {
        self.revocations.subscribe()
    }

    /// The minted token `presented` is, if it is in force (neither revoked
    /// nor expired).
    pub fn find(&self, presented: &str) -> Option<TokenInfo> {
        // A hash lookup: the time it takes says nothing of the secret.
        let tokens = self.by_hash.read().unwrap();
        tokens
            .get(&sha256_hex(presented.as_bytes()))
            .filter(|t| !t.is_spent(crate::clock::unix_millis()))
            .cloned()
    }

    /// Mints an API token of `role` called `name` (the role's name when
    /// `None`); returns it as listed and its secret, which exists nowhere
    /// else.
    ///
    /// Fails when the store cannot keep it.
    pub async fn create(
        &self,
        role: Role,
        name: Option<String>,
    ) -> Result<(TokenInfo, String), StoreError> {
        self.mint(role, name, None, None).await
    }

    /// Mints a token of any role: [`Access::create`], with an expiry and,
    /// for a joined worker's session, the slot it holds.
    ///
    /// Fails when the store cannot keep it.
    pub async fn mint(
        &self,
        role: Role,
        name: Option<String>,
        expires_at: Option<i64>,
        session: Option<SessionGrant>,
    ) -> Result<(TokenInfo, String), StoreError> {
        let secret = fresh_token();
        let sha256 = sha256_hex(secret.as_bytes());
        let info = TokenInfo {
            id: sha256[..16].to_owned(),
            name: name.unwrap_or_else(|| role.to_string()),
            role,
            created_at: crate::clock::unix_millis(),
            revoked: false,
            expires_at,
        };
        let stored = StoredToken {
            info: info.clone(),
            sha256: sha256.clone(),
            session,
        };
        self.store.put_token(&stored).await?;
        if let Some(grant) = stored.session {
            self.sessions.write().unwrap().insert(sha256.clone(), grant);
        }
        self.by_hash.write().unwrap().insert(sha256, info.clone());
        Ok((info, secret))
    }

    /// Revokes token `id`; `None` when there is no such token.
    ///
    /// Fails when the store cannot keep the revocation (the token then
    /// stays in force).
    pub async fn revoke(&self, id: &str) -> Result<Option<TokenInfo>, StoreError> {
        let found = {
            let tokens = self.by_hash.read().unwrap();
            tokens
                .iter()
                .find(|(_, t)| t.id == id)
                .map(|(h, t)| (h.clone(), t.clone()))
        };
        let Some((sha256, mut info)) = found else {
            return Ok(None);
        };
        info.revoked = true;
        let session = self.sessions.read().unwrap().get(&sha256).cloned();
        let stored = StoredToken {
            info: info.clone(),
            sha256: sha256.clone(),
            session,
        };
        self.store.put_token(&stored).await?;
        self.by_hash
            .write()
            .unwrap()
            .insert(sha256.clone(), info.clone());
        // A revoked worker session holds nothing any more.
        self.sessions.write().unwrap().remove(&sha256);
        self.revocations.send_modify(|n| *n += 1);
        Ok(Some(info))
    }

    /// Ends worker session `id` for good: revoked (so what it holds open
    /// closes) and then forgotten, in the store and here, so that the
    /// sessions of workers that rejoin do not pile up. `None` when there is
    /// no such session.
    ///
    /// Fails when the store cannot forget it (it stays revoked).
    pub async fn end_session(&self, id: &str) -> Result<Option<TokenInfo>, StoreError> {
        let Some(info) = self.revoke(id).await? else {
            return Ok(None);
        };
        self.store.delete_token(id).await?;
        let sha256 = {
            let tokens = self.by_hash.read().unwrap();
            tokens
                .iter()
                .find(|(_, t)| t.id == id)
                .map(|(h, _)| h.clone())
        };
        if let Some(sha256) = sha256 {
            self.by_hash.write().unwrap().remove(&sha256);
            self.sessions.write().unwrap().remove(&sha256);
        }
        Ok(Some(info))
    }

    /// Every minted token whose role is one of `roles`, oldest first.
    pub fn list(&self, roles: &[Role]) -> Vec<TokenInfo> {
        let mut tokens: Vec<TokenInfo> = self
            .by_hash
            .read()
            .unwrap()
            .values()
            .filter(|t| roles.contains(&t.role))
            .cloned()
            .collect();
        tokens.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        tokens
    }

    /// The sessions of joined workers that are in force, with their token's
    /// hash.
    pub fn sessions(&self) -> Vec<(TokenInfo, String, SessionGrant)> {
        let tokens = self.by_hash.read().unwrap();
        let now = crate::clock::unix_millis();
        self.sessions
            .read()
            .unwrap()
            .iter()
            .filter_map(|(sha256, grant)| {
                let info = tokens.get(sha256).filter(|t| !t.is_spent(now))?;
                Some((info.clone(), sha256.clone(), grant.clone()))
            })
            .collect()
    }
}

/// The token of an `authorization: Bearer ...` header, if there is one:
/// how the API and the join endpoint both take theirs.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// Every `/api/v1` route, by the pattern the router matched it with, and
/// the role each method on it needs. The API's authorization reads this
/// table and nothing else ([`required`]): the role follows from the route
/// that matched, never from what the raw path happens to contain, so a
/// tenant named `kv` or `events` is just a tenant. A test in
/// `master::api` walks the router and fails when a route has no line
/// here, or a line names no route.
pub static ROUTES: &[(Method, &str, Role)] = &[
    (Method::GET, "/api/v1/workers", Role::Read),
    (Method::GET, "/api/v1/status", Role::Read),
    (Method::GET, "/api/v1/traffic", Role::Read),
    (Method::GET, "/api/v1/console", Role::Read),
    (Method::GET, "/api/v1/tenants", Role::Read),
    // The binary client API is a GET that dispatches.
    (Method::GET, "/api/v1/stream", Role::App),
    // GraphQL reads only: a query or a subscription (a WebSocket on GET).
    (Method::POST, "/api/v1/graphql", Role::Read),
    (Method::GET, "/api/v1/graphql", Role::Read),
    (
        Method::POST,
        "/api/v1/tenants/{type}/{id}/events",
        Role::App,
    ),
    (
        Method::POST,
        "/api/v1/tenants/{type}/{id}/scripts",
        Role::Admin,
    ),
    (
        Method::DELETE,
        "/api/v1/tenants/{type}/{id}/vm",
        Role::Admin,
    ),
    (Method::GET, "/api/v1/tenants/{type}/{id}/state", Role::Read),
    (Method::PUT, "/api/v1/tenants/{type}/{id}/state", Role::App),
    (Method::GET, "/api/v1/tenants/{type}/{id}/kv", Role::Read),
    (
        Method::GET,
        "/api/v1/tenants/{type}/{id}/schedules",
        Role::Read,
    ),
    (
        Method::PUT,
        "/api/v1/tenants/{type}/{id}/schedules/{name}",
        Role::App,
    ),
    (
        Method::DELETE,
        "/api/v1/tenants/{type}/{id}/schedules/{name}",
        Role::App,
    ),
    (
        Method::GET,
        "/api/v1/tenants/{type}/{id}/timers",
        Role::Read,
    ),
    (
        Method::GET,
        "/api/v1/tenants/{type}/{id}/kv/{scope}/{key}",
        Role::Read,
    ),
    (
        Method::PUT,
        "/api/v1/tenants/{type}/{id}/kv/{scope}/{key}",
        Role::App,
    ),
    (
        Method::DELETE,
        "/api/v1/tenants/{type}/{id}/kv/{scope}/{key}",
        Role::App,
    ),
    (Method::GET, "/api/v1/plugins", Role::Read),
    (Method::PUT, "/api/v1/plugins/{name}", Role::Admin),
    (Method::DELETE, "/api/v1/plugins/{name}", Role::Admin),
    (Method::GET, "/api/v1/plugins/{name}/source", Role::Admin),
    (Method::POST, "/api/v1/catalogue", Role::Admin),
    (Method::GET, "/api/v1/plugins/{name}/vars", Role::Admin),
    (
        Method::PUT,
        "/api/v1/plugins/{name}/vars/{var}",
        Role::Admin,
    ),
    (
        Method::DELETE,
        "/api/v1/plugins/{name}/vars/{var}",
        Role::Admin,
    ),
    (Method::GET, "/api/v1/filters", Role::Read),
    (Method::PUT, "/api/v1/filters/{name}", Role::Admin),
    (Method::DELETE, "/api/v1/filters/{name}", Role::Admin),
    (Method::GET, "/api/v1/tokens", Role::Admin),
    (Method::POST, "/api/v1/tokens", Role::Admin),
    (Method::DELETE, "/api/v1/tokens/{id}", Role::Admin),
    (Method::GET, "/api/v1/join-tokens", Role::Admin),
    (Method::POST, "/api/v1/join-tokens", Role::Admin),
    (Method::DELETE, "/api/v1/join-tokens/{id}", Role::Admin),
    (Method::GET, "/api/v1/audit", Role::Admin),
];

/// The role `method` on the route the router matched as `route` needs
/// ([`ROUTES`]); `admin` for a route the table does not know, so that a
/// route added without a line is closed rather than open.
pub fn required(method: &Method, route: &str) -> Role {
    listed(method, route).unwrap_or(Role::Admin)
}

/// The role [`ROUTES`] lists for `method` on `route`, if it lists one
/// (the open routes have none).
pub fn listed(method: &Method, route: &str) -> Option<Role> {
    // The router answers HEAD with the GET handler.
    let method = if method == Method::HEAD {
        &Method::GET
    } else {
        method
    };
    ROUTES
        .iter()
        .find(|(m, r, _)| m == method && *r == route)
        .map(|(_, _, role)| *role)
}

/// Whether the answer to `method` on the matched `route` goes to the audit
/// log: every change, allowed or refused, but dispatches.
pub fn audited(method: &Method, route: &str) -> bool {
    let reads = method == Method::GET || method == Method::HEAD;
    let dispatch = method == Method::POST && route == "/api/v1/tenants/{type}/{id}/events";
    let graphql = route == "/api/v1/graphql";
    !reads && !dispatch && !graphql
}

/// `type:id` when `path` names a tenant.
pub fn tenant_of(path: &str) -> Option<String> {
    let mut parts = path.strip_prefix("/api/v1/tenants/")?.split('/');
    let (kind, id) = (parts.next()?, parts.next()?);
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    Some(format!("{}:{}", decode(kind), decode(id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_needs_the_role_the_docs_say() {
        let t = "/api/v1/tenants/{type}/{id}";
        for (method, route, role) in [
            (Method::GET, "/api/v1/workers", Role::Read),
            (Method::HEAD, "/api/v1/workers", Role::Read),
            (
                Method::GET,
                &format!("{t}/kv/{{scope}}/{{key}}"),
                Role::Read,
            ),
            (Method::GET, "/api/v1/tokens", Role::Admin),
            (Method::GET, "/api/v1/join-tokens", Role::Admin),
            (Method::GET, "/api/v1/audit", Role::Admin),
            (Method::GET, "/api/v1/stream", Role::App),
            // GraphQL reads only: a query or a subscription (a WebSocket on GET).
            (Method::POST, "/api/v1/graphql", Role::Read),
            (Method::GET, "/api/v1/graphql", Role::Read),
            (Method::POST, &format!("{t}/events"), Role::App),
            (Method::PUT, &format!("{t}/kv/{{scope}}/{{key}}"), Role::App),
            (
                Method::DELETE,
                &format!("{t}/kv/{{scope}}/{{key}}"),
                Role::App,
            ),
            (Method::PUT, &format!("{t}/state"), Role::App),
            (Method::POST, &format!("{t}/scripts"), Role::Admin),
            (Method::DELETE, &format!("{t}/vm"), Role::Admin),
            (Method::PUT, "/api/v1/plugins/{name}", Role::Admin),
            (Method::DELETE, "/api/v1/filters/{name}", Role::Admin),
            (Method::POST, "/api/v1/tokens", Role::Admin),
            // Not a route: closed.
            (Method::GET, "/api/v1/tenants/{type}/{id}/kv/x", Role::Admin),
            (Method::PATCH, "/api/v1/workers", Role::Admin),
        ] {
            assert_eq!(required(&method, route), role, "{method} {route}");
        }
        assert!(!audited(&Method::POST, &format!("{t}/events")));
        assert!(!audited(&Method::GET, "/api/v1/workers"));
        assert!(audited(&Method::POST, &format!("{t}/scripts")));
        assert!(audited(&Method::PUT, &format!("{t}/kv/{{scope}}/{{key}}")));
        assert_eq!(
            tenant_of("/api/v1/tenants/user/42/kv/s/k").as_deref(),
            Some("user:42")
        );
        assert_eq!(
            tenant_of("/api/v1/tenants/a%20b/1/vm").as_deref(),
            Some("a b:1")
        );
        assert_eq!(tenant_of("/api/v1/plugins/x"), None);
        assert!(Role::Admin > Role::App && Role::App > Role::Read);
    }

    #[tokio::test]
    async fn an_ended_session_is_forgotten_and_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(crate::master::store::SledStore::open(&dir.path().join("store")).unwrap());
        let access = Access::load("admin".into(), Arc::clone(&store)).unwrap();
        let mut rejoined = Vec::new();
        for _ in 0..5 {
            let grant = SessionGrant {
                slot: 1,
                join_token: "j".into(),
                host: "h".into(),
                pid: 1,
            };
            let (info, secret) = access
                .mint(Role::Worker, None, None, Some(grant))
                .await
                .unwrap();
            rejoined.push(secret);
            access.end_session(&info.id).await.unwrap().unwrap();
        }
        assert!(access.sessions().is_empty());
        assert!(store.tokens().unwrap().is_empty(), "ended sessions pile up");
        for secret in &rejoined {
            assert!(access.find(secret).is_none());
        }
        // And after a restart too.
        let again = Access::load("admin".into(), store).unwrap();
        assert!(again.sessions().is_empty());
    }
}
