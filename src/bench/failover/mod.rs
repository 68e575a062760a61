//! `meshplay bench failover`: how long tenants go unanswered when the
//! leading master dies, is paused past its lease, or loses its database.
//!
//! Two masters run `serve --standby` on the PostgreSQL given with
//! `--store`, two workers join them ([`cluster`]), and a client that knows
//! both masters dispatches to a tenant of each shard, one after another,
//! all through the run. Each round does one thing to whichever master
//! leads:
//!
//! - `kill`: SIGKILL, then it is started again (as a standby);
//! - `pause`: SIGSTOP until the other leads and both shards answer, then
//!   SIGCONT (it must find itself a standby);
//! - `cut`: its link to the database stops moving bytes ([`link`]) until
//!   the other leads, then is restored.
//!
//! A round's outage is, for each shard, the longest time between two
//! answers from one second before the fault until both shards answered
//! again; the round's figure is the worse shard's. The lease's settings
//! are printed beside them: the outage is the lease running out, a
//! standby's poll, and the workers finding the new leader.

pub mod cluster;
pub mod link;

use crate::bench::BenchError;
use crate::bench::figures::{Check, Report};
use crate::client::ApiClient;
use crate::master::shard;
use crate::mesophyll::message::Tenant;
use crate::rest::DispatchRequest;
use cluster::{Cluster, ClusterPlan, Loopback, Part};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What `bench failover` runs.
#[derive(Debug, Clone)]
pub struct FailoverOptions {
    /// The `meshplay` executable.
    pub exe: PathBuf,
    /// The PostgreSQL the masters share.
    pub store: String,
    /// Rounds of each fault.
    pub rounds: u32,
    /// `serve --lease-ttl-ms`.
    pub lease_ttl_ms: u64,
    /// `serve --lease-renew-ms`.
    pub lease_renew_ms: u64,
    /// `serve --lease-poll-ms`.
    pub lease_poll_ms: u64,
    /// `serve --heartbeat-timeout-ms`: how long a worker waits on a
    /// silent (paused) master before moving on.
    pub heartbeat_timeout_ms: u64,
    /// Says each round's outage on stderr as it ends.
    pub progress: bool,
    /// Where to keep the data directories and every process's log
    /// (`None`: a temporary directory, removed at the end).
    pub keep: Option<PathBuf>,
}

/// A fault done to the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL.
    Kill,
    /// SIGSTOP past the lease, then SIGCONT.
    Pause,
    /// Its link to the database cut, then restored.
    Cut,
}

impl Fault {
    /// Its name in the figures.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Pause => "pause",
            Fault::Cut => "cut",
        }
    }
}

/// Answers seen by the prober, per shard, and failures by kind.
#[derive(Default)]
pub struct Answers {
    times: Vec<Vec<Instant>>,
    /// Failed dispatches by what the client said.
    pub errors: BTreeMap<String, u64>,
}

impl Answers {
    /// The longest time `shard` went without an answer between `from` and
    /// its first answer after `after`; `None` if it has not answered since.
    pub fn outage(&self, shard: usize, from: Instant, after: Instant) -> Option<Duration> {
        let times = &self.times[shard];
        let first_after = *times.iter().find(|t| **t > after)?;
        // Counted from `from`, not from the answer before it: a gap that
        // began earlier is an earlier round's.
        let mut last = from;
        let mut worst = Duration::ZERO;
        for t in times.iter().filter(|t| **t > from && **t <= first_after) {
            worst = worst.max(*t - last);
            last = *t;
        }
        Some(worst)
    }
}

/// A dispatch to one tenant of each shard, one after another, until
/// dropped.
pub struct Prober {
    /// What it has seen.
    pub answers: Arc<Mutex<Answers>>,
    task: tokio::task::JoinHandle<()>,
}

