//! `meshplay bench dispatch|kv|filter|memory|chaos`: the figures of
//! [`crate::bench`], printed for people or as JSON.

use super::{CliError, ClientArgs, client};
use crate::bench;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Subcommand)]
pub(super) enum BenchCommand {
    /// Echo events through the REST API (and, with --direct, the hub; with
    /// --binary, the binary client API).
    Dispatch(BenchDispatchArgs),
    /// Get, durable Set and Find over the DB endpoints, as a worker.
    Kv(BenchKvArgs),
    /// A worker's RSS per idle tenant.
    Memory(BenchMemoryArgs),
    /// The example filters: fresh instance + call, against a live instance.
    Filter(BenchFilterArgs),
    /// http.fetch against a bare client, and echo latency while many
    /// tenants wait on a slow upstream.
    Egress(BenchEgressArgs),
    /// Pending timers loaded into the store and fired at a steady rate:
    /// write rate beside sled's, RSS, lateness.
    Timers(BenchTimersArgs),
    /// Dispatch over the NATS bridge (request/reply) beside NATS
    /// request/reply alone and beside REST, against a nats-server started
    /// on loopback.
    Nats(BenchNatsArgs),
    /// Meshplay's REST and binary dispatch, from outside, beside Redis EVAL
    /// and NATS request/reply on this machine (when they are installed).
    Peers(BenchPeersArgs),
    /// Faults under load: workers SIGKILLed and SIGSTOPped, the master
    /// SIGKILLed under durable writers; exits 1 when a check is missed.
    Chaos(BenchChaosArgs),
    /// Two masters on one PostgreSQL: the leader SIGKILLed, SIGSTOPped past
    /// its lease and cut off from the database, the outage of each round.
    Failover(BenchFailoverArgs),
}

#[derive(Debug, Args)]
pub(super) struct BenchFailoverArgs {
    /// The PostgreSQL both masters share (`postgres://user@host:port/db`;
    /// its leadership row is taken over).
    #[arg(long, env = "MESHPLAY_STORE", hide_env_values = true)]
    pub(super) store: String,
    /// Rounds of each fault.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub(super) rounds: u32,
    /// `serve --lease-ttl-ms` of both masters.
    #[arg(long, default_value_t = 2000)]
    pub(super) lease_ttl_ms: u64,
    /// `serve --lease-renew-ms`.
    #[arg(long, default_value_t = 1000)]
    pub(super) lease_renew_ms: u64,
    /// `serve --lease-poll-ms`.
    #[arg(long, default_value_t = 250)]
    pub(super) lease_poll_ms: u64,
    /// `serve --heartbeat-timeout-ms`: how long workers wait on a silent
    /// (paused) master.
    #[arg(long, default_value_t = 2000)]
    pub(super) heartbeat_timeout_ms: u64,
    /// Keep the masters' and workers' data directories and logs here.
    #[arg(long, value_name = "DIR")]
    pub(super) keep: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub(super) json: bool,
}

#[derive(Debug, Args)]
pub(super) struct BenchChaosArgs {
    /// Worker processes.
    #[arg(long, default_value_t = 2)]
    pub(super) workers: u32,
    /// How long the kill case runs.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub(super) duration: Duration,
    /// A worker is SIGKILLed this often.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub(super) kill_every: Duration,
    /// Clients at once.
    #[arg(long, default_value_t = 32)]
    pub(super) concurrency: usize,
    /// Distinct tenants.
    #[arg(long, default_value_t = 200)]
    pub(super) tenants: u32,
    /// Every request's budget.
    #[arg(long, default_value_t = 3000)]
    pub(super) timeout_ms: u64,
    /// The master's heartbeat timeout.
    #[arg(long, default_value_t = 2000)]
    pub(super) heartbeat_timeout_ms: u64,
    /// Skip the SIGSTOP case.
    #[arg(long)]
    pub(super) no_hang: bool,
    /// Rounds of the master-kill case (0 skips it).
    #[arg(long, default_value_t = 3)]
    pub(super) master_rounds: u32,
    /// Durable writers while the master is killed.
    #[arg(long, default_value_t = 64)]
    pub(super) writers: usize,
    /// How long they write before each kill.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub(super) write_for: Duration,
    /// Print the report as JSON.
    #[arg(long)]
    pub(super) json: bool,
}

