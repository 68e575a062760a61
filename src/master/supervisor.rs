//! The supervisor: spawns the worker processes, watches them, restarts the
//! dead ones, and stops them all when the master stops.
//!
//! Each managed worker has one task that owns its child process and loops:
//!
//! 1. make a fresh token, register it with the hub (which from then on
//!    refuses the old one), spawn `meshplay --worker --worker-id I --master
//!    ADDR --cache-dir DIR` with the token in [`TOKEN_ENV`] (never on the
//!    command line, where `ps` would show it);
//! 2. wait until the child exits, or the hub declares it dead (no frame for
//!    the heartbeat timeout: a hung or stopped process), or it is not
//!    connected within [`SupervisorConfig::connect_timeout`] of its spawn or
//!    of losing its connection (`Liveness`); kill it if it is still there;
//! 3. go to 1, at once or after a back-off (`RestartPolicy`).
//!
//! **Restart policy** (as systemd's start limits and Erlang's restart
//! intensity): a worker that had become ready (connected, so its states
//! and catalogue were loaded) and then died is respawned at once: its
//! shard is down only as long as a start takes, and requests for it wait
//! that long ([`crate::mesophyll::hub::Hub::request`]). A worker that dies
//! before it is ready is in a crash loop and waits out an exponential
//! back-off, and so does one that died ready more than
//! [`SupervisorConfig::max_fast_restarts`] times within
//! [`SupervisorConfig::restart_window`].
//!
//! Orphans: a child gets `PR_SET_PDEATHSIG = SIGKILL` and [`PARENT_ENV`], so
//! it dies with the master even when the master is killed with SIGKILL and
//! has no chance to clean up.

use crate::master::datadir::fresh_token;
use crate::mesophyll::auth::{PARENT_ENV, TOKEN_ENV};
use crate::mesophyll::hub::{DisconnectReason, Hub, HubEvent};
use crate::mesophyll::message::ServerMessage;
use crate::rest::WorkerState;
use crate::wire::backoff::Backoff;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// How the supervisor starts and restarts workers.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// The executable to run (normally this very binary).
    pub exe: PathBuf,
    /// Where workers connect (`host:port` of the hub).
    pub master: String,
    /// Where workers cache compiled filters.
    pub cache_dir: PathBuf,
    /// Extra arguments for every worker (limits, log settings).
    pub worker_args: Vec<String>,
    /// `RUST_LOG` for the workers when the master's own is not set
    /// (`None`: theirs defaults as the master's does).
    pub worker_log: Option<String>,
    /// First restart delay.
    pub backoff_initial: Duration,
    /// Longest restart delay.
    pub backoff_max: Duration,
    /// Restarts of ready workers allowed within [`Self::restart_window`]
    /// before they too wait out the back-off.
    pub max_fast_restarts: usize,
    /// The window of [`Self::max_fast_restarts`].
    pub restart_window: Duration,
    /// A worker not connected this long after its spawn, or after losing
    /// its connection while its process lives, is killed.
    pub connect_timeout: Duration,
}

impl SupervisorConfig {
    /// Defaults for `exe` connecting to `master`.
    pub fn new(exe: PathBuf, master: String, cache_dir: PathBuf) -> Self {
        SupervisorConfig {
            exe,
            master,
            cache_dir,
            worker_args: Vec::new(),
            worker_log: None,
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
            max_fast_restarts: 10,
            restart_window: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(30),
        }
    }
}

/// What the API shows of one managed worker.
#[derive(Debug, Clone, Copy)]
pub struct Status {
    /// Life-cycle state.
    pub state: WorkerState,
    /// Its process id while it runs.
    pub pid: Option<u32>,
    /// Restarts so far.
    pub restarts: u32,
    /// The same restarts, by why the life before ended.
    pub causes: RestartCauses,
}

/// Restarts of one worker by what ended the life before.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestartCauses {
    /// The process exited or was killed (or could not be spawned).
    pub exited: u32,
    /// It stopped answering heartbeats and was killed.
    pub hung: u32,
    /// It did not connect within the connect timeout and was killed.
    pub never_connected: u32,
}

