//! Frames that do not decode (text frames, broken MessagePack, unknown
//! messages) are counted and dropped, never fatal: a peer that sends one bad
//! frame keeps its connection and its requests. The log line is rate
//! limited, so a peer that sends nothing but garbage cannot flood the log.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// At most one log line per this long about undecodable frames.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// A count of bad frames and when one was last logged.
#[derive(Debug, Default)]
pub struct BadFrames {
    count: AtomicU64,
    last_log: Mutex<Option<Instant>>,
}

impl BadFrames {
    /// Counts one bad frame from `peer` and logs it unless a line was
    /// written less than [`LOG_EVERY`] ago.
    pub fn note(&self, peer: &str, what: &str) {
        let total = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self.last_log.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            *last = Some(Instant::now());
            tracing::warn!(peer, total, "ignored a bad frame: {what}");
        }
    }

    /// Bad frames so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_frame_counts_even_when_not_logged() {
        let b = super::BadFrames::default();
        for _ in 0..5 {
            b.note("worker 1", "text frame");
        }
        assert_eq!(b.count(), 5);
    }
}
