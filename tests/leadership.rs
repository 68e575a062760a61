//! Leadership among masters that share one PostgreSQL, at the store: the
//! lease in the `leadership` row (taken only once expired, by the
//! database's clock, each time with a new epoch) and the fence (a write
//! from a session whose epoch no longer leads is refused by the database,
//! `StoreError::Fenced`). Against a real cluster (`common::pg`).

mod common;

use meshplay::master::store::postgres::lease::{Candidate, STANDBY_EPOCH};
use meshplay::master::store::{PostgresStore, Store, StoreError};
use meshplay::mesophyll::message::Tenant;
use serde_json::json;
use std::time::Duration;

fn candidate(id: &str) -> Candidate {
    Candidate {
        id: id.into(),
        api_addr: format!("{id}:9081"),
        mesophyll_addr: format!("{id}:9082"),
    }
}

async fn write(store: &PostgresStore, n: i64) -> Result<(), StoreError> {
    let tenant = Tenant::new("user", "1");
    store
        .kv_set(&tenant, "s", "k", json!(n), 0)
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leads_at_a_time_and_a_master_past_its_lease_cannot_write() {
    let Some(url) = common::pg::database_or_skip() else {
        return;
    };
    let a = PostgresStore::open(&url).await.unwrap();
    let b = PostgresStore::open(&url).await.unwrap();
    let (ma, mb) = (candidate("a"), candidate("b"));
    let ttl = Duration::from_millis(800);

    // Nobody led yet: the first to ask leads, the other waits.
    assert_eq!(b.leader().await.unwrap().epoch, 0);
    let epoch = a.try_lead(&ma, ttl).await.unwrap().expect("a leads");
    assert_eq!(epoch, 1);
    assert_eq!(b.try_lead(&mb, ttl).await.unwrap(), None);
    let leader = b.leader().await.unwrap();
    assert_eq!(
        (
            leader.holder.as_str(),
            leader.api_addr.as_str(),
            leader.live
        ),
        ("a", "a:9081", true)
    );

    // The leader writes for its epoch; a standby writes nothing.
    a.fence(epoch);
    b.fence(STANDBY_EPOCH);
    write(&a, 1).await.unwrap();
    assert!(
        matches!(write(&b, 2).await, Err(StoreError::Fenced(_))),
        "a standby is fenced"
    );

    // Renewed inside its time, the lease stays a's.
    for _ in 0..3 {
        tokio::time::sleep(ttl / 2).await;
        assert!(a.renew(&ma, epoch, ttl).await.unwrap());
        assert_eq!(b.try_lead(&mb, ttl).await.unwrap(), None);
    }

    // a stops renewing (paused, cut off): once the lease runs out, b takes
    // it with the next epoch, and a, waking, can neither write nor renew.
    tokio::time::sleep(ttl + Duration::from_millis(200)).await;
    let next = b.try_lead(&mb, ttl).await.unwrap().expect("b takes over");
    assert_eq!(next, epoch + 1);
    b.fence(next);
    let refused = write(&a, 3).await.unwrap_err();
    assert!(
        matches!(refused, StoreError::Fenced(ref m) if m.contains("epoch 1 does not lead")),
        "{refused}"
    );
    assert!(!a.renew(&ma, epoch, ttl).await.unwrap());
    write(&b, 4).await.unwrap();
    let value = b
        .kv_get(&Tenant::new("user", "1"), "s", "k")
        .unwrap()
        .unwrap()
        .value;
    assert_eq!(value, json!(4), "the old leader's write is not there");

    // A clean handover: b resigns, a leads at once with the epoch after.
    b.resign(&mb, next).await.unwrap();
    assert_eq!(a.try_lead(&ma, ttl).await.unwrap(), Some(next + 1));

    // A store that takes no part in leadership is not fenced.
    let single = PostgresStore::open(&url).await.unwrap();
    write(&single, 5).await.unwrap();
}

/// Waits until `l` plays a part `f` accepts; answers it.
async fn until_role(
    l: &meshplay::master::leadership::Leadership,
    within: Duration,
    f: impl Fn(&meshplay::master::leadership::Role) -> bool,
) -> meshplay::master::leadership::Role {
    let mut watch = l.watch();
    tokio::time::timeout(within, async {
        loop {
            let role = watch.borrow_and_update().clone();
            if f(&role) {
                return role;
            }
            watch.changed().await.unwrap();
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no such role within {within:?}: {:?}", l.role()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_within_the_lease_once_the_leader_stops() {
    use meshplay::master::leadership::{Leadership, LeaseConfig, Role};
    let Some(url) = common::pg::database_or_skip() else {
        return;
    };
    let config = LeaseConfig {
        ttl: Duration::from_millis(800),
        renew: Duration::from_millis(300),
        poll: Duration::from_millis(100),
        margin: Duration::from_millis(100),
    };
    let a_store = std::sync::Arc::new(PostgresStore::open(&url).await.unwrap());
    let b_store = std::sync::Arc::new(PostgresStore::open(&url).await.unwrap());
    let a = Leadership::start(a_store.clone(), candidate("a"), config);
    let leading = |r: &Role| matches!(r, Role::Leading { .. });
    let Role::Leading { epoch } = until_role(&a, Duration::from_secs(5), leading).await else {
        unreachable!()
    };
    let b = Leadership::start(b_store.clone(), candidate("b"), config);
    // b stands by, knowing who leads, for as long as a renews.
    let seen = until_role(
        &b,
        Duration::from_secs(5),
        |r| matches!(r, Role::Standing { leader: Some(l) } if l.holder == "a"),
    )
    .await;
    let Role::Standing { leader: Some(l) } = seen else {
        unreachable!()
    };
    assert_eq!((l.epoch, l.api_addr.as_str()), (epoch, "a:9081"));
    tokio::time::sleep(config.ttl * 3).await;
    assert_eq!(a.role(), Role::Leading { epoch }, "renewals keep it");
    assert!(matches!(b.role(), Role::Standing { .. }));
    write(&a_store, 1).await.unwrap();
    assert!(matches!(
        write(&b_store, 2).await,
        Err(StoreError::Fenced(_))
    ));

    // a stops and gives the lease up (a killed master, which cannot,
    // is `tests/standby.rs`'s): b leads within a poll, with the next
    // epoch, and a's writes are refused.
    let stopped = tokio::time::Instant::now();
    a.stop().await;
    // The bound is a poll; the rest is slack for a busy machine's round
    // trips.
    let bound = config.ttl * 2 + config.poll * 2;
    until_role(&b, bound, leading).await;
    let took = stopped.elapsed();
    assert_eq!(b.role(), Role::Leading { epoch: epoch + 1 });
    assert!(took <= bound, "{took:?}");
    write(&b_store, 3).await.unwrap();
    assert!(matches!(
        write(&a_store, 4).await,
        Err(StoreError::Fenced(_))
    ));
    b.stop().await;
}
