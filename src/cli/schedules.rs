//! `meshplay schedules list|put|delete|timers`: a tenant's cron schedules
//! and its pending timers, through the REST API.

use super::{CliError, ClientArgs, client, print_json};
use crate::rest::SchedulePut;
use clap::{Args, Subcommand};
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub(super) enum SchedulesCommand {
    /// A tenant's schedules with their next runs.
    List(TenantOf),
    /// Run an event on a cron pattern (replacing a schedule of that name).
    Put {
        #[command(flatten)]
        at: TenantOf,
        /// The schedule's name.
        name: String,
        /// Five fields (`0 9 * * 1-5`), or six with seconds first.
        cron: String,
        /// The event each run dispatches.
        event: String,
        /// The event's data, as JSON.
        #[arg(long, default_value = "null")]
        data: String,
        /// The IANA zone the pattern is read in.
        #[arg(long, default_value = "UTC")]
        timezone: String,
    },
    /// Delete a schedule and its pending run.
    Delete {
        #[command(flatten)]
        at: TenantOf,
        /// The schedule's name.
        name: String,
    },
    /// A tenant's pending timers (schedules' next runs among them).
    Timers(TenantOf),
}

#[derive(Debug, Args)]
pub(super) struct TenantOf {
    /// The tenant's type.
    #[arg(value_name = "TYPE")]
    kind: String,
    /// The tenant's id.
    id: String,
    #[command(flatten)]
    client: ClientArgs,
}

/// A Unix millisecond as RFC 3339 UTC, for people.
fn when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    )
}

pub(super) async fn schedules(cmd: SchedulesCommand) -> Result<ExitCode, CliError> {
    match cmd {
        SchedulesCommand::List(t) => {
            let list = client(&t.client)?.schedules(&t.kind, &t.id).await?;
            if t.client.json {
                print_json(&list);
                return Ok(ExitCode::SUCCESS);
            }
            for s in &list.schedules {
                let spec = &s.spec;
                println!(
                    "{}  {:?} ({})  -> {}  next {}",
                    spec.name,
                    spec.cron,
                    spec.timezone,
                    spec.event,
                    when(s.next_due)
                );
            }
        }
        SchedulesCommand::Put {
            at,
            name,
            cron,
            event,
            data,
            timezone,
        } => {
            let data = serde_json::from_str(&data)
                .map_err(|e| CliError::Usage(format!("--data is not JSON: {e}")))?;
            let body = SchedulePut {
                cron,
                event,
                data,
                timezone: Some(timezone),
            };
            let s = client(&at.client)?
                .put_schedule(&at.kind, &at.id, &name, &body)
                .await?;
            println!("{} scheduled, next run {}", s.spec.name, when(s.next_due));
        }
        SchedulesCommand::Delete { at, name } => {
            let done = client(&at.client)?
                .delete_schedule(&at.kind, &at.id, &name)
                .await?;
            let what = if done.deleted {
                "deleted"
            } else {
                "did not exist"
            };
            println!("{name} {what}");
        }
        SchedulesCommand::Timers(t) => {
            let list = client(&t.client)?.timers(&t.kind, &t.id).await?;
            if t.client.json {
                print_json(&list);
                return Ok(ExitCode::SUCCESS);
            }
            for p in &list.timers {
                let of = p
                    .schedule
                    .as_deref()
                    .map(|s| format!(" (schedule {s})"))
                    .unwrap_or_default();
                println!(
                    "{}  {}  {}  attempt {}{of}",
                    p.id,
                    when(p.due_at),
                    p.event,
                    p.attempt
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
