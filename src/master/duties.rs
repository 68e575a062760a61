//! What only the leading master does, taken up and let go as its part
//! changes: firing timers, bridging NATS, and holding the workers.
//!
//! A master that takes no part in leadership takes its duties up once, at
//! start. A master among standbys ([`crate::master::leadership`]) takes
//! them up each time it wins the lease, after catching up with what the
//! last leader wrote to the shared store:
//!
//! - the tokens and the joined workers' sessions ([`Access::reload`],
//!   [`Joins::accept_stored_sessions`]), so the workers that follow it
//!   are let in with the sessions they hold;
//! - the catalogue's uploads ([`Catalogue::refresh`]), under a new revision;
//! - the near future of the timers ([`Timers::forget`]), read again.
//!
//! and lets them go each time it loses the lease: its timers and its NATS
//! subscriptions stop, and its workers' connections close, so the workers
//! move on to the new leader. A timer whose delivery was under way when
//! leadership moved is fired again by the new leader (it is still in the
//! store): a timer fires once per due time, or twice across a failover.

use crate::master::access::Access;
use crate::master::api::ApiState;
use crate::master::catalogue::Catalogue;
use crate::master::joins::Joins;
use crate::master::leadership::{LeaderGate, Leadership, Role};
use crate::master::nats::Bridge;
use crate::master::timers::Timers;
use crate::mesophyll::hub::{DisconnectReason, Hub};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The parts a leader's duties touch.
pub struct Duties {
    /// The tokens, read again on taking over.
    pub access: Arc<Access>,
    /// The joined workers' sessions, handed to the hub on taking over.
    pub joins: Arc<Joins>,
    /// The catalogue, caught up on taking over.
    pub catalogue: Arc<Catalogue>,
    /// The timers, fired only while leading.
    pub timers: Arc<Timers>,
    /// The hub, whose workers are let go on stepping down.
    pub hub: Arc<Hub>,
    /// The NATS bridge, subscribed only while leading.
    pub nats: Option<Arc<Bridge>>,
    /// What the NATS bridge dispatches through.
    pub api: Arc<ApiState>,
    /// Told when this master has caught up and may act as the leader.
    pub gate: LeaderGate,
    running: Mutex<Vec<JoinHandle<()>>>,
}

impl Duties {
    /// The duties over these parts, not yet taken up.
    pub fn new(
        access: Arc<Access>,
        joins: Arc<Joins>,
        catalogue: Arc<Catalogue>,
        timers: Arc<Timers>,
        nats: Option<Arc<Bridge>>,
        api: Arc<ApiState>,
    ) -> Arc<Duties> {
        Arc::new(Duties {
            hub: Arc::clone(&api.hub),
            gate: api.leadership.clone(),
            access,
            joins,
            catalogue,
            timers,
            nats,
            api,
            running: Mutex::default(),
        })
    }

    /// Takes the duties up now (a master that leads alone), or each time
    /// `leadership` is won from now on; the leadership comes back with the
    /// task that follows it.
    pub fn begin(
        self: &Arc<Self>,
        leadership: Option<Leadership>,
    ) -> Option<(Leadership, JoinHandle<()>)> {
        match leadership {
            Some(l) => {
                let following = self.follow(l.watch());
                Some((l, following))
            }
            None => {
                self.take_up();
                None
            }
        }
    }

    /// Starts the timers and the NATS bridge.
    pub fn take_up(&self) {
        let mut running = self.running.lock().unwrap();
        running.push(self.timers.start(self.gate.clone()));
        if let Some(bridge) = &self.nats {
            running.push(bridge.serve(Arc::clone(&self.api)));
        }
    }

    /// Catches up with the store, then takes the duties up and opens the
    /// gate: this master has just won the lease of `epoch`. Until then it
    /// answers as a standby, so that no worker comes in with a session it
    /// has not read yet. A catch-up that fails is tried again for as long
    /// as the lease is this master's.
    async fn take_over(self: &Arc<Self>, epoch: i64) {
        loop {
            let duties = Arc::clone(self);
            let caught_up = tokio::task::spawn_blocking(move || {
                duties.access.reload()?;
                duties.joins.accept_stored_sessions();
                duties.timers.forget();
                duties.catalogue.refresh()
            })
            .await;
            match caught_up {
                Ok(Ok(revision)) => {
                    tracing::info!(revision, "caught up with the last leader");
                    break;
                }
                Ok(Err(e)) => tracing::error!("cannot catch up with the last leader: {e}"),
                Err(e) => tracing::error!("cannot catch up with the last leader: {e}"),
            }
            if !self.gate.holds(epoch) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        self.take_up();
        self.gate.ready(epoch);
    }

    /// Stops firing timers and bridging NATS (a master shutting down:
    /// its workers are told to finish their work first).
    pub fn stop(&self) {
        for task in self.running.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// Stops what only a leader does and lets the workers go, so that they
    /// find the new leader.
    pub fn let_go(&self) {
        self.stop();
        self.hub.disconnect_all(DisconnectReason::Kicked);
    }

    /// Follows this master's part for as long as it competes: takes the
    /// duties up on each win of the lease, lets them go on each loss.
    pub fn follow(self: &Arc<Self>, mut role: watch::Receiver<Role>) -> JoinHandle<()> {
        let duties = Arc::clone(self);
        tokio::spawn(async move {
            let mut leading = false;
            loop {
                let now = role.borrow_and_update().clone();
                match now {
                    Role::Leading { epoch } if !leading => {
                        leading = true;
                        tracing::info!(epoch, "taking the leader's duties up");
                        duties.take_over(epoch).await;
                    }
                    Role::Standing { .. } if leading => {
                        leading = false;
                        tracing::info!("letting the leader's duties go");
                        duties.let_go();
                    }
                    _ => {}
                }
                if role.changed().await.is_err() {
                    return;
                }
            }
        })
    }
}
