//! `meshplay diff` and `meshplay deploy` (see [`crate::author::deploy`]).

use super::{CliError, ClientArgs, client, print_json};
use crate::author::{deploy, folders};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub(super) struct DeployArgs {
    /// Plugin folders, or folders of them [default: this folder, or
    /// ./plugins].
    dirs: Vec<PathBuf>,
    /// The folder of `<name>.wasm` filters to deploy beside them [default:
    /// ./filters/dist when there is one].
    #[arg(long, value_name = "DIR")]
    filters: Option<PathBuf>,
    /// Also remove the master's uploaded plugins and filters that are not
    /// here.
    #[arg(long)]
    prune: bool,
    #[command(flatten)]
    client: ClientArgs,
}

impl DeployArgs {
    async fn compare(&self) -> Result<(deploy::Local, deploy::Diff), CliError> {
        let plugins = folders::plugin_folders(&self.dirs)?;
        let filters = self.filters.clone().or_else(folders::default_filters);
        let local = deploy::read_local(&plugins, filters.as_deref())?;
        let diff = deploy::diff(&client(&self.client)?, &local, self.prune).await?;
        Ok((local, diff))
    }
}

/// `meshplay diff`: what `deploy` would change.
pub(super) async fn diff(args: DeployArgs) -> Result<ExitCode, CliError> {
    let (_, diff) = args.compare().await?;
    if args.client.json {
        print_json(&diff);
    } else {
        print!("{}", diff.render());
    }
    Ok(ExitCode::SUCCESS)
}

/// `meshplay deploy`: the diff, applied as one change.
pub(super) async fn deploy(args: DeployArgs) -> Result<ExitCode, CliError> {
    let (local, diff) = args.compare().await?;
    if !args.client.json {
        print!("{}", diff.render());
    }
    if diff.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let deployed = client(&args.client)?
        .deploy(&diff.deployment(&local))
        .await?;
    if args.client.json {
        print_json(&deployed);
    } else {
        println!(
            "deployed revision {}: put {}; removed {}",
            deployed.revision,
            counted(deployed.plugins.len(), deployed.filters.len()),
            counted(
                deployed.removed_plugins.len(),
                deployed.removed_filters.len()
            )
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `2 plugins, 1 filter`, or `nothing`.
fn counted(plugins: usize, filters: usize) -> String {
    let one = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    match (plugins, filters) {
        (0, 0) => "nothing".into(),
        (p, 0) => one(p, "plugin"),
        (0, f) => one(f, "filter"),
        (p, f) => format!("{}, {}", one(p, "plugin"), one(f, "filter")),
    }
}
