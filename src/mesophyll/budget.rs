//! A byte budget for a queue between processes: a queue bounded by count
//! alone can hold count x the largest frame (4096 x 4 MiB), so each also
//! counts the bytes it holds, and refuses what would go past its budget.
//! The refused caller gets "overloaded" at once; memory never grows.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes a queue may hold.
#[derive(Debug)]
pub struct ByteBudget {
    used: AtomicUsize,
    max: usize,
}

impl ByteBudget {
    /// A budget of `max`.
    pub fn new(max: usize) -> Self {
        ByteBudget {
            used: AtomicUsize::new(0),
            max,
        }
    }

    /// Takes `n` bytes of the budget, or refuses. An empty queue takes any
    /// one frame, so that a frame larger than the budget is not refused
    /// forever.
    pub fn try_take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used == 0 || used.saturating_add(n) <= self.max).then_some(used + n)
            })
            .is_ok()
    }

    /// Takes `n` bytes whatever the budget says: for the short refusals that
    /// must always get through.
    pub fn take(&self, n: usize) {
        self.used.fetch_add(n, Ordering::AcqRel);
    }

    /// Returns `n` bytes once their frame has left the queue.
    pub fn give_back(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::ByteBudget;

    #[test]
    fn refuses_past_the_budget_and_takes_back_what_left() {
        let b = ByteBudget::new(100);
        assert!(b.try_take(60));
        assert!(!b.try_take(50));
        assert!(b.try_take(40));
        b.give_back(60);
        assert!(b.try_take(50));
        assert_eq!(b.used(), 90);
        // An empty queue takes one oversized frame.
        let b = ByteBudget::new(10);
        assert!(b.try_take(1000));
        assert!(!b.try_take(1));
    }
}
