//! `meshplay workers`: every worker slot, its state, where it runs (managed
//! by this master, joined from elsewhere, or external) and its load, as a
//! table.

use super::{CliError, ClientArgs, client, print_json};
use comfy_table::presets::NOTHING;
use comfy_table::{CellAlignment, Table};
use std::process::ExitCode;

pub(super) async fn workers(args: &ClientArgs) -> Result<ExitCode, CliError> {
    let w = client(args)?.workers().await?;
    if args.json {
        print_json(&w);
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new();
    table.load_preset(NOTHING).set_header([
        "ID",
        "STATE",
        "MODE",
        "PID",
        "HOST",
        "RESTARTS",
        "HEARTBEAT",
        "IN-FLIGHT",
        "VMS",
        "RSS",
    ]);
    for w in &w.workers {
        let state = serde_json::to_value(w.state).expect("a state serialises");
        // Managed: the master's own child. Joined: came with a join token
        // (its host is the name it gave, then where it connects from).
        // External: started by hand with the slot's token file.
        let (mode, host) = match (&w.joined, w.managed) {
            (Some(j), _) => ("joined", Some(j.host.clone())),
            (None, true) => ("managed", None),
            (None, false) => ("external", None),
        };
        let host = match (host, &w.host) {
            (Some(name), Some(ip)) => format!("{name} ({ip})"),
            (Some(name), None) => name,
            (None, ip) => ip.clone().unwrap_or_else(|| "-".into()),
        };
        table.add_row([
            w.id.to_string(),
            state.as_str().unwrap_or("?").to_owned(),
            mode.to_owned(),
            w.pid.map_or("-".into(), |p| p.to_string()),
            host,
            w.restarts.to_string(),
            w.since_heartbeat_s
                .map_or("-".into(), |s| format!("{s:.1}s ago")),
            w.in_flight.to_string(),
            w.vms.to_string(),
            format!("{:.1}M", w.rss_bytes as f64 / (1024.0 * 1024.0)),
        ]);
    }
    for column in 5..10 {
        if let Some(c) = table.column_mut(column) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    println!("{table}");
    Ok(ExitCode::SUCCESS)
}
