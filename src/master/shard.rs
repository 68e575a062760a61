//! Which worker owns a tenant.
//!
//! A tenant `{type, id}` belongs to worker
//! `jump_consistent_hash(fnv1a64("type:id"), N)`:
//!
//! - **FNV-1a, 64 bit** (offset basis `0xcbf29ce484222325`, prime
//!   `0x100000001b3`) over the UTF-8 bytes of `type`, a `:` and `id`. It is
//!   tiny, has no seed, and any other tool (a shell script, a dashboard) can
//!   reproduce it exactly, which matters more here than resistance to crafted
//!   keys: a tenant cannot choose its own id.
//! - **Jump consistent hash** (Lamping and Veach, 2014) maps that key to one of
//!   N buckets so that growing N to N+1 moves only about 1/(N+1) of tenants,
//!   all of them onto the new worker.
//!
//! The master routes with this function and the DB endpoints use the very
//! same one to decide what a worker may read, so the two can never disagree.

use crate::mesophyll::message::Tenant;

/// FNV-1a, 64 bit, of `type:id`: the documented key of a tenant.
pub fn tenant_key(tenant: &Tenant) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for b in tenant
        .kind
        .bytes()
        .chain(std::iter::once(b':'))
        .chain(tenant.id.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(PRIME);
    }
    h
}

/// Lamping and Veach's jump consistent hash: a bucket in `0..buckets`.
///
/// `buckets` must be at least 1; 0 is treated as 1 so that the function is
/// total.
pub fn jump_consistent_hash(mut key: u64, buckets: u32) -> u32 {
    let buckets = i64::from(buckets.max(1));
    let (mut b, mut j): (i64, i64) = (-1, 0);
    while j < buckets {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as u32
}

/// The worker that owns `tenant` when there are `workers` workers.
pub fn worker_for(tenant: &Tenant, workers: u32) -> u32 {
    jump_consistent_hash(tenant_key(tenant), workers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenants(n: usize) -> Vec<Tenant> {
        (0..n)
            .map(|i| Tenant::new(["user", "guild", "org"][i % 3], i.to_string()))
            .collect()
    }

    #[test]
    fn the_key_is_fnv1a_of_type_colon_id() {
        // Values from an independent implementation (Python, 2026-11-24).
        assert_eq!(tenant_key(&Tenant::new("a", "b")), 0xe661_9119_04a0_1160);
    }

    #[test]
    fn known_assignments_do_not_change_between_builds() {
        // Pinned (from the same independent implementation) so that a change of hash cannot slip in unnoticed: it would
        // move every tenant's data to another worker.
        let got: Vec<u32> = ["1", "2", "3", "42", "alice"]
            .iter()
            .map(|id| worker_for(&Tenant::new("user", *id), 8))
            .collect();
        assert_eq!(got, PINNED);
    }
    const PINNED: [u32; 5] = [5, 7, 6, 1, 2];

    #[test]
    fn every_bucket_is_in_range_and_used() {
        for n in 1..=16 {
            let mut seen = vec![0usize; n as usize];
            for t in tenants(4000) {
                let w = worker_for(&t, n);
                assert!(w < n);
                seen[w as usize] += 1;
            }
            // Roughly even: no bucket below half its fair share.
            let fair = 4000 / n as usize;
            assert!(seen.iter().all(|&c| c > fair / 2), "n={n}: {seen:?}");
        }
    }

    #[test]
    fn growing_by_one_moves_about_one_in_n_plus_one_and_only_to_the_new_worker() {
        let all = tenants(20_000);
        for n in 1..=12u32 {
            let mut moved = 0;
            for t in &all {
                let before = worker_for(t, n);
                let after = worker_for(t, n + 1);
                if before != after {
                    assert_eq!(after, n, "a moved tenant lands on the new worker");
                    moved += 1;
                }
            }
            let expected = all.len() as f64 / f64::from(n + 1);
            let ratio = f64::from(moved) / expected;
            assert!(
                (0.9..1.1).contains(&ratio),
                "n={n}: moved {moved}, expected ~{expected}"
            );
        }
    }

    #[test]
    fn zero_workers_is_treated_as_one() {
        assert_eq!(worker_for(&Tenant::new("a", "b"), 0), 0);
    }
}
