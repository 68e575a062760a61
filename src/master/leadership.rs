//! Which of the masters sharing one PostgreSQL leads, seen from one of
//! them: a task that competes for the lease ([`crate::master::store::postgres::lease`])
//! and says, through a watch channel, whether this master leads (and with
//! which epoch) or stands by (and who leads).
//!
//! A standby asks for the lease every [`LeaseConfig::poll`]; it gets it
//! only once the holder's has run out by the database's clock. The leader
//! renews every [`LeaseConfig::renew`], each time for [`LeaseConfig::ttl`].
//! It counts its own lease from when it *sent* the last renewal that
//! succeeded, less [`LeaseConfig::margin`], so it always believes it leads
//! for less time than the database grants: when renewals stop succeeding
//! (the database is unreachable, the answer is late) it steps down before
//! any standby can take over. Whatever it believes, the fence refuses its
//! writes once another epoch leads.
//!
//! With the defaults (2 s lease, renewed every 1 s, standbys asking every
//! 250 ms), a leader that dies is replaced within 2.25 s of its last
//! renewal; one that stops cleanly resigns, and is replaced within 250 ms.
//!
//! What may act as the leader asks a [`LeaderGate`]: it says "leads" only
//! while the lease this master counts on has not run out *now*, not as of
//! the last time the task ran, so a master that wakes from a pause past
//! its lease refuses work before its task has even noticed.

use crate::master::store::PostgresStore;
use crate::master::store::postgres::lease::{Candidate, Leader, STANDBY_EPOCH, SeenMaster};
use crate::rest::{LeadershipStatus, MasterSeen};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// How long a stopping leader waits for the database to take its lease
/// back.
const RESIGN_WITHIN: Duration = Duration::from_secs(2);

/// The lease's timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseConfig {
    /// How long a lease runs, from each renewal.
    pub ttl: Duration,
    /// How often the leader renews it.
    pub renew: Duration,
    /// How often a standby asks for it.
    pub poll: Duration,
    /// How much sooner than the database the leader counts its lease out.
    pub margin: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            ttl: Duration::from_secs(2),
            renew: Duration::from_secs(1),
            poll: Duration::from_millis(250),
            margin: Duration::from_millis(200),
        }
    }
}

/// This master as a candidate: a fresh id (its host, its process, a
/// random part), and the addresses it listens on, which standbys hand to
/// workers and clients as the leader's.
///
/// Fails when an address is unspecified (`0.0.0.0`): the others could not
/// send anyone there.
pub fn candidate(
    api_addr: std::net::SocketAddr,
    mesophyll_addr: std::net::SocketAddr,
) -> Result<Candidate, crate::master::MasterError> {
    for (flag, addr) in [
        ("--api-addr", api_addr),
        ("--mesophyll-addr", mesophyll_addr),
    ] {
        if addr.ip().is_unspecified() {
            return Err(crate::master::MasterError::Config(format!(
                "with --standby, {flag} must be an address the other masters' workers and \
                 clients can reach (not {addr}): standbys send them to it"
            )));
        }
    }
    let host = crate::hostname::hostname().unwrap_or_else(|| "master".into());
    let id = format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    );
    Ok(Candidate {
        id,
        api_addr: api_addr.to_string(),
        mesophyll_addr: mesophyll_addr.to_string(),
    })
}

/// This master's part, as it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// It leads, writing for this epoch.
    Leading {
        /// The lease's epoch.
        epoch: i64,
    },
    /// It stands by; the leader, as last read (none: unknown, or no live
    /// lease).
    Standing {
        /// Who leads.
        leader: Option<Leader>,
    },
}

