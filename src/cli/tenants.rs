//! The commands that reach one tenant's VM: `dispatch`, `run-script` and
//! `drop`.

use super::{CliError, TenantArgs, client, parse_json, print_json};
use crate::client::DispatchOutcome;
use crate::mesophyll::message::Event;
use crate::rest::{DispatchRequest, ScriptRequest};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub(super) struct DispatchArgs {
    #[command(flatten)]
    pub(super) tenant: TenantArgs,
    /// The event's name.
    pub(super) event: String,
    /// The event's data, as JSON.
    #[arg(long, default_value = "null")]
    pub(super) data: String,
    /// Return once the event is queued instead of waiting for the results.
    #[arg(long)]
    pub(super) no_wait: bool,
    /// Budget for all the plugins together.
    #[arg(long)]
    pub(super) timeout_ms: Option<u64>,
}

#[derive(Debug, Args)]
pub(super) struct ScriptArgs {
    #[command(flatten)]
    pub(super) tenant: TenantArgs,
    /// The Luau file to run.
    pub(super) file: PathBuf,
    /// Data of the event the script receives as `...`, as JSON.
    #[arg(long, default_value = "null")]
    pub(super) data: String,
    /// Budget for the script.
    #[arg(long)]
    pub(super) timeout_ms: Option<u64>,
}

pub(super) async fn dispatch(args: DispatchArgs) -> Result<ExitCode, CliError> {
    let t = &args.tenant;
    let req = DispatchRequest {
        name: args.event,
        data: parse_json("--data", &args.data)?,
        wait: !args.no_wait,
        timeout_ms: args.timeout_ms,
    };
    let outcome = client(&t.client)?.dispatch(&t.kind, &t.id, &req).await?;
    match outcome {
        DispatchOutcome::Accepted(a) => {
            if t.client.json {
                print_json(&a);
            } else {
                println!("queued for {} on worker {}", a.tenant, a.worker);
            }
            Ok(ExitCode::SUCCESS)
        }
        DispatchOutcome::Done(d) => {
            let failed = d.results.iter().any(|r| r.error.is_some());
            if t.client.json {
                print_json(&d);
            } else {
                for r in &d.results {
                    match (&r.value, &r.error) {
                        (_, Some(e)) => println!("{}: error ({}): {}", r.plugin, e.code, e.message),
                        (v, None) => println!(
                            "{}: {}",
                            r.plugin,
                            serde_json::to_string(v.as_ref().unwrap_or(&serde_json::Value::Null))
                                .expect("JSON values serialise")
                        ),
                    }
                }
            }
            Ok(if failed {
                ExitCode::from(3)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

pub(super) async fn run_script(args: ScriptArgs) -> Result<ExitCode, CliError> {
    let t = &args.tenant;
    let code = std::fs::read_to_string(&args.file)
        .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", args.file.display())))?;
    let req = ScriptRequest {
        name: args
            .file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned()),
        code,
        event: Some(Event {
            name: "script".into(),
            data: parse_json("--data", &args.data)?.into(),
            ..Default::default()
        }),
        timeout_ms: args.timeout_ms,
    };
    let out = client(&t.client)?.run_script(&t.kind, &t.id, &req).await?;
    if t.client.json {
        print_json(&out);
    } else {
        print_json(&out.result);
    }
    Ok(ExitCode::SUCCESS)
}

/// `meshplay drop TYPE ID`.
pub(super) async fn drop_vm(t: TenantArgs) -> Result<ExitCode, CliError> {
    let dropped = client(&t.client)?.drop_tenant(&t.kind, &t.id).await?;
    if t.client.json {
        print_json(&dropped);
    } else {
        println!(
            "dropped the VM of {} on worker {}",
            dropped.tenant, dropped.worker
        );
    }
    Ok(ExitCode::SUCCESS)
}
