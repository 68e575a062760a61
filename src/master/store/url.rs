//! Where the store is, as one string: `sled:PATH` (embedded, the default
//! `sled:<data-dir>/store`) or `postgres://user[:password]@host[:port]/db`
//! (`postgresql://` too). `serve --store` and `store copy` take it.
//!
//! The password of a URL is a secret: [`StoreUrl::redacted`] is what logs,
//! `status` and the dashboard show.

use super::{PostgresStore, SledStore, Store, StoreError};
use std::path::PathBuf;
use std::sync::Arc;

/// A parsed store location.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// The embedded store in this directory.
    Sled(PathBuf),
    /// A PostgreSQL database, as given.
    Postgres(String),
}

impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl StoreUrl {
    /// Reads `url`; fails with a message naming the accepted forms.
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        if let Some(path) = url.strip_prefix("sled:") {
            if path.is_empty() {
                return Err(StoreError::Backend(
                    "sled: needs a path (sled:/var/lib/meshplay/store)".into(),
                ));
            }
            return Ok(StoreUrl::Sled(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(StoreUrl::Postgres(url.to_owned()));
        }
        Err(StoreError::Backend(format!(
            "unknown store {:?}: expected sled:PATH or postgres://user@host/db",
            redact(url)
        )))
    }

    /// The URL with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        match self {
            StoreUrl::Sled(path) => format!("sled:{}", path.display()),
            StoreUrl::Postgres(url) => redact(url),
        }
    }

    /// Opens the store (for PostgreSQL: connects and migrates). Must run
    /// inside a multi-threaded tokio runtime.
    ///
    /// Fails as [`SledStore::open`] or [`PostgresStore::open`] do.
    pub async fn open(&self) -> Result<Arc<dyn Store>, StoreError> {
        Ok(match self {
            StoreUrl::Sled(path) => Arc::new(SledStore::open(path)?),
            StoreUrl::Postgres(url) => Arc::new(PostgresStore::open(url).await?),
        })
    }
}

/// `scheme://user:secret@host/...` -> `scheme://user:***@host/...`, and a
/// `password=` query parameter likewise.
fn redact(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(start) = out.find("://").map(|i| i + 3) {
        let authority_end = out[start..].find('/').map_or(out.len(), |i| start + i);
        if let Some(at) = out[start..authority_end].rfind('@').map(|i| start + i)
            && let Some(colon) = out[start..at].find(':').map(|i| start + i)
        {
            out.replace_range(colon + 1..at, "***");
        }
    }
    if let Some(p) = out.find("password=") {
        let value = p + "password=".len();
        let end = out[value..].find('&').map_or(out.len(), |i| value + i);
        out.replace_range(value..end, "***");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_passwords_never_show() {
        assert_eq!(
            StoreUrl::parse("sled:/tmp/x").unwrap(),
            StoreUrl::Sled("/tmp/x".into())
        );
        let pg = StoreUrl::parse("postgres://app:s3cret@db:5432/meshplay").unwrap();
        assert_eq!(pg.redacted(), "postgres://app:***@db:5432/meshplay");
        assert!(!format!("{pg:?}").contains("s3cret"));
        let q = StoreUrl::parse("postgresql://app@db/m?password=s3cret&sslmode=disable").unwrap();
        assert_eq!(
            q.redacted(),
            "postgresql://app@db/m?password=***&sslmode=disable"
        );
        assert_eq!(
            StoreUrl::parse("postgres://db/m").unwrap().redacted(),
            "postgres://db/m"
        );
        for bad in ["sled:", "mysql://a:b@c/d", "/var/lib/store"] {
            let e = StoreUrl::parse(bad).unwrap_err().to_string();
            assert!(!e.contains(":b@"), "{e}");
        }
    }
}
