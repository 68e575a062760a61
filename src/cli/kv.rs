//! `meshplay kv get|set|delete|find`: one tenant's KV store.

use super::{CliError, TenantArgs, client, parse_json, print_json};
use clap::{Args, Subcommand};
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub(super) enum KvCommand {
    /// Print one value.
    Get(KvKeyArgs),
    /// Store one value (JSON; quote strings: '"text"').
    Set {
        #[command(flatten)]
        at: KvKeyArgs,
        /// The value, as JSON.
        value: String,
    },
    /// Delete one key.
    Delete(KvKeyArgs),
    /// List the keys of a scope that match a LIKE pattern (% and _).
    Find {
        #[command(flatten)]
        tenant: TenantArgs,
        /// The scope.
        scope: String,
        /// The pattern.
        #[arg(default_value = "%")]
        pattern: String,
        /// Start after this key (the previous page's last).
        #[arg(long)]
        after: Option<String>,
    },
}

#[derive(Debug, Args)]
pub(super) struct KvKeyArgs {
    #[command(flatten)]
    pub(super) tenant: TenantArgs,
    /// The scope.
    pub(super) scope: String,
    /// The key.
    pub(super) key: String,
}

pub(super) async fn kv(cmd: KvCommand) -> Result<ExitCode, CliError> {
    match cmd {
        KvCommand::Get(at) => {
            let t = &at.tenant;
            let record = client(&t.client)?
                .kv_get(&t.kind, &t.id, &at.scope, &at.key)
                .await?;
            match record {
                Some(r) if t.client.json => print_json(&r),
                Some(r) => print_json(&r.value),
                None => {
                    eprintln!(
                        "no key {:?} in scope {:?} of {}:{}",
                        at.key, at.scope, t.kind, t.id
                    );
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        KvCommand::Set { at, value } => {
            let t = &at.tenant;
            let value = parse_json("VALUE", &value)?;
            let r = client(&t.client)?
                .kv_set(&t.kind, &t.id, &at.scope, &at.key, &value)
                .await?;
            if t.client.json {
                print_json(&r);
            } else {
                println!("stored {}:{} {}/{}", t.kind, t.id, r.scope, r.key);
            }
        }
        KvCommand::Delete(at) => {
            let t = &at.tenant;
            let d = client(&t.client)?
                .kv_delete(&t.kind, &t.id, &at.scope, &at.key)
                .await?;
            if t.client.json {
                print_json(&d);
            } else if d.deleted {
                println!("deleted {}/{}", at.scope, at.key);
            } else {
                println!("nothing to delete at {}/{}", at.scope, at.key);
            }
        }
        KvCommand::Find {
            tenant: t,
            scope,
            pattern,
            after,
        } => {
            let page = client(&t.client)?
                .kv_find(&t.kind, &t.id, &scope, &pattern, after.as_deref())
                .await?;
            if t.client.json {
                print_json(&page);
            } else {
                for r in &page.records {
                    println!(
                        "{}\t{}",
                        r.key,
                        serde_json::to_string(&r.value).expect("JSON values serialise")
                    );
                }
                if let Some(next) = &page.next {
                    println!("(more: --after {next})");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
