//! `POST /api/v1/catalogue`: many plugins and filters changed as one
//! catalogue change (`meshplay deploy`), and `GET
//! /api/v1/plugins/{name}/source`, what `meshplay diff` compares with.

use super::PluginUpload;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The most bytes a deployment's body may take (its filters' modules
/// included).
pub const MAX_DEPLOY_BYTES: usize = 64 * 1024 * 1024;

/// One catalogue change: what to put and what to remove. Checked whole
/// before any of it is stored; workers see all of it or none of it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Deployment {
    /// Plugins to add or replace, by name.
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginUpload>,
    /// Filter modules to add or replace, by name (MessagePack bin; an
    /// array of bytes in JSON).
    #[serde(default)]
    #[cfg_attr(feature = "server", schema(value_type = BTreeMap<String, Vec<u8>>))]
    pub filters: BTreeMap<String, serde_bytes::ByteBuf>,
    /// Uploaded plugins to remove.
    #[serde(default)]
    pub remove_plugins: Vec<String>,
    /// Uploaded filters to remove.
    #[serde(default)]
    pub remove_filters: Vec<String>,
}

impl Deployment {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.plugins.is_empty()
            && self.filters.is_empty()
            && self.remove_plugins.is_empty()
            && self.remove_filters.is_empty()
    }
}

/// The answer to a deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Deployed {
    /// The catalogue's new revision: the one revision with all of it.
    pub revision: u64,
    /// The plugins put.
    pub plugins: Vec<String>,
    /// The filters put.
    pub filters: Vec<String>,
    /// The plugins removed.
    pub removed_plugins: Vec<String>,
    /// The filters removed.
    pub removed_filters: Vec<String>,
}
