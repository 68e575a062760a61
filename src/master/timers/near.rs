//! The near future: the pending timers the master holds in memory, in due
//! order, so that firing one costs no store read.
//!
//! Everything pending up to [`Near::loaded_through`] (a slot: due time,
//! then id) is here or being delivered; what lies beyond stays in the
//! store until a refill reads the next stretch. A timer written meanwhile
//! joins only if its slot falls within what is loaded; otherwise a later
//! refill finds it. So a million pending timers cost the store, and the
//! master holds at most [`NEAR_MAX`] of them.

use crate::master::store::timers::StoredTimer;
use std::collections::{BTreeMap, HashMap, HashSet};

/// How far ahead a refill reads, in milliseconds.
pub const WINDOW_MS: i64 = 60_000;

/// The most timers held in memory; a refill reads at most half of it.
pub const NEAR_MAX: usize = 20_000;

/// The pending timers of the near future.
#[derive(Debug, Default)]
pub struct Near {
    queue: BTreeMap<(i64, u64), StoredTimer>,
    slots: HashMap<u64, (i64, u64)>,
    in_flight: HashSet<u64>,
    loaded_through: (i64, u64),
}

impl Near {
    /// Nothing loaded yet: the first refill reads from the start.
    pub fn new() -> Near {
        Near {
            loaded_through: (i64::MIN, 0),
            ..Default::default()
        }
    }

    /// Where the last refill stopped.
    pub fn loaded_through(&self) -> (i64, u64) {
        self.loaded_through
    }

    /// Whether a refill is due at `now`: what is loaded ends within half a
    /// window, and there is room.
    pub fn wants_refill(&self, now: i64) -> bool {
        self.loaded_through.0 < now.saturating_add(WINDOW_MS / 2) && self.queue.len() < NEAR_MAX / 2
    }

    /// Takes in a refill's timers, read after `loaded_through` up to
    /// `until`; `full` when the read stopped at its limit.
    pub fn refilled(&mut self, timers: Vec<StoredTimer>, until: i64, full: bool) {
        let through = match (full, timers.last()) {
            (true, Some(last)) => last.slot(),
            _ => (until, u64::MAX),
        };
        for t in timers {
            self.insert(t);
        }
        self.loaded_through = self.loaded_through.max(through);
        self.keep_within_max();
    }

    /// A timer just written or moved: held if its slot is within what is
    /// loaded. True when it is now the earliest (the loop must wake).
    pub fn noticed(&mut self, t: StoredTimer) -> bool {
        if t.slot() > self.loaded_through {
            return false;
        }
        let slot = t.slot();
        self.insert(t);
        self.keep_within_max();
        self.queue.keys().next() == Some(&slot)
    }

    /// Past [`NEAR_MAX`], the latest timers go back to the store's care:
    /// what is loaded then ends just before them, so a refill reads them
    /// again when there is room.
    fn keep_within_max(&mut self) {
        while self.queue.len() > NEAR_MAX {
            let Some((slot, t)) = self.queue.pop_last() else {
                break;
            };
            self.slots.remove(&t.id);
            self.loaded_through = match slot {
                (due, 0) => (due - 1, u64::MAX),
                (due, id) => (due, id - 1),
            };
        }
    }

    fn insert(&mut self, t: StoredTimer) {
        if self.in_flight.contains(&t.id) {
            return;
        }
        if let Some(old) = self.slots.insert(t.id, t.slot()) {
            self.queue.remove(&old);
        }
        self.queue.insert(t.slot(), t);
    }

    /// Forgets timer `id` (cancelled); a delivery under way goes on.
    pub fn remove(&mut self, id: u64) {
        if let Some(slot) = self.slots.remove(&id) {
            self.queue.remove(&slot);
        }
    }

    /// Forgets the pending run of `tenant`'s schedule `name` (replaced or
    /// deleted): a scan, as schedules change rarely.
    pub fn remove_run(&mut self, tenant: &crate::mesophyll::message::Tenant, name: &str) {
        let runs: Vec<u64> = self
            .queue
            .values()
            .filter(|t| &t.tenant == tenant && t.schedule.as_deref() == Some(name))
            .map(|t| t.id)
            .collect();
        for id in runs {
            self.remove(id);
        }
    }

