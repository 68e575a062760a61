//! Wall-clock time as the rest of Meshplay stores and shows it: Unix time,
//! in milliseconds (records, catalogue revisions, timers, filters'
//! `now_ms`) or seconds (scripts' `time.now()`). A clock set before 1970
//! reads 0.
//!
//! A plugin's tests move time ([`freeze`], [`advance`]): `meshplay test`
//! runs its master and worker in one process, so one process-wide
//! setting moves both of them, the timers a test advances past and the
//! `time.now()` its handler reads. Nothing else sets it; a process that
//! never does pays one atomic load per reading.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// [`FROZEN_AT`] when time flows.
const FLOWING: i64 = i64::MIN;
/// The reading of a frozen clock, or [`FLOWING`].
static FROZEN_AT: AtomicI64 = AtomicI64::new(FLOWING);
/// Added to the system clock while time flows (ms).
static OFFSET_MS: AtomicI64 = AtomicI64::new(0);

/// Milliseconds since the Unix epoch.
pub fn unix_millis() -> i64 {
    match FROZEN_AT.load(Ordering::Relaxed) {
        FLOWING => {
            (since_epoch().as_millis() as i64).saturating_add(OFFSET_MS.load(Ordering::Relaxed))
        }
        at => at,
    }
}

/// Seconds since the Unix epoch, with the fraction.
pub fn unix_seconds() -> f64 {
    match FROZEN_AT.load(Ordering::Relaxed) {
        FLOWING => since_epoch().as_secs_f64() + OFFSET_MS.load(Ordering::Relaxed) as f64 / 1000.0,
        at => at as f64 / 1000.0,
    }
}

/// Stops the clock at `at_ms` (Unix ms): every reading is `at_ms` until
/// [`advance`] or [`flow`].
pub fn freeze(at_ms: i64) {
    FROZEN_AT.store(at_ms.max(0), Ordering::Relaxed);
}

/// Moves the clock `ms` forward, frozen or not; returns the new reading.
pub fn advance(ms: i64) -> i64 {
    match FROZEN_AT.load(Ordering::Relaxed) {
        FLOWING => {
            OFFSET_MS.fetch_add(ms, Ordering::Relaxed);
        }
        at => FROZEN_AT.store(at.saturating_add(ms), Ordering::Relaxed),
    }
    unix_millis()
}

/// Back to the system clock, neither frozen nor moved.
pub fn flow() {
    FROZEN_AT.store(FLOWING, Ordering::Relaxed);
    OFFSET_MS.store(0, Ordering::Relaxed);
}

fn since_epoch() -> std::time::Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn both_units_read_the_same_clock() {
        let ms = super::unix_millis();
        let s = super::unix_seconds();
        assert!(ms > 1_700_000_000_000, "{ms}");
        assert!((s * 1000.0 - ms as f64).abs() < 5_000.0);
    }
}