#[derive(Debug, Args)]
pub(super) struct BenchPeersArgs {
    /// Worker processes.
    #[arg(long, default_value_t = 2)]
    pub(super) workers: u32,
    /// Requests in flight at once, for every figure.
    #[arg(long, default_value_t = 64)]
    pub(super) concurrency: usize,
    /// How long each figure runs.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub(super) duration: Duration,
    /// Bytes of each request's payload.
    #[arg(long, default_value_t = 200)]
    pub(super) payload_bytes: usize,
    /// Print the report as JSON.
    #[arg(long)]
    pub(super) json: bool,
}

#[derive(Debug, Args)]
pub(super) struct BenchFilterArgs {
    /// Where the modules are.
    #[arg(long, default_value = "filters/dist")]
    pub(super) filters: PathBuf,
    /// How long each figure runs.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub(super) duration: Duration,
    /// Skip the bare calls.
    #[arg(long)]
    pub(super) no_baseline: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub(super) json: bool,
}

#[derive(Debug, Args)]
pub(super) struct BenchNatsArgs {
    /// Worker processes.
    #[arg(long, default_value_t = 2)]
    pub(super) workers: u32,
    /// Requests in flight.
    #[arg(long, default_value_t = 64)]
    pub(super) concurrency: usize,
    /// How long each figure runs.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub(super) duration: Duration,
    /// Print the report as JSON.
    #[arg(long)]
    pub(super) json: bool,
}

#[derive(Debug, Args)]
pub(super) struct BenchTimersArgs {
    /// Worker processes.
    #[arg(long, default_value_t = 2)]
    pub(super) workers: u32,
    /// Timers written and fired.
    #[arg(long, default_value_t = 100_000)]
    pub(super) timers: u64,
    /// Tenants they are spread over.
    #[arg(long, default_value_t = 10_000)]
    pub(super) tenants: u64,
    /// Timers due per second.
    #[arg(long, default_value_t = 2000)]
    pub(super) rate: u64,
    /// Print the report as JSON.
    #[arg(long)]
    pub(super) json: bool,
}

#[derive(Debug, Args)]
pub(super) struct BenchEgressArgs {
    /// Worker processes.
    #[arg(long, default_value_t = 2)]
    pub(super) workers: u32,
    /// How long each figure runs.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub(super) duration: Duration,
    /// Echo callers at once.
    #[arg(long, default_value_t = 8)]
    pub(super) concurrency: usize,
    /// Tenants waiting on the slow upstream meanwhile.
    #[arg(long, default_value_t = 500)]
    pub(super) waiting: u32,
    /// How late the slow upstream answers.
    #[arg(long, default_value_t = 2000)]
    pub(super) slow_ms: u64,
    /// Print the report as JSON.
    #[arg(long)]
    pub(super) json: bool,
}

#[derive(Debug, Args)]
pub(super) struct BenchCommon {
    /// Callers at once.
    #[arg(long, default_value_t = 64)]
    pub(super) concurrency: usize,
    /// How long each figure runs (`10s`, `500ms`, `1m`).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(super) duration: Duration,
    /// Skip the raw limits (they run by default).
    #[arg(long)]
    pub(super) no_baseline: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub(super) json: bool,
}

