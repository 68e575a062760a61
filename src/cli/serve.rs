//! `meshplay serve`: a master with its workers, until SIGINT or SIGTERM.
//! The mode its workers run in is [`super::child`].

use super::child::{DEFAULT_HOLD_MS, DEFAULT_WORKER_MEMORY_MB};
use super::{CliError, LogFormat};
use crate::datadir;
use crate::master::nats::NatsConfig;
use crate::master::port::PortLimits;
use crate::master::store::StoreUrl;
use crate::master::supervisor::SupervisorConfig;
use crate::master::timers::TimerConfig;
use crate::master::tls::CertSource;
use crate::master::webhooks::WebhookConfig;
use crate::master::{self, MasterConfig};
use crate::mesophyll::hub::HubConfig;
use crate::mesophyll::message::{DEFAULT_MAX_EVENT_HOPS, EgressPolicy};
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Args)]
pub(super) struct ServeArgs {
    /// Where the master keeps its token and state [default: ~/.meshplay].
    #[arg(long, env = "MESHPLAY_DATA_DIR")]
    pub(super) data_dir: Option<PathBuf>,
    /// A TOML file of settings, one key per flag (`workers = 4`,
    /// `api-addr = "..."`); a flag or its environment variable wins over it.
    /// `meshplay config check FILE` checks one.
    #[arg(long, value_name = "FILE")]
    pub(super) config: Option<PathBuf>,
    /// Where the state is: `sled:PATH` (embedded) or
    /// `postgres://user[:password]@host[:port]/db` [default:
    /// sled:<data-dir>/store].
    #[arg(
        long,
        env = "MESHPLAY_STORE",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub(super) store: Option<String>,
    /// Worker processes (the shard count).
    #[arg(long, default_value_t = 2)]
    pub(super) workers: u32,
    /// How many of the workers (the highest ids) you start yourself; their
    /// tokens are written to <data-dir>/worker-token-<id> [default: 0, or
    /// all of them with --standby].
    #[arg(long)]
    pub(super) external_workers: Option<u32>,
    /// The REST API's address (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:9081")]
    pub(super) api_addr: SocketAddr,
    /// The Mesophyll hub's address (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:9082")]
    pub(super) mesophyll_addr: SocketAddr,
    /// The plugin folder: the plugins loaded at start (uploads add to them).
    #[arg(long = "plugins", default_value = "plugins")]
    pub(super) plugins_dir: PathBuf,
    /// The filter folder: `<name>.wasm` modules loaded at start.
    #[arg(long = "filters", default_value = "filters/dist")]
    pub(super) filters_dir: PathBuf,
    /// The API's bearer token [default: <data-dir>/admin-token, created on
    /// first start].
    #[arg(long, env = "MESHPLAY_API_TOKEN", hide_env_values = true)]
    pub(super) api_token: Option<String>,
    /// How often workers send heartbeats (at least 1).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub(super) heartbeat_interval_ms: u64,
    /// Silence after which a worker is declared dead and restarted (longer
    /// than the interval).
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    pub(super) heartbeat_timeout_ms: u64,
    /// Bytes of frames queued for one worker, in MiB, before requests for
    /// it answer "overloaded".
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    pub(super) worker_queue_mb: u64,
    /// How long workers may finish their work on shutdown.
    #[arg(long, default_value_t = 5000)]
    pub(super) shutdown_grace_ms: u64,
    /// Heap cap of each tenant VM, in MiB.
    #[arg(long, default_value_t = 20)]
    pub(super) vm_memory_mb: usize,
    /// The longest a tenant may hold its worker's thread without yielding:
    /// inside a metamethod, a sort comparator or a library call, where Luau
    /// cannot hand the thread to the worker's other tenants. Past it the
    /// call fails `timeout`.
    #[arg(long, default_value_t = DEFAULT_HOLD_MS, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub(super) vm_hold_ms: u64,
    /// The Luau heap all of a worker's VMs may hold together, in MiB; past
    /// it new VMs are refused `overloaded` while idle ones are evicted.
    #[arg(long, default_value_t = DEFAULT_WORKER_MEMORY_MB, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub(super) worker_memory_mb: usize,
    /// Linear memory cap of each WASM filter instance, in MiB.
    #[arg(long, default_value_t = 16)]
    pub(super) filter_memory_mb: usize,
    /// Days the audit log keeps an entry; older ones are deleted at start
    /// and every hour.
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u64).range(1..=36_500))]
    pub(super) audit_retention_days: u64,
    /// Connections each port (the API's, the hub's) keeps open at once;
    /// past it a new one is closed at once.
    #[arg(long, default_value_t = PortLimits::default().max_connections, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub(super) max_connections: usize,
    /// Connections each port keeps open at once from one peer address.
    #[arg(long, default_value_t = PortLimits::default().max_per_peer, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub(super) max_connections_per_peer: usize,
    /// How long a client may take to send a request's headers (or its
    /// first byte), and how long an HTTP/1 connection may idle between
    /// requests, before it is closed.
    #[arg(long, default_value_t = PortLimits::default().header_timeout.as_millis() as u64, value_parser = clap::value_parser!(u64).range(100..))]
    pub(super) header_timeout_ms: u64,
    /// Runtime threads of each worker process. With 1, a worker runs its
    /// tenants as one event loop (its watchdog still time-slices a busy
    /// tenant); use one worker per core (--workers) to use the machine.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub(super) worker_threads: u16,
    /// Runtime threads of the master process [default: the cores its own
    /// workers leave free (cores - managed workers x --worker-threads), at
    /// least 1].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub(super) master_threads: Option<u16>,
    /// Serve both ports over TLS, with a certificate from this master's
    /// own CA (made on first start in <data-dir>/tls/; `ca.pem` is what
    /// other machines need) unless --tls-cert gives one.
    #[arg(long)]
    pub(super) tls: bool,
    /// The certificate chain to serve (PEM, leaf first); implies --tls.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub(super) tls_cert: Option<PathBuf>,
    /// The key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub(super) tls_key: Option<PathBuf>,
    /// More names or addresses the generated certificate carries (the ones
    /// workers and clients on other machines dial); comma-separated or
    /// repeated. It always carries localhost, 127.0.0.1, ::1, the hostname
    /// and the ports' own addresses.
    #[arg(long = "tls-name", value_name = "NAME", value_delimiter = ',')]
    pub(super) tls_names: Vec<String>,
    /// Allow plaintext on addresses other than loopback (a network that is
    /// yours alone); without it such a bind needs --tls.
    #[arg(long)]
    pub(super) insecure: bool,
    #[command(flatten)]
    pub(super) egress: EgressArgs,
    /// How many handlers may emit an event in a row (`events.emit`); the
    /// emit past it raises, so plugins that answer each other stop.
    #[arg(long, default_value_t = DEFAULT_MAX_EVENT_HOPS, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub(super) max_event_hops: u32,
    #[command(flatten)]
    pub(super) timers: TimerArgs,
    /// The largest webhook body read (`too_large`, 413, past it).
    #[arg(long, default_value_t = WebhookConfig::default().max_body_bytes as u64, value_parser = clap::value_parser!(u64).range(1..=16 * 1024 * 1024))]
    pub(super) webhook_max_body_bytes: u64,
    /// Webhook requests a second one tenant may get (bursts of twice
    /// that; `rate_limited`, 429, past it).
    #[arg(long, default_value_t = WebhookConfig::default().tenant_rate, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(super) webhook_tenant_rate: u32,
    /// Webhook requests a second from one address (bursts of twice that).
    #[arg(long, default_value_t = WebhookConfig::default().address_rate, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(super) webhook_address_rate: u32,
    #[command(flatten)]
    pub(super) nats: NatsArgs,
    #[command(flatten)]
    pub(super) standby: super::standby::StandbyArgs,
}

