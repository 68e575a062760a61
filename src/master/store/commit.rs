//! Group commit: a write is acknowledged only once it is on disk, and
//! concurrent writers share one flush.
//!
//! Each write applies to the backend, then calls [`GroupCommit::durable`],
//! which joins the queue of one committer task; the committer flushes once
//! for everyone waiting at that moment and answers them all. Under load N
//! writers cost one flush; alone, a write costs one.

use super::StoreError;
use tokio::sync::{mpsc, oneshot};

type Waiter = oneshot::Sender<Result<(), StoreError>>;

/// The queue of writers waiting for the next flush.
#[derive(Clone)]
pub struct GroupCommit {
    commits: mpsc::Sender<Waiter>,
}

impl GroupCommit {
    /// Starts the committer task, which calls `flush` (on a blocking
    /// thread) once per batch. Must run inside a tokio runtime.
    pub fn start<F>(flush: F) -> Self
    where
        F: Fn() -> Result<(), StoreError> + Send + Sync + Clone + 'static,
    {
        let (commits, queue) = mpsc::channel(64 * 1024);
        tokio::spawn(committer(flush, queue));
        GroupCommit { commits }
    }

    /// Waits until everything written before the call is durable.
    pub async fn durable(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.commits
            .send(tx)
            .await
            .map_err(|_| StoreError::Backend("the committer stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Backend("the committer stopped".into()))?
    }
}

/// Flushes once for every batch of waiters.
async fn committer<F>(flush: F, mut queue: mpsc::Receiver<Waiter>)
where
    F: Fn() -> Result<(), StoreError> + Send + Sync + Clone + 'static,
{
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while let Ok(w) = queue.try_recv() {
            batch.push(w);
        }
        let flush = flush.clone();
        let result = tokio::task::spawn_blocking(flush)
            .await
            .map_err(|e| StoreError::Backend(format!("flush task: {e}")))
            .and_then(|r| r);
        if let Err(e) = &result {
            tracing::error!("store flush failed: {e}");
        }
        for w in batch {
            let _ = w.send(result.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn waiters_of_one_moment_share_a_flush_and_hear_its_failure() {
        let flushes = Arc::new(AtomicU32::new(0));
        let counter = Arc::clone(&flushes);
        let commit = Arc::new(GroupCommit::start(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(20));
            Ok(())
        }));
        let waiters: Vec<_> = (0..32)
            .map(|_| {
                let c = Arc::clone(&commit);
                tokio::spawn(async move { c.durable().await })
            })
            .collect();
        for w in waiters {
            w.await.unwrap().unwrap();
        }
        let n = flushes.load(Ordering::SeqCst);
        assert!((1..32).contains(&n), "{n} flushes for 32 writers");

        let failing = GroupCommit::start(|| Err(StoreError::Backend("disk on fire".into())));
        let err = failing.durable().await.unwrap_err();
        assert!(err.to_string().contains("disk on fire"), "{err}");
    }
}
