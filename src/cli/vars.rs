//! `meshplay vars list|set|unset`: the settings and secrets of a plugin,
//! for every tenant or one (`--tenant TYPE ID`).

use super::{CliError, ClientArgs, client, print_json};
use crate::mesophyll::message::Tenant;
use crate::rest::VarChange;
use clap::{Args, Subcommand};
use std::io::Read;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub(super) enum VarsCommand {
    /// Show a plugin's variables (a secret only as set or unset).
    List {
        /// The plugin.
        plugin: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Give a variable a value; `-` reads it from standard input (for a
    /// secret: it stays out of the shell's history and of `ps`).
    Set {
        #[command(flatten)]
        at: VarArgs,
        /// The value, or `-`.
        value: String,
    },
    /// Take a variable's value away (the default applies again).
    Unset(VarArgs),
}

#[derive(Debug, Args)]
pub(super) struct VarArgs {
    /// The plugin.
    plugin: String,
    /// The variable.
    name: String,
    /// For this tenant alone (overriding the plugin's value).
    #[arg(long, num_args = 2, value_names = ["TYPE", "ID"])]
    tenant: Option<Vec<String>>,
    #[command(flatten)]
    client: ClientArgs,
}

impl VarArgs {
    fn tenant(&self) -> Option<Tenant> {
        self.tenant
            .as_ref()
            .map(|t| Tenant::new(t[0].clone(), t[1].clone()))
    }
}

pub(super) async fn vars(cmd: VarsCommand) -> Result<ExitCode, CliError> {
    match cmd {
        VarsCommand::List { plugin, client: c } => {
            let list = client(&c)?.vars(&plugin).await?;
            if c.json {
                print_json(&list);
                return Ok(ExitCode::SUCCESS);
            }
            for v in &list.vars {
                let value = match (&v.value, v.secret, v.set) {
                    (_, true, true) => "(secret, set)".to_owned(),
                    (_, true, false) => "(secret, unset)".to_owned(),
                    (Some(value), false, set) => {
                        format!("{value:?}{}", if set { "" } else { " (default)" })
                    }
                    (None, false, _) => "(unset)".to_owned(),
                };
                let required = if v.required { " required" } else { "" };
                println!("{}{required} = {value}", v.name);
                for o in &v.overrides {
                    let value = o
                        .value
                        .as_deref()
                        .map_or("(secret, set)".to_owned(), |v| format!("{v:?}"));
                    println!("  {} = {value}", o.tenant);
                }
            }
        }
        VarsCommand::Set { at, value } => {
            let value = if value == "-" {
                let mut s = String::new();
                std::io::stdin()
                    .read_to_string(&mut s)
                    .map_err(|e| CliError::Usage(format!("cannot read the value: {e}")))?;
                s.trim_end_matches(['\n', '\r']).to_owned()
            } else {
                value
            };
            let change = VarChange {
                value,
                tenant: at.tenant(),
            };
            let done = client(&at.client)?
                .set_var(&at.plugin, &at.name, &change)
                .await?;
            println!("{}.{} set", done.plugin, done.name);
        }
        VarsCommand::Unset(at) => {
            let tenant = at.tenant();
            let done = client(&at.client)?
                .unset_var(&at.plugin, &at.name, tenant.as_ref())
                .await?;
            let was = if done.existed == Some(true) {
                "unset"
            } else {
                "had no value"
            };
            println!("{}.{} {was}", done.plugin, done.name);
        }
    }
    Ok(ExitCode::SUCCESS)
}
