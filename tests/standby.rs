//! Standby masters on one PostgreSQL, as processes on this machine: two
//! `serve --standby`, two `worker --join` with both hubs, and a client
//! that knows both masters writing KV and counting (the counter plugin)
//! on both shards all through. The leader is SIGKILLed three times,
//! SIGSTOPped past its lease three times and cut off from the database
//! three times (its relay to PostgreSQL stops moving bytes).
//!
//! After each fault the other master leads and both shards answer again;
//! no acknowledged write is lost; no increment ran twice (a counter never
//! answers the same number twice, and ends between the increments
//! acknowledged and those plus the ones whose fate is unknown); a request
//! sent to a leader while it was paused is refused with `not_leader` when
//! it wakes, and its write is not in the store; a leader cut off from the
//! database steps down within its lease (`common::failover` has the
//! rounds). `netns_standby.rs` runs the same across network namespaces;
//! `bench failover` measures the outages.

mod common;

use common::failover::rounds;
use meshplay::bench::failover::cluster::{Cluster, Loopback};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_from_a_killed_paused_or_cut_off_leader_losing_nothing() {
    let Some(store) = common::pg::database_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let placement = Box::new(Loopback::new(&store, 2).await.unwrap());
    let mut cluster = Cluster::start(common::failover::plan(dir.path(), Vec::new()), placement)
        .await
        .unwrap();
    rounds(&mut cluster).await;
}
