//! When a schedule runs: its cron pattern (croner: five fields, or six with
//! seconds first) read in its zone (chrono-tz's IANA names), as Unix
//! milliseconds.
//!
//! A schedule is always asked for its next run *after now*, never after its
//! last slot: a master that was down for an hour runs an every-minute
//! schedule once when it is back (the overdue run already in the store),
//! then at the next minute, rather than sixty times.

use crate::mesophyll::timers::ScheduleSpec;
use chrono::{TimeZone, Utc};
use chrono_tz::Tz;
use std::str::FromStr;

/// A schedule's pattern and zone, parsed.
#[derive(Debug, Clone)]
pub struct Cadence {
    cron: croner::Cron,
    zone: Tz,
}

/// Why a pattern or a zone is refused (the API's `bad_request`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CadenceError {
    /// The pattern does not parse.
    #[error("cron pattern {pattern:?}: {reason}")]
    Pattern {
        /// As given.
        pattern: String,
        /// croner's word.
        reason: String,
    },
    /// The zone is not an IANA name.
    #[error("time zone {0:?} is not an IANA name such as \"Europe/Stockholm\" or \"UTC\"")]
    Zone(String),
    /// The pattern never matches (`0 0 31 2 *`).
    #[error("cron pattern {0:?} never matches")]
    Never(String),
}

impl Cadence {
    /// Reads `spec`'s pattern and zone; checks that it runs at least once
    /// after `now_ms`.
    pub fn of(spec: &ScheduleSpec, now_ms: i64) -> Result<Cadence, CadenceError> {
        let cron = croner::Cron::from_str(&spec.cron).map_err(|e| CadenceError::Pattern {
            pattern: spec.cron.clone(),
            reason: e.to_string(),
        })?;
        let zone =
            Tz::from_str(&spec.timezone).map_err(|_| CadenceError::Zone(spec.timezone.clone()))?;
        let cadence = Cadence { cron, zone };
        match cadence.next_after(now_ms) {
            Some(_) => Ok(cadence),
            None => Err(CadenceError::Never(spec.cron.clone())),
        }
    }

    /// The first match strictly after `ms`, or `None` when there is none
    /// (within croner's search horizon).
    pub fn next_after(&self, ms: i64) -> Option<i64> {
        let start = Utc
            .timestamp_millis_opt(ms)
            .single()?
            .with_timezone(&self.zone);
        let next = self.cron.find_next_occurrence(&start, false).ok()?;
        Some(next.timestamp_millis())
    }
}

/// The next run of `spec` after `now_ms`, for a spec already accepted
/// once (`None` when it no longer parses or never matches again).
pub fn next_run(spec: &ScheduleSpec, now_ms: i64) -> Option<i64> {
    Cadence::of(spec, now_ms).ok()?.next_after(now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesophyll::packed::Packed;

    fn spec(cron: &str, zone: &str) -> ScheduleSpec {
        ScheduleSpec {
            name: "s".into(),
            cron: cron.into(),
            event: "e".into(),
            data: Packed::nil(),
            timezone: zone.into(),
        }
    }

    fn ms(rfc3339: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(rfc3339)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn weekdays_at_nine_in_utc_skip_the_weekend() {
        // Friday 2026-12-04 10:00 UTC -> Monday 2026-12-07 09:00.
        let c = Cadence::of(&spec("0 9 * * 1-5", "UTC"), 0).unwrap();
        assert_eq!(
            c.next_after(ms("2026-12-04T10:00:00Z")),
            Some(ms("2026-12-07T09:00:00Z"))
        );
    }

    #[test]
    fn a_zone_moves_the_hour_and_follows_summer_time() {
        let c = Cadence::of(&spec("0 9 * * *", "Europe/Stockholm"), 0).unwrap();
        // Winter: UTC+1.
        assert_eq!(
            c.next_after(ms("2026-12-06T00:00:00Z")),
            Some(ms("2026-12-06T08:00:00Z"))
        );
        // Summer: UTC+2.
        assert_eq!(
            c.next_after(ms("2026-07-01T00:00:00Z")),
            Some(ms("2026-07-01T07:00:00Z"))
        );
    }

    #[test]
    fn six_fields_run_by_the_second() {
        let c = Cadence::of(&spec("*/2 * * * * *", "UTC"), 0).unwrap();
        assert_eq!(c.next_after(1_000), Some(2_000));
        assert_eq!(c.next_after(2_000), Some(4_000));
    }

    #[test]
    fn the_next_run_is_after_now_not_after_the_missed_slots() {
        // Down from 10:00 to 10:59:30: the next minute is 11:00, once.
        let every_minute = spec("* * * * *", "UTC");
        assert_eq!(
            next_run(&every_minute, ms("2026-12-06T10:59:30Z")),
            Some(ms("2026-12-06T11:00:00Z"))
        );
    }

    #[test]
    fn bad_patterns_zones_and_impossible_dates_are_named() {
        assert!(matches!(
            Cadence::of(&spec("61 * * * *", "UTC"), 0),
            Err(CadenceError::Pattern { .. })
        ));
        assert!(matches!(
            Cadence::of(&spec("* * * * *", "Mars/Olympus"), 0),
            Err(CadenceError::Zone(_))
        ));
        assert!(matches!(
            Cadence::of(&spec("0 0 31 2 *", "UTC"), 0),
            Err(CadenceError::Never(_))
        ));
    }
}
