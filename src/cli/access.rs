//! `meshplay tokens create|list|revoke`, `meshplay join-token
//! create|list|revoke` and `meshplay audit`: the API's tokens, the join
//! tokens of workers on other machines, and the audit log, for the admin.

use super::{CliError, ClientArgs, client, print_json};
use crate::rest::Role;
use clap::Subcommand;
use comfy_table::Table;
use comfy_table::presets::NOTHING;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub(super) enum TokensCommand {
    /// Mint a token; its secret is printed once and stored only hashed.
    Create {
        /// `admin`, `app` (dispatch, tenants' KV and state) or `read` (GET).
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// A name for people and the audit log (default: the role).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Every token: id, name, role, created, revoked. Never a secret.
    List(ClientArgs),
    /// Revoke a token by id: from now on it gets 401.
    Revoke {
        /// Its id (from `tokens list`).
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum JoinTokenCommand {
    /// Mint a join token for `meshplay worker --join` on other machines;
    /// its secret is printed once and stored only hashed.
    Create {
        /// How long it lets workers join (`1h`, `7d`, `90s`); the workers
        /// that joined stay until it is revoked.
        #[arg(long, default_value = "1h", value_parser = super::bench::parse_duration)]
        ttl: std::time::Duration,
        /// A name for people and the audit log (default: `join`).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Every join token, and the workers that joined with it.
    List(ClientArgs),
    /// Revoke a join token: no more joins with it, and every worker that
    /// joined with it is disconnected and stops.
    Revoke {
        /// Its id (from `join-token list`).
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub(super) async fn join_tokens(command: JoinTokenCommand) -> Result<ExitCode, CliError> {
    match command {
        JoinTokenCommand::Create {
            ttl,
            name,
            client: c,
        } => {
            let ttl_s = ttl.as_secs().max(1);
            let created = client(&c)?
                .create_join_token(Some(ttl_s), name.as_deref())
                .await?;
            if c.json {
                print_json(&created);
            } else {
                println!("{}", created.token);
                eprintln!(
                    "join token {} ({}): lets workers join until {}; shown this once",
                    created.info.id,
                    created.info.name,
                    created.info.expires_at.map(when).unwrap_or_default()
                );
            }
        }
        JoinTokenCommand::List(c) => {
            let list = client(&c)?.join_tokens().await?;
            if c.json {
                print_json(&list);
                return Ok(ExitCode::SUCCESS);
            }
            let mut table = Table::new();
            table
                .load_preset(NOTHING)
                .set_header(["ID", "NAME", "EXPIRES", "REVOKED", "WORKERS"]);
            for t in &list.tokens {
                let workers: Vec<String> = t
                    .workers
                    .iter()
                    .map(|w| format!("{}@{}", w.worker_id, w.host))
                    .collect();
                table.add_row([
                    t.info.id.clone(),
                    t.info.name.clone(),
                    t.info.expires_at.map(when).unwrap_or_default(),
                    if t.info.revoked { "yes" } else { "" }.into(),
                    workers.join(" "),
                ]);
            }
            println!("{table}");
        }
        JoinTokenCommand::Revoke { id, client: c } => {
            let t = client(&c)?.revoke_join_token(&id).await?;
            if c.json {
                print_json(&t);
            } else {
                println!(
                    "join token {} ({}) revoked, and its workers' sessions",
                    t.id, t.name
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_role(s: &str) -> Result<Role, String> {
    match s {
        "admin" => Ok(Role::Admin),
        "app" => Ok(Role::App),
        "read" => Ok(Role::Read),
        _ => Err("one of admin, app, read".into()),
    }
}

fn when(ms: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}

pub(super) async fn tokens(command: TokensCommand) -> Result<ExitCode, CliError> {
    match command {
        TokensCommand::Create {
            role,
            name,
            client: c,
        } => {
            let created = client(&c)?.create_token(role, name.as_deref()).await?;
            if c.json {
                print_json(&created);
            } else {
                println!("{}", created.token);
                eprintln!(
                    "token {} ({}, role {}): shown this once; keep it somewhere safe",
                    created.info.id, created.info.name, created.info.role
                );
            }
        }
        TokensCommand::List(c) => {
            let list = client(&c)?.tokens().await?;
            if c.json {
                print_json(&list);
                return Ok(ExitCode::SUCCESS);
            }
            let mut table = Table::new();
            table
                .load_preset(NOTHING)
                .set_header(["ID", "NAME", "ROLE", "CREATED", "REVOKED"]);
            for t in &list.tokens {
                table.add_row([
                    t.id.clone(),
                    t.name.clone(),
                    t.role.to_string(),
                    when(t.created_at),
                    if t.revoked { "yes" } else { "" }.into(),
                ]);
            }
            println!("{table}");
        }
        TokensCommand::Revoke { id, client: c } => {
            let t = client(&c)?.revoke_token(&id).await?;
            if c.json {
                print_json(&t);
            } else {
                println!("token {} ({}) revoked", t.id, t.name);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `meshplay audit`: the latest `limit` entries, oldest first.
pub(super) async fn audit(args: &ClientArgs, limit: usize) -> Result<ExitCode, CliError> {
    let api = client(args)?;
    // Page through to the end, keeping the last `limit`.
    let mut entries = std::collections::VecDeque::new();
    let mut after = None;
    loop {
        let page = api.audit(after, 1000).await?;
        for e in page.entries {
            if entries.len() == limit {
                entries.pop_front();
            }
            entries.push_back(e);
        }
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    if args.json {
        print_json(&entries);
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new();
    table
        .load_preset(NOTHING)
        .set_header(["AT", "TOKEN", "METHOD", "ROUTE", "TENANT", "STATUS"]);
    for e in &entries {
        table.add_row([
            when(e.at),
            e.token.clone(),
            e.method.clone(),
            e.route.clone(),
            e.tenant.clone().unwrap_or_default(),
            e.status.to_string(),
        ]);
    }
    println!("{table}");
    Ok(ExitCode::SUCCESS)
}
