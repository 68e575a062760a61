//! Wall-clock time as the rest of Meshplay stores and shows it: Unix time,
//! in milliseconds (records, catalogue revisions, filters' `now_ms`) or
//! seconds (scripts' `time.now()`). A clock set before 1970 reads 0.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn unix_millis() -> i64 {
    since_epoch().as_millis() as i64
}

/// Seconds since the Unix epoch, with the fraction.
pub fn unix_seconds() -> f64 {
    since_epoch().as_secs_f64()
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