impl Prober {
    /// Starts dispatching `event` through `client` to a tenant of each of
    /// `workers` shards, each request given `timeout`.
    pub fn start(client: ApiClient, workers: u32, event: &str, timeout: Duration) -> Prober {
        let tenants: Vec<Tenant> = (0..workers)
            .map(|w| {
                (0..)
                    .map(|i| Tenant::new("failover", format!("t{i}")))
                    .find(|t| shard::worker_for(t, workers) == w)
                    .expect("every shard owns some tenant")
            })
            .collect();
        let answers = Arc::new(Mutex::new(Answers {
            times: vec![Vec::new(); workers as usize],
            errors: BTreeMap::new(),
        }));
        let seen = Arc::clone(&answers);
        let client = client.with_request_timeout(timeout);
        let req = DispatchRequest {
            name: event.into(),
            data: serde_json::json!({}),
            wait: true,
            timeout_ms: Some(timeout.as_millis() as u64),
        };
        let task = tokio::spawn(async move {
            loop {
                for (shard, t) in tenants.iter().enumerate() {
                    let answer = client.dispatch(&t.kind, &t.id, &req).await;
                    let failed = {
                        let mut seen = seen.lock().unwrap();
                        match answer {
                            Ok(_) => {
                                seen.times[shard].push(Instant::now());
                                false
                            }
                            Err(e) => {
                                let kind = e.code().map_or("no answer", |c| c).to_owned();
                                *seen.errors.entry(kind).or_default() += 1;
                                true
                            }
                        }
                    };
                    if failed {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        });
        Prober { answers, task }
    }

    /// Waits until every shard answered after `after`; answers the round's
    /// outage (the worse shard's) counted from `from`.
    pub async fn recovered(
        &self,
        from: Instant,
        after: Instant,
        limit: Duration,
    ) -> Result<Duration, BenchError> {
        let until = Instant::now() + limit;
        loop {
            {
                let answers = self.answers.lock().unwrap();
                let outages: Option<Vec<Duration>> = (0..answers.times.len())
                    .map(|s| answers.outage(s, from, after))
                    .collect();
                if let Some(outages) = outages {
                    return Ok(outages.into_iter().max().unwrap_or_default());
                }
            }
            if Instant::now() > until {
                return Err(BenchError::Target(format!(
                    "the shards did not all answer within {limit:?} of the fault"
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Does `fault` to the leader `i`; once every shard answers again, heals
/// it and waits until the master it was done to stands by.
pub async fn round(
    cluster: &mut Cluster,
    prober: &Prober,
    fault: Fault,
    i: usize,
) -> Result<Duration, BenchError> {
    let from = Instant::now() - Duration::from_secs(1);
    match fault {
        Fault::Kill => cluster.kill(i),
        Fault::Pause => cluster.pause(i),
        Fault::Cut => cluster.cut(i),
    }
    // Answers may still come from the old leader for a while (a cut one
    // leads until its lease runs out): recovery counts once another leads.
    let outage = match cluster.wait_other_leader(i, Duration::from_secs(60)).await {
        Ok(_) => {
            prober
                .recovered(from, Instant::now(), Duration::from_secs(60))
                .await
        }
        Err(e) => Err(e),
    };
    match fault {
        Fault::Kill => cluster.restart(i)?,
        Fault::Pause => cluster.resume(i),
        Fault::Cut => cluster.restore(i),
    }
    let outage = outage?;
    cluster
        .wait_part(i, Part::Stands, Duration::from_secs(60))
        .await?;
    Ok(outage)
}

/// Runs the rounds of every fault.
///
/// Fails when the cluster cannot start, or a round does not recover
/// within a minute.
pub async fn run(opts: FailoverOptions) -> Result<Report, BenchError> {
    let temporary = tempfile::Builder::new()
        .prefix("meshplay-failover")
        .tempdir()?;
    let dir = match &opts.keep {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            dir.clone()
        }
        None => temporary.path().to_owned(),
    };
    let plugins = dir.join("plugins");
    let echo = plugins.join("echo");
    std::fs::create_dir_all(&echo)?;
    std::fs::write(
        echo.join("plugin.toml"),
        crate::bench::baseline::ECHO_MANIFEST,
    )?;
    std::fs::write(echo.join("init.luau"), crate::bench::baseline::ECHO_HANDLER)?;
    let say = |line: &str| {
        if opts.progress {
            eprintln!("{line}");
        }
    };
    say("starting two masters and two joined workers");
    let placement = Box::new(Loopback::new(&opts.store, 2).await?);
    let mut cluster = Cluster::start(
        ClusterPlan {
            exe: opts.exe.clone(),
            dir: dir.clone(),
            plugins,
            filters: dir.join("no-filters"),
            masters: 2,
            workers: 2,
            lease_ttl_ms: opts.lease_ttl_ms,
            lease_renew_ms: opts.lease_renew_ms,
            lease_poll_ms: opts.lease_poll_ms,
            heartbeat_timeout_ms: opts.heartbeat_timeout_ms,
            serve_args: Vec::new(),
        },
        placement,
    )
    .await?;
    let prober = Prober::start(cluster.client(), 2, "echo", Duration::from_secs(2));
    let mut report = Report {
        bench: "failover".into(),
        params: BTreeMap::from([
            ("lease_ttl_ms".into(), opts.lease_ttl_ms.to_string()),
            ("lease_renew_ms".into(), opts.lease_renew_ms.to_string()),
            ("lease_poll_ms".into(), opts.lease_poll_ms.to_string()),
            (
                "heartbeat_timeout_ms".into(),
                opts.heartbeat_timeout_ms.to_string(),
            ),
            ("rounds".into(), opts.rounds.to_string()),
        ]),
        figures: Vec::new(),
        checks: Vec::new(),
    };
    for fault in [Fault::Kill, Fault::Pause, Fault::Cut] {
        let mut worst = Duration::ZERO;
        for r in 1..=opts.rounds {
            let leader = cluster.wait_serving(Duration::from_secs(60)).await?;
            // Steady answers for longer than the second counted before the
            // fault, so that no earlier gap is in this round's window.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let outage = match round(&mut cluster, &prober, fault, leader).await {
                Ok(outage) => outage,
                Err(e) => {
                    eprintln!("{}", cluster.logs());
                    return Err(e);
                }
            };
            say(&format!(
                "{} round {r}: master {leader} led; outage {} ms",
                fault.name(),
                outage.as_millis()
            ));
            report.checks.push(outage_check(fault, r, outage, &opts));
            worst = worst.max(outage);
        }
        report.params.insert(
            format!("worst_{}_ms", fault.name()),
            worst.as_millis().to_string(),
        );
    }
    let errors = prober.answers.lock().unwrap().errors.clone();
    for (kind, n) in errors {
        report
            .params
            .insert(format!("failed/{kind}"), n.to_string());
    }
    Ok(report)
}

/// A round's outage against its aim: under 3 s for a kill or a cut with
/// the default 2 s lease (the lease, a poll, and the workers' way over);
/// a pause adds the workers' heartbeat timeout, which is how long they
/// wait on a master that is silent rather than gone.
fn outage_check(fault: Fault, round: u32, outage: Duration, opts: &FailoverOptions) -> Check {
    let aim_ms = match fault {
        Fault::Kill | Fault::Cut => opts.lease_ttl_ms + 1000,
        Fault::Pause => opts.lease_ttl_ms.max(opts.heartbeat_timeout_ms) + 1000,
    };
    Check {
        name: format!("{} round {round}: outage (ms)", fault.name()),
        value: outage.as_millis() as f64,
        target: format!("< {aim_ms}"),
        met: (outage.as_millis() as u64) < aim_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::Answers;
    use std::time::{Duration, Instant};

    #[test]
    fn an_outage_is_the_longest_gap_from_the_window_to_the_first_answer_after() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let answers = Answers {
            times: vec![[0, 100, 1500, 1510, 4000, 4010].map(ms).to_vec()],
            errors: Default::default(),
        };
        // The gap before the window (100 -> 1500) is not this round's.
        assert_eq!(
            answers.outage(0, ms(1000), ms(1600)),
            Some(Duration::from_millis(2490))
        );
        assert_eq!(
            answers.outage(0, ms(1000), ms(1400)),
            Some(Duration::from_millis(500))
        );
        assert_eq!(answers.outage(0, ms(1000), ms(5000)), None);
    }
}
