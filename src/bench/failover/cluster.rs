//! Addresses on one PostgreSQL and the workers that join them, each a child
//! process on loopback: what `bench failover` and the standby tests
//! drive.
//!
//! Every master runs `serve --standby` with the same admin token and the
//! same secrets key, on addresses fixed at the start so that a killed one
//! comes back where the workers and clients expect it. The workers run
//! `worker --join` with every master's hub. Where each process runs, and
//! how a master's way to the database is cut, is a [`Placement`]:
//! [`Loopback`] puts everything on this machine's loopback, each master
//! reaching the database through its own [`Link`]; the multi-host test
//! puts each process in a network namespace of its own.

use super::link::{Link, through};
use crate::bench::BenchError;
use crate::client::ApiClient;
use crate::http::HttpClient;
use crate::rest::Readiness;
use bytes::Bytes;
use http_body_util::Full;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What to start.
#[derive(Debug, Clone)]
pub struct ClusterPlan {
    /// The `meshplay` executable.
    pub exe: PathBuf,
    /// Where data directories and logs go.
    pub dir: PathBuf,
    /// The plugin folder every master serves.
    pub plugins: PathBuf,
    /// The filter folder every master serves.
    pub filters: PathBuf,
    /// Addresses (2: a leader and a standby).
    pub masters: usize,
    /// Worker slots, each served by a joined worker.
    pub workers: u32,
    /// `serve --lease-ttl-ms`.
    pub lease_ttl_ms: u64,
    /// `serve --lease-renew-ms`.
    pub lease_renew_ms: u64,
    /// `serve --lease-poll-ms`.
    pub lease_poll_ms: u64,
    /// `serve --heartbeat-timeout-ms` (heartbeats every 200 ms).
    pub heartbeat_timeout_ms: u64,
    /// More `serve` flags (`--insecure` on a private network).
    pub serve_args: Vec<String>,
}

/// What a master says it is, by its `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// It leads; `ready` once every slot is served.
    Leads {
        /// Whether every worker slot is served.
        ready: bool,
    },
    /// It stands by.
    Stands,
    /// It did not answer within a second (dead, paused, or wedged).
    Silent,
}

/// Where the cluster's processes run.
pub trait Placement: Send + Sync {
    /// The command that runs `exe` as master `i` (`Some`) or worker `w`
    /// (`None` master, the worker's index given).
    fn command(&self, exe: &Path, master: Option<usize>, worker: u32) -> Command;
    /// Master `i`'s API and hub addresses.
    fn addrs(&self, i: usize) -> (SocketAddr, SocketAddr);
    /// The store URL master `i` is given.
    fn store(&self, i: usize) -> String;
    /// Cuts master `i` off from the database (nothing else).
    fn cut(&self, i: usize);
    /// Undoes [`Placement::cut`].
    fn restore(&self, i: usize);
}

/// Everything on this machine's loopback, each master reaching the
/// database through its own [`Link`].
pub struct Loopback {
    links: Vec<Link>,
    stores: Vec<String>,
    addrs: Vec<(SocketAddr, SocketAddr)>,
}

impl Loopback {
    /// Relays for `masters` masters to the database of `store`, and free
    /// loopback ports for each.
    ///
    /// Fails when the URL names no `host:port` or no port can be bound.
    pub async fn new(store: &str, masters: usize) -> Result<Loopback, BenchError> {
        let target = through(store, "127.0.0.1:1".parse().expect("an address"))
            .map(|(_, named)| named)
            .ok_or_else(|| BenchError::Target(format!("{store}: no host:port")))?;
        let target = tokio::net::lookup_host(&target)
            .await?
            .next()
            .ok_or_else(|| BenchError::Target(format!("{target}: no address")))?;
        let mut placement = Loopback {
            links: Vec::new(),
            stores: Vec::new(),
            addrs: Vec::new(),
        };
        for _ in 0..masters {
            let link = Link::start(target).await?;
            placement
                .stores
                .push(through(store, link.addr).expect("read above").0);
            placement.links.push(link);
            placement.addrs.push((free_addr()?, free_addr()?));
        }
        Ok(placement)
    }
}

impl Placement for Loopback {
    fn command(&self, exe: &Path, _: Option<usize>, _: u32) -> Command {
        Command::new(exe)
    }

    fn addrs(&self, i: usize) -> (SocketAddr, SocketAddr) {
        self.addrs[i]
    }

    fn store(&self, i: usize) -> String {
        self.stores[i].clone()
    }

    fn cut(&self, i: usize) {
        self.links[i].cut();
    }

    fn restore(&self, i: usize) {
        self.links[i].restore();
    }
}

/// One master.
pub struct MasterNode {
    child: Option<Child>,
    /// Its API.
    pub api: SocketAddr,
    /// Its hub.
    pub hub: SocketAddr,
    /// Its data directory.
    pub data: PathBuf,
}

