//! `meshplay serve` as a child process, for the benchmarks that drive a
//! master from outside as an application would (`chaos`, `peers`): the
//! master's CPU is then its own, and its load generator is this process.

use crate::bench::{BenchError, baseline};
use crate::client::ApiClient;
use crate::datadir::DataDir;
use crate::rest::WorkerState;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `meshplay serve` in a child process, on free loopback ports, in `dir`.
pub struct Served {
    pub(super) child: Child,
    /// A client of its REST API, with the admin token.
    pub client: ApiClient,
}

impl Served {
    /// Starts it with `workers` workers and that heartbeat timeout; returns
    /// once it listens (its workers may still be starting: see
    /// [`Served::all_running`]).
    ///
    /// Fails when the files cannot be written, the process cannot start, or
    /// it does not listen within a minute.
    pub fn start(
        exe: &Path,
        workers: u32,
        heartbeat_timeout_ms: u64,
        dir: &Path,
    ) -> Result<Served, BenchError> {
        let plugins = dir.join("plugins");
        let echo = plugins.join("echo");
        std::fs::create_dir_all(&echo)?;
        std::fs::write(echo.join("plugin.toml"), baseline::ECHO_MANIFEST)?;
        std::fs::write(echo.join("init.luau"), baseline::ECHO_HANDLER)?;
        let data = dir.join("data");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("master.log"))?;
        let child = Command::new(exe)
            .arg("serve")
            .arg("--data-dir")
            .arg(&data)
            .args(["--workers", &workers.to_string()])
            .args([
                "--api-addr",
                "127.0.0.1:0",
                "--mesophyll-addr",
                "127.0.0.1:0",
            ])
            .arg("--plugins")
            .arg(&plugins)
            .arg("--filters")
            .arg(dir.join("no-filters"))
            .args(["--heartbeat-interval-ms", "200"])
            .args(["--heartbeat-timeout-ms", &heartbeat_timeout_ms.to_string()])
            .env("RUST_LOG", "warn,meshplay::master::supervisor=info")
            .env_remove("MESHPLAY_API_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        let pid = child.id();
        let until = Instant::now() + Duration::from_secs(60);
        let endpoint = loop {
            if let Ok(e) = DataDir::at(&data).endpoint()
                && e.pid == pid
            {
                break e;
            }
            if Instant::now() > until {
                return Err(BenchError::Workers(Duration::from_secs(60)));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let token = DataDir::at(&data)
            .admin_token()
            .map_err(|e| BenchError::Target(e.to_string()))?;
        Ok(Served {
            child,
            client: ApiClient::new(endpoint.api_addr, token),
        })
    }

    /// Waits until every worker runs; returns how long that took.
    pub async fn all_running(&self, limit: Duration) -> Result<Duration, BenchError> {
        let started = Instant::now();
        loop {
            if let Ok(w) = self.client.workers().await
                && w.workers.iter().all(|w| w.state == WorkerState::Running)
            {
                return Ok(started.elapsed());
            }
            if started.elapsed() > limit {
                return Err(BenchError::Workers(limit));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub(super) async fn lost_in_flight(&self) -> Result<u64, BenchError> {
        self.client
            .workers()
            .await
            .map(|w| w.lost_in_flight)
            .map_err(|e| BenchError::Target(e.to_string()))
    }

    pub(super) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.kill();
    }
}