#[derive(Debug, Args)]
pub(super) struct BenchDispatchArgs {
    #[command(flatten)]
    pub(super) common: BenchCommon,
    /// Workers of the master the benchmark starts.
    #[arg(long, default_value_t = 2)]
    pub(super) workers: u32,
    /// Runtime threads of each worker (as `serve --worker-threads`).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub(super) worker_threads: u16,
    /// Runtime threads of this process, which runs the master, the load
    /// and the baselines [default: one per core].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub(super) master_threads: Option<u16>,
    /// Distinct tenants the events go to.
    #[arg(long, default_value_t = 100)]
    pub(super) tenants: u32,
    /// The paths to measure, comma-separated: `rest` (always: it warms the
    /// tenants up), `binary` (the binary client API), `direct` (straight
    /// through the hub).
    #[arg(long, value_delimiter = ',', value_parser = ["rest", "binary", "direct"])]
    pub(super) via: Vec<String>,
    /// Also dispatch straight through the hub, without HTTP in front
    /// (`--via direct`).
    #[arg(long)]
    pub(super) direct: bool,
    /// Also through the binary client API: one WebSocket to the master,
    /// every caller's event in flight on it (`--via binary`).
    #[arg(long)]
    pub(super) binary: bool,
    /// Target this running master's REST API instead of starting one
    /// (`[https://]HOST:PORT`).
    #[arg(long, value_name = "URL")]
    pub(super) api_addr: Option<String>,
    /// The CA of an `https://` master.
    #[arg(long, value_name = "FILE")]
    pub(super) ca_file: Option<PathBuf>,
    /// Its token (default: the one in --data-dir).
    #[arg(long)]
    pub(super) api_token: Option<String>,
    /// Its data directory, for the token [default: ~/.meshplay].
    #[arg(long)]
    pub(super) data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(super) struct BenchKvArgs {
    #[command(flatten)]
    pub(super) common: BenchCommon,
    /// Bytes of each value set.
    #[arg(long, default_value_t = 100)]
    pub(super) value_bytes: usize,
    /// The store to measure: sled in a temporary directory (the default),
    /// or `postgres://...` (an empty database; pgbench runs beside it).
    #[arg(long, value_name = "URL")]
    pub(super) store: Option<String>,
}

#[derive(Debug, Args)]
pub(super) struct BenchMemoryArgs {
    /// Tenant counts to reach, in order.
    #[arg(long, value_delimiter = ',', default_values_t = [1000u64, 10000])]
    pub(super) tenants: Vec<u64>,
    /// Events in flight while waking them.
    #[arg(long, default_value_t = 64)]
    pub(super) concurrency: usize,
    /// Print the report as JSON.
    #[arg(long)]
    pub(super) json: bool,
}

/// A duration as people write it (`10s`, `250ms`, `1m 30s`: humantime's
/// syntax), or plain seconds.
pub(super) fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"));
    }
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))
}

/// Progress lines go to a terminal, and never with `--json`.
fn progress(json: bool) -> bool {
    use std::io::IsTerminal;
    !json && std::io::stderr().is_terminal()
}

async fn egress(a: BenchEgressArgs) -> Result<(bench::figures::Report, bool), CliError> {
    let opts = bench::egress::EgressOptions {
        workers: a.workers,
        duration: a.duration,
        concurrency: a.concurrency,
        waiting: a.waiting,
        slow: Duration::from_millis(a.slow_ms),
        progress: progress(a.json),
    };
    Ok((bench::egress::run(opts).await?, a.json))
}

async fn timers(a: BenchTimersArgs) -> Result<(bench::figures::Report, bool), CliError> {
    let opts = bench::timers::TimersOptions {
        workers: a.workers,
        timers: a.timers,
        tenants: a.tenants,
        rate: a.rate,
        progress: progress(a.json),
    };
    Ok((bench::timers::run(opts).await?, a.json))
}

async fn nats(a: BenchNatsArgs) -> Result<(bench::figures::Report, bool), CliError> {
    let opts = bench::bridge::BridgeOptions {
        workers: a.workers,
        concurrency: a.concurrency,
        duration: a.duration,
        progress: progress(a.json),
    };
    Ok((bench::bridge::run(opts).await?, a.json))
}