/// The NATS bridge.
#[derive(Debug, Args)]
pub(super) struct NatsArgs {
    /// Bridge to this NATS (`nats://host:4222`, comma-separated for
    /// several): dispatch by request/reply on
    /// `meshplay.dispatch.<type>.<id>.<event>`, `nats.publish` for plugins.
    #[arg(long, value_name = "URL")]
    pub(super) nats: Option<String>,
    /// A NATS credentials file (`.creds`: JWT and nkey seed).
    #[arg(long, value_name = "FILE", requires = "nats")]
    pub(super) nats_creds: Option<PathBuf>,
    /// A NATS token.
    #[arg(
        long,
        env = "MESHPLAY_NATS_TOKEN",
        hide_env_values = true,
        requires = "nats"
    )]
    pub(super) nats_token: Option<String>,
    /// A file holding a NATS nkey seed.
    #[arg(long, value_name = "FILE", requires = "nats")]
    pub(super) nats_nkey: Option<PathBuf>,
    /// Verify the NATS server's TLS certificate with this CA (TLS is then
    /// required).
    #[arg(long, value_name = "FILE", requires = "nats")]
    pub(super) nats_ca: Option<PathBuf>,
    /// The queue group the dispatch subscription joins (masters in one
    /// group share the requests).
    #[arg(long, default_value = "meshplay")]
    pub(super) nats_queue_group: String,
    /// Publish every answered dispatch on
    /// `meshplay.events.<type>.<id>.<event>`.
    #[arg(long, requires = "nats")]
    pub(super) nats_publish_events: bool,
}

