//! The typed client's calls for `meshplay diff` and `meshplay deploy`:
//! a plugin's source as the master runs it, and a deployment (sent as
//! MessagePack, so filter modules travel as bytes).

use super::{ApiClient, ApiClientError, decode};
use crate::rest::{Deployed, Deployment, PluginUpload};
use crate::uri::encode_component;
use bytes::Bytes;
use hyper::Method;

impl ApiClient {
    /// `GET /api/v1/plugins/{name}/source`; `None` for a plugin the
    /// master does not run.
    pub async fn plugin_source(&self, name: &str) -> Result<Option<PluginUpload>, ApiClientError> {
        let path = format!("/api/v1/plugins/{}/source", encode_component(name));
        match self.call(Method::GET, &path, None::<&()>).await {
            Ok((_, v)) => Ok(Some(v)),
            Err(e) if e.code() == Some("not_found") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `POST /api/v1/catalogue`: applies `deployment` as one change.
    pub async fn deploy(&self, deployment: &Deployment) -> Result<Deployed, ApiClientError> {
        let body = rmp_serde::to_vec_named(deployment).expect("deployments encode");
        let (status, bytes) = self
            .send(
                Method::POST,
                "/api/v1/catalogue",
                "application/msgpack",
                Bytes::from(body),
            )
            .await?;
        decode(status, &bytes)
    }
}
