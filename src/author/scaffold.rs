//! `meshplay new plugin NAME` and `meshplay new filter NAME`: folders that
//! work as they are, with comments that teach.
//!
//! A plugin folder is a manifest, an entry file and a test file, from one
//! of the [`PluginTemplate`]s; `meshplay test NAME` passes on it at once.
//! A filter folder is a Rust crate for one of the two ABIs: on Meshplay's
//! (v1) with the filter SDK copied into it (so it builds offline), or on
//! proxy-wasm with the public SDK from crates.io. The templates are in
//! `src/author/templates/`, compiled into the binary.

use crate::author::AuthorError;
use crate::catalogue::name::check_name;
use std::path::{Path, PathBuf};

/// What a new plugin starts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PluginTemplate {
    /// Greets by name and counts greetings in the tenant's KV store.
    Hello,
    /// Calls an HTTP API (allowed_hosts, a secret API key, mocked in its
    /// tests).
    HttpApi,
    /// Receives signed webhooks on the master's /hooks endpoint.
    Webhook,
}

/// The ABI a new filter speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FilterAbi {
    /// Meshplay's filter ABI, with its SDK: one function from input to
    /// verdict (wasm32-unknown-unknown).
    V1,
    /// proxy-wasm 0.2.1 with the public Rust SDK, as for Envoy
    /// (wasm32-wasip1).
    ProxyWasm,
}

/// One file of a template: where it goes (with `{{name}}` replaced) and
/// what it holds.
type TemplateFile = (&'static str, &'static str);

fn plugin_files(template: PluginTemplate) -> [TemplateFile; 3] {
    macro_rules! files {
        ($dir:literal) => {
            [
                (
                    "plugin.toml",
                    include_str!(concat!("templates/", $dir, "/plugin.toml")),
                ),
                (
                    "init.luau",
                    include_str!(concat!("templates/", $dir, "/init.luau")),
                ),
                (
                    "{{name}}.test.luau",
                    include_str!(concat!("templates/", $dir, "/test.luau")),
                ),
            ]
        };
    }
    match template {
        PluginTemplate::Hello => files!("hello"),
        PluginTemplate::HttpApi => files!("http-api"),
        PluginTemplate::Webhook => files!("webhook"),
    }
}

fn filter_files(abi: FilterAbi) -> Vec<TemplateFile> {
    match abi {
        FilterAbi::V1 => vec![
            ("Cargo.toml", include_str!("templates/filter-v1/Cargo.toml")),
            ("src/lib.rs", include_str!("templates/filter-v1/lib.rs")),
            ("sdk/Cargo.toml", SDK_MANIFEST),
            (
                "sdk/src/lib.rs",
                include_str!("../../filters/sdk/src/lib.rs"),
            ),
            (
                "sdk/src/bump.rs",
                include_str!("../../filters/sdk/src/bump.rs"),
            ),
        ],
        FilterAbi::ProxyWasm => vec![
            (
                "Cargo.toml",
                include_str!("templates/filter-proxy-wasm/Cargo.toml"),
            ),
            (
                "src/lib.rs",
                include_str!("templates/filter-proxy-wasm/lib.rs"),
            ),
        ],
    }
}

/// The copied SDK's manifest: the workspace's own inherits from
/// `filters/Cargo.toml`, which the copy does not have.
const SDK_MANIFEST: &str = r#"[package]
name = "meshplay-filter-sdk"
description = "Write a Meshplay WASM filter as one function from input to verdict"
version = "1.0.0"
edition = "2024"
rust-version = "1.95"
license = "MIT OR Apache-2.0"

[dependencies]
rmp-serde = "1"
serde = { version = "1", features = ["derive"] }
serde_json = "1"

[features]
default = ["bump"]
bump = []
"#;

/// Writes a new plugin `name` from `template` into `into/name`; answers
/// the folder.
///
/// Fails when `name` is not a valid plugin name or the folder exists.
pub fn new_plugin(
    into: &Path,
    name: &str,
    template: PluginTemplate,
) -> Result<PathBuf, AuthorError> {
    write_all(into, name, &plugin_files(template), name)
}

