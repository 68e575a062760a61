//! The `meshplay` command line: `serve` runs a master, the other commands
//! talk to a running master's REST API, and the hidden `--worker` mode is
//! how the master starts its workers.
//!
//! Client commands find the master by themselves: its address in
//! `<data-dir>/endpoint.json`, its token in `<data-dir>/admin-token`;
//! `--api-addr` and `--api-token` (or `MESHPLAY_API_ADDR`,
//! `MESHPLAY_API_TOKEN`) override. They print for people by default and the
//! API's JSON with `--json`.
//!
//! Exit codes: 0 success; 1 an error (printed to stderr); 2 bad usage; 3 the
//! request went through but at least one plugin answered with an error.

use crate::api_client::{ApiClient, ApiClientError, DispatchOutcome};
use crate::master::supervisor::SupervisorConfig;
use crate::master::{self, MasterConfig, datadir};
use crate::mesophyll::client::ClientConfig;
use crate::mesophyll::hub::HubConfig;
use crate::mesophyll::message::Event;
use crate::rest::{DispatchRequest, ScriptRequest};
use crate::worker::filters::FilterLimits;
use crate::worker::tenants::TenantsConfig;
use crate::worker::vm::VmLimits;
use crate::worker::{self, PARENT_ENV, TOKEN_ENV, WorkerConfig};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Meshplay: a master/worker plugin host for Luau adapters.
#[derive(Debug, Parser)]
#[command(name = "meshplay", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    worker: WorkerArgs,
}

/// The worker mode's flags (the master passes them; people rarely do).
#[derive(Debug, Args)]
struct WorkerArgs {
    /// Run as a worker process.
    #[arg(long, hide = true, requires_all = ["worker_id", "master"])]
    worker: bool,
    /// This worker's id.
    #[arg(long, hide = true)]
    worker_id: Option<u32>,
    /// The master's Mesophyll address, host:port.
    #[arg(long, hide = true)]
    master: Option<String>,
    /// The worker's token (better: the MESHPLAY_WORKER_TOKEN environment
    /// variable, which `ps` does not show).
    #[arg(long, hide = true, env = TOKEN_ENV, hide_env_values = true)]
    token: Option<String>,
    /// Where compiled filters are cached.
    #[arg(long, hide = true)]
    cache_dir: Option<PathBuf>,
    /// Heap cap of each tenant VM, in MiB.
    #[arg(long, hide = true, default_value_t = 20)]
    vm_memory_mb: usize,
    /// Linear memory cap of each filter instance, in MiB.
    #[arg(long, hide = true, default_value_t = 16)]
    filter_memory_mb: usize,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a master with its workers.
    Serve(ServeArgs),
    /// List the workers and their state.
    Workers(ClientArgs),
    /// Send an event to a tenant and print each plugin's answer.
    Dispatch(DispatchArgs),
    /// Run a Luau file in a tenant's VM and print what it returns.
    RunScript(ScriptArgs),
    /// Drop a tenant's VM (its next event gets a fresh one).
    Drop(TenantArgs),
    /// Read and write a tenant's KV store.
    #[command(subcommand)]
    Kv(KvCommand),
    /// List, upload and remove plugins.
    #[command(subcommand)]
    Plugins(PluginsCommand),
    /// List, upload and remove WASM filters.
    #[command(subcommand)]
    Filters(FiltersCommand),
    /// Print the running master's version.
    Version(ClientArgs),
    /// Measure throughput, latency and memory against the raw limits.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Echo events through the REST API (and, with --direct, the hub).
    Dispatch(BenchDispatchArgs),
    /// Get, durable Set and Find over the DB endpoints, as a worker.
    Kv(BenchKvArgs),
    /// A worker's RSS per idle tenant.
    Memory(BenchMemoryArgs),
    /// The example filters: fresh instance + call, against a live instance.
    Filter(BenchFilterArgs),
}

