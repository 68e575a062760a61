//! A plugin checked and compiled: the one place that decides whether a
//! bundle (manifest and `.luau` files as text) is a plugin.
//!
//! The master calls [`build`] on every upload before it stores it; a worker
//! calls it again on what it receives and keeps the bytecode, so a syntax
//! error is found at upload and creating a tenant VM compiles nothing.
//! Only our own compiler's output is ever loaded as bytecode: Luau does not
//! verify bytecode, so bytecode from outside would be a way out of the
//! sandbox.

use crate::catalogue::manifest::Manifest;
use crate::catalogue::name::check_name;
use crate::mesophyll::db::PluginBundle;
use mlua::chunk::Compiler;
use std::path::PathBuf;

/// A loaded plugin: its manifest and its entry chunk as bytecode.
#[derive(Debug)]
pub struct Plugin {
    /// The manifest.
    pub manifest: Manifest,
    /// Luau bytecode of the entry file.
    pub bytecode: Vec<u8>,
    /// What it was built from, to tell an unchanged plugin on reload.
    pub bundle: PluginBundle,
}

impl Plugin {
    /// Whether this plugin handles events named `event`.
    pub fn handles(&self, event: &str) -> bool {
        self.manifest.events.iter().any(|e| e == event)
    }

    /// Whether it takes `event` as a webhook from outside.
    pub fn takes_webhook(&self, event: &str) -> bool {
        self.manifest.webhooks.iter().any(|e| e == event)
    }
}

/// Why one plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The plugin is not valid; `plugin` names it (folder or upload).
    #[error("plugin {plugin}: {message}")]
    Invalid {
        /// The folder or upload name.
        plugin: String,
        /// What is wrong.
        message: String,
    },
}

