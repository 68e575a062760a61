//! The NATS bridge (`serve --nats nats://...`): Meshplay on the bus a
//! company already runs.
//!
//! - **Dispatch by request/reply** ([`dispatch`]): a request on
//!   `meshplay.dispatch.<type>.<id>.<event>` is a waited dispatch of
//!   `<event>` to that tenant, its payload the event's data (JSON, or
//!   MessagePack with `content-type: application/msgpack`); the reply is
//!   what REST answers, in the same encoding. The subscription is in a
//!   queue group (`--nats-queue-group`, `meshplay`), so several masters,
//!   or a restarted one, share it.
//! - **Answered dispatches published** (`--nats-publish-events`): every
//!   dispatch answered, whichever way it came, on
//!   `meshplay.events.<type>.<id>.<event>`.
//! - **Plugins publish** ([`endpoint`]): `nats.publish(subject, data)`,
//!   to subjects their manifest's `publishes` grants, through the master
//!   (workers hold no NATS credentials).
//!
//! The client (async-nats) reconnects by itself: with NATS away the
//! master serves everything else, requests wait in NATS's hands, and
//! publishes are buffered by the client up to its limit.

pub mod dispatch;
pub mod endpoint;

use crate::mesophyll::message::Packed;
use crate::rest::Dispatched;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use std::path::PathBuf;
use std::sync::Arc;

/// Where dispatch requests come in: `meshplay.dispatch.<type>.<id>.<event>`.
pub const DISPATCH_SUBJECTS: &str = "meshplay.dispatch.>";

/// Where answered dispatches go out.
pub const EVENTS_PREFIX: &str = "meshplay.events";

/// How the master reaches NATS: `serve --nats*`.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// The server(s), `nats://host:port` (comma-separated for several).
    pub url: String,
    /// A `.creds` file (JWT and nkey seed).
    pub credentials: Option<PathBuf>,
    /// A token.
    pub token: Option<String>,
    /// A file holding an nkey seed.
    pub nkey: Option<PathBuf>,
    /// A CA file to verify the server's TLS certificate with (TLS then
    /// required).
    pub ca: Option<PathBuf>,
    /// The queue group the dispatch subscription joins.
    pub queue_group: String,
    /// Publish every answered dispatch on `meshplay.events.>`.
    pub publish_events: bool,
}

/// Why the bridge could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// A credentials, nkey or CA file could not be read.
    #[error("NATS: cannot read {what}: {source}")]
    File {
        /// Which file.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// The client refused the options or could not subscribe.
    #[error("NATS: {0}")]
    Client(String),
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Label {
    kind: &'static str,
    result: String,
}

/// The bridge's counts in `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct NatsMetrics {
    messages: Family<Label, Counter>,
}

impl NatsMetrics {
    /// Registers `meshplay_nats_messages_total` in `registry`.
    pub fn register(registry: &mut Registry) -> NatsMetrics {
        let m = NatsMetrics::default();
        registry.register(
            "nats_messages",
            "NATS bridge messages by kind (dispatch: requests taken; event: answered dispatches published; plugin: nats.publish) and result (ok, or the error's code)",
            m.messages.clone(),
        );
        m
    }

    fn count(&self, kind: &'static str, result: &str) {
        self.messages
            .get_or_create(&Label {
                kind,
                result: result.to_owned(),
            })
            .inc();
    }
}

/// The master's NATS client and what it does with it.
pub struct Bridge {
    client: async_nats::Client,
    config: NatsConfig,
    metrics: NatsMetrics,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge")
            .field("url", &self.config.url)
            .finish_non_exhaustive()
    }
}

impl Bridge {
    /// Connects (in the background: a NATS that is away does not stop the
    /// master; the client keeps trying).
    ///
    /// Fails when a credentials, nkey or CA file cannot be read, or the
    /// URL is not one.
    pub async fn connect(
        config: NatsConfig,
        metrics: NatsMetrics,
    ) -> Result<Arc<Bridge>, NatsError> {
        let mut options = async_nats::ConnectOptions::new()
            .name("meshplay-master")
            .retry_on_initial_connect()
            .max_reconnects(None)
            .event_callback(|event| async move {
                tracing::info!("NATS: {event}");
            });
        if let Some(path) = &config.credentials {
            options = options
                .credentials_file(path)
                .await
                .map_err(|source| NatsError::File {
                    what: path.display().to_string(),
                    source,
                })?;
        }
        if let Some(token) = &config.token {
            options = options.token(token.clone());
        }
        if let Some(path) = &config.nkey {
            let seed = std::fs::read_to_string(path).map_err(|source| NatsError::File {
                what: path.display().to_string(),
                source,
            })?;
            options = options.nkey(seed.trim().to_owned());
        }
        if let Some(ca) = &config.ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        let client = options
            .connect(config.url.as_str())
            .await
            .map_err(|e| NatsError::Client(e.to_string()))?;
        Ok(Arc::new(Bridge {
            client,
            config,
            metrics,
        }))
    }

    /// Whether the client is connected now.
    pub fn connected(&self) -> bool {
        matches!(
            self.client.connection_state(),
            async_nats::connection::State::Connected
        )
    }

    /// Publishes the answer `d` to a dispatch of `event`, when the
    /// operator asked for answered dispatches on NATS.
    pub fn answered(&self, event: &str, d: &Dispatched<Packed>) {
        if !self.config.publish_events || !dispatch::token_ok(event) {
            return;
        }
        let subject = format!("{EVENTS_PREFIX}.{}.{}.{event}", d.tenant.kind, d.tenant.id);
        let Ok(payload) = serde_json::to_vec(d) else {
            return;
        };
        let client = self.client.clone();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let result = client.publish(subject, payload.into()).await;
            metrics.count("event", if result.is_ok() { "ok" } else { "unavailable" });
        });
    }
}