impl ServeArgs {
    /// The workers someone else starts: all of them with `--standby`
    /// (a standby's own children would die with it), none by default.
    pub(super) fn external_workers(&self) -> u32 {
        let all = if self.standby.standby {
            self.workers
        } else {
            0
        };
        self.external_workers.unwrap_or(all)
    }
}

impl NatsArgs {
    fn config(&self) -> Option<NatsConfig> {
        Some(NatsConfig {
            url: self.nats.clone()?,
            credentials: self.nats_creds.clone(),
            token: self.nats_token.clone(),
            nkey: self.nats_nkey.clone(),
            ca: self.nats_ca.clone(),
            queue_group: self.nats_queue_group.clone(),
            publish_events: self.nats_publish_events,
        })
    }
}

/// How timers and schedules are capped and delivered.
#[derive(Debug, Args)]
pub(super) struct TimerArgs {
    /// The most pending timers one tenant may have, schedules' runs
    /// included (`too_many_timers` past it).
    #[arg(long, default_value_t = TimerConfig::default().max_per_tenant as u32, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub(super) max_timers_per_tenant: u32,
    /// Deliveries of one timer tried before it is dropped (and counted).
    #[arg(long, default_value_t = TimerConfig::default().max_attempts, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub(super) timer_max_attempts: u32,
    /// The wait before a failed timer's first retry; each next one doubles,
    /// up to 5 minutes.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=300_000))]
    pub(super) timer_retry_ms: u64,
    /// The handlers' budget for one timer delivery.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=300_000))]
    pub(super) timer_deadline_ms: u64,
    /// Timer deliveries under way at once.
    #[arg(long, default_value_t = TimerConfig::default().concurrency as u32, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub(super) timer_concurrency: u32,
}

impl TimerArgs {
    fn config(&self) -> TimerConfig {
        TimerConfig {
            max_per_tenant: self.max_timers_per_tenant as usize,
            max_attempts: self.timer_max_attempts,
            retry_base: Duration::from_millis(self.timer_retry_ms),
            deadline: Duration::from_millis(self.timer_deadline_ms),
            concurrency: self.timer_concurrency as usize,
        }
    }
}

/// What every worker's `http.fetch` may do (sent to joined workers too).
#[derive(Debug, Args)]
pub(super) struct EgressArgs {
    /// Refuse every fetch on the whole fleet (`egress_denied`).
    #[arg(long)]
    pub(super) no_egress: bool,
    /// Open a network the egress guard refuses by default (loopback,
    /// private, link-local, ...) to fetches; repeatable. The master's own
    /// ports stay closed.
    #[arg(long = "egress-allow-cidr", value_name = "CIDR", value_parser = parse_cidr)]
    pub(super) egress_allow_cidr: Vec<ipnet::IpNet>,
    /// The most bytes of one fetched response's body (`too_large` past it).
    #[arg(long, default_value_t = EgressPolicy::default().max_response_bytes, value_parser = clap::value_parser!(u64).range(1..))]
    pub(super) egress_max_response_bytes: u64,
    /// The most fetches one handler call or script may make
    /// (`too_many_fetches` past it).
    #[arg(long, default_value_t = EgressPolicy::default().max_fetches_per_call)]
    pub(super) egress_max_fetches: u32,
    /// The most fetches one tenant may have in flight (`overloaded`).
    #[arg(long, default_value_t = EgressPolicy::default().max_per_tenant, value_parser = clap::value_parser!(u32).range(1..))]
    pub(super) egress_tenant_concurrency: u32,
    /// The most fetches (each on its own connection) one worker may have
    /// in flight; past it a fetch waits, until its timeout (`overloaded`).
    #[arg(long, default_value_t = EgressPolicy::default().max_per_worker, value_parser = clap::value_parser!(u32).range(1..))]
    pub(super) egress_worker_connections: u32,
}

