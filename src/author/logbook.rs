//! What handlers logged (`log.*`, `print`), caught for the author rather
//! than written as worker log lines.
//!
//! A worker writes a script's lines as `tracing` events of
//! [`SCRIPT_TARGET`] with the tenant as a field; under `meshplay call`
//! and `meshplay test` the worker runs in this process, so a
//! [`tracing_subscriber::Layer`] here sees those events and keeps them in
//! a [`Logbook`], which the command prints beside the handler's result.

use std::sync::{Arc, Mutex};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

/// The target of a script's log lines (the worker's host API module).
pub const SCRIPT_TARGET: &str = "meshplay::worker::host";

/// The most lines a logbook keeps; later lines are counted, not kept.
pub const MAX_LINES: usize = 1000;

/// One line a handler logged.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Logged {
    /// `debug`, `info`, `warn` or `error`.
    pub level: String,
    /// `type:id` of the tenant whose code logged it.
    pub tenant: String,
    /// The line, as the script wrote it.
    pub line: String,
}

/// The lines caught so far.
#[derive(Debug, Clone, Default)]
pub struct Logbook {
    lines: Arc<Mutex<(Vec<Logged>, u64)>>,
}

impl Logbook {
    /// Takes the lines caught since the last call, and how many more were
    /// dropped past [`MAX_LINES`].
    pub fn take(&self) -> (Vec<Logged>, u64) {
        std::mem::take(&mut *self.lines.lock().unwrap())
    }

    fn keep(&self, line: Logged) {
        let mut lines = self.lines.lock().unwrap();
        if lines.0.len() < MAX_LINES {
            lines.0.push(line);
        } else {
            lines.1 += 1;
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Logbook {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() != SCRIPT_TARGET {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let Some(line) = fields.message.strip_prefix("script: ") else {
            return;
        };
        self.keep(Logged {
            level: event.metadata().level().as_str().to_ascii_lowercase(),
            tenant: fields.tenant,
            line: line.to_owned(),
        });
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    tenant: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "tenant" => self.tenant = format!("{value:?}"),
            _ => {}
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_owned(),
            "tenant" => self.tenant = value.to_owned(),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn keeps_script_lines_only() {
        let book = Logbook::default();
        let subscriber = tracing_subscriber::registry().with(book.clone());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "meshplay::worker::host", tenant = %"user:1", "script: hello {}", 1);
            tracing::warn!(target: "meshplay::worker::host", tenant = %"user:1", "script: careful");
            tracing::info!(target: "meshplay::master", "not a script line");
        });
        let (lines, dropped) = book.take();
        assert_eq!(dropped, 0);
        assert_eq!(
            lines,
            vec![
                Logged {
                    level: "info".into(),
                    tenant: "user:1".into(),
                    line: "hello 1".into()
                },
                Logged {
                    level: "warn".into(),
                    tenant: "user:1".into(),
                    line: "careful".into()
                },
            ]
        );
        assert!(book.take().0.is_empty());
    }
}