/// The running set; every process is killed when it drops.
pub struct Cluster {
    plan: ClusterPlan,
    placement: Box<dyn Placement>,
    /// The masters, in start order.
    pub masters: Vec<MasterNode>,
    workers: Vec<Child>,
    /// The admin token every master shares.
    pub token: String,
    http: HttpClient,
}

/// A loopback address whose port was free a moment ago.
fn free_addr() -> Result<SocketAddr, BenchError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Cluster {
    /// Starts the masters, waits for one to lead, mints a join token,
    /// starts the workers and waits until every slot is served.
    ///
    /// Fails when a process cannot start, the store URL names no
    /// `host:port`, or nothing is served within a minute.
    pub async fn start(
        plan: ClusterPlan,
        placement: Box<dyn Placement>,
    ) -> Result<Cluster, BenchError> {
        let mut token = [0u8; 32];
        rand::fill(&mut token[..]);
        let mut key = [0u8; 32];
        rand::fill(&mut key[..]);
        let mut cluster = Cluster {
            token: hex(&token),
            masters: Vec::new(),
            workers: Vec::new(),
            http: HttpClient::http1(None),
            placement,
            plan,
        };
        for i in 0..cluster.plan.masters {
            let data = cluster.plan.dir.join(format!("master-{i}"));
            std::fs::create_dir_all(&data)?;
            std::fs::write(data.join(crate::master::vars::KEY_FILE), key)?;
            let (api, hub) = cluster.placement.addrs(i);
            cluster.masters.push(MasterNode {
                child: None,
                api,
                hub,
                data,
            });
            cluster.spawn_master(i)?;
        }
        cluster.wait_leader(Duration::from_secs(60)).await?;
        cluster.start_workers().await?;
        cluster.wait_serving(Duration::from_secs(60)).await?;
        Ok(cluster)
    }

    /// Cuts master `i` off from the database.
    pub fn cut(&self, i: usize) {
        self.placement.cut(i);
    }

    /// Gives master `i` its database back.
    pub fn restore(&self, i: usize) {
        self.placement.restore(i);
    }

    fn spawn_master(&mut self, i: usize) -> Result<(), BenchError> {
        let plan = &self.plan;
        let node = &self.masters[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))?;
        let child = self
            .placement
            .command(&plan.exe, Some(i), 0)
            .arg("serve")
            .arg("--standby")
            .arg("--data-dir")
            .arg(&node.data)
            .args(["--store", &self.placement.store(i)])
            .args(["--workers", &plan.workers.to_string()])
            .args(["--api-addr", &node.api.to_string()])
            .args(["--mesophyll-addr", &node.hub.to_string()])
            .args(["--api-token", &self.token])
            .arg("--plugins")
            .arg(&plan.plugins)
            .arg("--filters")
            .arg(&plan.filters)
            .args(["--heartbeat-interval-ms", "200"])
            .args([
                "--heartbeat-timeout-ms",
                &plan.heartbeat_timeout_ms.to_string(),
            ])
            .args(["--lease-ttl-ms", &plan.lease_ttl_ms.to_string()])
            .args(["--lease-renew-ms", &plan.lease_renew_ms.to_string()])
            .args(["--lease-poll-ms", &plan.lease_poll_ms.to_string()])
            .args(&plan.serve_args)
            .env("RUST_LOG", "info")
            .env_remove("MESHPLAY_API_TOKEN")
            .env_remove("MESHPLAY_STORE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.masters[i].child = Some(child);
        Ok(())
    }

    async fn start_workers(&mut self) -> Result<(), BenchError> {
        let created = self
            .client()
            .create_join_token(Some(86_400), Some("failover"))
            .await
            .map_err(|e| BenchError::Target(format!("cannot mint a join token: {e}")))?;
        let token_file = self.plan.dir.join("join-token");
        std::fs::write(&token_file, &created.token)?;
        let hubs: Vec<String> = self
            .masters
            .iter()
            .map(|m| format!("ws://{}", m.hub))
            .collect();
        for w in 0..self.plan.workers {
            let log = std::fs::File::create(self.plan.dir.join(format!("worker-{w}.log")))?;
            let child = self
                .placement
                .command(&self.plan.exe, None, w)
                .args(["worker", "--join", &hubs.join(",")])
                .arg("--token-file")
                .arg(&token_file)
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()?;
            self.workers.push(child);
        }
        Ok(())
    }

    /// Where master `i` logs.
    pub fn log_path(&self, i: usize) -> PathBuf {
        self.plan.dir.join(format!("master-{i}.log"))
    }

    /// The logs of every master and worker, for a failure's report.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        let mut names: Vec<_> = std::fs::read_dir(&self.plan.dir)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        names.sort();
        for path in names
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
        {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            out.push_str(&format!("---- {} ----\n{text}\n", path.display()));
        }
        out
    }

    /// A client of every master, which follows the leader.
    pub fn client(&self) -> ApiClient {
        let urls: Vec<String> = self
            .masters
            .iter()
            .map(|m| format!("http://{}", m.api))
            .collect();
        ApiClient::connect_to(&urls.join(","), self.token.clone(), None)
            .expect("loopback URLs parse")
    }

    /// A client of master `i` alone.
    pub fn client_of(&self, i: usize) -> ApiClient {
        ApiClient::new(self.masters[i].api, self.token.clone())
    }

    /// What master `i` says it is.
    pub async fn part(&self, i: usize) -> Part {
        let req = hyper::Request::get(format!("http://{}/readyz", self.masters[i].api))
            .body(Full::new(Bytes::new()))
            .expect("a plain request");
        let answer = tokio::time::timeout(Duration::from_secs(1), self.http.exchange_once(req));
        let Ok(Ok((_, _, body))) = answer.await else {
            return Part::Silent;
        };
        match serde_json::from_slice::<Readiness>(&body) {
            Ok(r) if r.standby => Part::Stands,
            Ok(r) => Part::Leads { ready: r.ready },
            Err(_) => Part::Silent,
        }
    }

    /// The master that leads now, if one says so.
    pub async fn leader(&self) -> Option<usize> {
        for i in 0..self.masters.len() {
            if matches!(self.part(i).await, Part::Leads { .. }) {
                return Some(i);
            }
        }
        None
    }

    /// Waits for a master to lead.
    pub async fn wait_leader(&self, limit: Duration) -> Result<usize, BenchError> {
        let until = Instant::now() + limit;
        loop {
            if let Some(i) = self.leader().await {
                return Ok(i);
            }
            if Instant::now() > until {
                return Err(BenchError::Target(format!(
                    "no master led within {limit:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until a master other than `old` leads; answers which.
    pub async fn wait_other_leader(
        &self,
        old: usize,
        limit: Duration,
    ) -> Result<usize, BenchError> {
        let until = Instant::now() + limit;
        loop {
            for i in (0..self.masters.len()).filter(|i| *i != old) {
                if matches!(self.part(i).await, Part::Leads { .. }) {
                    return Ok(i);
                }
            }
            if Instant::now() > until {
                return Err(BenchError::Target(format!(
                    "no master took over from master {old} within {limit:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until a leader serves every slot; answers which master.
    pub async fn wait_serving(&self, limit: Duration) -> Result<usize, BenchError> {
        let until = Instant::now() + limit;
        loop {
            for i in 0..self.masters.len() {
                if self.part(i).await == (Part::Leads { ready: true }) {
                    return Ok(i);
                }
            }
            if Instant::now() > until {
                return Err(BenchError::Workers(limit));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until master `i` says `part`.
    pub async fn wait_part(&self, i: usize, part: Part, limit: Duration) -> Result<(), BenchError> {
        let until = Instant::now() + limit;
        loop {
            let now = self.part(i).await;
            if now == part {
                break;
            }
            if Instant::now() > until {
                return Err(BenchError::Target(format!(
                    "master {i} is not {part:?} within {limit:?}: it is {now:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    fn pid(&self, i: usize) -> Option<i32> {
        self.masters[i].child.as_ref().map(|c| c.id() as i32)
    }

    fn signal(&self, i: usize, sig: i32) {
        if let Some(pid) = self.pid(i) {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }

    /// SIGKILLs master `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.masters[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts master `i` again, on its ports, as a standby-to-be.
    ///
    /// Fails when the process cannot start.
    pub fn restart(&mut self, i: usize) -> Result<(), BenchError> {
        self.kill(i);
        self.spawn_master(i)
    }

    /// SIGSTOPs master `i`, and returns once every thread of it has
    /// stopped (a signal is delivered, not obeyed, when `kill` returns).
    pub fn pause(&self, i: usize) {
        self.signal(i, libc::SIGSTOP);
        let Some(pid) = self.pid(i) else { return };
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until && !stopped(pid) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// SIGCONTs master `i`.
    pub fn resume(&self, i: usize) {
        self.signal(i, libc::SIGCONT);
    }

    /// The directory the cluster works in.
    pub fn dir(&self) -> &Path {
        &self.plan.dir
    }
}

/// Whether every thread of `pid` is stopped (state `T` in its stat).
fn stopped(pid: i32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.filter_map(|t| t.ok()).all(|t| {
        std::fs::read_to_string(t.path().join("stat")).is_ok_and(|stat| {
            stat.rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().next())
                == Some("T")
        })
    })
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.masters.len() {
            self.resume(i);
            self.kill(i);
        }
        for w in &mut self.workers {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}
