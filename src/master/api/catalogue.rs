//! Plugins and filters: listed from the catalogue, changed through it, and
//! every change announced to the workers (`CatalogueChanged`).

use super::extract::Payload;
use super::{ApiError, ApiState};
use crate::master::catalogue::Catalogue;
use crate::mesophyll::message::ServerMessage;
use crate::rest::{
    Changed, Deployed, Deployment, FilterList, MAX_DEPLOY_BYTES, PluginList, PluginUpload,
};
use axum::Json;
use axum::extract::{Path, State};
use std::sync::Arc;

pub(super) async fn list_plugins(
    State(state): State<Arc<ApiState>>,
) -> Result<Json<PluginList>, ApiError> {
    Ok(Json(PluginList {
        revision: state.catalogue.revision(),
        // Listing compiles every plugin's Luau: off the async threads.
        plugins: Catalogue::blocking(&state.catalogue, |r| r.plugins()).await?,
    }))
}

pub(super) async fn list_filters(
    State(state): State<Arc<ApiState>>,
) -> Result<Json<FilterList>, ApiError> {
    Ok(Json(FilterList {
        revision: state.catalogue.revision(),
        filters: Catalogue::blocking(&state.catalogue, |r| r.filters()).await?,
    }))
}

/// Tells every worker about a new catalogue revision.
fn announce(state: &ApiState, revision: u64) {
    let told = state
        .hub
        .broadcast(&ServerMessage::CatalogueChanged { revision });
    tracing::info!(revision, workers = told, "catalogue changed");
}

/// [`announce`]s `revision`, and answers it.
fn changed(state: &ApiState, revision: u64) -> Json<Changed> {
    announce(state, revision);
    Json(Changed { revision })
}

pub(super) async fn put_plugin(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
    Payload(upload): Payload<PluginUpload>,
) -> Result<Json<Changed>, ApiError> {
    let revision = state
        .catalogue
        .put_plugin(&name, upload.manifest, upload.files)
        .await?;
    Ok(changed(&state, revision))
}

pub(super) async fn delete_plugin(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
) -> Result<Json<Changed>, ApiError> {
    let revision = state.catalogue.delete_plugin(&name).await?;
    Ok(changed(&state, revision))
}

pub(super) async fn put_filter(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Changed>, ApiError> {
    let revision = state.catalogue.put_filter(&name, body.to_vec()).await?;
    Ok(changed(&state, revision))
}

pub(super) async fn delete_filter(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
) -> Result<Json<Changed>, ApiError> {
    let revision = state.catalogue.delete_filter(&name).await?;
    Ok(changed(&state, revision))
}

/// `POST /api/v1/catalogue`: a deployment, all of it or none of it.
pub(super) async fn deploy(
    State(state): State<Arc<ApiState>>,
    Payload(deployment): Payload<Deployment, MAX_DEPLOY_BYTES>,
) -> Result<Json<Deployed>, ApiError> {
    let deployed = state.catalogue.deploy(deployment).await?;
    announce(&state, deployed.revision);
    Ok(Json(deployed))
}

/// `GET /api/v1/plugins/{name}/source`: its manifest and files.
pub(super) async fn plugin_source(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
) -> Result<Json<PluginUpload>, ApiError> {
    let found = Catalogue::blocking(&state.catalogue, move |r| r.source_of(&name)).await?;
    found.map(Json).ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "not_found",
            "no such plugin",
        )
    })
}
