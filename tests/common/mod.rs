//! The integration tests' harness: a real `meshplay serve` (the binary cargo
//! built), on loopback ports the OS picks, with a data directory in a fresh
//! temporary folder. Several tests can run side by side.
//!
//! The master's log goes to `master.log` in its data directory and is
//! printed when a test fails.

#![allow(dead_code)]

pub mod api;
pub mod contract;
pub mod failover;
pub mod netns;
pub mod pg;
pub mod upstream;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use meshplay::client::ApiClient;
use meshplay::datadir::{DataDir, Endpoint};
use meshplay::master::shard;
use meshplay::mesophyll::message::Tenant;
use meshplay::rest::{CreatedToken, WorkerInfo, WorkerState};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A waiting dispatch of event `name` with `data`, with a 10 s budget.
pub fn event(name: &str, data: serde_json::Value) -> meshplay::rest::DispatchRequest {
    meshplay::rest::DispatchRequest {
        name: name.into(),
        data,
        wait: true,
        timeout_ms: Some(10_000),
    }
}

/// A master with workers 0 (spawned) and 1 (external), and worker 1's token.
pub async fn with_external_worker_1() -> (Master, String) {
    with_external_worker_1_on(Opts::default()).await
}

/// [`with_external_worker_1`], with `opts`' other settings.
pub async fn with_external_worker_1_on(opts: Opts) -> (Master, String) {
    let m = Master::start(Opts {
        workers: 2,
        external: 1,
        ..opts
    })
    .await;
    let token = DataDir::at(m.data_dir()).worker_token(1).unwrap();
    (m, token)
}

/// Starts worker 1 by hand (as an operator would), its token on the command
/// line; killed when the guard drops.
pub fn start_worker_1(m: &Master, token: &str) -> Guard {
    Command::new(EXE)
        .args(["--worker", "--worker-id", "1", "--master"])
        .arg(m.endpoint.mesophyll_addr.to_string())
        .args(["--token", token])
        .env_remove("MESHPLAY_WORKER_TOKEN")
        .stderr(Stdio::null())
        .kill_on_drop_guard()
}

/// The binary under test.
pub const EXE: &str = env!("CARGO_BIN_EXE_meshplay");

/// How a test wants its master.
#[derive(Debug, Clone)]
pub struct Opts {
    pub workers: u32,
    pub external: u32,
    pub heartbeat_timeout_ms: u64,
    /// `--api-addr` and `--mesophyll-addr` (port 0: any free one).
    pub addrs: (String, String),
    pub extra: Vec<String>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            workers: 2,
            external: 0,
            heartbeat_timeout_ms: 3000,
            addrs: ("127.0.0.1:0".into(), "127.0.0.1:0".into()),
            extra: Vec::new(),
        }
    }
}

impl Opts {
    /// The defaults on a fresh PostgreSQL database, or `None` when the
    /// test skips for want of one ([`pg::database_or_skip`]).
    pub fn on_postgres() -> Option<Opts> {
        let url = pg::database_or_skip()?;
        Some(Opts {
            extra: vec!["--store".into(), url],
            ..Opts::default()
        })
    }
}

/// Runs each named `async fn(Opts)` of the calling file as two tests:
/// `on_sled::NAME` with the defaults and `on_postgres::NAME` on a fresh
/// PostgreSQL database (skipped, saying why, where there is none).
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod on_sled {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Opts::default()).await
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(opts) = $crate::common::Opts::on_postgres() {
                        super::$name(opts).await
                    }
                }
            )*
        }
    };
}

/// A running master and its workers.
pub struct Master {
    pub child: Child,
    /// Shared so that a test can start another master on the same data
    /// directory after killing this one.
    pub dir: std::sync::Arc<tempfile::TempDir>,
    pub endpoint: Endpoint,
    pub client: ApiClient,
    pub opts: Opts,
}

pub fn plugins_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins")
}

/// The built example filters that ship with the repository.
pub fn filters_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("filters/dist")
}