/// Whether `file` may name one of a plugin's files: a plain `.luau` file
/// name, never a path (an upload's file map must not reach outside the
/// plugin when a worker or a tool writes it to disk).
pub fn valid_file_name(file: &str) -> bool {
    file.len() <= 128
        && file.ends_with(".luau")
        && file.len() > ".luau".len()
        && !file.starts_with('.')
        && file
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The most `allowed_hosts` entries a manifest may list (each fetch is
/// matched against them in turn).
pub const MAX_ALLOWED_HOSTS: usize = 64;

/// A manifest's `[variables]`: names, count, and defaults that make sense.
fn check_variables(manifest: &Manifest) -> Result<(), String> {
    use crate::catalogue::manifest::{MAX_VARIABLE_BYTES, MAX_VARIABLES, valid_variable_name};
    if manifest.variables.len() > MAX_VARIABLES {
        return Err(format!(
            "{} variables (at most {MAX_VARIABLES})",
            manifest.variables.len()
        ));
    }
    for (name, var) in &manifest.variables {
        if !valid_variable_name(name) {
            return Err(format!(
                "variable name {name:?} is not [a-z0-9_] of 1 to 64, not starting with a digit"
            ));
        }
        if var.secret && var.default.is_some() {
            return Err(format!(
                "variable {name}: a secret has no default (it would sit in plugin.toml)"
            ));
        }
        if var
            .default
            .as_ref()
            .is_some_and(|d| d.len() > MAX_VARIABLE_BYTES)
        {
            return Err(format!(
                "variable {name}: a default over {MAX_VARIABLE_BYTES} bytes"
            ));
        }
    }
    Ok(())
}

/// Checks and compiles one bundle.
pub fn build(bundle: &PluginBundle) -> Result<Plugin, PluginError> {
    let invalid = |message: String| PluginError::Invalid {
        plugin: bundle.name.clone(),
        message,
    };
    let manifest: Manifest = toml::from_str(&bundle.manifest)
        .map_err(|e| invalid(format!("plugin.toml: {}", e.message())))?;
    check_name(&manifest.name).map_err(invalid)?;
    if let Some(bad) = bundle.files.keys().find(|f| !valid_file_name(f)) {
        return Err(invalid(format!(
            "file name {bad:?} is not a plain .luau file name ([A-Za-z0-9._-], no path)"
        )));
    }
    if manifest.events.is_empty() {
        return Err(invalid("handles no events".into()));
    }
    if let Some(w) = manifest
        .webhooks
        .iter()
        .find(|w| !manifest.events.contains(w))
    {
        return Err(invalid(format!(
            "webhook {w:?} is not among its events (a webhook is an event it handles)"
        )));
    }
    check_variables(&manifest).map_err(invalid)?;
    if manifest.publishes.len() > MAX_ALLOWED_HOSTS {
        return Err(invalid(format!(
            "{} publishes entries (at most {MAX_ALLOWED_HOSTS})",
            manifest.publishes.len()
        )));
    }
    for p in &manifest.publishes {
        crate::catalogue::subject::check_pattern(p)
            .map_err(|e| invalid(format!("publishes: {e}")))?;
    }
    if manifest.allowed_hosts.len() > MAX_ALLOWED_HOSTS {
        return Err(invalid(format!(
            "{} allowed_hosts entries (at most {MAX_ALLOWED_HOSTS})",
            manifest.allowed_hosts.len()
        )));
    }
    for f in &manifest.filters {
        if !crate::catalogue::name::valid_name(&f.name) {
            return Err(invalid(format!("filter name {:?} is not valid", f.name)));
        }
    }
    let source = bundle.files.get(&manifest.entry).ok_or_else(|| {
        invalid(format!(
            "no entry file {:?} among its files",
            manifest.entry
        ))
    })?;
    let bytecode = compile(source.as_bytes())
        .map_err(|message| invalid(format!("{}: {message}", manifest.entry)))?;
    Ok(Plugin {
        manifest,
        bytecode,
        bundle: bundle.clone(),
    })
}

/// Compiles Luau source to bytecode; the error is the compiler's message.
pub fn compile(source: &[u8]) -> Result<Vec<u8>, String> {
    Compiler::new()
        .set_optimization_level(1)
        .compile(source)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn bundle(manifest: &str, files: &[(&str, &str)]) -> PluginBundle {
        PluginBundle {
            name: "a".into(),
            manifest: manifest.into(),
            files: files
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn an_entry_that_is_not_among_the_files_is_refused() {
        let b = bundle(
            "name='a'\nversion='1'\nevents=['x']\nentry='../../etc/passwd'",
            &[],
        );
        let err = build(&b).unwrap_err();
        assert!(err.to_string().contains("no entry file"), "{err}");
    }

    #[test]
    fn a_webhook_must_be_one_of_the_events() {
        let files = [("init.luau", "return {}")];
        let b = bundle(
            "name='a'\nversion='1'\nevents=['x']\nwebhooks=['y']",
            &files,
        );
        let err = build(&b).unwrap_err();
        assert!(
            err.to_string()
                .contains("webhook \"y\" is not among its events"),
            "{err}"
        );
        let b = bundle(
            "name='a'\nversion='1'\nevents=['x']\nwebhooks=['x']",
            &files,
        );
        let p = build(&b).unwrap();
        assert!(p.takes_webhook("x") && !p.takes_webhook("y"));
    }

    #[test]
    fn a_file_map_that_names_a_path_is_refused() {
        for bad in ["../../x.luau", "a/b.luau", ".hidden.luau", "x.lua", ".luau"] {
            let b = bundle(
                "name='a'\nversion='1'\nevents=['x']",
                &[("init.luau", "return {}"), (bad, "return 1")],
            );
            let err = build(&b).unwrap_err();
            assert!(err.to_string().contains("file name"), "{bad}: {err}");
        }
    }

    #[test]
    fn manifests_declare_filters_and_operations() {
        let b = bundle(
            r#"
                name = "g"
                version = "1"
                events = ["sign"]
                operations = [{ name = "sign", description = "Sign it" }]
                [[filters]]
                name = "redact"
                config = { min_digits = 8 }
                on_error = "continue"
            "#,
            &[("init.luau", "return {}")],
        );
        let p = build(&b).unwrap();
        assert_eq!(p.manifest.operations[0].name, "sign");
        assert_eq!(
            p.manifest.filters[0].config,
            serde_json::json!({"min_digits": 8})
        );
        assert_eq!(
            p.manifest.filters[0].on_error,
            crate::catalogue::manifest::OnError::Continue
        );
    }

    #[test]
    fn syntax_errors_name_the_file() {
        let b = bundle(
            "name='a'\nversion='1'\nevents=['x']",
            &[("init.luau", "return {")],
        );
        let err = build(&b).unwrap_err().to_string();
        assert!(err.contains("plugin a: init.luau:"), "{err}");
    }
}
