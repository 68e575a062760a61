//! PostgreSQL's own benchmark as the peer of `bench kv --store
//! postgres://...`: `pgbench`'s built-in `simple-update` script (an
//! UPDATE, a SELECT and an INSERT per transaction, committed) at the same
//! concurrency, on the same database, in the same run. Its per-transaction
//! log gives the latencies the same histogram as ours.

use crate::bench::BenchError;
use crate::bench::load::Measured;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// `pgbench` on the PATH, or in the newest `/usr/lib/postgresql/*/bin`
/// (where Debian puts it, off the PATH).
pub fn find() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("pgbench"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let mut bins: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| Some(e.ok()?.path().join("bin/pgbench")))
            .filter(|p| p.is_file())
            .collect();
        bins.sort();
        bins.pop()
    })
}

fn run(cmd: &mut Command, what: &str) -> Result<String, BenchError> {
    let out = cmd
        .output()
        .map_err(|e| BenchError::Target(format!("{what}: {e}")))?;
    if !out.status.success() {
        return Err(BenchError::Target(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Initialises pgbench's tables (scale 1) in `url`'s database and runs
/// `simple-update` with `clients` connections for `duration`.
///
/// Fails when pgbench cannot run or the database refuses it.
pub fn simple_update(
    pgbench: &std::path::Path,
    url: &str,
    clients: usize,
    duration: Duration,
) -> Result<Measured, BenchError> {
    run(
        Command::new(pgbench).args(["-i", "-q", "-s", "1", url]),
        "pgbench -i",
    )?;
    let logs = tempfile::tempdir()?;
    let prefix = logs.path().join("tx");
    let secs = duration.as_secs().max(1);
    run(
        Command::new(pgbench)
            .args(["-n", "-b", "simple-update", "-l"])
            .arg(format!("--log-prefix={}", prefix.display()))
            .args(["-c", &clients.to_string(), "-j", "2"])
            .args(["-T", &secs.to_string(), url]),
        "pgbench simple-update",
    )?;
    // One line per transaction: client, number, latency in µs, script,
    // epoch seconds, µs.
    let mut m = Measured {
        elapsed: Duration::from_secs(secs),
        ..Measured::default()
    };
    for entry in std::fs::read_dir(logs.path())? {
        let text = std::fs::read_to_string(entry?.path())?;
        for line in text.lines() {
            let Some(us) = line.split_whitespace().nth(2).and_then(|v| v.parse().ok()) else {
                continue;
            };
            m.record(Duration::from_micros(us));
            m.ok += 1;
        }
    }
    if m.ok == 0 {
        return Err(BenchError::Target("pgbench logged no transactions".into()));
    }
    Ok(m)
}
