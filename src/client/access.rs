//! The admin's calls: API tokens, join tokens and the audit log.

use super::{ApiClient, ApiClientError};
use crate::rest::{
    AuditPage, CreateJoinToken, CreateToken, CreatedToken, JoinTokenList, Role, TokenInfo,
    TokenList,
};
use crate::uri::encode_component;
use hyper::Method;

impl ApiClient {
    /// `POST /api/v1/tokens`: a new token of `role`; its secret is in the
    /// answer and nowhere else.
    pub async fn create_token(
        &self,
        role: Role,
        name: Option<&str>,
    ) -> Result<CreatedToken, ApiClientError> {
        let body = CreateToken {
            role,
            name: name.map(str::to_owned),
        };
        self.call(Method::POST, "/api/v1/tokens", Some(&body))
            .await
            .map(|(_, v)| v)
    }

    /// `GET /api/v1/tokens`: every token, without secrets.
    pub async fn tokens(&self) -> Result<TokenList, ApiClientError> {
        self.call(Method::GET, "/api/v1/tokens", None::<&()>)
            .await
            .map(|(_, v)| v)
    }

    /// `DELETE /api/v1/tokens/{id}`.
    pub async fn revoke_token(&self, id: &str) -> Result<TokenInfo, ApiClientError> {
        let path = format!("/api/v1/tokens/{}", encode_component(id));
        self.call(Method::DELETE, &path, None::<&()>)
            .await
            .map(|(_, v)| v)
    }

    /// `GET /api/v1/audit?after=&limit=`: the audit log, oldest first.
    pub async fn audit(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<AuditPage, ApiClientError> {
        let mut path = format!("/api/v1/audit?limit={limit}");
        if let Some(after) = after {
            path.push_str(&format!("&after={after}"));
        }
        self.call(Method::GET, &path, None::<&()>)
            .await
            .map(|(_, v)| v)
    }

    /// `POST /api/v1/join-tokens`: a join token that lets workers join for
    /// `ttl_s` seconds (the master's default when `None`); its secret is in
    /// the answer and nowhere else.
    pub async fn create_join_token(
        &self,
        ttl_s: Option<u64>,
        name: Option<&str>,
    ) -> Result<CreatedToken, ApiClientError> {
        let body = CreateJoinToken {
            ttl_s,
            name: name.map(str::to_owned),
        };
        self.call(Method::POST, "/api/v1/join-tokens", Some(&body))
            .await
            .map(|(_, v)| v)
    }

    /// `GET /api/v1/join-tokens`: every join token and the workers that
    /// joined with it.
    pub async fn join_tokens(&self) -> Result<JoinTokenList, ApiClientError> {
        self.call(Method::GET, "/api/v1/join-tokens", None::<&()>)
            .await
            .map(|(_, v)| v)
    }

    /// `DELETE /api/v1/join-tokens/{id}`: revokes it and the sessions it
    /// gave.
    pub async fn revoke_join_token(&self, id: &str) -> Result<TokenInfo, ApiClientError> {
        let path = format!("/api/v1/join-tokens/{}", encode_component(id));
        self.call(Method::DELETE, &path, None::<&()>)
            .await
            .map(|(_, v)| v)
    }
}