/// What the gate knows: the lease this master counts on, and who leads
/// otherwise.
#[derive(Debug, Default)]
struct GateState {
    /// The epoch and until when this master may count on it.
    lease: Option<(i64, Instant)>,
    /// The epoch whose duties this master has taken up (after catching up
    /// with the store): it acts as the leader only once this is its
    /// lease's epoch.
    ready: Option<i64>,
    /// The leader as last read while standing by.
    leader: Option<Leader>,
    /// Times this master's part changed.
    changes: u64,
    /// This master.
    me: Option<Candidate>,
    /// The masters seen lately, as last read.
    seen: Vec<SeenMaster>,
}

/// Whether this master may act as the leader now: what the API, the hub,
/// the timers and the NATS bridge ask before acting. Cheap to clone.
///
/// A master that takes no part in leadership (one master, on sled or on
/// PostgreSQL without `--standby`) always leads.
#[derive(Debug, Clone, Default)]
pub struct LeaderGate {
    state: Option<Arc<Mutex<GateState>>>,
}

impl LeaderGate {
    /// The gate of a master that takes no part in leadership.
    pub fn sole() -> LeaderGate {
        LeaderGate::default()
    }

    /// Whether this master takes part in leadership.
    pub fn takes_part(&self) -> bool {
        self.state.is_some()
    }

    /// Whether this master leads at this instant.
    pub fn leads(&self) -> bool {
        self.epoch().is_some() || self.state.is_none()
    }

    /// The epoch this master leads with at this instant; `None` when it
    /// stands by (or takes no part). A master that has just won the lease
    /// leads once it has caught up with the store ([`LeaderGate::ready`]).
    pub fn epoch(&self) -> Option<i64> {
        let state = self.state.as_ref()?.lock().unwrap();
        state
            .lease
            .filter(|(epoch, until)| Instant::now() < *until && state.ready == Some(*epoch))
            .map(|(epoch, _)| epoch)
    }

    /// Whether this master holds the lease of `epoch` at this instant,
    /// caught up or not.
    pub fn holds(&self, epoch: i64) -> bool {
        self.state.as_ref().is_some_and(|s| {
            let s = s.lock().unwrap();
            s.lease
                .is_some_and(|(e, until)| e == epoch && Instant::now() < until)
        })
    }

    /// Says that this master has caught up with the store for `epoch` and
    /// may act as its leader.
    pub fn ready(&self, epoch: i64) {
        self.update(|s| s.ready = Some(epoch));
    }

    /// Who leads, as last read while standing by.
    pub fn leader(&self) -> Option<Leader> {
        self.state.as_ref()?.lock().unwrap().leader.clone()
    }

    /// How many times this master's part changed since it started.
    pub fn changes(&self) -> u64 {
        self.state.as_ref().map_or(0, |s| s.lock().unwrap().changes)
    }

    /// Leadership for `/api/v1/status`; `None` for a master that takes
    /// no part.
    pub fn status(&self) -> Option<LeadershipStatus> {
        let epoch = self.epoch();
        let state = self.state.as_ref()?.lock().unwrap();
        let leader = state.leader.clone();
        let leader_id = leader.as_ref().map(|l| l.holder.clone());
        let mut masters: Vec<MasterSeen> = state
            .seen
            .iter()
            .map(|m| MasterSeen {
                id: m.id.clone(),
                api_addr: m.api_addr.clone(),
                mesophyll_addr: m.mesophyll_addr.clone(),
                leads: leader_id.as_ref() == Some(&m.id),
                seen_ms_ago: m.seen_ms_ago,
            })
            .collect();
        masters.sort_by_key(|m| !m.leads);
        Some(LeadershipStatus {
            role: if epoch.is_some() { "leader" } else { "standby" }.into(),
            id: state.me.as_ref().map(|m| m.id.clone()).unwrap_or_default(),
            epoch: epoch.or(leader.as_ref().map(|l| l.epoch)).unwrap_or(0),
            leader_api_addr: leader.map(|l| l.api_addr),
            masters,
        })
    }

    fn update(&self, f: impl FnOnce(&mut GateState)) {
        if let Some(state) = &self.state {
            f(&mut state.lock().unwrap());
        }
    }
}

