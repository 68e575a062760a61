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
//!
//! One file per command group: `serve` (the master), `child` (the hidden
//! worker mode its workers run in), `worker` (`meshplay worker`, on
//! another machine), `workers`, `status`, `tenants`
//! (dispatch, scripts, drops), `bulk` (`dispatch-many`), `kv`, `vars`,
//! `schedules`, `catalogue` (plugins and filters), `access` (tokens, join
//! tokens, the audit log), `store`, `config`, `echo_server`, `bench`, and
//! the author's commands: `author` (`new`, `call`, `test`, `dev`, `setup
//! editor`) and `deploy` (`diff`, `deploy`); `runtime` sizes the async
//! runtime each command runs on.
//!
//! Modules:
//!
//! - `standby`: `serve --standby` and the lease's timing.

mod access;
mod author;
mod bench;
mod bulk;
mod catalogue;
mod child;
mod config;
mod deploy;
mod echo_server;
mod kv;
mod runtime;
mod schedules;
mod serve;
mod standby;
mod status;
mod store;
mod tenants;
mod vars;
mod worker;
mod workers;

use crate::client::{ApiClient, ApiClientError};
use crate::datadir;
use crate::master;
use crate::tls::Trust;
use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;

/// Meshplay: a master/worker plugin host for Luau adapters.
#[derive(Debug, Parser)]
#[command(name = "meshplay", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    worker: child::WorkerArgs,
    /// How log lines are written to stderr: `text` for people, `json` (one
    /// object a line) for a log pipeline. `serve` passes it on to its
    /// workers.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "MESHPLAY_LOG_FORMAT")]
    log_format: LogFormat,
}

/// The log line formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line (tracing-subscriber's JSON layer).
    Json,
}

