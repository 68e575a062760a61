//! The worker's memory budget for its tenants' VMs: the Luau heaps of all
//! its live VMs together (`--worker-memory-mb`).
//!
//! Each VM is capped on its own (`--vm-memory-mb`), but 50,000 live
//! tenants at 20 MiB each is a terabyte: the per-VM cap alone bounds
//! nothing a worker can hold. So every tenant's actor reports its VM's
//! heap after each job ([`HeapBudget::account`]), and a new VM is made only
//! while the sum is under the budget; past it, the least recently used
//! idle tenants are evicted and the new VM is refused `overloaded` (the
//! caller retries once the evicted ones are freed). A VM already running
//! is never stopped for the budget: its own cap bounds it.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The heap bytes of a worker's live VMs against their budget.
#[derive(Debug)]
pub struct HeapBudget {
    limit: usize,
    used: AtomicUsize,
}

impl HeapBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        HeapBudget {
            limit,
            used: AtomicUsize::new(0),
        }
    }

    /// One VM's heap is `now` bytes, where it was `accounted` (which
    /// becomes `now`); a dropped VM is `now == 0`.
    pub fn account(&self, accounted: &mut usize, now: usize) {
        if now >= *accounted {
            self.used.fetch_add(now - *accounted, Ordering::Relaxed);
        } else {
            self.used.fetch_sub(*accounted - now, Ordering::Relaxed);
        }
        *accounted = now;
    }

    /// Heap bytes of the live VMs, as last reported.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The budget, in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Whether a new VM must wait.
    pub fn exhausted(&self) -> bool {
        self.used() >= self.limit
    }
}
