//! `meshplay bench`: how close Meshplay comes to the bare building blocks it
//! is made of, measured on the machine it runs on.
//!
//! - [`dispatch`]: events through the REST API and straight through the hub;
//! - [`kv`]: the DB endpoints from a worker's view;
//! - [`filter`]: a filter call as workers make it, against a bare call;
//! - [`egress`]: `http.fetch` against a bare client, and echo latency
//!   while many tenants wait on a slow upstream;
//! - [`memory`]: a worker's RSS per idle tenant;
//! - [`timers`]: many pending timers, loaded and fired at a steady rate;
//! - [`bridge`]: dispatch over the NATS bridge beside NATS alone and REST;
//! - [`peers`]: Meshplay beside Redis EVAL and NATS request/reply, with
//!   the master in a child process;
//! - [`failover`]: the outage when the leading master of two on one
//!   PostgreSQL is killed, paused or cut off;
//! - [`chaos`]: faults under load (kills, a hang, the master killed under
//!   durable writers), with the master in a child process;
//! - [`baseline`]: the raw limits (WebSocket echo, HTTP/2 echo, sled,
//!   wasmtime, mlua) measured in the same run;
//! - [`load`]: the load generator all of them share;
//! - [`figures`]: what gets printed, with each figure's ratio to its limit;
//! - [`nats`]: just enough of NATS's client protocol for `bench peers` to
//!   measure request/reply against a real `nats-server`;
//! - [`pgbench`]: PostgreSQL's own benchmark, the peer of `bench kv` on
//!   PostgreSQL;
//! - [`served`]: `meshplay serve` as a child process, for the benchmarks
//!   that drive a master from outside (`chaos`, `peers`).
//!
//! Benchmarks start their own master in this process (the hub is then at
//! hand for `--direct`) with worker processes of this same executable, on a
//! temporary data directory with the echo plugin, on free loopback ports.

pub mod baseline;
pub mod bridge;
pub mod chaos;
pub mod dispatch;
pub mod egress;
pub mod failover;
pub mod figures;
pub mod filter;
pub mod kv;
pub mod load;
pub mod memory;
pub mod nats;
pub mod peers;
pub mod pgbench;
pub mod served;
pub mod timers;

use crate::master::supervisor::SupervisorConfig;
use crate::master::{self, MasterConfig, MasterError, Running};
use crate::mesophyll::hub::HubConfig;
use std::path::PathBuf;
use std::time::Duration;

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The master it needs did not start.
    #[error("cannot start a master: {0}")]
    Master(#[from] MasterError),
    /// Its temporary directory could not be made.
    #[error("cannot prepare a temporary directory: {0}")]
    Io(#[from] std::io::Error),
    /// The workers did not connect in time.
    #[error("the workers did not connect within {0:?}")]
    Workers(Duration),
    /// A raw limit could not be measured.
    #[error(transparent)]
    Baseline(#[from] baseline::BaselineError),
    /// The target master refused or failed a call.
    #[error("{0}")]
    Target(String),
    /// The options make no sense.
    #[error("{0}")]
    Usage(String),
}

/// What [`InProcess::launch`] starts.
pub struct Launch {
    /// Worker slots.
    pub workers: u32,
    /// How many of them (the highest ids) the caller starts.
    pub external: u32,
    /// The store (`None`: sled in the temporary directory).
    pub store: Option<crate::master::store::StoreUrl>,
    /// Runtime threads of each worker.
    pub worker_threads: u16,
    /// The hub's settings (the egress policy among them).
    pub hub: HubConfig,
    /// Plugins beside echo: name, manifest, entry source.
    pub plugins: Vec<(String, String, String)>,
    /// How the master fires timers.
    pub timers: master::timers::TimerConfig,
    /// The NATS bridge, if any.
    pub nats: Option<master::nats::NatsConfig>,
}

/// A master started for a benchmark, with the temporary directory it lives
/// in (removed on drop).
pub struct InProcess {
    /// The running master.
    pub master: Running,
    /// Its worker count.
    pub workers: u32,
    dir: tempfile::TempDir,
}

impl InProcess {
    /// Starts a master with `workers` workers, `external` of which (the
    /// highest ids) are left for the caller, and waits until the spawned
    /// ones are connected.
    pub async fn start(workers: u32, external: u32) -> Result<InProcess, BenchError> {
        Self::start_on(workers, external, None, 1).await
    }

    /// [`InProcess::start`] on `store` (`None`: sled in its directory),
    /// with `worker_threads` runtime threads in each worker (as `serve
    /// --worker-threads`).
    pub async fn start_on(
        workers: u32,
        external: u32,
        store: Option<crate::master::store::StoreUrl>,
        worker_threads: u16,
    ) -> Result<InProcess, BenchError> {
        let plan = Launch {
            workers,
            external,
            store,
            worker_threads,
            hub: HubConfig::default(),
            plugins: Vec::new(),
            timers: master::timers::TimerConfig::default(),
            nats: None,
        };
        Self::launch(plan).await
    }

    /// Starts the master `plan` describes, with the echo plugin and the
    /// plan's own.
    pub async fn launch(plan: Launch) -> Result<InProcess, BenchError> {
        let Launch {
            workers,
            external,
            store,
            worker_threads,
            hub,
            plugins,
            timers,
            nats,
        } = plan;
        let dir = tempfile::Builder::new()
            .prefix("meshplay-bench")
            .tempdir()?;
        let echo = (
            "echo".to_owned(),
            baseline::ECHO_MANIFEST.to_owned(),
            baseline::ECHO_HANDLER.to_owned(),
        );
        for (name, manifest, code) in std::iter::once(echo).chain(plugins) {
            let folder = dir.path().join("plugins").join(name);
            std::fs::create_dir_all(&folder)?;
            std::fs::write(folder.join("plugin.toml"), manifest)?;
            std::fs::write(folder.join("init.luau"), code)?;
        }
        let exe = std::env::current_exe()?;
        let mut supervisor = SupervisorConfig::new(exe, String::new(), PathBuf::new());
        supervisor.worker_log = Some("warn".into());
        supervisor.worker_args = vec!["--worker-threads".into(), worker_threads.to_string()];
        let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let master = master::start(MasterConfig {
            data_dir: dir.path().join("data"),
            store,
            workers,
            external_workers: external,
            api_addr: loopback,
            mesophyll_addr: loopback,
            plugins_dir: dir.path().join("plugins"),
            filters_dir: dir.path().join("filters"),
            api_token: None,
            hub,
            supervisor,
            shutdown_grace: Duration::from_secs(2),
            tls: None,
            insecure: false,
            ports: master::port::PortLimits::default(),
            audit_retention: Duration::from_secs(90 * 86_400),
            timers,
            webhooks: master::webhooks::WebhookConfig::default(),
            nats,
            leadership: None,
        })
        .await?;
        let limit = Duration::from_secs(30);
        let until = tokio::time::Instant::now() + limit;
        while (0..workers - external).any(|id| !master.hub.is_connected(id)) {
            if tokio::time::Instant::now() > until {
                master.stop().await;
                return Err(BenchError::Workers(limit));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(InProcess {
            master,
            workers,
            dir,
        })
    }

    /// Where the data directory is (worker tokens of external workers).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Stops the master and its workers.
    pub async fn stop(self) {
        self.master.stop().await;
    }
}
