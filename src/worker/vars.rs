//! Plugin variables in a worker: the values its master hands it
//! (`GET /db/vars`, reloaded on `VarsChanged`), and `vars.get` in Luau.
//!
//! ```lua
//! local key = vars.get("api_key")   -- this tenant's value, else the plugin's, else the default
//! ```
//!
//! A plugin reads only its own variables, and only those its manifest
//! declares (another name raises `vars.get: plugin P declares no variable
//! N`); scripts (RunScript) run under no plugin and read none. A plugin
//! whose required variable has no value for the tenant does not run: its
//! result is `not_configured` ([`VarsBook::missing`]). Values never go to
//! a log line; filters get none.

use crate::catalogue::manifest::Manifest;
use crate::mesophyll::db::VarValue;
use crate::mesophyll::message::Tenant;
use crate::worker::invocation::Invocation;
use mlua::{Lua, Table};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// (plugin, tenant, name): a tenant's own value, or with `None` the
/// plugin's.
type Key = (String, Option<Tenant>, String);

/// The values this worker holds.
#[derive(Default)]
pub struct VarsBook {
    values: RwLock<HashMap<Key, String>>,
}

impl VarsBook {
    /// Replaces every value with `values` (a fresh load).
    pub fn replace(&self, values: Vec<VarValue>) {
        let map = values
            .into_iter()
            .map(|v| ((v.plugin, v.tenant, v.name), v.value))
            .collect();
        *self.values.write().unwrap() = map;
    }

    /// The value `manifest`'s plugin sees for `name` as `tenant`: the
    /// tenant's own, the plugin's, the default; `None` when undeclared.
    pub fn get(&self, manifest: &Manifest, tenant: &Tenant, name: &str) -> Option<Option<String>> {
        let declared = manifest.variables.get(name)?;
        let values = self.values.read().unwrap();
        let own = (manifest.name.clone(), Some(tenant.clone()), name.to_owned());
        let plugin = (manifest.name.clone(), None, name.to_owned());
        Some(
            values
                .get(&own)
                .or_else(|| values.get(&plugin))
                .cloned()
                .or_else(|| declared.default.clone()),
        )
    }

    /// The first required variable of `manifest` without a value for
    /// `tenant`.
    pub fn missing<'m>(&self, manifest: &'m Manifest, tenant: &Tenant) -> Option<&'m str> {
        manifest
            .variables
            .iter()
            .filter(|(_, v)| v.required)
            .find(|(name, _)| self.get(manifest, tenant, name).flatten().is_none())
            .map(|(name, _)| name.as_str())
    }
}

/// The `vars` table of a tenant's VM.
pub fn table(
    lua: &Lua,
    tenant: &Tenant,
    invocation: &Arc<Invocation>,
    book: &Arc<VarsBook>,
) -> mlua::Result<Table> {
    let (tenant, invocation, book) = (tenant.clone(), Arc::clone(invocation), Arc::clone(book));
    let t = lua.create_table()?;
    t.set(
        "get",
        lua.create_function(move |_, name: String| {
            let Some(plugin) = invocation.plugin() else {
                return Err(mlua::Error::runtime(
                    "vars.get: scripts run under no plugin and have no variables",
                ));
            };
            book.get(&plugin.manifest, &tenant, &name).ok_or_else(|| {
                mlua::Error::runtime(format!(
                    "vars.get: plugin {} declares no variable {name:?}",
                    plugin.manifest.name
                ))
            })
        })?,
    )?;
    t.set_readonly(true);
    Ok(t)
}