/// The competing task and what it says.
pub struct Leadership {
    store: Arc<PostgresStore>,
    me: Candidate,
    gate: LeaderGate,
    role: watch::Receiver<Role>,
    task: tokio::task::JoinHandle<()>,
    announcing: tokio::task::JoinHandle<()>,
}

impl Leadership {
    /// Starts competing as `me` on `store`.
    pub fn start(store: Arc<PostgresStore>, me: Candidate, config: LeaseConfig) -> Leadership {
        store.fence(STANDBY_EPOCH);
        let gate = LeaderGate {
            state: Some(Arc::new(Mutex::new(GateState {
                me: Some(me.clone()),
                ..GateState::default()
            }))),
        };
        let (tx, role) = watch::channel(Role::Standing { leader: None });
        let task = tokio::spawn(compete(
            Arc::clone(&store),
            me.clone(),
            config,
            gate.clone(),
            tx,
        ));
        let announcing = tokio::spawn(announce(
            Arc::clone(&store),
            me.clone(),
            config,
            gate.clone(),
        ));
        Leadership {
            store,
            me,
            gate,
            role,
            task,
            announcing,
        }
    }

    /// The part it plays now.
    pub fn role(&self) -> Role {
        self.role.borrow().clone()
    }

    /// A receiver that sees each change of part.
    pub fn watch(&self) -> watch::Receiver<Role> {
        self.role.clone()
    }

    /// The gate that says whether this master leads at an instant.
    pub fn gate(&self) -> LeaderGate {
        self.gate.clone()
    }

    /// Who this master is.
    pub fn me(&self) -> &Candidate {
        &self.me
    }

    /// Stops competing; a lease this master holds is given up at once, so
    /// a standby takes over without waiting for it to run out.
    pub async fn stop(self) {
        self.task.abort();
        self.announcing.abort();
        let held = self
            .gate
            .state
            .as_ref()
            .and_then(|s| s.lock().unwrap().lease.map(|(epoch, _)| epoch));
        if let Some(epoch) = held {
            self.gate.update(|s| s.lease = None);
            self.store.fence(STANDBY_EPOCH);
            // A database that does not answer must not hold the shutdown:
            // the lease then runs out by itself.
            let resigned = tokio::time::timeout(RESIGN_WITHIN, self.store.resign(&self.me, epoch));
            match resigned.await {
                Ok(Ok(())) => tracing::info!(epoch, "gave the lease up"),
                Ok(Err(e)) => tracing::warn!(epoch, "cannot give the lease up: {e}"),
                Err(_) => tracing::warn!(epoch, "the database did not take the lease back in time"),
            }
        }
    }
}

/// Says where this master listens at every renewal's interval, and reads
/// who else does, for the status.
async fn announce(store: Arc<PostgresStore>, me: Candidate, config: LeaseConfig, gate: LeaderGate) {
    loop {
        if let Err(e) = store.announce(&me).await {
            tracing::debug!("cannot announce this master: {e}");
        }
        match store.masters(config.ttl * 3).await {
            Ok(seen) => gate.update(|s| s.seen = seen),
            Err(e) => tracing::debug!("cannot read the masters: {e}"),
        }
        tokio::time::sleep(config.renew).await;
    }
}

async fn compete(
    store: Arc<PostgresStore>,
    me: Candidate,
    config: LeaseConfig,
    gate: LeaderGate,
    tx: watch::Sender<Role>,
) {
    loop {
        let Some((epoch, until)) = stand_by(&store, &me, &config, &gate, &tx).await else {
            return;
        };
        store.fence(epoch);
        gate.update(|s| {
            s.lease = Some((epoch, until));
            s.leader = Some(Leader {
                epoch,
                holder: me.id.clone(),
                api_addr: me.api_addr.clone(),
                mesophyll_addr: me.mesophyll_addr.clone(),
                live: true,
            });
            s.changes += 1;
        });
        tracing::info!(epoch, "this master leads");
        let _ = tx.send(Role::Leading { epoch });
        lead(&store, &me, &config, &gate, epoch, until).await;
        gate.update(|s| {
            s.lease = None;
            s.ready = None;
            s.leader = None;
            s.changes += 1;
        });
        store.fence(STANDBY_EPOCH);
        tracing::warn!(epoch, "this master no longer leads");
        if tx.send(Role::Standing { leader: None }).is_err() {
            return;
        }
    }
}

