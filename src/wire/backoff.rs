//! Exponential backoff with jitter, shared by the worker's reconnect loop and
//! the master's restart loop.
//!
//! Delays double from `initial` up to `max`, each drawn uniformly from the
//! upper half of the current step ("equal jitter"), so that a fleet of
//! workers that lost the master at the same instant does not reconnect in
//! lock-step, yet no delay collapses to zero. [`Backoff::reset`] returns to
//! the first step once a connection (or a process) has proven healthy.

use std::time::Duration;

/// Backoff state. Cheap to copy; not shared between tasks.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// A backoff from `initial` doubling up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            current: initial,
        }
    }

    /// The defaults of DESIGN.md: about 100 ms, up to 10 s.
    pub fn reconnect() -> Self {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(10))
    }

    /// How long to wait before asking again when a standby answered:
    /// about 250 ms (the standbys' own poll for the lease), jittered.
    pub fn standby_poll() -> Duration {
        Duration::from_millis(150 + rand::random_range(0..=200))
    }

    /// The next delay to wait; advances the step.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.current;
        self.current = (self.current * 2).min(self.max);
        let half = step / 2;
        let jitter_ms = rand::random_range(0..=half.as_millis() as u64);
        half + Duration::from_millis(jitter_ms)
    }

    /// Back to the first step.
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_up_to_the_cap_and_stay_jittered() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let mut steps = vec![];
        for _ in 0..20 {
            steps.push(b.next_delay());
        }
        // Step k lies within [step/2, step] of 100ms * 2^k, capped at 10 s.
        for (k, d) in steps.iter().enumerate() {
            let step = (Duration::from_millis(100) * 2u32.pow(k.min(10) as u32))
                .min(Duration::from_secs(10));
            assert!(*d >= step / 2 && *d <= step, "step {k}: {d:?} vs {step:?}");
        }
        assert!(steps.iter().all(|d| *d <= Duration::from_secs(10)));
        // Jitter: the capped steps are not all equal.
        let capped = &steps[10..];
        assert!(capped.iter().any(|d| *d != capped[0]));
    }

    #[test]
    fn reset_returns_to_the_first_step() {
        let mut b = Backoff::reconnect();
        for _ in 0..10 {
            b.next_delay();
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