#[derive(Debug, Args)]
struct BenchFilterArgs {
    /// Where the modules are.
    #[arg(long, default_value = "filters/dist")]
    filters: PathBuf,
    /// How long each figure runs.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    duration: Duration,
    /// Skip the bare calls.
    #[arg(long)]
    no_baseline: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct BenchCommon {
    /// Callers at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// How long each figure runs (`10s`, `500ms`, `1m`).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Skip the raw limits (they run by default).
    #[arg(long)]
    no_baseline: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct BenchDispatchArgs {
    #[command(flatten)]
    common: BenchCommon,
    /// Workers of the master the benchmark starts.
    #[arg(long, default_value_t = 2)]
    workers: u32,
    /// Distinct tenants the events go to.
    #[arg(long, default_value_t = 100)]
    tenants: u32,
    /// Also dispatch straight through the hub, without HTTP in front.
    #[arg(long)]
    direct: bool,
    /// Target this running master's REST API instead of starting one.
    #[arg(long)]
    api_addr: Option<SocketAddr>,
    /// Its token (default: the one in --data-dir).
    #[arg(long)]
    api_token: Option<String>,
    /// Its data directory, for the token [default: ~/.meshplay].
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct BenchKvArgs {
    #[command(flatten)]
    common: BenchCommon,
    /// Bytes of each value set.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
}

#[derive(Debug, Args)]
struct BenchMemoryArgs {
    /// Tenant counts to reach, in order.
    #[arg(long, value_delimiter = ',', default_values_t = [1000u64, 10000])]
    tenants: Vec<u64>,
    /// Events in flight while waking them.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// `10s`, `250ms`, `2m`, or plain seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = n.parse().map_err(|_| format!("not a duration: {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("unknown unit in {s:?}: use ms, s or m")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

#[derive(Debug, Subcommand)]
enum PluginsCommand {
    /// The plugins in force and what they offer.
    List(ClientArgs),
    /// Upload the plugin in folder DIR (its plugin.toml and .luau files).
    Push {
        /// The plugin's folder.
        dir: PathBuf,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove an uploaded plugin.
    Rm {
        /// Its name.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Subcommand)]
enum FiltersCommand {
    /// The filters in force.
    List(ClientArgs),
    /// Upload FILE.wasm as filter NAME (default: the file's stem).
    Push {
        /// The module.
        file: PathBuf,
        /// The filter's name.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove an uploaded filter.
    Rm {
        /// Its name.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Subcommand)]
enum KvCommand {
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
struct KvKeyArgs {
    #[command(flatten)]
    tenant: TenantArgs,
    /// The scope.
    scope: String,
    /// The key.
    key: String,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Where the master keeps its token and state [default: ~/.meshplay].
    #[arg(long, env = "MESHPLAY_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Worker processes (the shard count).
    #[arg(long, default_value_t = 2)]
    workers: u32,
    /// How many of the workers (the highest ids) you start yourself; their
    /// tokens are written to <data-dir>/worker-token-<id>.
    #[arg(long, default_value_t = 0)]
    external_workers: u32,
    /// The REST API's address (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:9081")]
    api_addr: SocketAddr,
    /// The Mesophyll hub's address (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:9082")]
    mesophyll_addr: SocketAddr,
    /// The plugin folder: the plugins loaded at start (uploads add to them).
    #[arg(long = "plugins", default_value = "plugins")]
    plugins_dir: PathBuf,
    /// The filter folder: `<name>.wasm` modules loaded at start.
    #[arg(long = "filters", default_value = "filters/dist")]
    filters_dir: PathBuf,
    /// The API's bearer token [default: <data-dir>/admin-token, created on
    /// first start].
    #[arg(long, env = "MESHPLAY_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
    /// How often workers send heartbeats.
    #[arg(long, default_value_t = 1000)]
    heartbeat_interval_ms: u64,
    /// Silence after which a worker is declared dead and restarted.
    #[arg(long, default_value_t = 5000)]
    heartbeat_timeout_ms: u64,
    /// How long workers may finish their work on shutdown.
    #[arg(long, default_value_t = 5000)]
    shutdown_grace_ms: u64,
    /// Heap cap of each tenant VM, in MiB.
    #[arg(long, default_value_t = 20)]
    vm_memory_mb: usize,
    /// Linear memory cap of each WASM filter instance, in MiB.
    #[arg(long, default_value_t = 16)]
    filter_memory_mb: usize,
}

#[derive(Debug, Clone, Args)]
struct ClientArgs {
    /// The master's data directory, to find its address and token
    /// [default: ~/.meshplay].
    #[arg(long, env = "MESHPLAY_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The REST API's address (overrides the data directory).
    #[arg(long, env = "MESHPLAY_API_ADDR")]
    api_addr: Option<SocketAddr>,
    /// The API token (overrides the data directory).
    #[arg(long, env = "MESHPLAY_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
    /// Print the API's JSON instead of text for people.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct TenantArgs {
    /// The tenant's type (user, guild, ...).
    #[arg(value_name = "TYPE")]
    kind: String,
    /// The tenant's id.
    id: String,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
struct DispatchArgs {
    #[command(flatten)]
    tenant: TenantArgs,
    /// The event's name.
    event: String,
    /// The event's data, as JSON.
    #[arg(long, default_value = "null")]
    data: String,
    /// Return once the event is queued instead of waiting for the results.
    #[arg(long)]
    no_wait: bool,
    /// Budget for all the plugins together.
    #[arg(long)]
    timeout_ms: Option<u64>,
}

#[derive(Debug, Args)]
struct ScriptArgs {
    #[command(flatten)]
    tenant: TenantArgs,
    /// The Luau file to run.
    file: PathBuf,
    /// Data of the event the script receives as `...`, as JSON.
    #[arg(long, default_value = "null")]
    data: String,
    /// Budget for the script.
    #[arg(long)]
    timeout_ms: Option<u64>,
}

/// A failure of the command line, printed as `error: ...`.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Api(#[from] ApiClientError),
    #[error(transparent)]
    Master(#[from] master::MasterError),
    #[error(transparent)]
    Worker(#[from] crate::worker::WorkerError),
    #[error(transparent)]
    Bench(#[from] crate::bench::BenchError),
    #[error("{0}")]
    Usage(String),
}

/// Parses the command line, runs it, and returns the process's exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let quiet = !matches!(cli.command, Some(Command::Serve(_)) | None);
    init_tracing(if quiet { "warn" } else { "info" });
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(CliError::Usage(m)) => {
            eprintln!("error: {m}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for people: a log file should be greppable.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

async fn run(cli: Cli) -> Result<ExitCode, CliError> {
    let Some(command) = cli.command else {
        if cli.worker.worker {
            return run_worker(cli.worker).await;
        }
        return Err(CliError::Usage(
            "no command given; try `meshplay serve` or `meshplay --help`".into(),
        ));
    };
    match command {
        Command::Serve(args) => serve(args).await,
        Command::Workers(c) => workers(&c).await,
        Command::Dispatch(args) => dispatch(args).await,
        Command::RunScript(args) => run_script(args).await,
        Command::Drop(t) => {
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
        Command::Kv(k) => kv(k).await,
        Command::Plugins(p) => plugins_cmd(p).await,
        Command::Filters(f) => filters_cmd(f).await,
        Command::Bench(b) => bench_cmd(b).await,
        Command::Version(c) => {
            let v = client(&c)?.version().await?;
            if c.json {
                print_json(&v);
            } else {
                println!("{} {} (protocol {})", v.name, v.version, v.protocol);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn run_worker(args: WorkerArgs) -> Result<ExitCode, CliError> {
    let (Some(worker_id), Some(master)) = (args.worker_id, args.master) else {
        return Err(CliError::Usage(
            "--worker needs --worker-id and --master".into(),
        ));
    };
    let Some(token) = args.token.filter(|t| !t.is_empty()) else {
        return Err(CliError::Usage(format!(
            "--worker needs a token: --token or {TOKEN_ENV}"
        )));
    };
    let parent_pid = std::env::var(PARENT_ENV).ok().and_then(|p| p.parse().ok());
    let config = WorkerConfig {
        client: ClientConfig {
            master,
            worker_id,
            token,
        },
        cache_dir: args.cache_dir,
        filter_limits: FilterLimits {
            memory_bytes: args.filter_memory_mb * 1024 * 1024,
            ..FilterLimits::default()
        },
        tenants: TenantsConfig {
            vm: VmLimits {
                memory_bytes: args.vm_memory_mb * 1024 * 1024,
            },
            ..TenantsConfig::default()
        },
        parent_pid,
    };
    let span = tracing::info_span!("worker", id = worker_id);
    // On the runtime's worker threads, not this one (where `block_on` would
    // poll it): the session then wakes the tenant tasks it feeds, and is
    // woken by them, without crossing to a thread outside the pool.
    let session = tokio::spawn(tracing::Instrument::instrument(worker::run(config), span));
    match session.await {
        Ok(result) => result?,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Only a runtime shutting down cancels it, and then we exit anyway.
        Err(_) => {}
    }
    Ok(ExitCode::SUCCESS)
}

async fn serve(args: ServeArgs) -> Result<ExitCode, CliError> {
    let exe = std::env::current_exe()
        .map_err(|e| CliError::Usage(format!("cannot find my own executable: {e}")))?;
    for (what, dir) in [("plugin", &args.plugins_dir), ("filter", &args.filters_dir)] {
        if !dir.is_dir() {
            tracing::warn!(dir = %dir.display(), "no {what} folder; only uploaded {what}s will run");
        }
    }
    // The master fills in where the workers cache compiled filters.
    let mut supervisor = SupervisorConfig::new(exe, String::new(), PathBuf::new());
    supervisor.worker_args = vec![
        "--vm-memory-mb".into(),
        args.vm_memory_mb.to_string(),
        "--filter-memory-mb".into(),
        args.filter_memory_mb.to_string(),
    ];
    let config = MasterConfig {
        data_dir: args.data_dir.unwrap_or_else(datadir::default_path),
        workers: args.workers,
        external_workers: args.external_workers,
        api_addr: args.api_addr,
        mesophyll_addr: args.mesophyll_addr,
        plugins_dir: args.plugins_dir,
        filters_dir: args.filters_dir,
        api_token: args.api_token,
        hub: HubConfig {
            heartbeat_interval: Duration::from_millis(args.heartbeat_interval_ms),
            heartbeat_timeout: Duration::from_millis(args.heartbeat_timeout_ms),
            ..HubConfig::default()
        },
        supervisor,
        shutdown_grace: Duration::from_millis(args.shutdown_grace_ms),
    };
    master::serve(config, signals()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Completes on the first SIGINT or SIGTERM.
async fn signals() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop me with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

fn client(args: &ClientArgs) -> Result<ApiClient, CliError> {
    let dir = datadir::DataDir::at(args.data_dir.clone().unwrap_or_else(datadir::default_path));
    let addr = match args.api_addr {
        Some(a) => a,
        None => dir.endpoint().map_err(ApiClientError::from)?.api_addr,
    };
    let token = match &args.api_token {
        Some(t) => t.clone(),
        None => dir.admin_token().map_err(ApiClientError::from)?,
    };
    Ok(ApiClient::new(addr, token))
}

fn print_json<T: Serialize>(v: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("API types always serialise")
    );
}

fn parse_json(what: &str, text: &str) -> Result<serde_json::Value, CliError> {
    serde_json::from_str(text).map_err(|e| CliError::Usage(format!("{what} is not JSON: {e}")))
}

async fn workers(args: &ClientArgs) -> Result<ExitCode, CliError> {
    let w = client(args)?.workers().await?;
    if args.json {
        print_json(&w);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<4} {:<12} {:<8} {:>8} {:>10} {:>9} {:>6} {:>9}",
        "ID", "STATE", "PID", "RESTARTS", "HEARTBEAT", "IN-FLIGHT", "VMS", "RSS"
    );
    for w in &w.workers {
        let state = serde_json::to_value(w.state).expect("a state serialises");
        println!(
            "{:<4} {:<12} {:<8} {:>8} {:>10} {:>9} {:>6} {:>9}",
            w.id,
            state.as_str().unwrap_or("?"),
            w.pid.map_or_else(
                || if w.managed {
                    "-".into()
                } else {
                    "external".into()
                },
                |p| p.to_string()
            ),
            w.restarts,
            w.since_heartbeat_s
                .map_or("-".into(), |s| format!("{s:.1}s ago")),
            w.in_flight,
            w.vms,
            format!("{:.1}M", w.rss_bytes as f64 / (1024.0 * 1024.0)),
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn dispatch(args: DispatchArgs) -> Result<ExitCode, CliError> {
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

async fn run_script(args: ScriptArgs) -> Result<ExitCode, CliError> {
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
            data: parse_json("--data", &args.data)?,
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

async fn kv(cmd: KvCommand) -> Result<ExitCode, CliError> {
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

fn print_changed(c: &ClientArgs, what: &str, changed: &crate::rest::Changed) {
    if c.json {
        print_json(changed);
    } else {
        println!("{what}; catalogue revision {}", changed.revision);
    }
}

async fn plugins_cmd(cmd: PluginsCommand) -> Result<ExitCode, CliError> {
    match cmd {
        PluginsCommand::List(c) => {
            let list = client(&c)?.plugins().await?;
            if c.json {
                print_json(&list);
                return Ok(ExitCode::SUCCESS);
            }
            for p in &list.plugins {
                let source = serde_json::to_value(p.source).expect("a source serialises");
                println!(
                    "{} {} ({}): events {}{}{}",
                    p.name,
                    p.version,
                    source.as_str().unwrap_or("?"),
                    p.events.join(", "),
                    if p.filters.is_empty() {
                        String::new()
                    } else {
                        format!("; filters {}", p.filters.join(" -> "))
                    },
                    if p.operations.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; offers {}",
                            p.operations
                                .iter()
                                .map(|o| o.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    },
                );
            }
        }
        PluginsCommand::Push { dir, client: c } => {
            let bundle = crate::worker::plugins::read_bundle(&dir)
                .map_err(|e| CliError::Usage(e.to_string()))?;
            let manifest: toml::Table = toml::from_str(&bundle.manifest).map_err(|e| {
                CliError::Usage(format!("{}: {e}", dir.join("plugin.toml").display()))
            })?;
            let Some(name) = manifest.get("name").and_then(|n| n.as_str()) else {
                return Err(CliError::Usage("plugin.toml has no name".into()));
            };
            let upload = crate::rest::PluginUpload {
                manifest: bundle.manifest.clone(),
                files: bundle.files,
            };
            let changed = client(&c)?.put_plugin(name, &upload).await?;
            print_changed(&c, &format!("plugin {name} uploaded"), &changed);
        }
        PluginsCommand::Rm { name, client: c } => {
            let changed = client(&c)?.delete_plugin(&name).await?;
            print_changed(&c, &format!("plugin {name} removed"), &changed);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn filters_cmd(cmd: FiltersCommand) -> Result<ExitCode, CliError> {
    match cmd {
        FiltersCommand::List(c) => {
            let list = client(&c)?.filters().await?;
            if c.json {
                print_json(&list);
                return Ok(ExitCode::SUCCESS);
            }
            for f in &list.filters {
                let source = serde_json::to_value(f.source).expect("a source serialises");
                println!(
                    "{} ({}): {} bytes, sha256 {}",
                    f.name,
                    source.as_str().unwrap_or("?"),
                    f.size,
                    &f.sha256[..16]
                );
            }
        }
        FiltersCommand::Push {
            file,
            name,
            client: c,
        } => {
            let bytes = std::fs::read(&file)
                .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", file.display())))?;
            let name = name.unwrap_or_else(|| {
                file.file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default()
            });
            let changed = client(&c)?.put_filter(&name, bytes).await?;
            print_changed(&c, &format!("filter {name} uploaded"), &changed);
        }
        FiltersCommand::Rm { name, client: c } => {
            let changed = client(&c)?.delete_filter(&name).await?;
            print_changed(&c, &format!("filter {name} removed"), &changed);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn bench_cmd(cmd: BenchCommand) -> Result<ExitCode, CliError> {
    use crate::bench;
    use std::io::IsTerminal;
    let progress = |json: bool| !json && std::io::stderr().is_terminal();
    let (report, json) = match cmd {
        BenchCommand::Dispatch(a) => {
            let target = match a.api_addr {
                Some(addr) => Some(client(&ClientArgs {
                    data_dir: a.data_dir,
                    api_addr: Some(addr),
                    api_token: a.api_token,
                    json: false,
                })?),
                None => None,
            };
            let opts = bench::dispatch::Options {
                workers: a.workers,
                concurrency: a.common.concurrency,
                tenants: a.tenants,
                duration: a.common.duration,
                direct: a.direct,
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
            let opts = bench::kv::Options {
                concurrency: a.common.concurrency,
                duration: a.common.duration,
                value_len: a.value_bytes,
                baseline: !a.common.no_baseline,
                progress: progress(a.common.json),
            };
            (bench::kv::run(opts).await?, a.common.json)
        }
        BenchCommand::Memory(a) => (bench::memory::run(&a.tenants, a.concurrency).await?, a.json),
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
    Ok(ExitCode::SUCCESS)
}