/// Asks for the lease until it is granted: its epoch, and until when this
/// master may count on it. `None` when nobody listens any more.
async fn stand_by(
    store: &PostgresStore,
    me: &Candidate,
    config: &LeaseConfig,
    gate: &LeaderGate,
    tx: &watch::Sender<Role>,
) -> Option<(i64, Instant)> {
    loop {
        let sent = Instant::now();
        match store.try_lead(me, config.ttl).await {
            Ok(Some(epoch)) => return Some((epoch, sent + config.ttl - config.margin)),
            Ok(None) => {
                let leader = store.leader().await.ok().filter(|l| l.live);
                gate.update(|s| s.leader = leader.clone());
                let changed = tx.send_if_modified(|role| {
                    let next = Role::Standing {
                        leader: leader.clone(),
                    };
                    if *role == next {
                        return false;
                    }
                    *role = next;
                    true
                });
                if changed {
                    tracing::info!(leader = ?leader.as_ref().map(|l| &l.api_addr), "standing by");
                }
            }
            Err(e) => tracing::warn!("cannot ask for the lease: {e}"),
        }
        if tx.is_closed() {
            return None;
        }
        tokio::time::sleep(config.poll).await;
    }
}

/// Renews the lease of `epoch` until a renewal is refused or none
/// succeeds before `until`.
async fn lead(
    store: &PostgresStore,
    me: &Candidate,
    config: &LeaseConfig,
    gate: &LeaderGate,
    epoch: i64,
    mut until: Instant,
) {
    loop {
        tokio::time::sleep_until((Instant::now() + config.renew).min(until)).await;
        if Instant::now() >= until {
            tracing::warn!(epoch, "the lease ran out before a renewal succeeded");
            return;
        }
        let sent = Instant::now();
        match tokio::time::timeout_at(until, store.renew(me, epoch, config.ttl)).await {
            Ok(Ok(true)) => {
                until = sent + config.ttl - config.margin;
                gate.update(|s| s.lease = Some((epoch, until)));
            }
            Ok(Ok(false)) => {
                tracing::warn!(epoch, "the lease was taken by another master");
                return;
            }
            Ok(Err(e)) => tracing::warn!(epoch, "cannot renew the lease: {e}"),
            Err(_) => {}
        }
    }
}

/// `/metrics`: whether this master leads, its epoch and how often its
/// part changed (written only by a master that takes part).
impl prometheus_client::collector::Collector for LeaderGate {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        if !self.takes_part() {
            return Ok(());
        }
        let epoch = self.epoch();
        let leads = ConstGauge::new(i64::from(epoch.is_some()));
        leads.encode(encoder.encode_descriptor(
            "leader",
            "1 while this master holds the lease and leads, 0 while it stands by",
            None,
            leads.metric_type(),
        )?)?;
        let epoch = ConstGauge::new(epoch.unwrap_or(0));
        epoch.encode(encoder.encode_descriptor(
            "leadership_epoch",
            "The epoch this master leads with (0 while it stands by)",
            None,
            epoch.metric_type(),
        )?)?;
        let changes = ConstCounter::new(self.changes());
        changes.encode(encoder.encode_descriptor(
            "leadership_changes",
            "Times this master took the lease or lost it since it started",
            None,
            changes.metric_type(),
        )?)?;
        Ok(())
    }
}