    /// Takes up to `most` timers due at `now`, marking them in flight.
    pub fn take_due(&mut self, now: i64, most: usize) -> Vec<StoredTimer> {
        let mut due = Vec::new();
        while due.len() < most {
            let Some(entry) = self.queue.first_entry() else {
                break;
            };
            if entry.key().0 > now {
                break;
            }
            let t = entry.remove();
            self.slots.remove(&t.id);
            self.in_flight.insert(t.id);
            due.push(t);
        }
        due
    }

    /// Timer `id`'s delivery ended (whatever became of it).
    pub fn landed(&mut self, id: u64) {
        self.in_flight.remove(&id);
    }

    /// When the earliest held timer is due.
    pub fn next_due(&self) -> Option<i64> {
        self.queue.keys().next().map(|s| s.0)
    }

    /// Timers held, and timers being delivered.
    pub fn sizes(&self) -> (usize, usize) {
        (self.queue.len(), self.in_flight.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesophyll::message::Tenant;
    use crate::mesophyll::packed::Packed;

    fn timer(id: u64, due_at: i64) -> StoredTimer {
        StoredTimer {
            id,
            tenant: Tenant::new("t", "1"),
            event: "e".into(),
            data: Packed::nil(),
            due_at,
            attempt: 0,
            schedule: None,
        }
    }

    #[test]
    fn only_what_is_loaded_is_held_and_it_leaves_in_due_order() {
        let mut near = Near::new();
        near.refilled(vec![timer(2, 200), timer(1, 100)], 1_000, false);
        assert!(!near.noticed(timer(9, 5_000)), "beyond the loaded stretch");
        assert!(near.noticed(timer(3, 50)), "the earliest wakes the loop");
        let ids: Vec<u64> = near.take_due(1_000, 10).iter().map(|t| t.id).collect();
        assert_eq!(ids, [3, 1, 2]);
        assert_eq!(near.sizes(), (0, 3));
    }

    #[test]
    fn a_timer_in_flight_is_not_taken_twice() {
        let mut near = Near::new();
        near.refilled(vec![timer(1, 10)], 1_000, false);
        assert_eq!(near.take_due(10, 10).len(), 1);
        // A refill or a retry that sees it again while it is delivered.
        near.refilled(vec![timer(1, 10)], 2_000, false);
        assert!(near.take_due(10, 10).is_empty());
        near.landed(1);
        assert!(near.noticed(timer(1, 20)), "a retry, once landed");
    }

    #[test]
    fn a_full_refill_stops_where_its_read_did() {
        let mut near = Near::new();
        near.refilled(vec![timer(1, 10), timer(2, 20)], 60_000, true);
        assert_eq!(near.loaded_through(), (20, 2));
        assert!(!near.noticed(timer(3, 30)));
    }

    #[test]
    fn past_the_most_held_the_latest_go_back_to_the_store() {
        let mut near = Near::new();
        near.refilled(Vec::new(), i64::MAX - 1, false);
        for id in 1..=(NEAR_MAX as u64 + 10) {
            near.noticed(timer(id, id as i64));
        }
        assert_eq!(near.sizes().0, NEAR_MAX);
        let last = NEAR_MAX as u64;
        assert_eq!(near.loaded_through(), (last as i64 + 1, last));
        // What was let go is beyond what is loaded: a refill reads it.
        assert!(!near.noticed(timer(last + 1, last as i64 + 1)));
    }

    #[test]
    fn cancelled_and_replaced_runs_are_forgotten() {
        let mut near = Near::new();
        let mut run = timer(5, 10);
        run.schedule = Some("daily".into());
        near.refilled(vec![timer(1, 10), run], 100, false);
        near.remove(1);
        near.remove_run(&Tenant::new("t", "1"), "daily");
        assert!(near.take_due(100, 10).is_empty());
    }
}
