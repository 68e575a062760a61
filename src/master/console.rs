//! The live console: every dispatch the API answers, offered to whoever
//! watches (`GET /api/v1/console`, the dashboard).
//!
//! A broadcast channel with a bounded backlog. Nothing is built for it
//! while nobody watches ([`Console::watched`] is one atomic load, so the
//! dispatch path pays nothing for an unwatched console), and a watcher
//! that falls behind loses the oldest entries and is told how many
//! (never the dispatches themselves: the console only observes).

use crate::mesophyll::message::PluginOutcome;
use crate::rest::{ConsoleEntry, PluginResult};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// Entries a watcher may fall behind by before it loses the oldest.
const BACKLOG: usize = 1024;

/// The master's console.
#[derive(Debug)]
pub struct Console {
    tx: broadcast::Sender<Arc<ConsoleEntry>>,
}

impl Default for Console {
    fn default() -> Self {
        Console {
            tx: broadcast::channel(BACKLOG).0,
        }
    }
}

/// What a dispatch was, for [`Console::publish`]: its entry less its
/// outcome.
pub struct Dispatch<'a> {
    /// `type:id`.
    pub tenant: String,
    /// The event's name.
    pub event: String,
    /// The worker of its shard, once known.
    pub worker: Option<u32>,
    /// The id of the request the worker got, if it got one and answers.
    pub request_id: Option<String>,
    /// Since the API received it.
    pub elapsed: Duration,
    /// The plugins' results (empty unless it was waited for and answered).
    pub outcomes: &'a [PluginOutcome],
}

impl Console {
    /// Whether anybody watches now.
    pub fn watched(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// Starts watching: entries from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<ConsoleEntry>> {
        self.tx.subscribe()
    }

    /// Offers one answered dispatch that ended with `result` (`ok`,
    /// `accepted` or an error code) and, when it failed as a whole, `error`.
    pub fn publish(&self, d: Dispatch<'_>, result: &str, error: Option<crate::rest::ErrorDetail>) {
        let results: Vec<PluginResult> = d.outcomes.iter().cloned().map(Into::into).collect();
        let size = serde_json::to_vec(&results).map_or(usize::MAX, |b| b.len());
        let truncated = size > ConsoleEntry::MAX_RESULTS_BYTES;
        let entry = ConsoleEntry {
            at_ms: crate::clock::unix_millis() as u64,
            tenant: d.tenant,
            event: d.event,
            worker: d.worker,
            request_id: d.request_id,
            result: result.to_owned(),
            elapsed_ms: d.elapsed.as_secs_f64() * 1000.0,
            results: if truncated { Vec::new() } else { results },
            truncated,
            error,
        };
        // No receiver left since `watched`: nobody to tell.
        let _ = self.tx.send(Arc::new(entry));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesophyll::message::{ErrorKind, RemoteError};
    use serde_json::json;

    fn dispatch(outcomes: &[PluginOutcome]) -> Dispatch<'_> {
        Dispatch {
            tenant: "shop:1".into(),
            event: "echo".into(),
            worker: Some(1),
            request_id: Some("00000000000000a1".into()),
            elapsed: Duration::from_micros(1500),
            outcomes,
        }
    }

    #[test]
    fn an_unwatched_console_holds_nothing_and_a_watcher_gets_what_follows() {
        let console = Console::default();
        assert!(!console.watched());
        console.publish(dispatch(&[]), "accepted", None);
        let mut rx = console.subscribe();
        assert!(console.watched());
        let outcomes = [
            PluginOutcome {
                plugin: "echo".into(),
                result: Ok(json!({"hi": 1}).into()),
            },
            PluginOutcome {
                plugin: "guestbook".into(),
                result: Err(RemoteError::new(ErrorKind::Rejected, "spam")),
            },
        ];
        console.publish(dispatch(&outcomes), "ok", None);
        let entry = rx.try_recv().unwrap();
        assert_eq!(entry.result, "ok");
        assert_eq!(entry.elapsed_ms, 1.5);
        assert_eq!(entry.results.len(), 2);
        assert_eq!(entry.results[0].value, Some(json!({"hi": 1})));
        assert_eq!(entry.results[1].error.as_ref().unwrap().code, "rejected");
        assert!(
            rx.try_recv().is_err(),
            "the entry before subscribing is not replayed"
        );
    }

    #[test]
    fn large_results_are_left_out_and_said_so() {
        let console = Console::default();
        let mut rx = console.subscribe();
        let big = [PluginOutcome {
            plugin: "echo".into(),
            result: Ok(json!("x".repeat(ConsoleEntry::MAX_RESULTS_BYTES)).into()),
        }];
        console.publish(dispatch(&big), "ok", None);
        let entry = rx.try_recv().unwrap();
        assert!(entry.truncated);
        assert!(entry.results.is_empty());
    }
}
