//! Request-id correlation: matching a worker's `DispatchResponse` to the
//! caller that is waiting for it.
//!
//! Each awaited request registers a random u64 id and a oneshot sender; the
//! connection's reader completes it when the answer arrives. Three rules keep
//! callers from hanging:
//! - every wait has a deadline ([`Pending::wait`]);
//! - when a connection ends, [`Correlation::fail_all`] fails every request
//!   pending on it at once;
//! - a caller that gives up (deadline, or its future dropped) removes its
//!   entry, so the map cannot grow with abandoned requests.

use crate::mesophyll::message::{ErrorKind, RemoteError};
use crate::mesophyll::packed::Packed;
use dashmap::DashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::oneshot;

/// What a waiting caller eventually gets.
pub type Reply = Result<Packed, RemoteError>;

/// Why a correlated request produced no reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    /// The deadline passed before the worker answered.
    #[error("no answer within {0:?}")]
    DeadlineExceeded(Duration),
    /// The connection the request was sent on ended.
    #[error("worker unavailable: {0}")]
    WorkerUnavailable(String),
}

/// The table of requests awaiting an answer on one connection.
#[derive(Debug, Default)]
pub struct Correlation {
    waiting: DashMap<u64, oneshot::Sender<Result<Reply, WaitError>>>,
    closed: AtomicBool,
}

impl Correlation {
    /// An empty table.
    pub fn new() -> Arc<Self> {
        Arc::new(Correlation::default())
    }

    /// Registers a new request under a fresh random id.
    ///
    /// Fails with [`WaitError::WorkerUnavailable`] when the connection has
    /// already ended, so a request is never registered on a dead table.
    pub fn register(self: &Arc<Self>) -> Result<Pending, WaitError> {
        let (tx, rx) = oneshot::channel();
        loop {
            let id: u64 = rand::random();
            if let dashmap::Entry::Vacant(slot) = self.waiting.entry(id) {
                slot.insert(tx);
                break if self.closed.load(Ordering::Acquire) {
                    // fail_all may have run between our check and insert.
                    self.waiting.remove(&id);
                    Err(WaitError::WorkerUnavailable("connection closed".into()))
                } else {
                    Ok(Pending {
                        id,
                        rx,
                        table: Arc::clone(self),
                    })
                };
            }
        }
    }

    /// Delivers a reply. Returns false when nobody waits for `id` any more
    /// (the caller gave up, or the id was never issued).
    pub fn complete(&self, id: u64, reply: Reply) -> bool {
        match self.waiting.remove(&id) {
            Some((_, tx)) => tx.send(Ok(reply)).is_ok(),
            None => false,
        }
    }

    /// Fails every pending request with `reason` and refuses new ones;
    /// returns how many were failed.
    pub fn fail_all(&self, reason: &str) -> usize {
        self.closed.store(true, Ordering::Release);
        let ids: Vec<u64> = self.waiting.iter().map(|e| *e.key()).collect();
        let mut failed = 0;
        for id in ids {
            if let Some((_, tx)) = self.waiting.remove(&id) {
                let _ = tx.send(Err(WaitError::WorkerUnavailable(reason.to_string())));
                failed += 1;
            }
        }
        failed
    }

    /// Requests awaiting an answer.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// True when nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

/// One registered request. Dropping it unregisters the id.
#[derive(Debug)]
pub struct Pending {
    id: u64,
    rx: oneshot::Receiver<Result<Reply, WaitError>>,
    table: Arc<Correlation>,
}

impl Pending {
    /// The id to put in the request.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Waits for the answer, at most `deadline`.
    pub async fn wait(mut self, deadline: Duration) -> Result<Reply, WaitError> {
        match tokio::time::timeout(deadline, &mut self.rx).await {
            Ok(Ok(outcome)) => outcome,
            // The sender vanished without a word: only fail_all's race with
            // a concurrent removal can do that; treat it as a lost connection.
            Ok(Err(_)) => Err(WaitError::WorkerUnavailable("connection closed".into())),
            Err(_) => Err(WaitError::DeadlineExceeded(deadline)),
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.table.waiting.remove(&self.id);
    }
}

impl From<WaitError> for RemoteError {
    fn from(e: WaitError) -> Self {
        let kind = match e {
            WaitError::DeadlineExceeded(_) => ErrorKind::Timeout,
            WaitError::WorkerUnavailable(_) => ErrorKind::Unavailable,
        };
        RemoteError::new(kind, e.to_string())
    }
}

/// A request id as logs and answers show it, on the master and on the
/// worker alike: 16 hex digits (a u64 does not survive every tool's JSON
/// numbers).
pub fn request_label(req_id: u64) -> String {
    format!("{req_id:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn a_reply_reaches_its_caller() {
        let table = Correlation::new();
        let a = table.register().unwrap();
        let b = table.register().unwrap();
        assert_ne!(a.id(), b.id());
        assert!(table.complete(b.id(), Ok(json!("for b").into())));
        assert!(table.complete(a.id(), Ok(json!("for a").into())));
        assert_eq!(
            a.wait(Duration::from_secs(1)).await.unwrap(),
            Ok(json!("for a").into())
        );
        assert_eq!(
            b.wait(Duration::from_secs(1)).await.unwrap(),
            Ok(json!("for b").into())
        );
        assert!(table.is_empty());
    }

    #[tokio::test]
    async fn a_wait_never_outlives_its_deadline() {
        let table = Correlation::new();
        let p = table.register().unwrap();
        let id = p.id();
        let err = p.wait(Duration::from_millis(20)).await.unwrap_err();
        assert!(matches!(err, WaitError::DeadlineExceeded(_)));
        // The late answer finds nobody and the entry is gone.
        assert!(!table.complete(id, Ok(json!(1).into())));
        assert!(table.is_empty());
    }

    #[tokio::test]
    async fn closing_fails_everything_pending_and_refuses_new_requests() {
        let table = Correlation::new();
        let waits: Vec<_> = (0..10)
            .map(|_| {
                let p = table.register().unwrap();
                tokio::spawn(p.wait(Duration::from_secs(3600)))
            })
            .collect();
        table.fail_all("socket closed");
        for w in waits {
            assert!(matches!(
                w.await.unwrap(),
                Err(WaitError::WorkerUnavailable(_))
            ));
        }
        assert!(matches!(
            table.register(),
            Err(WaitError::WorkerUnavailable(_))
        ));
    }

    #[test]
    fn unknown_ids_are_ignored() {
        let table = Correlation::new();
        assert!(!table.complete(12345, Ok(json!(null).into())));
    }

    #[test]
    fn dropping_a_pending_request_unregisters_it() {
        let table = Correlation::new();
        let p = table.register().unwrap();
        assert_eq!(table.len(), 1);
        drop(p);
        assert!(table.is_empty());
    }
}
