//! The bodies of the access routes: API tokens (`/api/v1/tokens`), join
//! tokens and the workers that joined with them (`/api/v1/join-tokens`),
//! and the audit log (`/api/v1/audit`).

use super::Role;
use serde::{Deserialize, Serialize};

/// `POST /api/v1/tokens`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// What the token may do.
    pub role: Role,
    /// A name for people and the audit log (default: the role).
    #[serde(default)]
    pub name: Option<String>,
}

/// A token as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct TokenInfo {
    /// Its id (from its hash; says nothing of the secret).
    pub id: String,
    /// Its name.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Revoked tokens are refused (401) and stay listed.
    pub revoked: bool,
    /// Unix milliseconds after which it is refused (join tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

impl TokenInfo {
    /// Whether it is refused at `now` (unix milliseconds).
    pub fn is_spent(&self, now: i64) -> bool {
        self.revoked || self.expires_at.is_some_and(|at| now >= at)
    }
}

/// `POST /api/v1/join-tokens`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateJoinToken {
    /// Seconds it lets workers join for (default: 1 hour). The sessions it
    /// gives outlive it; revoking it ends them.
    #[serde(default)]
    pub ttl_s: Option<u64>,
    /// A name for people and the audit log (default: `join`).
    #[serde(default)]
    pub name: Option<String>,
}

/// A worker that joined with a join token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct JoinedWorker {
    /// The slot it serves.
    pub worker_id: u32,
    /// The hostname it reported.
    pub host: String,
    /// Its process id there.
    pub pid: u32,
    /// The join token it came with (its id).
    pub join_token: String,
    /// Unix milliseconds.
    pub joined_at: i64,
}

/// A join token as `GET /api/v1/join-tokens` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct JoinTokenInfo {
    #[serde(flatten)]
    /// The token as listed.
    pub info: TokenInfo,
    /// The workers holding a slot through it now.
    pub workers: Vec<JoinedWorker>,
}

/// `GET /api/v1/join-tokens`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct JoinTokenList {
    /// Every join token, revoked ones too.
    pub tokens: Vec<JoinTokenInfo>,
}

/// 201 answer of `POST /api/v1/tokens`: the secret, shown this once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct CreatedToken {
    /// The token as listed.
    #[serde(flatten)]
    pub info: TokenInfo,
    /// The bearer token itself: 64 characters, stored only hashed.
    pub token: String,
}

/// `GET /api/v1/tokens`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct TokenList {
    /// Every token, revoked ones too, oldest first.
    pub tokens: Vec<TokenInfo>,
}

/// One change made through the API (or refused), as the audit log keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    /// Its place in the log, rising.
    pub seq: u64,
    /// Unix milliseconds.
    pub at: i64,
    /// The name of the token that asked (`admin-token` for the data
    /// directory's).
    pub token: String,
    /// The HTTP method.
    pub method: String,
    /// The path asked for.
    pub route: String,
    /// `type:id` when the route names a tenant.
    pub tenant: Option<String>,
    /// The answer's HTTP status.
    pub status: u16,
}

/// `GET /api/v1/audit?after=&limit=`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct AuditPage {
    /// Oldest first.
    pub entries: Vec<AuditEntry>,
    /// The `after` of the next page, when there may be one.
    pub next: Option<u64>,
}
