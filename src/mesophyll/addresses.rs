//! The masters a worker may talk to, and which of them it talks to now.
//!
//! With standby masters (`serve --standby`: several masters on one
//! PostgreSQL) one of them leads, and only the leader takes workers: a
//! standby refuses the upgrade, joins and DB calls with `503` and code
//! `not_leader`, naming the leader's hub in the [`LEADER_HEADER`] header.
//! A worker started with several addresses (`worker --join URL,URL`)
//! keeps them in an [`Addresses`]:
//! the uplink moves to the next one when the one it talks to fails, and
//! straight to the named leader when a standby names one of the list. The
//! DB client reads the current one on every call, so both follow the same
//! master.
//!
//! Only an address from the list is ever followed: a header cannot send a
//! worker, with its session token, to a host its operator did not name.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The header in which a standby names the leader: its hub's `host:port`
/// on the Mesophyll port, its API's `host:port` on the API.
pub const LEADER_HEADER: &str = "meshplay-leader";

/// The error code a standby answers with.
pub const NOT_LEADER: &str = "not_leader";

/// Several addresses (`host:port`), one of them current. Cheap to clone;
/// the clones share which one is current.
#[derive(Debug, Clone)]
pub struct Addresses {
    addrs: Arc<[String]>,
    current: Arc<AtomicUsize>,
}

impl Addresses {
    /// The masters at `addrs`, the first one current.
    ///
    /// # Panics
    ///
    /// When `addrs` is empty: a worker needs a master.
    pub fn new(addrs: Vec<String>) -> Addresses {
        assert!(!addrs.is_empty(), "at least one master address");
        Addresses {
            addrs: addrs.into(),
            current: Arc::default(),
        }
    }

    /// The one master at `addr`.
    pub fn one(addr: impl Into<String>) -> Addresses {
        Addresses::new(vec![addr.into()])
    }

    /// The address talked to now.
    pub fn current(&self) -> String {
        let i = self.current.load(Ordering::Relaxed) % self.addrs.len();
        self.addrs[i].clone()
    }

    /// Every address, in the order given.
    pub fn all(&self) -> &[String] {
        &self.addrs
    }

    /// Whether there is more than one to try.
    pub fn several(&self) -> bool {
        self.addrs.len() > 1
    }

    /// Moves on to the next address, after `failed` did not answer as a
    /// leader (a no-op if another caller has moved on already).
    pub fn next_after(&self, failed: &str) {
        let i = self.current.load(Ordering::Relaxed);
        if self.addrs[i % self.addrs.len()] == failed {
            let _ = self.current.compare_exchange(
                i,
                (i + 1) % self.addrs.len(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// Makes `leader` current when it is one of the addresses; false (and
    /// nothing changes) when it is not.
    pub fn follow(&self, leader: &str) -> bool {
        match self.addrs.iter().position(|a| a == leader) {
            Some(i) => {
                self.current.store(i, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Addresses;

    #[test]
    fn moves_round_and_follows_only_a_listed_leader() {
        let m = Addresses::new(vec!["a:1".into(), "b:1".into(), "c:1".into()]);
        let clone = m.clone();
        assert_eq!(m.current(), "a:1");
        m.next_after("a:1");
        assert_eq!(clone.current(), "b:1");
        // A second report of the same failure does not skip a master.
        m.next_after("a:1");
        assert_eq!(m.current(), "b:1");
        m.next_after("b:1");
        m.next_after("c:1");
        assert_eq!(m.current(), "a:1");
        assert!(m.follow("c:1"));
        assert_eq!(clone.current(), "c:1");
        assert!(!m.follow("evil:1"));
        assert_eq!(m.current(), "c:1");
    }
}
