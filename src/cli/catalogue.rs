//! `meshplay plugins` and `meshplay filters`: list, upload and remove what
//! the catalogue holds.

use super::{CliError, ClientArgs, client, print_json};
use crate::rest::{Changed, PluginUpload};
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub(super) enum PluginsCommand {
    /// The plugins in force and what they offer.
    List(ClientArgs),
    /// Upload the plugin in folder DIR (its plugin.toml and .luau files).
    Push {
        /// The plugin's folder.
        dir: PathBuf,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove an uploaded plugin.
    Rm {
        /// Its name.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum FiltersCommand {
    /// The filters in force.
    List(ClientArgs),
    /// Upload FILE.wasm as filter NAME (default: the file's stem).
    Push {
        /// The module.
        file: PathBuf,
        /// The filter's name.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove an uploaded filter.
    Rm {
        /// Its name.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

fn print_changed(c: &ClientArgs, what: &str, changed: &Changed) {
    if c.json {
        print_json(changed);
    } else {
        println!("{what}; catalogue revision {}", changed.revision);
    }
}

pub(super) async fn plugins(cmd: PluginsCommand) -> Result<ExitCode, CliError> {
    match cmd {
        PluginsCommand::List(c) => {
            let list = client(&c)?.plugins().await?;
            if c.json {
                print_json(&list);
                return Ok(ExitCode::SUCCESS);
            }
            for p in &list.plugins {
                let source = serde_json::to_value(p.source).expect("a source serialises");
                println!(
                    "{} {} ({}): events {}{}{}",
                    p.name,
                    p.version,
                    source.as_str().unwrap_or("?"),
                    p.events.join(", "),
                    if p.filters.is_empty() {
                        String::new()
                    } else {
                        format!("; filters {}", p.filters.join(" -> "))
                    },
                    if p.operations.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; offers {}",
                            p.operations
                                .iter()
                                .map(|o| o.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    },
                );
            }
        }
        PluginsCommand::Push { dir, client: c } => {
            let bundle = crate::catalogue::folder::read_bundle(&dir)
                .map_err(|e| CliError::Usage(e.to_string()))?;
            let manifest: toml::Table = toml::from_str(&bundle.manifest).map_err(|e| {
                CliError::Usage(format!("{}: {e}", dir.join("plugin.toml").display()))
            })?;
            let Some(name) = manifest.get("name").and_then(|n| n.as_str()) else {
                return Err(CliError::Usage("plugin.toml has no name".into()));
            };
            let upload = PluginUpload {
                manifest: bundle.manifest.clone(),
                files: bundle.files,
            };
            let changed = client(&c)?.put_plugin(name, &upload).await?;
            print_changed(&c, &format!("plugin {name} uploaded"), &changed);
        }
        PluginsCommand::Rm { name, client: c } => {
            let changed = client(&c)?.delete_plugin(&name).await?;
            print_changed(&c, &format!("plugin {name} removed"), &changed);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn filters(cmd: FiltersCommand) -> Result<ExitCode, CliError> {
    match cmd {
        FiltersCommand::List(c) => {
            let list = client(&c)?.filters().await?;
            if c.json {
                print_json(&list);
                return Ok(ExitCode::SUCCESS);
            }
            for f in &list.filters {
                let source = serde_json::to_value(f.source).expect("a source serialises");
                println!(
                    "{} ({}): {} bytes, sha256 {}",
                    f.name,
                    source.as_str().unwrap_or("?"),
                    f.size,
                    &f.sha256[..16]
                );
            }
        }
        FiltersCommand::Push {
            file,
            name,
            client: c,
        } => {
            let bytes = std::fs::read(&file)
                .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", file.display())))?;
            let name = name.unwrap_or_else(|| {
                file.file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default()
            });
            let changed = client(&c)?.put_filter(&name, bytes).await?;
            print_changed(&c, &format!("filter {name} uploaded"), &changed);
        }
        FiltersCommand::Rm { name, client: c } => {
            let changed = client(&c)?.delete_filter(&name).await?;
            print_changed(&c, &format!("filter {name} removed"), &changed);
        }
    }
    Ok(ExitCode::SUCCESS)
}