/// Polls `f` every 50 ms until it returns `Some`, or panics after `limit`
/// with `what`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let until = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Master {
    pub async fn start(opts: Opts) -> Master {
        Self::start_in(opts, std::sync::Arc::new(tempfile::tempdir().unwrap())).await
    }

    /// Starts a master on an existing data directory.
    pub async fn start_in(opts: Opts, dir: std::sync::Arc<tempfile::TempDir>) -> Master {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("master.log"))
            .unwrap();
        let child = Command::new(EXE)
            .arg("serve")
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--workers", &opts.workers.to_string()])
            .args(["--external-workers", &opts.external.to_string()])
            .args(["--api-addr", &opts.addrs.0])
            .args(["--mesophyll-addr", &opts.addrs.1])
            .arg("--plugins")
            .arg(plugins_dir())
            .arg("--filters")
            .arg(filters_dir())
            .args(["--heartbeat-interval-ms", "200"])
            .args([
                "--heartbeat-timeout-ms",
                &opts.heartbeat_timeout_ms.to_string(),
            ])
            .args(&opts.extra)
            .env(
                "RUST_LOG",
                std::env::var("MESHPLAY_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env_remove("MESHPLAY_API_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let data = DataDir::at(dir.path());
        let mut master = Master {
            child,
            endpoint: Endpoint {
                api_addr: "127.0.0.1:1".parse().unwrap(),
                mesophyll_addr: "127.0.0.1:1".parse().unwrap(),
                pid: 0,
                tls: false,
            },
            client: ApiClient::new("127.0.0.1:1".parse().unwrap(), ""),
            dir,
            opts,
        };
        let pid = master.child.id();
        master.endpoint = eventually(Duration::from_secs(30), "endpoint.json", || {
            // A killed master's file may still be there: wait for ours.
            let e = data.endpoint().ok().filter(|e| e.pid == pid);
            async move { e }
        })
        .await;
        master.client = ApiClient::from_data_dir(master.dir.path()).unwrap();
        let managed = master.opts.workers - master.opts.external;
        master.wait_connected(managed).await;
        master
    }

    /// Waits until `n` workers are running.
    pub async fn wait_connected(&self, n: u32) {
        let client = self.client.clone();
        eventually(Duration::from_secs(30), "workers to connect", || {
            let client = client.clone();
            async move {
                let h = client.health().await.ok()?;
                (h.connected >= n).then_some(())
            }
        })
        .await;
    }

    pub async fn worker(&self, id: u32) -> WorkerInfo {
        let w = self.client.workers().await.unwrap();
        w.workers.into_iter().find(|w| w.id == id).unwrap()
    }

    /// Waits until worker `id` runs again after a restart, with a new pid.
    pub async fn wait_restarted(&self, id: u32, old_pid: u32, limit: Duration) -> WorkerInfo {
        let client = self.client.clone();
        eventually(limit, "the worker to be restarted", || {
            let client = client.clone();
            async move {
                let w = client.workers().await.ok()?;
                let w = w.workers.into_iter().find(|w| w.id == id)?;
                (w.state == WorkerState::Running
                    && w.restarts >= 1
                    && w.pid.is_some_and(|p| p != old_pid))
                .then_some(w)
            }
        })
        .await
    }

    /// The pids of the workers the master spawned and that run now.
    pub async fn worker_pids(&self) -> Vec<u32> {
        let w = self.client.workers().await.unwrap();
        w.workers.iter().filter_map(|w| w.pid).collect()
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn admin_token(&self) -> String {
        DataDir::at(self.dir.path()).admin_token().unwrap()
    }

    /// A token minted with `role`, named `name`.
    pub async fn mint(&self, role: meshplay::rest::Role, name: &str) -> CreatedToken {
        self.client.create_token(role, Some(name)).await.unwrap()
    }

    /// Runs the CLI against this master; returns (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(EXE)
            .args(args)
            .env("MESHPLAY_DATA_DIR", self.dir.path())
            .env_remove("MESHPLAY_API_TOKEN")
            .env_remove("MESHPLAY_API_ADDR")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("master.log")).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the master to exit.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        signal(self.child.id(), libc::SIGTERM);
        let until = Instant::now() + Duration::from_secs(15);
        while Instant::now() < until {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- master.log ----\n{}\n--------------------", self.log());
        }
        if self.child.try_wait().ok().flatten().is_none() && self.stop().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// Whether process `pid` still exists (zombies count as gone).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .next();
            state != Some("Z")
        }
        Err(_) => false,
    }
}

/// A loopback address with a port that was free a moment ago, for a
/// master that must come back on the same ports.
pub fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// `n` tenants of type `kind` that worker `worker` of `workers` owns.
pub fn tenants_on(kind: &str, worker: u32, workers: u32, n: usize) -> Vec<Tenant> {
    (0..)
        .map(|i| Tenant::new(kind, format!("t{i}")))
        .filter(|t| shard::worker_for(t, workers) == worker)
        .take(n)
        .collect()
}

/// One HTTP/1.1 request with exactly these headers and body, as a client
/// in any language sends it; the answer with its body unread.
pub async fn request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> hyper::Response<hyper::body::Incoming> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    client
        .request(req.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap()
}

/// A raw HTTP request, for what the typed client will not send (bad bodies,
/// missing tokens). Returns the status and the body parsed as JSON (or the
/// body as a JSON string when it is not JSON).
pub async fn raw(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, serde_json::Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", content_type)];
    headers.extend(auth.as_deref().map(|a| ("authorization", a)));
    let res = request(addr, method, path, &headers, body).await;
    let status = res.status().as_u16();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, json)
}

/// One scrape: every sample line, `name{labels}` to its value.
pub async fn scrape(m: &Master) -> (String, BTreeMap<String, f64>) {
    let (status, body) = raw(
        m.endpoint.api_addr,
        "GET",
        "/metrics",
        None,
        "text/plain",
        vec![],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let text = body.as_str().expect("a text answer").to_owned();
    let samples = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("name value");
            (series.to_owned(), value.parse().expect("a number"))
        })
        .collect();
    (text, samples)
}

/// Kills a child process when dropped, so a failing test leaves none.
pub struct Guard(pub std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub trait SpawnGuard {
    fn kill_on_drop_guard(&mut self) -> Guard;
}

impl SpawnGuard for std::process::Command {
    fn kill_on_drop_guard(&mut self) -> Guard {
        Guard(self.spawn().unwrap())
    }
}
