//! `plugin.toml`: what a plugin declares about itself.
//!
//! ```toml
//! name = "guestbook"        # [a-z0-9_-]{1,64}, unique
//! version = "1.0.0"
//! description = "What it does, in one line"
//! events = ["sign"]         # event names it handles
//! entry = "init.luau"       # optional, default init.luau
//! operations = [            # optional: what it offers, for the
//!   { name = "sign", description = "Sign the guestbook" },  # catalogue
//! ]
//! emits_to = ["guild"]      # optional: tenant types events.emit_to may reach
//! webhooks = ["sign"]       # optional: events that may also come from
//!                           # outside, as POST /hooks/{type}/{id}/{event}
//! publishes = ["orders.>"]  # optional: NATS subjects nats.publish may use
//! allowed_hosts = ["https://api.example.com"]  # optional: what http.fetch
//!                           # may reach (see allowed_host); none when absent
//! [variables]               # optional: settings operators give it
//! api_base = { default = "https://api.example.com" }
//! api_key = { required = true, secret = true }
//! [limits]
//! timeout_ms = 2000         # optional cap on one handler call
//! [[filters]]               # optional, run in order before the handlers
//! name = "redact"
//! config = { min_digits = 8 }   # passed to the filter as its config
//! on_error = "reject"       # or "continue": what a failing filter means
//! timeout_ms = 50           # optional, the filter's deadline
//! events = ["sign"]         # optional, the events it applies to (all)
//! ```
//!
//! Unknown keys are refused everywhere, so a misspelt limit is an error at
//! upload rather than a limit silently not applied.

use crate::catalogue::allowed_host::{AllowedHost, Target};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// The deadline of a filter call when its plugin does not set one.
pub const DEFAULT_FILTER_TIMEOUT: Duration = Duration::from_millis(50);

/// What `plugin.toml` declares.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Unique name, `[a-z0-9_-]{1,64}`.
    pub name: String,
    /// Free-form version string.
    pub version: String,
    /// One line for people.
    #[serde(default)]
    pub description: String,
    /// Event names this plugin handles.
    pub events: Vec<String>,
    /// The entry file, among the plugin's files.
    #[serde(default = "default_entry")]
    pub entry: String,
    /// What the plugin offers, for the master's catalogue.
    #[serde(default)]
    pub operations: Vec<Operation>,
    /// Filters that run, in order, before the handlers.
    #[serde(default)]
    pub filters: Vec<FilterUse>,
    /// Per-plugin limits.
    #[serde(default)]
    pub limits: PluginLimits,
    /// The origins `http.fetch` may reach; empty: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_hosts: Vec<AllowedHost>,
    /// The tenant types `events.emit_to` may send to (its own tenant it
    /// may always: `events.emit`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub emits_to: Vec<String>,
    /// Which of `events` may also arrive as webhooks (`POST
    /// /hooks/{type}/{id}/{event}`, no token): none unless listed here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<String>,
    /// The NATS subjects `nats.publish` may use (patterns: `*` one token,
    /// a final `>` the rest); none when absent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publishes: Vec<String>,
    /// The settings operators give the plugin (`meshplay vars set`), by
    /// name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, Variable>,
}

/// One variable a plugin declares.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variable {
    /// The value when an operator set none (never for a secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// Without a value, the plugin answers `not_configured` instead of
    /// running.
    #[serde(default)]
    pub required: bool,
    /// Encrypted at rest, never logged, listed or returned but to the
    /// plugin's own `vars.get`.
    #[serde(default)]
    pub secret: bool,
    /// What it is, for operators.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// The most variables a manifest may declare.
pub const MAX_VARIABLES: usize = 64;

/// The longest value a variable may hold.
pub const MAX_VARIABLE_BYTES: usize = 64 * 1024;

/// Whether `name` may name a variable: `[a-z0-9_]`, 1 to 64, not starting
/// with a digit.
pub fn valid_variable_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl Manifest {
    /// The `allowed_hosts` entry that allows `target`, if any.
    pub fn allowed_host(&self, target: &Target) -> Option<&AllowedHost> {
        self.allowed_hosts.iter().find(|h| h.allows(target))
    }
}

fn default_entry() -> String {
    "init.luau".into()
}

/// One operation a plugin offers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operation {
    /// Its name.
    pub name: String,
    /// What it does.
    #[serde(default)]
    pub description: String,
}

/// What a failing filter (trap, timeout, bad verdict) means for the plugin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// The plugin does not run; its result is the filter's error.
    #[default]
    Reject,
    /// The error is logged and the event goes on as it was.
    Continue,
}

/// One filter a plugin applies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterUse {
    /// The filter's name in the catalogue.
    pub name: String,
    /// Its configuration.
    #[serde(default)]
    pub config: serde_json::Value,
    /// What its failure means.
    #[serde(default)]
    pub on_error: OnError,
    /// Its deadline ([`DEFAULT_FILTER_TIMEOUT`] when absent).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// The events it applies to; all the plugin's events when absent.
    #[serde(default)]
    pub events: Option<Vec<String>>,
}

impl FilterUse {
    /// Whether this filter runs before events named `event`.
    pub fn applies_to(&self, event: &str) -> bool {
        self.events
            .as_ref()
            .is_none_or(|events| events.iter().any(|e| e == event))
    }
}

/// Limits a plugin asks for; the worker's own limits still apply on top.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginLimits {
    /// Cap on one handler call, in milliseconds.
    pub timeout_ms: Option<u64>,
}