/// Writes a new filter crate `name` for `abi` into `into/name`; answers
/// the folder.
///
/// Fails when `name` is not a valid filter name or the folder exists.
pub fn new_filter(into: &Path, name: &str, abi: FilterAbi) -> Result<PathBuf, AuthorError> {
    write_all(into, name, &filter_files(abi), &name.replace('-', "_"))
}

/// The command that builds filter folder `dir` and where its module lands.
pub fn filter_build(dir: &Path) -> Result<(Vec<String>, PathBuf), AuthorError> {
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml"))?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().replace('-', "_"))
        .unwrap_or_default();
    let target = if manifest.contains("proxy-wasm") {
        "wasm32-wasip1"
    } else {
        "wasm32-unknown-unknown"
    };
    // The crate's own target folder, whatever CARGO_TARGET_DIR says: the
    // module is read from there.
    let command = [
        "cargo",
        "build",
        "--release",
        "--target",
        target,
        "--target-dir",
        "target",
    ]
    .map(str::to_owned)
    .to_vec();
    Ok((
        command,
        dir.join(format!("target/{target}/release/{name}.wasm")),
    ))
}

fn write_all(
    into: &Path,
    name: &str,
    files: &[TemplateFile],
    crate_name: &str,
) -> Result<PathBuf, AuthorError> {
    check_name(name).map_err(|e| AuthorError::Usage(format!("{name:?}: {e}")))?;
    // `hello`, not `./hello`, in every line that names it.
    let dir = if into == Path::new(".") {
        PathBuf::from(name)
    } else {
        into.join(name)
    };
    if dir.exists() {
        return Err(AuthorError::Usage(format!(
            "{} exists already",
            dir.display()
        )));
    }
    for (path, text) in files {
        let path = dir.join(path.replace("{{name}}", name));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let text = text
            .replace("{{name}}", name)
            .replace("{{crate}}", crate_name);
        std::fs::write(&path, text)?;
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_plugin_template_builds_as_the_master_would() {
        for template in [
            PluginTemplate::Hello,
            PluginTemplate::HttpApi,
            PluginTemplate::Webhook,
        ] {
            let tmp = tempfile::tempdir().unwrap();
            let dir = new_plugin(tmp.path(), "my-plugin", template).unwrap();
            let plugin = crate::author::folders::check(&dir).unwrap();
            assert_eq!(plugin.manifest.name, "my-plugin");
            assert!(dir.join("my-plugin.test.luau").is_file());
            let test = std::fs::read_to_string(dir.join("my-plugin.test.luau")).unwrap();
            crate::catalogue::plugin::compile(test.as_bytes()).unwrap();
            assert!(!test.contains("{{"), "{template:?}");
        }
    }

    #[test]
    fn a_bad_name_or_a_folder_that_exists_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(matches!(
            new_plugin(tmp.path(), "No Spaces", PluginTemplate::Hello),
            Err(AuthorError::Usage(_))
        ));
        new_plugin(tmp.path(), "twice", PluginTemplate::Hello).unwrap();
        let again = new_plugin(tmp.path(), "twice", PluginTemplate::Hello).unwrap_err();
        assert!(again.to_string().contains("exists already"), "{again}");
    }

    #[test]
    fn a_filter_folder_knows_its_build() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = new_filter(tmp.path(), "max-len", FilterAbi::V1).unwrap();
        let lib = std::fs::read_to_string(dir.join("src/lib.rs")).unwrap();
        assert!(lib.contains("filter!(max_len);"));
        let (command, module) = filter_build(&dir).unwrap();
        let build = "cargo build --release --target wasm32-unknown-unknown --target-dir target";
        assert_eq!(command.join(" "), build);
        assert!(module.ends_with("target/wasm32-unknown-unknown/release/max_len.wasm"));
        let dir = new_filter(tmp.path(), "stamp", FilterAbi::ProxyWasm).unwrap();
        assert_eq!(
            filter_build(&dir).unwrap().0.join(" "),
            "cargo build --release --target wasm32-wasip1 --target-dir target"
        );
    }
}
