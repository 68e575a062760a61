//! How long the audit log keeps its entries.
//!
//! Every change made through the API, allowed or refused, is appended to
//! the audit log ([`crate::master::api`]'s `auth`), and so is every refused
//! attempt of a token too small for its route: a `read` token can add an
//! entry per request. Entries are bounded in size (their path and tenant
//! are cut at 512 bytes), and here in age: entries older than the
//! retention (`--audit-retention-days`, 90) are deleted when the master
//! starts and every hour after.

use crate::master::store::{Store, StoreError};
use std::sync::Arc;
use std::time::Duration;

/// Entries read at a time while looking for the newest one to delete.
const PAGE: usize = 1000;

/// How often the log is trimmed.
const EVERY: Duration = Duration::from_secs(3600);

/// Deletes the entries written before `cutoff_ms` (Unix milliseconds);
/// returns how many went.
///
/// Entries are in `seq` order, which is the order they were written in, so
/// the oldest ones are read from the front until the first that is young
/// enough. Fails when the store cannot be read or written.
pub async fn trim(store: &dyn Store, cutoff_ms: i64) -> Result<usize, StoreError> {
    let mut after = None;
    let mut last_old = None;
    let mut old = 0;
    'pages: loop {
        let page = store.audit(after, PAGE)?;
        let full = page.len() == PAGE;
        for entry in page {
            if entry.at >= cutoff_ms {
                break 'pages;
            }
            last_old = Some(entry.seq);
            after = Some(entry.seq);
            old += 1;
        }
        if !full {
            break;
        }
    }
    if let Some(seq) = last_old {
        store.audit_delete_through(seq).await?;
    }
    Ok(old)
}

/// Trims the log now and every hour, keeping `retention`, for as long as
/// the process runs.
pub fn keep(
    store: Arc<dyn Store>,
    retention: Duration,
    leadership: crate::master::leadership::LeaderGate,
) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(EVERY);
        loop {
            every.tick().await;
            if !leadership.leads() {
                continue;
            }
            let cutoff = crate::clock::unix_millis() - retention.as_millis() as i64;
            match trim(store.as_ref(), cutoff).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "audit entries past their retention deleted"),
                Err(e) => tracing::warn!("cannot trim the audit log: {e}"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::master::store::SledStore;
    use crate::rest::AuditEntry;

    #[tokio::test]
    async fn entries_past_the_cutoff_go_and_the_rest_stay_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(&dir.path().join("store")).unwrap();
        for at in 0..2500 {
            store
                .audit_append(AuditEntry {
                    seq: 0,
                    at,
                    token: "t".into(),
                    method: "PUT".into(),
                    route: "/x".into(),
                    tenant: None,
                    status: 200,
                })
                .await
                .unwrap();
        }
        assert_eq!(trim(&store, 2100).await.unwrap(), 2100);
        let left = store.audit(None, 10_000).unwrap();
        assert_eq!(left.len(), 400);
        assert_eq!(left[0].at, 2100);
        assert!(left.windows(2).all(|w| w[0].seq < w[1].seq));
        assert_eq!(trim(&store, 2100).await.unwrap(), 0, "nothing more to trim");
    }
}
