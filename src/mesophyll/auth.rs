//! Who a worker is, and how it proves it: a worker id and a token, on the
//! WebSocket upgrade (headers, or `?id=&token=` as in the original hub) and
//! on every DB call (headers).
//!
//! The master hands its own children their token through [`TOKEN_ENV`]
//! (never argv, which `ps` shows) and its pid through [`PARENT_ENV`], so a
//! child can tell when its master is gone.

use axum::http::{HeaderMap, StatusCode};
use std::collections::HashMap;

/// The header that names the calling worker.
pub const WORKER_ID_HEADER: &str = "x-meshplay-worker-id";
/// The header that carries the calling worker's token.
pub const WORKER_TOKEN_HEADER: &str = "x-meshplay-token";

/// The environment variable through which a master passes a worker its
/// token.
pub const TOKEN_ENV: &str = "MESHPLAY_WORKER_TOKEN";
/// Set by a master on the workers it spawns: the master's pid. The worker
/// exits when its parent is no longer that process.
pub const PARENT_ENV: &str = "MESHPLAY_PARENT_PID";

/// What a caller claims to be. The token is never logged: `Debug` hides it.
pub struct Credentials {
    /// `None` when absent or not a number.
    pub id: Option<u32>,
    /// The worker's token; never logged.
    pub token: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("id", &self.id)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// Reads the credentials from `headers`, falling back to the `id` and
    /// `token` query parameters when `query` is given.
    pub fn read(headers: &HeaderMap, query: Option<&HashMap<String, String>>) -> Self {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let param = |name: &str| query.and_then(|q| q.get(name)).map(String::as_str);
        Credentials {
            id: header(WORKER_ID_HEADER)
                .or_else(|| param("id"))
                .and_then(|s| s.parse().ok()),
            token: header(WORKER_TOKEN_HEADER)
                .or_else(|| param("token"))
                .unwrap_or("")
                .to_owned(),
        }
    }
}

/// Why a caller was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No slot has this id (or none was given): 404.
    #[error("unknown worker id")]
    UnknownWorker,
    /// The slot exists and the token is not its token: 401.
    #[error("wrong token")]
    WrongToken,
}

impl Refusal {
    /// The HTTP status the design gives this refusal.
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::UnknownWorker => StatusCode::NOT_FOUND,
            Refusal::WrongToken => StatusCode::UNAUTHORIZED,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_win_over_the_query() {
        let mut headers = HeaderMap::new();
        headers.insert(WORKER_ID_HEADER, "3".parse().unwrap());
        let query = HashMap::from([
            ("id".to_string(), "4".to_string()),
            ("token".to_string(), "s3cret".to_string()),
        ]);
        let c = Credentials::read(&headers, Some(&query));
        assert_eq!(c.id, Some(3));
        assert_eq!(c.token, "s3cret");
        assert!(!format!("{c:?}").contains("s3cret"));
        let c = Credentials::read(&HeaderMap::new(), None);
        assert_eq!((c.id, c.token.as_str()), (None, ""));
    }
}