impl LogFormat {
    /// The flag's value, for passing it on.
    pub(super) fn as_arg(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a master with its workers.
    Serve(Box<serve::ServeArgs>),
    /// Start a plugin or a filter from a template.
    #[command(subcommand)]
    New(author::NewCommand),
    /// Set up this machine for writing plugins.
    #[command(subcommand)]
    Setup(author::SetupCommand),
    /// Compare plugin folders and a filters folder with what the master
    /// runs: added, changed (with a line diff), removed (with --prune).
    Diff(deploy::DeployArgs),
    /// Apply the diff as one catalogue change: workers see all of it or
    /// none of it, and a plugin that fails its checks changes nothing.
    Deploy(deploy::DeployArgs),
    /// A master for one author: this folder's plugins and filter crates,
    /// reloaded (and rebuilt) on save, the last good version kept when a
    /// change does not build.
    Dev(author::DevArgs),
    /// Run one event through a plugin folder on this machine (a master and
    /// a worker in this process, a scratch store) and print the result,
    /// what the handler logged, and how long it took.
    Call(author::CallArgs),
    /// Run the `*.test.luau` files beside plugins against the plugins, each
    /// test on a fresh local master and store (exit 1 on a failure).
    Test(author::TestArgs),
    /// List the workers and their state.
    Workers(ClientArgs),
    /// The master on one screen: store, workers, catalogue, the last
    /// minute's events and errors (exit 4 while a worker slot is not served).
    Status(ClientArgs),
    /// Send an event to a tenant and print each plugin's answer.
    Dispatch(tenants::DispatchArgs),
    /// Send many events (one JSON object a line, from a file or stdin) over
    /// one binary client API stream, many in flight; print each answer.
    DispatchMany(bulk::BulkArgs),
    /// Run a Luau file in a tenant's VM and print what it returns.
    RunScript(tenants::ScriptArgs),
    /// Drop a tenant's VM (its next event gets a fresh one).
    Drop(TenantArgs),
    /// Read and write a tenant's KV store.
    #[command(subcommand)]
    Kv(kv::KvCommand),
    /// List, upload and remove plugins.
    #[command(subcommand)]
    Plugins(catalogue::PluginsCommand),
    /// Show and set plugins' variables (settings and secrets).
    #[command(subcommand)]
    Vars(vars::VarsCommand),
    /// A tenant's cron schedules and pending timers.
    #[command(subcommand)]
    Schedules(schedules::SchedulesCommand),
    /// List, upload and remove WASM filters.
    #[command(subcommand)]
    Filters(catalogue::FiltersCommand),
    /// Print the running master's version.
    Version(ClientArgs),
    /// Measure throughput, latency and memory against the raw limits.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Answer every HTTP request with what it received (method, path,
    /// header names, body): an API to try plugins' http.fetch against.
    EchoServer(echo_server::EchoServerArgs),
    /// Mint, list and revoke API tokens (admin).
    #[command(subcommand)]
    Tokens(access::TokensCommand),
    /// Mint, list and revoke join tokens, for workers on other machines
    /// (admin).
    #[command(subcommand)]
    JoinToken(access::JoinTokenCommand),
    /// Run a worker on this machine for a master elsewhere: it joins with a
    /// join token and serves the slot it is given.
    Worker(worker::JoinArgs),
    /// The audit log: every change made through the API, allowed or refused.
    Audit {
        /// How many of the latest entries.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Move all data between stores (sled and PostgreSQL).
    #[command(subcommand)]
    Store(store::StoreCommand),
    /// Check a configuration file for `serve --config`.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a shell completion script: `meshplay completions bash >
    /// /etc/bash_completion.d/meshplay`, or zsh, fish, elvish, powershell.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the REST API's contract, OpenAPI 3.1 (what the master serves
    /// at /api/v1/openapi.json and docs/openapi.json holds).
    Openapi,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Report unknown keys and bad values with their line; print the flags
    /// the file stands for when it is valid.
    Check {
        /// The TOML file.
        file: PathBuf,
    },
}

#[derive(Debug, Clone, Args)]
pub(super) struct ClientArgs {
    /// The master's data directory, to find its address and token
    /// [default: ~/.meshplay].
    #[arg(long, env = "MESHPLAY_DATA_DIR")]
    pub(super) data_dir: Option<PathBuf>,
    /// The REST API's address, `HOST:PORT`, `http://HOST:PORT` or
    /// `https://HOST:PORT` (overrides the data directory).
    #[arg(long, env = "MESHPLAY_API_ADDR", value_name = "URL")]
    pub(super) api_addr: Option<String>,
    /// The CA to check an `https://` master against [default: the data
    /// directory's tls/ca.pem, when there is one].
    #[arg(long, env = "MESHPLAY_CA_FILE", value_name = "FILE")]
    pub(super) ca_file: Option<PathBuf>,
    /// The API token (overrides the data directory).
    #[arg(long, env = "MESHPLAY_API_TOKEN", hide_env_values = true)]
    pub(super) api_token: Option<String>,
    /// Print the API's JSON instead of text for people.
    #[arg(long)]
    pub(super) json: bool,
}

#[derive(Debug, Args)]
pub(super) struct TenantArgs {
    /// The tenant's type (user, guild, ...).
    #[arg(value_name = "TYPE")]
    pub(super) kind: String,
    /// The tenant's id.
    pub(super) id: String,
    #[command(flatten)]
    pub(super) client: ClientArgs,
}

/// A failure of the command line, printed as `error: ...`.
#[derive(Debug, thiserror::Error)]
pub(super) enum CliError {
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
    /// Not the user's mistake: something ended the command (exit 1).
    #[error("{0}")]
    Failed(String),
}

/// Parses the command line, runs it, and returns the process's exit code.
pub fn main() -> ExitCode {
    // `serve --config FILE` becomes the flags the file stands for, before
    // clap parses: the file accepts exactly what the command line does.
    let argv = match config::expand(std::env::args_os().collect()) {
        Ok(argv) => argv,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let cli = Cli::parse_from(argv);
    let quiet = !matches!(
        cli.command,
        Some(Command::Serve(_)) | Some(Command::Worker(_)) | None
    );
    let logbook = init_tracing(
        if quiet { "warn" } else { "info" },
        cli.log_format,
        &cli.command,
    );
    let runtime = match runtime::Threads::of(&cli).runtime() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, logbook)) {
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

/// Log lines to stderr; for the commands that run plugins on this machine
/// (`call`, `test`), the handlers' lines go to the returned logbook
/// instead.
fn init_tracing(
    default: &str,
    format: LogFormat,
    command: &Option<Command>,
) -> crate::author::logbook::Logbook {
    use tracing_subscriber::EnvFilter;
    let logbook = crate::author::logbook::Logbook::default();
    if matches!(
        command,
        Some(Command::Call(_)) | Some(Command::Test(_)) | Some(Command::Dev(_))
    ) {
        // Each local host ends by cutting its worker's link, which the
        // hub and the uplink would report as a warning; what the worker
        // warns of (a refused fetch) is in the command's own answer.
        let quiet = format!("{default},meshplay::mesophyll=error,meshplay::worker=error");
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(quiet));
        use tracing_subscriber::Layer;
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        let script = tracing_subscriber::filter::Targets::new()
            .with_target(crate::author::logbook::SCRIPT_TARGET, tracing::Level::DEBUG);
        tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .with(logbook.clone().with_filter(script))
            .init();
        return logbook;
    }
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        // Colours only for people: a log file should be greppable.
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        // Spans flattened into each line, so every line carries the
        // worker id (and whatever else its spans hold) as fields.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .init(),
    }
    logbook
}

async fn run(cli: Cli, logbook: crate::author::logbook::Logbook) -> Result<ExitCode, CliError> {
    let Some(command) = cli.command else {
        if cli.worker.worker {
            return child::run_worker(cli.worker).await;
        }
        return Err(CliError::Usage(
            "no command given; try `meshplay serve` or `meshplay --help`".into(),
        ));
    };
    match command {
        Command::Serve(args) => serve::serve(*args, cli.log_format).await,
        Command::New(c) => author::new(c),
        Command::Dev(args) => author::dev(args, &logbook).await,
        Command::Diff(args) => deploy::diff(args).await,
        Command::Deploy(args) => deploy::deploy(args).await,
        Command::Setup(c) => author::setup(c),
        Command::Call(args) => author::call(args, &logbook).await,
        Command::Test(args) => author::test(args, &logbook).await,
        Command::Workers(c) => workers::workers(&c).await,
        Command::Status(c) => status::status(&c).await,
        Command::Dispatch(args) => tenants::dispatch(args).await,
        Command::DispatchMany(args) => bulk::dispatch_many(args).await,
        Command::RunScript(args) => tenants::run_script(args).await,
        Command::Drop(t) => tenants::drop_vm(t).await,
        Command::Kv(k) => kv::kv(k).await,
        Command::Vars(v) => vars::vars(v).await,
        Command::Schedules(s) => schedules::schedules(s).await,
        Command::Plugins(p) => catalogue::plugins(p).await,
        Command::Filters(f) => catalogue::filters(f).await,
        Command::Bench(b) => bench::bench(b).await,
        Command::EchoServer(a) => echo_server::echo_server(a).await,
        Command::Config(ConfigCommand::Check { file }) => config::check(&file),
        Command::Tokens(t) => access::tokens(t).await,
        Command::JoinToken(t) => access::join_tokens(t).await,
        Command::Worker(args) => worker::worker(args).await,
        Command::Audit { limit, client: c } => access::audit(&c, limit).await,
        Command::Store(s) => store::store(s).await,
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "meshplay", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Openapi => {
            print!("{}", master::api::contract::to_json());
            Ok(ExitCode::SUCCESS)
        }
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

pub(super) fn client(args: &ClientArgs) -> Result<ApiClient, CliError> {
    let dir = datadir::DataDir::at(args.data_dir.clone().unwrap_or_else(datadir::default_path));
    let token = match &args.api_token {
        Some(t) => t.clone(),
        None => dir.admin_token().map_err(ApiClientError::from)?,
    };
    let local = |name: &str| Some(dir.path().join(name)).filter(|p| p.exists());
    let (url, trust) = match &args.api_addr {
        Some(url) => {
            // A master elsewhere is checked against a CA: the one given,
            // or this data directory's own.
            let ca = args.ca_file.clone().or_else(|| local(datadir::TLS_CA));
            (url.clone(), ca.map(Trust::Ca))
        }
        None => {
            let endpoint = dir.endpoint().map_err(ApiClientError::from)?;
            if !endpoint.tls {
                return Ok(ApiClient::new(endpoint.api_addr, token));
            }
            let trust = match &args.ca_file {
                Some(ca) => Trust::Ca(ca.clone()),
                None => Trust::Pinned(dir.path().join(datadir::TLS_CERT)),
            };
            (format!("https://{}", endpoint.api_addr), Some(trust))
        }
    };
    Ok(ApiClient::connect_to(&url, token, trust.as_ref())?)
}

pub(super) fn print_json<T: Serialize>(v: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("API types always serialise")
    );
}

pub(super) fn parse_json(what: &str, text: &str) -> Result<serde_json::Value, CliError> {
    serde_json::from_str(text).map_err(|e| CliError::Usage(format!("{what} is not JSON: {e}")))
}