impl RestartCauses {
    /// Each cause with its metric label.
    pub fn labelled(&self) -> [(&'static str, u32); 3] {
        [
            ("exited", self.exited),
            ("hung", self.hung),
            ("never_connected", self.never_connected),
        ]
    }
}

/// The running supervisor.
pub struct Supervisor {
    statuses: Vec<Arc<Mutex<Status>>>,
    stop: watch::Sender<Option<Duration>>,
    tasks: tokio::sync::Mutex<JoinSet<()>>,
    hub: Arc<Hub>,
}

/// Why the supervisor could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot run worker executable {exe}: {source}")]
pub struct SpawnError {
    exe: PathBuf,
    source: std::io::Error,
}

impl Supervisor {
    /// Starts workers `0..count` under `hub`.
    ///
    /// Fails when the first spawn of worker 0 fails (a missing executable is
    /// an operator error, not something to retry forever).
    pub async fn start(
        config: SupervisorConfig,
        hub: Arc<Hub>,
        count: u32,
    ) -> Result<Arc<Self>, SpawnError> {
        let (stop, _) = watch::channel(None);
        let mut tasks = JoinSet::new();
        let mut statuses = Vec::new();
        let config = Arc::new(config);
        for id in 0..count {
            let status = Arc::new(Mutex::new(Status {
                state: WorkerState::Starting,
                pid: None,
                restarts: 0,
                causes: RestartCauses::default(),
            }));
            statuses.push(Arc::clone(&status));
            let watcher = Watcher {
                id,
                config: Arc::clone(&config),
                hub: Arc::clone(&hub),
                status,
                stop: stop.subscribe(),
            };
            if id == 0 {
                // Fail loudly on a broken executable before going async.
                let child = watcher.spawn().map_err(|source| SpawnError {
                    exe: config.exe.clone(),
                    source,
                })?;
                tasks.spawn(async move { watcher.run(Some(child)).await });
            } else {
                tasks.spawn(async move { watcher.run(None).await });
            }
        }
        Ok(Arc::new(Supervisor {
            statuses,
            stop,
            tasks: tokio::sync::Mutex::new(tasks),
            hub,
        }))
    }

    /// The status of managed worker `id`, if there is one.
    pub fn status(&self, id: u32) -> Option<Status> {
        self.statuses.get(id as usize).map(|s| *s.lock().unwrap())
    }

    /// Asks every worker it spawned to finish what it runs (up to `grace`),
    /// waits for them to exit, and kills those that do not. Workers it did
    /// not spawn are not told: they outlive the master and reconnect to the
    /// next one.
    pub async fn shutdown(&self, grace: Duration) {
        let _ = self.stop.send(Some(grace));
        let shutdown = ServerMessage::Shutdown {
            grace_ms: grace.as_millis() as u64,
        };
        for id in 0..self.statuses.len() as u32 {
            let _ = self.hub.send(id, &shutdown);
        }
        let mut tasks = self.tasks.lock().await;
        while tasks.join_next().await.is_some() {}
    }
}

struct Watcher {
    id: u32,
    config: Arc<SupervisorConfig>,
    hub: Arc<Hub>,
    status: Arc<Mutex<Status>>,
    stop: watch::Receiver<Option<Duration>>,
}

/// Why a worker's life ended.
#[derive(Debug)]
enum End {
    Exited(std::io::Result<std::process::ExitStatus>),
    Hung,
    NeverConnected,
    Stop(Duration),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Exited(Ok(status)) => write!(f, "exited ({status})"),
            End::Exited(Err(e)) => write!(f, "could not run: {e}"),
            End::Hung => f.write_str("missed its heartbeats"),
            End::NeverConnected => f.write_str("never connected"),
            End::Stop(_) => f.write_str("stopped"),
        }
    }
}

impl Watcher {
    fn set(&self, f: impl FnOnce(&mut Status)) {
        f(&mut self.status.lock().unwrap());
    }

