//! Plugin variables over REST (`/api/v1/plugins/{name}/vars`, admin
//! only): list, set, unset; every change reaches the workers before the
//! answer (`VarsChanged`, waited for on each connected worker).

use super::extract::Payload;
use super::{ApiError, ApiState};
use crate::catalogue::manifest::Manifest;
use crate::master::vars::VarsError;
use crate::mesophyll::message::{ServerMessage, Tenant};
use crate::rest::{VarChange, VarChanged, VarList};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use std::sync::Arc;
use std::time::Duration;

/// How long a change waits for each worker to take it.
const WORKER_ACK: Duration = Duration::from_secs(5);

impl From<VarsError> for ApiError {
    fn from(e: VarsError) -> Self {
        match e {
            VarsError::Unknown(m) => ApiError::new(StatusCode::NOT_FOUND, "not_found", m),
            VarsError::Invalid(m) => ApiError::bad_request(m),
            other => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                other.to_string(),
            ),
        }
    }
}

async fn manifest(state: &ApiState, plugin: &str) -> Result<Manifest, ApiError> {
    let name = plugin.to_owned();
    crate::master::catalogue::Catalogue::blocking(&state.catalogue, move |r| r.manifest(&name))
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no plugin {plugin}"),
            )
        })
}

pub(super) async fn list_vars(
    State(state): State<Arc<ApiState>>,
    Path(plugin): Path<String>,
) -> Result<Json<VarList>, ApiError> {
    let manifest = manifest(&state, &plugin).await?;
    let vars = Arc::clone(&state.vars);
    let list = tokio::task::spawn_blocking(move || vars.list(&manifest))
        .await
        .map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        })??;
    Ok(Json(VarList { plugin, vars: list }))
}

pub(super) async fn put_var(
    State(state): State<Arc<ApiState>>,
    Path((plugin, name)): Path<(String, String)>,
    Payload(change): Payload<VarChange>,
) -> Result<Json<VarChanged>, ApiError> {
    let manifest = manifest(&state, &plugin).await?;
    state
        .vars
        .set(&manifest, &name, change.tenant, &change.value)
        .await?;
    announce(&state, &plugin).await;
    Ok(Json(VarChanged {
        plugin,
        name,
        set: true,
        existed: None,
    }))
}

/// The tenant of `DELETE ...?tenant_type=&tenant_id=`.
#[derive(serde::Deserialize)]
pub(super) struct TenantQuery {
    tenant_type: Option<String>,
    tenant_id: Option<String>,
}

pub(super) async fn delete_var(
    State(state): State<Arc<ApiState>>,
    Path((plugin, name)): Path<(String, String)>,
    Query(q): Query<TenantQuery>,
) -> Result<Json<VarChanged>, ApiError> {
    let manifest = manifest(&state, &plugin).await?;
    let tenant = match (q.tenant_type, q.tenant_id) {
        (Some(kind), Some(id)) => Some(Tenant::new(kind, id)),
        (None, None) => None,
        _ => {
            return Err(ApiError::bad_request(
                "give both tenant_type and tenant_id, or neither",
            ));
        }
    };
    let existed = state.vars.unset(&manifest, &name, tenant.as_ref()).await?;
    announce(&state, &plugin).await;
    Ok(Json(VarChanged {
        plugin,
        name,
        set: false,
        existed: Some(existed),
    }))
}

/// Tells every connected worker, and waits for each (a worker that does
/// not answer reloads when it reconnects).
async fn announce(state: &ApiState, plugin: &str) {
    let asked = (0..state.workers).map(|worker| {
        state
            .hub
            .request(worker, WORKER_ACK, |req_id| ServerMessage::VarsChanged {
                req_id: Some(req_id),
                plugin: plugin.to_owned(),
            })
    });
    for (worker, answer) in futures::future::join_all(asked)
        .await
        .into_iter()
        .enumerate()
    {
        if let Err(e) = answer {
            tracing::debug!(worker, "a worker did not take the variables: {e}");
        }
    }
}
