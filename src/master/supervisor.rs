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
//!    the heartbeat timeout: a hung or stopped process), or it does not
//!    connect within [`SupervisorConfig::connect_timeout`]; kill it if it is
//!    still there;
//! 3. wait out an exponential back-off (reset once a worker has lived
//!    [`SupervisorConfig::healthy_after`]) and go to 1.
//!
//! Orphans: a child gets `PR_SET_PDEATHSIG = SIGKILL` and [`PARENT_ENV`], so
//! it dies with the master even when the master is killed with SIGKILL and
//! has no chance to clean up.

use crate::master::datadir::fresh_token;
use crate::mesophyll::auth::{PARENT_ENV, TOKEN_ENV};
use crate::mesophyll::backoff::Backoff;
use crate::mesophyll::hub::{DisconnectReason, Hub, HubEvent};
use crate::mesophyll::message::ServerMessage;
use crate::rest::WorkerState;
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
    /// A worker that lived this long resets the back-off.
    pub healthy_after: Duration,
    /// A spawned worker that has not connected by then is killed.
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
            healthy_after: Duration::from_secs(30),
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

    /// Asks every worker to finish what it runs (up to `grace`), waits for
    /// them to exit, and kills those that do not.
    pub async fn shutdown(&self, grace: Duration) {
        let _ = self.stop.send(Some(grace));
        self.hub.broadcast(&ServerMessage::Shutdown {
            grace_ms: grace.as_millis() as u64,
        });
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
        let mut backoff = Backoff::new(self.config.backoff_initial, self.config.backoff_max);
        loop {
            let child = match first.take() {
                Some(c) => Ok(c),
                None => self.spawn(),
            };
            let started = Instant::now();
            let end = match child {
                Ok(mut child) => {
                    let end = self.watch(&mut child).await;
                    self.finish(&mut child, &end).await;
                    end
                }
                Err(e) => {
                    tracing::error!(worker = self.id, "cannot spawn worker: {e}");
                    End::Exited(Err(e))
                }
            };
            self.set(|s| s.pid = None);
            if matches!(end, End::Stop(_)) || self.stop.borrow().is_some() {
                self.set(|s| s.state = WorkerState::Stopped);
                return;
            }
            if started.elapsed() >= self.config.healthy_after {
                backoff.reset();
            }
            let delay = backoff.next_delay();
            tracing::warn!(worker = self.id, %end, ?delay, "worker died; restarting");
            self.set(|s| {
                s.state = WorkerState::Restarting;
                s.restarts += 1;
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

    /// Waits for the end of one life of the worker.
    async fn watch(&self, child: &mut Child) -> End {
        let mut events = self.hub.subscribe();
        let connect_deadline = Instant::now() + self.config.connect_timeout;
        let mut connected = self.hub.is_connected(self.id);
        if connected {
            self.set(|s| s.state = WorkerState::Running);
        }
        let mut stop = self.stop.clone();
        loop {
            tokio::select! {
                status = child.wait() => return End::Exited(status),
                grace = stop.wait_for(Option::is_some) => {
                    let grace = grace.map(|g| (*g).unwrap_or_default()).unwrap_or_default();
                    return End::Stop(grace);
                }
                _ = tokio::time::sleep_until(connect_deadline), if !connected => {
                    return End::NeverConnected;
                }
                event = events.recv() => match event {
                    Ok(HubEvent::Connected { worker, .. }) if worker == self.id => {
                        connected = true;
                        self.set(|s| s.state = WorkerState::Running);
                    }
                    Ok(HubEvent::Disconnected { worker, reason, .. }) if worker == self.id => {
                        if reason == DisconnectReason::HeartbeatTimeout {
                            return End::Hung;
                        }
                        // A closed socket with a live process: the worker
                        // reconnects by itself; give it the connect timeout.
                        if !self.hub.is_connected(self.id) {
                            self.set(|s| s.state = WorkerState::Starting);
                        }
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        connected = self.hub.is_connected(self.id);
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        return End::Stop(Duration::ZERO);
                    }
                },
            }
        }
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