    fn spawn(&self) -> std::io::Result<Child> {
        let token = fresh_token();
        self.hub.register_worker(self.id, &token);
        let mut cmd = Command::new(&self.config.exe);
        cmd.arg("--worker")
            .arg("--worker-id")
            .arg(self.id.to_string())
            .arg("--master")
            .arg(&self.config.master)
            .arg("--cache-dir")
            .arg(&self.config.cache_dir)
            .args(&self.config.worker_args)
            .env(TOKEN_ENV, token)
            .env(PARENT_ENV, std::process::id().to_string())
            .stdin(Stdio::null())
            // Their own process group: a Ctrl-C in the terminal reaches only
            // the master, which then stops them in order.
            .process_group(0)
            .kill_on_drop(true);
        if let Some(level) = &self.config.worker_log
            && std::env::var_os("RUST_LOG").is_none()
        {
            cmd.env("RUST_LOG", level);
        }
        // SAFETY: prctl is async-signal-safe and touches no memory of ours.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        self.set(|s| {
            s.pid = child.id();
            s.state = WorkerState::Starting;
        });
        tracing::info!(worker = self.id, pid = child.id(), "worker spawned");
        Ok(child)
    }

    async fn run(self, mut first: Option<Child>) {
        let mut policy = RestartPolicy::new(&self.config);
        loop {
            let child = match first.take() {
                Some(c) => Ok(c),
                None => self.spawn(),
            };
            let (end, was_ready) = match child {
                Ok(mut child) => {
                    let (end, was_ready) = self.watch(&mut child).await;
                    self.finish(&mut child, &end).await;
                    (end, was_ready)
                }
                Err(e) => {
                    tracing::error!(worker = self.id, "cannot spawn worker: {e}");
                    (End::Exited(Err(e)), false)
                }
            };
            self.set(|s| s.pid = None);
            if matches!(end, End::Stop(_)) || self.stop.borrow().is_some() {
                self.set(|s| s.state = WorkerState::Stopped);
                return;
            }
            let delay = policy.delay_after(was_ready, Instant::now());
            tracing::warn!(worker = self.id, %end, ?delay, "worker died; restarting");
            self.set(|s| {
                s.state = WorkerState::Restarting;
                s.restarts += 1;
                match end {
                    End::Hung => s.causes.hung += 1,
                    End::NeverConnected => s.causes.never_connected += 1,
                    End::Exited(_) | End::Stop(_) => s.causes.exited += 1,
                }
            });
            let mut stop = self.stop.clone();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.wait_for(Option::is_some) => {
                    self.set(|s| s.state = WorkerState::Stopped);
                    return;
                }
            }
        }
    }

    /// Waits for the end of one life of the worker; says too whether it
    /// became ready (connected) in that life.
    async fn watch(&self, child: &mut Child) -> (End, bool) {
        let mut events = self.hub.subscribe();
        let mut life = Liveness::new(self.config.connect_timeout, Instant::now());
        if self.hub.is_connected(self.id) {
            life.connected();
            self.set(|s| s.state = WorkerState::Running);
        }
        let mut stop = self.stop.clone();
        let end = loop {
            // Far in the future when connected: the branch is disabled then.
            let deadline = life
                .deadline()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                status = child.wait() => break End::Exited(status),
                grace = stop.wait_for(Option::is_some) => {
                    let grace = grace.map(|g| (*g).unwrap_or_default()).unwrap_or_default();
                    break End::Stop(grace);
                }
                _ = tokio::time::sleep_until(deadline), if life.deadline().is_some() => {
                    break End::NeverConnected;
                }
                event = events.recv() => match event {
                    Ok(HubEvent::Connected { worker, .. }) if worker == self.id => {
                        life.connected();
                        self.set(|s| s.state = WorkerState::Running);
                    }
                    Ok(HubEvent::Disconnected { worker, reason, .. }) if worker == self.id => {
                        if reason == DisconnectReason::HeartbeatTimeout {
                            break End::Hung;
                        }
                        // A closed socket with a live process: the worker
                        // reconnects by itself, within the connect timeout.
                        if !self.hub.is_connected(self.id) {
                            life.disconnected(Instant::now());
                            self.set(|s| s.state = WorkerState::Starting);
                        }
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        if self.hub.is_connected(self.id) {
                            life.connected();
                        } else {
                            life.disconnected(Instant::now());
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        break End::Stop(Duration::ZERO);
                    }
                },
            }
        };
        (end, life.was_ready())
    }

    /// Makes sure the child is gone and its connection closed.
    async fn finish(&self, child: &mut Child, end: &End) {
        if let End::Stop(grace) = end {
            // The hub broadcast Shutdown; give the worker its grace.
            let patience = *grace + Duration::from_secs(1);
            if tokio::time::timeout(patience, child.wait()).await.is_ok() {
                return;
            }
        }
        if !matches!(end, End::Exited(_)) {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        // Pending requests fail now, not at their deadlines.
        self.hub.disconnect(self.id, DisconnectReason::Kicked);
    }
}

/// Whether one life of a worker is connected, and by when it must be.
///
/// A fresh spawn must connect within the connect timeout; so must a worker
/// whose connection closed while its process lives (it reconnects by
/// itself, or it is stuck and gets killed).
#[derive(Debug)]
struct Liveness {
    connect_timeout: Duration,
    deadline: Option<Instant>,
    ready: bool,
}

