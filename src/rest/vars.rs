//! The REST API's types for plugin variables
//! (`/api/v1/plugins/{name}/vars`): what a listing shows and what a change
//! sends. A secret's value is never in a listing, only whether it is set.

use crate::mesophyll::message::Tenant;
use serde::{Deserialize, Serialize};

/// One declared variable of a plugin, as an operator sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct VarInfo {
    /// Its name.
    pub name: String,
    /// What the manifest says it is.
    #[serde(default)]
    pub description: String,
    /// Whether it is a secret.
    pub secret: bool,
    /// Whether the plugin runs without it.
    pub required: bool,
    /// Whether the plugin has a value of its own (a default is not one).
    pub set: bool,
    /// The value in force (set, else the default); never a secret's.
    #[serde(default)]
    pub value: Option<String>,
    /// The tenants with a value of their own.
    #[serde(default)]
    pub overrides: Vec<VarOverride>,
}

/// A tenant's own value of a variable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct VarOverride {
    /// Whose.
    pub tenant: Tenant,
    /// The value; never a secret's.
    #[serde(default)]
    pub value: Option<String>,
}

/// `GET /api/v1/plugins/{name}/vars`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct VarList {
    /// The plugin.
    pub plugin: String,
    /// Its variables, by name.
    pub vars: Vec<VarInfo>,
}

/// `PUT /api/v1/plugins/{name}/vars/{var}`: the value, for the plugin or
/// (with `tenant`) for one tenant.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct VarChange {
    /// The new value.
    pub value: String,
    /// The tenant it is for; absent: the plugin's own value.
    #[serde(default)]
    pub tenant: Option<Tenant>,
}

impl std::fmt::Debug for VarChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VarChange")
            .field("value", &"<not shown>")
            .field("tenant", &self.tenant)
            .finish()
    }
}

/// The answer to a change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct VarChanged {
    /// The plugin.
    pub plugin: String,
    /// The variable.
    pub name: String,
    /// Whether it has a value (for that tenant) now.
    pub set: bool,
    /// For an unset: whether it had one before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub existed: Option<bool>,
}
