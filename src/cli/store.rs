//! `meshplay store copy --from URL --to URL`: moves all data between
//! backends ([`crate::master::store::copy`]).

use super::CliError;
use super::serve::store_url;
use crate::master::store::{StoreUrl, copy};
use clap::Subcommand;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub(super) enum StoreCommand {
    /// Copy everything (KV, global entries, tenant states, uploads, tokens,
    /// the audit log) from one store into another, empty one. Stop the
    /// master that uses the source first.
    Copy {
        /// The source: sled:PATH or postgres://...
        #[arg(long)]
        from: String,
        /// The destination, which must be empty.
        #[arg(long)]
        to: String,
        /// Print the counts as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(super) async fn store(command: StoreCommand) -> Result<ExitCode, CliError> {
    let StoreCommand::Copy { from, to, json } = command;
    let (from, to) = (store_url(&from)?, store_url(&to)?);
    if from == to {
        return Err(CliError::Usage("--from and --to are the same store".into()));
    }
    let failed =
        |what: &str, url: &StoreUrl, e| CliError::Usage(format!("{what} {}: {e}", url.redacted()));
    let source = from
        .open()
        .await
        .map_err(|e| failed("cannot open", &from, e))?;
    let destination = to.open().await.map_err(|e| failed("cannot open", &to, e))?;
    let n = copy::copy(source.as_ref(), destination.as_ref())
        .await
        .map_err(|e| failed("cannot copy into", &to, e))?;
    if json {
        println!("{}", serde_json::to_string(&n).unwrap_or_default());
    } else {
        println!(
            "copied {} KV records, {} global entries, {} tenant states, {} uploads, {} tokens, {} plugin variables, {} audit entries, {} timers, {} schedules\nfrom {}\nto   {}",
            n.kv,
            n.global,
            n.tenant_states,
            n.catalogue,
            n.tokens,
            n.vars,
            n.audit,
            n.timers,
            n.schedules,
            from.redacted(),
            to.redacted()
        );
    }
    Ok(ExitCode::SUCCESS)
}