impl Liveness {
    fn new(connect_timeout: Duration, now: Instant) -> Self {
        Liveness {
            connect_timeout,
            deadline: Some(now + connect_timeout),
            ready: false,
        }
    }

    fn connected(&mut self) {
        self.deadline = None;
        self.ready = true;
    }

    fn disconnected(&mut self, now: Instant) {
        if self.deadline.is_none() {
            self.deadline = Some(now + self.connect_timeout);
        }
    }

    /// When the worker is declared never (re)connected, if it is not
    /// connected now.
    fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    fn was_ready(&self) -> bool {
        self.ready
    }
}

/// How long to wait before the next spawn of one worker.
#[derive(Debug)]
struct RestartPolicy {
    backoff: Backoff,
    max_fast: usize,
    window: Duration,
    fast: std::collections::VecDeque<Instant>,
}

impl RestartPolicy {
    fn new(config: &SupervisorConfig) -> Self {
        RestartPolicy {
            backoff: Backoff::new(config.backoff_initial, config.backoff_max),
            max_fast: config.max_fast_restarts,
            window: config.restart_window,
            fast: std::collections::VecDeque::new(),
        }
    }

    /// The delay after a life that ended at `now`, ready or not.
    fn delay_after(&mut self, was_ready: bool, now: Instant) -> Duration {
        while self
            .fast
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.window)
        {
            self.fast.pop_front();
        }
        if was_ready && self.fast.len() < self.max_fast {
            self.fast.push_back(now);
            self.backoff.reset();
            return Duration::ZERO;
        }
        self.backoff.next_delay()
    }
}

/// Where the master's own children reach the hub: its address, or
/// loopback when it listens on every address.
fn own_children_dial(hub: std::net::SocketAddr) -> std::net::SocketAddr {
    match hub.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            (std::net::Ipv4Addr::LOCALHOST, hub.port()).into()
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            (std::net::Ipv6Addr::LOCALHOST, hub.port()).into()
        }
        _ => hub,
    }
}

/// How the master's own workers are started: dialling its hub, pinning
/// its certificate when it serves TLS, caching filters under `data_dir`.
pub fn own_children(
    base: &SupervisorConfig,
    hub: std::net::SocketAddr,
    data_dir: &std::path::Path,
    tls: bool,
) -> SupervisorConfig {
    let mut config = base.clone();
    config.master = own_children_dial(hub).to_string();
    if tls {
        config.worker_args.push("--tls-pin".into());
        config.worker_args.push(
            data_dir
                .join(crate::master::tls::CERT_FILE)
                .display()
                .to_string(),
        );
    }
    config.cache_dir = data_dir.join("cache").join("filters");
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_connection_rearms_the_connect_deadline() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(30);
        let mut life = Liveness::new(timeout, t0);
        assert_eq!(life.deadline(), Some(t0 + timeout));
        life.connected();
        assert_eq!(life.deadline(), None);
        // The process lives on but its socket closed: it must reconnect
        // within the timeout, or be killed and restarted.
        let t1 = t0 + Duration::from_secs(100);
        life.disconnected(t1);
        assert_eq!(life.deadline(), Some(t1 + timeout));
        // A second close before it reconnects does not push the deadline.
        life.disconnected(t1 + Duration::from_secs(5));
        assert_eq!(life.deadline(), Some(t1 + timeout));
        assert!(life.was_ready());
    }

    #[test]
    fn ready_workers_restart_at_once_and_crash_loops_back_off() {
        let mut config = SupervisorConfig::new("x".into(), String::new(), "c".into());
        config.max_fast_restarts = 3;
        config.restart_window = Duration::from_secs(10);
        let mut policy = RestartPolicy::new(&config);
        let t0 = Instant::now();
        for i in 0..3 {
            let at = t0 + Duration::from_secs(i);
            assert_eq!(policy.delay_after(true, at), Duration::ZERO);
        }
        // A fourth within the window is a loop too.
        assert!(policy.delay_after(true, t0 + Duration::from_secs(3)) > Duration::ZERO);
        // Never ready: back-off, growing.
        let a = policy.delay_after(false, t0 + Duration::from_secs(4));
        let b = policy.delay_after(false, t0 + Duration::from_secs(5));
        assert!(a > Duration::ZERO && b > Duration::ZERO);
        // Once the window has passed, a ready worker restarts at once again.
        assert_eq!(
            policy.delay_after(true, t0 + Duration::from_secs(30)),
            Duration::ZERO
        );
    }
}
