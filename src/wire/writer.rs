//! Writing queued frames in batches: every frame waiting in the queue at
//! the moment (up to [`WRITE_BATCH`]) is fed to the socket and flushed once,
//! so a busy connection pays one write syscall for many frames and an idle
//! one still sends at once (after one yield to the scheduler, which lets
//! the tasks about to queue a frame join the batch). The hub and the
//! worker's client both write this way.

use futures::{Sink, SinkExt};

/// Frames fed into one flush at most: enough to save the syscalls of a
/// busy connection, few enough that the first of them does not wait long.
pub const WRITE_BATCH: usize = 64;

/// What to do with one queued item.
pub enum Batched<M> {
    /// Write this frame.
    Frame(M),
    /// Nothing to write for it.
    Skip,
    /// Flush what was fed and stop: the connection is to be closed.
    Close,
}

/// How a batch ended.
#[derive(Debug, PartialEq, Eq)]
pub enum BatchEnd {
    /// Everything queued was written and flushed.
    Flushed,
    /// An item asked to close; what came before it was flushed.
    Close,
}

/// Feeds `first` and whatever else is queued now (`more` takes from the
/// queue without waiting) into `sink`, each turned into a frame by `frame`,
/// then flushes once. Fails with the sink's error.
pub async fn write_batch<S, T, M>(
    sink: &mut S,
    first: T,
    mut more: impl FnMut() -> Option<T>,
    mut frame: impl FnMut(T) -> Batched<M>,
) -> Result<BatchEnd, S::Error>
where
    S: Sink<M> + Unpin,
{
    let mut next = Some(first);
    let mut fed = 0;
    let mut end = BatchEnd::Flushed;
    let mut yielded = false;
    while let Some(item) = next.take() {
        match frame(item) {
            Batched::Frame(m) => {
                sink.feed(m).await?;
                fed += 1;
            }
            Batched::Skip => {}
            Batched::Close => {
                end = BatchEnd::Close;
                break;
            }
        }
        if fed < WRITE_BATCH {
            next = more();
            if next.is_none() && !yielded {
                // Once per batch, let the tasks that are ready run before
                // the flush: under load they queue their frames now and
                // share its syscall; idle, it costs one pass of the
                // scheduler.
                yielded = true;
                tokio::task::yield_now().await;
                next = more();
            }
        }
    }
    sink.flush().await?;
    Ok(end)
}

/// Writes everything `queue` receives to `sink`, each item turned into a
/// frame by `frame`, in batches as [`write_batch`] does, until the queue
/// closes, an item asks to close, or the sink fails (whose error it returns).
pub async fn drain<S, T, M>(
    sink: &mut S,
    queue: &mut tokio::sync::mpsc::Receiver<T>,
    mut frame: impl FnMut(T) -> Batched<M>,
) -> Result<(), S::Error>
where
    S: Sink<M> + Unpin,
{
    while let Some(first) = queue.recv().await {
        if write_batch(sink, first, || queue.try_recv().ok(), &mut frame).await? == BatchEnd::Close
        {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    #[tokio::test]
    async fn queued_frames_go_out_in_one_batch_and_close_stops_it() {
        let (tx, mut rx) = mpsc::channel(8);
        for i in 1..=3 {
            tx.try_send(i).unwrap();
        }
        let mut sink: Vec<i32> = Vec::new();
        let end = write_batch(
            &mut sink,
            0,
            || rx.try_recv().ok(),
            |i| {
                if i == 2 {
                    Batched::Close
                } else {
                    Batched::Frame(i)
                }
            },
        )
        .await
        .unwrap();
        assert_eq!(end, BatchEnd::Close);
        assert_eq!(sink, [0, 1]);
        assert_eq!(rx.try_recv().ok(), Some(3));
    }
}
