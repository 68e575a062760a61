//! `meshplay dispatch-many [FILE]`: many events from a file (or stdin), one
//! JSON object a line, sent over one binary client API stream
//! ([`crate::client::StreamClient`]) with up to `--in-flight` of them at
//! once. Each answer is printed as one JSON line as it comes (so not in
//! input order: `line` says which), and a summary goes to stderr.
//!
//! ```text
//! {"type": "user", "id": "42", "name": "echo", "data": {"x": 1}}
//! {"type": "guild", "id": "1", "name": "member_join", "data": {"name": "Ada"}, "wait": false}
//! ```

use super::{CliError, ClientArgs, client};
use crate::client::{ApiClientError, DispatchOutcome, StreamClient};
use crate::rest::DispatchRequest;
use clap::Args;
use futures::StreamExt;
use serde_json::{Value, json};
use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Debug, Args)]
pub(super) struct BulkArgs {
    /// The events, one JSON object a line ({"type","id","name","data",
    /// "wait","timeout_ms"}); `-` or nothing reads stdin.
    pub(super) file: Option<PathBuf>,
    /// Events in flight at once on the stream.
    #[arg(long, default_value_t = 64)]
    pub(super) in_flight: usize,
    #[command(flatten)]
    pub(super) client: ClientArgs,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    #[serde(rename = "type")]
    kind: String,
    id: String,
    name: String,
    #[serde(default)]
    data: Value,
    #[serde(default = "crate::rest::yes")]
    wait: bool,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

fn read(file: Option<&PathBuf>) -> Result<Vec<(usize, Line)>, CliError> {
    let input: Box<dyn BufRead> = match file {
        Some(path) if path.as_os_str() != "-" => Box::new(std::io::BufReader::new(
            std::fs::File::open(path)
                .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?,
        )),
        _ => Box::new(std::io::stdin().lock()),
    };
    let mut lines = Vec::new();
    for (i, text) in input.lines().enumerate() {
        let text = text.map_err(|e| CliError::Usage(format!("line {}: {e}", i + 1)))?;
        if text.trim().is_empty() {
            continue;
        }
        let line = serde_json::from_str(&text)
            .map_err(|e| CliError::Usage(format!("line {}: {e}", i + 1)))?;
        lines.push((i + 1, line));
    }
    Ok(lines)
}

/// One answer as its output line; whether a plugin or the request failed.
fn report(line: usize, outcome: Result<DispatchOutcome, ApiClientError>) -> (Value, bool, bool) {
    match outcome {
        Ok(DispatchOutcome::Done(d)) => {
            let plugin_failed = d.results.iter().any(|r| r.error.is_some());
            (json!({"line": line, "done": d}), plugin_failed, false)
        }
        Ok(DispatchOutcome::Accepted(a)) => (json!({"line": line, "accepted": a}), false, false),
        Err(e) => {
            let error = json!({"code": e.code().unwrap_or("transport"), "message": e.to_string()});
            (json!({"line": line, "error": error}), false, true)
        }
    }
}

pub(super) async fn dispatch_many(args: BulkArgs) -> Result<ExitCode, CliError> {
    let lines = read(args.file.as_ref())?;
    let stream = StreamClient::connect(&client(&args.client)?).await?;
    let started = Instant::now();
    let (mut plugin_failures, mut failures) = (0, 0);
    let total = lines.len();
    let mut answers = futures::stream::iter(lines.into_iter().map(|(n, l)| {
        let req = DispatchRequest {
            name: l.name,
            data: l.data,
            wait: l.wait,
            timeout_ms: l.timeout_ms,
        };
        let stream = &stream;
        async move { report(n, stream.dispatch(&l.kind, &l.id, req).await) }
    }))
    .buffer_unordered(args.in_flight.max(1));
    while let Some((out, plugin_failed, failed)) = answers.next().await {
        println!("{out}");
        plugin_failures += usize::from(plugin_failed);
        failures += usize::from(failed);
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{total} events in {secs:.2} s ({:.0}/s): {failures} failed, {plugin_failures} with a plugin error",
        total as f64 / secs.max(1e-9)
    );
    Ok(match (failures, plugin_failures) {
        (0, 0) => ExitCode::SUCCESS,
        (0, _) => ExitCode::from(3),
        _ => ExitCode::FAILURE,
    })
}