pub(super) async fn bench(cmd: BenchCommand) -> Result<ExitCode, CliError> {
    let (report, json) = match cmd {
        BenchCommand::Dispatch(a) => {
            let target = match a.api_addr {
                Some(addr) => Some(client(&ClientArgs {
                    data_dir: a.data_dir,
                    api_addr: Some(addr),
                    ca_file: a.ca_file,
                    api_token: a.api_token,
                    json: false,
                })?),
                None => None,
            };
            let opts = bench::dispatch::DispatchOptions {
                workers: a.workers,
                worker_threads: a.worker_threads,
                concurrency: a.common.concurrency,
                tenants: a.tenants,
                duration: a.common.duration,
                direct: a.direct || a.via.iter().any(|v| v == "direct"),
                binary: a.binary || a.via.iter().any(|v| v == "binary"),
                baseline: !a.common.no_baseline,
                target,
                progress: progress(a.common.json),
            };
            let report = bench::dispatch::run(opts).await.map_err(|e| match e {
                bench::BenchError::Usage(m) => CliError::Usage(m),
                e => e.into(),
            })?;
            (report, a.common.json)
        }
        BenchCommand::Kv(a) => {
            let opts = bench::kv::KvOptions {
                concurrency: a.common.concurrency,
                duration: a.common.duration,
                value_len: a.value_bytes,
                baseline: !a.common.no_baseline,
                progress: progress(a.common.json),
                store: a
                    .store
                    .as_deref()
                    .map(super::serve::store_url)
                    .transpose()?,
            };
            (bench::kv::run(opts).await?, a.common.json)
        }
        BenchCommand::Memory(a) => (bench::memory::run(&a.tenants, a.concurrency).await?, a.json),
        BenchCommand::Chaos(a) => {
            let opts = bench::chaos::ChaosOptions {
                exe: std::env::current_exe()
                    .map_err(|e| CliError::Usage(format!("cannot find my own executable: {e}")))?,
                workers: a.workers,
                duration: a.duration,
                kill_every: a.kill_every,
                concurrency: a.concurrency,
                tenants: a.tenants,
                timeout_ms: a.timeout_ms,
                heartbeat_timeout_ms: a.heartbeat_timeout_ms,
                hang: !a.no_hang,
                master_rounds: a.master_rounds,
                writers: a.writers,
                write_for: a.write_for,
                progress: progress(a.json),
            };
            (bench::chaos::run(opts).await?, a.json)
        }
        BenchCommand::Peers(a) => {
            let opts = bench::peers::PeersOptions {
                exe: std::env::current_exe()
                    .map_err(|e| CliError::Usage(format!("cannot find my own executable: {e}")))?,
                workers: a.workers,
                concurrency: a.concurrency,
                duration: a.duration,
                payload_bytes: a.payload_bytes,
                progress: progress(a.json),
            };
            (bench::peers::run(opts).await?, a.json)
        }
        BenchCommand::Failover(a) => {
            let opts = bench::failover::FailoverOptions {
                exe: std::env::current_exe()
                    .map_err(|e| CliError::Usage(format!("cannot find my own executable: {e}")))?,
                store: a.store,
                rounds: a.rounds,
                lease_ttl_ms: a.lease_ttl_ms,
                lease_renew_ms: a.lease_renew_ms,
                lease_poll_ms: a.lease_poll_ms,
                heartbeat_timeout_ms: a.heartbeat_timeout_ms,
                progress: progress(a.json),
                keep: a.keep,
            };
            (bench::failover::run(opts).await?, a.json)
        }
        BenchCommand::Egress(a) => egress(a).await?,
        BenchCommand::Nats(a) => nats(a).await?,
        BenchCommand::Timers(a) => timers(a).await?,
        BenchCommand::Filter(a) => {
            let report = tokio::task::spawn_blocking(move || {
                bench::filter::run(&a.filters, a.duration, !a.no_baseline)
            })
            .await
            .map_err(|e| CliError::Usage(e.to_string()))??;
            (report, a.json)
        }
    };
    if json {
        report.print_json();
    } else {
        report.print();
    }
    // Speed targets are reported, not enforced; chaos checks are outcomes
    // (lost writes, late requests), so a missed one fails the command.
    if report.bench == "chaos" && report.checks.iter().any(|c| !c.met) {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("-1").is_err());
    }
}
