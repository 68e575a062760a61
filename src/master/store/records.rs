//! What the store writes of the API's own types, in types of its own.
//!
//! Tokens and audit entries are shown through the REST API
//! ([`TokenInfo`], [`AuditEntry`]), and both stores used to write those
//! types as they were: a field added to a REST answer changed the bytes on
//! disk. The stores now write [`TokenRecord`] and [`AuditRecord`], which
//! change only when the on-disk format does, and convert at their edge.
//! Both encode exactly as the REST types did when they were split off
//! (MessagePack maps, the same field names), so data written before reads
//! back; the tests hold records written by that format.

use super::{SessionGrant, StoredToken};
use crate::rest::{AuditEntry, Role, TokenInfo};
use serde::{Deserialize, Serialize};

/// A token as the stores keep it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct TokenRecord {
    info: TokenInfoRecord,
    sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    session: Option<SessionRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct TokenInfoRecord {
    id: String,
    name: String,
    role: RoleRecord,
    created_at: i64,
    revoked: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at: Option<i64>,
}

/// A role by its name on disk.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RoleRecord {
    Worker,
    Join,
    Read,
    App,
    Admin,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SessionRecord {
    slot: u32,
    join_token: String,
    host: String,
    pid: u32,
}

/// An audit entry as the stores keep it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct AuditRecord {
    seq: u64,
    at: i64,
    token: String,
    method: String,
    route: String,
    tenant: Option<String>,
    status: u16,
}

impl From<Role> for RoleRecord {
    fn from(r: Role) -> Self {
        match r {
            Role::Worker => RoleRecord::Worker,
            Role::Join => RoleRecord::Join,
            Role::Read => RoleRecord::Read,
            Role::App => RoleRecord::App,
            Role::Admin => RoleRecord::Admin,
        }
    }
}

impl From<RoleRecord> for Role {
    fn from(r: RoleRecord) -> Self {
        match r {
            RoleRecord::Worker => Role::Worker,
            RoleRecord::Join => Role::Join,
            RoleRecord::Read => Role::Read,
            RoleRecord::App => Role::App,
            RoleRecord::Admin => Role::Admin,
        }
    }
}

impl From<&StoredToken> for TokenRecord {
    fn from(t: &StoredToken) -> Self {
        let i = &t.info;
        TokenRecord {
            info: TokenInfoRecord {
                id: i.id.clone(),
                name: i.name.clone(),
                role: i.role.into(),
                created_at: i.created_at,
                revoked: i.revoked,
                expires_at: i.expires_at,
            },
            sha256: t.sha256.clone(),
            session: t.session.as_ref().map(|s| SessionRecord {
                slot: s.slot,
                join_token: s.join_token.clone(),
                host: s.host.clone(),
                pid: s.pid,
            }),
        }
    }
}

impl From<TokenRecord> for StoredToken {
    fn from(r: TokenRecord) -> Self {
        let i = r.info;
        StoredToken {
            info: TokenInfo {
                id: i.id,
                name: i.name,
                role: i.role.into(),
                created_at: i.created_at,
                revoked: i.revoked,
                expires_at: i.expires_at,
            },
            sha256: r.sha256,
            session: r.session.map(|s| SessionGrant {
                slot: s.slot,
                join_token: s.join_token,
                host: s.host,
                pid: s.pid,
            }),
        }
    }
}

impl From<&AuditEntry> for AuditRecord {
    fn from(e: &AuditEntry) -> Self {
        AuditRecord {
            seq: e.seq,
            at: e.at,
            token: e.token.clone(),
            method: e.method.clone(),
            route: e.route.clone(),
            tenant: e.tenant.clone(),
            status: e.status,
        }
    }
}

impl From<AuditRecord> for AuditEntry {
    fn from(r: AuditRecord) -> Self {
        AuditEntry {
            seq: r.seq,
            at: r.at,
            token: r.token,
            method: r.method,
            route: r.route,
            tenant: r.tenant,
            status: r.status,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::master::store::keys::{decode, encode};

    /// A session token as the stores wrote it before records had types of
    /// their own (MessagePack, hex).
    const SESSION_TOKEN: &str = "83a4696e666f86a26964a6736573732d31a46e616d65a86a6f696e65642d30a4\
         726f6c65a6776f726b6572aa637265617465645f6174cf00000199c82cc000a7\
         7265766f6b6564c2aa657870697265735f6174cf00000199c82cd000a6736861\
         323536a46162636ea773657373696f6e84a4736c6f7400aa6a6f696e5f746f6b\
         656ea36a2d31a4686f7374a168a370696401";

    /// An audit entry as the stores wrote it then.
    const AUDIT_ENTRY: &str = "87a373657107a26174cf00000199c82cc000a5746f6b656eab61646d696e2d74\
         6f6b656ea66d6574686f64a3505554a5726f757465b12f6170692f76312f706c\
         7567696e732f78a674656e616e74c0a6737461747573ccc8";

    fn session_token() -> StoredToken {
        StoredToken {
            info: TokenInfo {
                id: "sess-1".into(),
                name: "joined-0".into(),
                role: Role::Worker,
                created_at: 1_760_000_000_000,
                revoked: false,
                expires_at: Some(1_760_000_004_096),
            },
            sha256: "abcn".into(),
            session: Some(SessionGrant {
                slot: 0,
                join_token: "j-1".into(),
                host: "h".into(),
                pid: 1,
            }),
        }
    }

    fn audit_entry() -> AuditEntry {
        AuditEntry {
            seq: 7,
            at: 1_760_000_000_000,
            token: "admin-token".into(),
            method: "PUT".into(),
            route: "/api/v1/plugins/x".into(),
            tenant: None,
            status: 200,
        }
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn unhex(text: &str) -> Vec<u8> {
        let text: String = text.chars().filter(char::is_ascii_hexdigit).collect();
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn a_token_written_by_the_old_format_reads_back() {
        let record: TokenRecord = decode(&unhex(SESSION_TOKEN)).unwrap();
        assert_eq!(StoredToken::from(record), session_token());
        let written = encode(&TokenRecord::from(&session_token()));
        assert_eq!(
            hex(&written),
            hex(&unhex(SESSION_TOKEN)),
            "the format changed"
        );
    }

    #[test]
    fn an_audit_entry_written_by_the_old_format_reads_back() {
        let old = unhex(AUDIT_ENTRY);
        let record: AuditRecord = decode(&old).unwrap();
        assert_eq!(AuditEntry::from(record.clone()), audit_entry());
        assert_eq!(hex(&encode(&record)), hex(&old), "the format changed");
    }
}
