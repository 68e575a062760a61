//! The hidden worker mode, `meshplay --worker ...`, which the master
//! starts its children in, and what every worker process is made of
//! (`meshplay worker` on another machine, [`super::worker`], builds on it).

use super::CliError;
use crate::mesophyll::auth::{PARENT_ENV, TOKEN_ENV};
use crate::mesophyll::uplink::{CONNECT_TIMEOUT, UplinkConfig};
use crate::tls::{TlsClient, Trust};
use crate::worker::filters::FilterLimits;
use crate::worker::tenants::TenantsConfig;
use crate::worker::vm::VmLimits;
use crate::worker::{self, WorkerConfig};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// The worker mode's flags (the master passes them; people rarely do).
#[derive(Debug, Args)]
pub(super) struct WorkerArgs {
    /// Run as a worker process.
    #[arg(long, hide = true, requires_all = ["worker_id", "master"])]
    pub(super) worker: bool,
    /// This worker's id.
    #[arg(long, hide = true)]
    pub(super) worker_id: Option<u32>,
    /// The master's Mesophyll address, host:port.
    #[arg(long, hide = true)]
    pub(super) master: Option<String>,
    /// The worker's token (better: the MESHPLAY_WORKER_TOKEN environment
    /// variable, which `ps` does not show).
    #[arg(long, hide = true, env = TOKEN_ENV, hide_env_values = true)]
    pub(super) token: Option<String>,
    /// Where compiled filters are cached.
    #[arg(long, hide = true)]
    pub(super) cache_dir: Option<PathBuf>,
    /// Heap cap of each tenant VM, in MiB.
    #[arg(long, hide = true, default_value_t = 20)]
    pub(super) vm_memory_mb: usize,
    /// The longest a tenant may hold this worker's thread without yielding.
    #[arg(long, hide = true, default_value_t = DEFAULT_HOLD_MS)]
    pub(super) vm_hold_ms: u64,
    /// The Luau heap all of this worker's VMs may hold together, in MiB.
    #[arg(long, hide = true, default_value_t = DEFAULT_WORKER_MEMORY_MB)]
    pub(super) worker_memory_mb: usize,
    /// Linear memory cap of each filter instance, in MiB.
    #[arg(long, hide = true, default_value_t = 16)]
    pub(super) filter_memory_mb: usize,
    /// Speak TLS to the master and accept exactly the certificate in this
    /// file (the master's `<data-dir>/tls/cert.pem`).
    #[arg(long, hide = true, value_name = "FILE")]
    pub(super) tls_pin: Option<PathBuf>,
    /// Runtime threads of this worker process.
    #[arg(long, hide = true, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub(super) worker_threads: u16,
}

pub(super) async fn run_worker(args: WorkerArgs) -> Result<ExitCode, CliError> {
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
    let tls = match &args.tls_pin {
        Some(pin) => Some(
            TlsClient::new(&Trust::Pinned(pin.clone()))
                .map_err(|e| CliError::Usage(e.to_string()))?,
        ),
        None => None,
    };
    let uplink = UplinkConfig {
        masters: crate::mesophyll::addresses::Addresses::one(master),
        worker_id,
        token,
        connect_timeout: CONNECT_TIMEOUT,
        tls,
    };
    let limits = WorkerLimits {
        vm_memory_mb: args.vm_memory_mb,
        vm_hold_ms: args.vm_hold_ms,
        worker_memory_mb: args.worker_memory_mb,
        filter_memory_mb: args.filter_memory_mb,
    };
    run_worker_session(worker_config(uplink, args.cache_dir, limits, parent_pid)).await?;
    Ok(ExitCode::SUCCESS)
}

/// The `--vm-hold-ms` a worker gets unless told otherwise.
pub(super) const DEFAULT_HOLD_MS: u64 = crate::worker::vm::DEFAULT_HOLD.as_millis() as u64;

/// The `--worker-memory-mb` a worker gets unless told otherwise.
pub(super) const DEFAULT_WORKER_MEMORY_MB: usize =
    TenantsConfig::default_memory_budget() / (1024 * 1024);

/// What a worker's flags limit: each VM's heap and hold, all VMs' heaps,
/// each filter instance's memory.
pub(super) struct WorkerLimits {
    pub(super) vm_memory_mb: usize,
    pub(super) vm_hold_ms: u64,
    pub(super) worker_memory_mb: usize,
    pub(super) filter_memory_mb: usize,
}

/// A worker's settings: who it is and where its master is (`uplink`),
/// where it caches compiled filters, its limits, and the parent it dies
/// with.
pub(super) fn worker_config(
    uplink: UplinkConfig,
    cache_dir: Option<PathBuf>,
    limits: WorkerLimits,
    parent_pid: Option<u32>,
) -> WorkerConfig {
    let WorkerLimits {
        vm_memory_mb,
        vm_hold_ms,
        worker_memory_mb,
        filter_memory_mb,
    } = limits;
    WorkerConfig {
        uplink,
        cache_dir,
        filter_limits: FilterLimits {
            memory_bytes: filter_memory_mb * 1024 * 1024,
            ..FilterLimits::default()
        },
        tenants: TenantsConfig {
            vm: VmLimits {
                memory_bytes: vm_memory_mb * 1024 * 1024,
                hold: Duration::from_millis(vm_hold_ms),
            },
            memory_budget: worker_memory_mb * 1024 * 1024,
            ..TenantsConfig::default()
        },
        parent_pid,
        stand_in: None,
    }
}

/// Runs a worker until its master shuts it down or refuses it.
pub(super) async fn run_worker_session(config: WorkerConfig) -> Result<(), CliError> {
    let span = tracing::info_span!("worker", id = config.uplink.worker_id);
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
    Ok(())
}
