//! Rates of webhook requests, per tenant and per calling address: a token
//! bucket per key, refilled at `per_second`, holding at most twice that.
//!
//! The keys come from outside (any address, any tenant id in a URL), so
//! the map is bounded: past [`MAX_KEYS`] buckets, the full ones (keys that
//! have been quiet long enough to have their whole burst back, which is
//! the same as a fresh bucket) are forgotten; if none is full, the newest
//! key is refused until some are.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// The most keys one limiter remembers.
pub const MAX_KEYS: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// One limiter.
#[derive(Debug)]
pub struct Rate {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Rate {
    /// `per_second` requests a second per key, bursts of twice that.
    pub fn new(per_second: u32) -> Rate {
        let per_second = f64::from(per_second.max(1));
        Rate {
            per_second,
            burst: per_second * 2.0,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request for `key` at `now`; false when it is over its
    /// rate.
    pub fn admit(&self, key: &str, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if !buckets.contains_key(key) && buckets.len() >= MAX_KEYS {
            let (rate, burst) = (self.per_second, self.burst);
            buckets.retain(|_, b| refilled(*b, now, rate, burst) < burst);
            if buckets.len() >= MAX_KEYS {
                return false;
            }
        }
        let b = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        b.tokens = refilled(*b, now, self.per_second, self.burst);
        b.at = now;
        if b.tokens < 1.0 {
            return false;
        }
        b.tokens -= 1.0;
        true
    }
}

fn refilled(b: Bucket, now: Instant, rate: f64, burst: f64) -> f64 {
    let gained = now.saturating_duration_since(b.at).as_secs_f64() * rate;
    (b.tokens + gained).min(burst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_of_twice_the_rate_then_the_rate() {
        let r = Rate::new(5);
        let t = Instant::now();
        assert_eq!((0..12).filter(|_| r.admit("a", t)).count(), 10);
        assert!(r.admit("b", t), "another key has its own bucket");
        let later = t + Duration::from_millis(400);
        assert_eq!((0..5).filter(|_| r.admit("a", later)).count(), 2);
    }

    #[test]
    fn the_map_stays_bounded_and_quiet_keys_make_room() {
        let r = Rate::new(1);
        let t = Instant::now();
        for i in 0..MAX_KEYS {
            assert!(r.admit(&i.to_string(), t));
        }
        assert!(!r.admit("one too many", t), "every bucket is in use");
        let quiet = t + Duration::from_secs(10);
        assert!(r.admit("one too many", quiet));
        assert!(r.buckets.lock().unwrap().len() <= MAX_KEYS);
    }
}
