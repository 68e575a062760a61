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
//! renewal.

use crate::master::store::PostgresStore;
use crate::master::store::postgres::lease::{Candidate, Leader, STANDBY_EPOCH};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

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

/// The competing task and what it says.
pub struct Leadership {
    role: watch::Receiver<Role>,
    task: tokio::task::JoinHandle<()>,
}

impl Leadership {
    /// Starts competing as `me` on `store`.
    pub fn start(store: Arc<PostgresStore>, me: Candidate, config: LeaseConfig) -> Leadership {
        store.fence(STANDBY_EPOCH);
        let (tx, role) = watch::channel(Role::Standing { leader: None });
        let task = tokio::spawn(compete(store, me, config, tx));
        Leadership { role, task }
    }

    /// The part it plays now.
    pub fn role(&self) -> Role {
        self.role.borrow().clone()
    }

    /// A receiver that sees each change of part.
    pub fn watch(&self) -> watch::Receiver<Role> {
        self.role.clone()
    }

    /// Stops competing (the lease is left to run out).
    pub fn stop(self) {
        self.task.abort();
    }
}

async fn compete(
    store: Arc<PostgresStore>,
    me: Candidate,
    config: LeaseConfig,
    tx: watch::Sender<Role>,
) {
    loop {
        let Some((epoch, until)) = stand_by(&store, &me, &config, &tx).await else {
            return;
        };
        store.fence(epoch);
        tracing::info!(epoch, "this master leads");
        let _ = tx.send(Role::Leading { epoch });
        lead(&store, &me, &config, epoch, until).await;
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
    tx: &watch::Sender<Role>,
) -> Option<(i64, Instant)> {
    loop {
        let sent = Instant::now();
        match store.try_lead(me, config.ttl).await {
            Ok(Some(epoch)) => return Some((epoch, sent + config.ttl - config.margin)),
            Ok(None) => {
                let leader = store.leader().await.ok().filter(|l| l.live);
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
            Ok(Ok(true)) => until = sent + config.ttl - config.margin,
            Ok(Ok(false)) => {
                tracing::warn!(epoch, "the lease was taken by another master");
                return;
            }
            Ok(Err(e)) => tracing::warn!(epoch, "cannot renew the lease: {e}"),
            Err(_) => {}
        }
    }
}
