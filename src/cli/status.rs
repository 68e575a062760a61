//! `meshplay status`: the master on one screen, the way `mesheryctl system
//! status` shows Meshery: version and uptime, the store, the workers, the
//! catalogue, and the last minute's event and error rates.

use super::{CliError, ClientArgs, client, print_json};
use std::process::ExitCode;
use std::time::Duration;

pub(super) async fn status(args: &ClientArgs) -> Result<ExitCode, CliError> {
    let s = client(args)?.status().await?;
    if args.json {
        print_json(&s);
        return Ok(ExitCode::SUCCESS);
    }
    let uptime = humantime::format_duration(Duration::from_secs(s.uptime_s as u64));
    let m = &s.last_minute;
    println!(
        "master    meshplay {} (protocol {}), up {uptime}",
        s.version, s.protocol
    );
    println!("store     {}", s.store);
    if let Some(l) = &s.leadership {
        print_leadership(l);
    }
    println!(
        "workers   {} of {} running, {} restarts",
        s.running, s.workers, s.restarts
    );
    println!("plugins   {}: {}", s.plugins.len(), s.plugins.join(", "));
    println!("filters   {}: {}", s.filters.len(), s.filters.join(", "));
    println!(
        "last min  {} events ({:.1}/s), {} errors ({:.1}%)",
        m.events,
        m.events_per_s,
        m.errors,
        m.error_ratio * 100.0
    );
    // Like `systemctl is-system-running`: a script can tell degraded from
    // ok. A standby serves no workers by design.
    let standby = s.leadership.as_ref().is_some_and(|l| l.role == "standby");
    Ok(if s.running == s.workers || standby {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(4)
    })
}

/// Which master leads, and the others.
fn print_leadership(l: &crate::rest::LeadershipStatus) {
    let leader = l.leader_api_addr.as_deref().unwrap_or("none at the moment");
    println!(
        "role      {} (epoch {}); the leader's API: {leader}",
        l.role, l.epoch
    );
    for m in &l.masters {
        let part = if m.leads { "leads" } else { "stands by" };
        let me = if m.id == l.id { " (this one)" } else { "" };
        println!(
            "          {} {part}{me}: API {}, hub {}, seen {} ms ago",
            m.id, m.api_addr, m.mesophyll_addr, m.seen_ms_ago
        );
    }
}
