//! `meshplay workers`: every worker slot, its state and load, as a table.

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
        let pid = match (w.pid, w.managed) {
            (Some(p), _) => p.to_string(),
            (None, true) => "-".into(),
            (None, false) => "external".into(),
        };
        table.add_row([
            w.id.to_string(),
            state.as_str().unwrap_or("?").to_owned(),
            pid,
            w.host.clone().unwrap_or_else(|| "-".into()),
            w.restarts.to_string(),
            w.since_heartbeat_s
                .map_or("-".into(), |s| format!("{s:.1}s ago")),
            w.in_flight.to_string(),
            w.vms.to_string(),
            format!("{:.1}M", w.rss_bytes as f64 / (1024.0 * 1024.0)),
        ]);
    }
    for column in 4..9 {
        if let Some(c) = table.column_mut(column) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    println!("{table}");
    Ok(ExitCode::SUCCESS)
}
