//! The typed client's calls for plugin variables
//! (`/api/v1/plugins/{name}/vars`, admin tokens only).

use super::{ApiClient, ApiClientError};
use crate::mesophyll::message::Tenant;
use crate::rest::{VarChange, VarChanged, VarList};
use crate::uri::encode_component;
use hyper::Method;

impl ApiClient {
    /// `GET /api/v1/plugins/{name}/vars`: secrets show only as set or not.
    pub async fn vars(&self, plugin: &str) -> Result<VarList, ApiClientError> {
        let path = format!("/api/v1/plugins/{}/vars", encode_component(plugin));
        self.call(Method::GET, &path, None::<&()>)
            .await
            .map(|(_, v)| v)
    }

    /// `PUT /api/v1/plugins/{name}/vars/{var}`.
    pub async fn set_var(
        &self,
        plugin: &str,
        name: &str,
        change: &VarChange,
    ) -> Result<VarChanged, ApiClientError> {
        let path = format!(
            "/api/v1/plugins/{}/vars/{}",
            encode_component(plugin),
            encode_component(name)
        );
        self.call(Method::PUT, &path, Some(change))
            .await
            .map(|(_, v)| v)
    }

    /// `DELETE /api/v1/plugins/{name}/vars/{var}` (for `tenant` alone when
    /// given).
    pub async fn unset_var(
        &self,
        plugin: &str,
        name: &str,
        tenant: Option<&Tenant>,
    ) -> Result<VarChanged, ApiClientError> {
        let mut path = format!(
            "/api/v1/plugins/{}/vars/{}",
            encode_component(plugin),
            encode_component(name)
        );
        if let Some(t) = tenant {
            path.push_str(&format!(
                "?tenant_type={}&tenant_id={}",
                encode_component(&t.kind),
                encode_component(&t.id)
            ));
        }
        self.call(Method::DELETE, &path, None::<&()>)
            .await
            .map(|(_, v)| v)
    }
}