impl EgressArgs {
    fn policy(&self) -> EgressPolicy {
        EgressPolicy {
            enabled: !self.no_egress,
            open_networks: self
                .egress_allow_cidr
                .iter()
                .map(|n| n.trunc().to_string())
                .collect(),
            master_addrs: Vec::new(),
            max_response_bytes: self.egress_max_response_bytes,
            max_fetches_per_call: self.egress_max_fetches,
            max_per_tenant: self.egress_tenant_concurrency,
            max_per_worker: self.egress_worker_connections,
        }
    }
}

/// A CIDR (`10.1.0.0/16`) or a bare address (a /32 or /128 of its own).
fn parse_cidr(s: &str) -> Result<ipnet::IpNet, String> {
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{s:?} is not a network (10.1.0.0/16) nor an address"))
}

impl ServeArgs {
    fn tls(&self) -> Option<CertSource> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(CertSource::Files {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ if self.tls || !self.tls_names.is_empty() => Some(CertSource::Generate {
                names: self.tls_names.clone(),
            }),
            _ => None,
        }
    }
}

/// `--store` and `store copy`'s URLs. Checked here rather than by clap,
/// whose error would repeat the value, password and all.
pub(super) fn store_url(s: &str) -> Result<StoreUrl, CliError> {
    StoreUrl::parse(s).map_err(|e| CliError::Usage(e.to_string()))
}

pub(super) async fn serve(args: ServeArgs, log_format: LogFormat) -> Result<ExitCode, CliError> {
    if args.heartbeat_timeout_ms <= args.heartbeat_interval_ms {
        return Err(CliError::Usage(format!(
            "--heartbeat-timeout-ms ({}) must be longer than --heartbeat-interval-ms ({}): \
             a worker would be declared dead between two heartbeats",
            args.heartbeat_timeout_ms, args.heartbeat_interval_ms
        )));
    }
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
        "--vm-hold-ms".into(),
        args.vm_hold_ms.to_string(),
        "--worker-memory-mb".into(),
        args.worker_memory_mb.to_string(),
        "--filter-memory-mb".into(),
        args.filter_memory_mb.to_string(),
        "--worker-threads".into(),
        args.worker_threads.to_string(),
        "--log-format".into(),
        log_format.as_arg().into(),
    ];
    let tls = args.tls();
    let leadership = args.standby.config().map_err(CliError::Usage)?;
    let external_workers = args.external_workers();
    let config = MasterConfig {
        data_dir: args.data_dir.unwrap_or_else(datadir::default_path),
        store: args.store.as_deref().map(store_url).transpose()?,
        workers: args.workers,
        external_workers,
        api_addr: args.api_addr,
        mesophyll_addr: args.mesophyll_addr,
        plugins_dir: args.plugins_dir,
        filters_dir: args.filters_dir,
        api_token: args.api_token,
        hub: HubConfig {
            heartbeat_interval: Duration::from_millis(args.heartbeat_interval_ms),
            heartbeat_timeout: Duration::from_millis(args.heartbeat_timeout_ms),
            send_queue_bytes: (args.worker_queue_mb * 1024 * 1024) as usize,
            egress: args.egress.policy(),
            max_event_hops: args.max_event_hops,
            ..HubConfig::default()
        },
        supervisor,
        shutdown_grace: Duration::from_millis(args.shutdown_grace_ms),
        tls,
        insecure: args.insecure,
        audit_retention: Duration::from_secs(args.audit_retention_days * 86_400),
        timers: args.timers.config(),
        webhooks: WebhookConfig {
            max_body_bytes: args.webhook_max_body_bytes as usize,
            tenant_rate: args.webhook_tenant_rate,
            address_rate: args.webhook_address_rate,
        },
        nats: args.nats.config(),
        leadership,
        ports: PortLimits {
            max_connections: args.max_connections,
            max_per_peer: args.max_connections_per_peer,
            header_timeout: Duration::from_millis(args.header_timeout_ms),
            ..PortLimits::default()
        },
    };
    master::serve(config, signals()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Completes on the first SIGINT or SIGTERM.
pub(super) async fn signals() {
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
