//! `meshplay call DIR EVENT --data JSON`: one event through one plugin
//! folder, on a [`LocalHost`] started for it and stopped after.
//!
//! The plugin is checked first (its manifest and the compile of its entry
//! file), so a broken plugin is reported with its file and line rather
//! than as a `not_found` from a master that skipped it. The event then
//! goes through the REST API as an application's would: the plugin's
//! filters, its limits, its error codes. What the handler logged is caught
//! ([`Logbook`]) and printed with the result and the time the dispatch
//! took.

use crate::author::AuthorError;
use crate::author::folders;
use crate::author::host::{HostPlan, LocalHost};
use crate::author::logbook::{Logbook, Logged};
use crate::mesophyll::message::Tenant;
use crate::rest::{DispatchRequest, ErrorDetail};
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// One call.
#[derive(Debug, Clone)]
pub struct CallPlan {
    /// The plugin folder.
    pub folder: PathBuf,
    /// The event's name.
    pub event: String,
    /// Its data.
    pub data: Value,
    /// Who the event is for.
    pub tenant: Tenant,
    /// The budget of the call.
    pub timeout: Duration,
    /// Filters, store, networks.
    pub host: HostPlan,
}

/// What came of it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CallOutcome {
    /// The plugin's name (from its manifest).
    pub plugin: String,
    /// What the handler returned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    /// Why it returned nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
    /// What the handler logged.
    pub logs: Vec<Logged>,
    /// Lines logged past the logbook's limit.
    pub logs_dropped: u64,
    /// The dispatch, from request to answer, in milliseconds.
    pub took_ms: f64,
}

/// Runs `plan`'s event.
///
/// Fails when the folder is not a plugin that builds, the plugin does not
/// handle the event, or the local host cannot start. A handler's error is
/// not a failure of the call: it is in [`CallOutcome::error`].
pub async fn call(plan: CallPlan, logbook: &Logbook) -> Result<CallOutcome, AuthorError> {
    let plugin = folders::check(&plan.folder)?;
    let name = plugin.manifest.name.clone();
    if !plugin.handles(&plan.event) {
        return Err(AuthorError::Usage(format!(
            "plugin {name} does not handle {:?}: its events are {:?}",
            plan.event, plugin.manifest.events
        )));
    }
    let mut host_plan = plan.host.clone();
    host_plan.plugins = vec![plan.folder.clone()];
    let host = LocalHost::start(&host_plan).await?;
    logbook.take();
    let request = DispatchRequest {
        name: plan.event.clone(),
        data: plan.data.clone(),
        wait: true,
        timeout_ms: Some(plan.timeout.as_millis() as u64),
    };
    let started = Instant::now();
    let answer = host
        .client()
        .dispatch(&plan.tenant.kind, &plan.tenant.id, &request)
        .await;
    let took = started.elapsed();
    host.stop().await;
    let (logs, logs_dropped) = logbook.take();
    let answer = match answer? {
        crate::client::DispatchOutcome::Done(d) => d,
        crate::client::DispatchOutcome::Accepted(_) => {
            return Err(AuthorError::Host("the master queued a waited event".into()));
        }
    };
    let result = answer.results.into_iter().find(|r| r.plugin == name);
    let (value, error) = match result {
        Some(r) => (r.value, r.error),
        None => (
            None,
            Some(ErrorDetail {
                code: "not_found".into(),
                message: format!("the master did not run plugin {name}: see its log above"),
            }),
        ),
    };
    Ok(CallOutcome {
        plugin: name,
        value,
        error,
        logs,
        logs_dropped,
        took_ms: took.as_secs_f64() * 1000.0,
    })
}
