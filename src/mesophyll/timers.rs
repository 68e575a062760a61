//! Timers and schedules on the wire: what a handler asks of the master
//! (`POST /db/timers`, [`TimerRequest`]), what it answers ([`TimerReply`]),
//! and what a handler woken by one finds in `event.timer` ([`TimerInfo`]).
//!
//! A timer is one event, due at a Unix millisecond, for the tenant that set
//! it. A schedule is a named cron pattern per tenant whose next run is a
//! timer like any other ([`TimerInfo::schedule`] names it). The master
//! keeps both in its store and fires them; the REST API and the CLI manage
//! schedules with the same [`ScheduleSpec`].

use crate::mesophyll::message::Tenant;
use crate::mesophyll::packed::Packed;
use serde::{Deserialize, Serialize};

/// The most bytes (MessagePack) a timer's or a schedule's data may hold:
/// it waits in the store, possibly for months, once per pending timer.
pub const MAX_TIMER_DATA_BYTES: usize = 64 * 1024;

/// The longest event or schedule name, in bytes.
pub const MAX_TIMER_NAME_BYTES: usize = 128;

/// How far ahead a timer may be set: a year and a day.
pub const MAX_TIMER_DELAY_MS: i64 = 366 * 24 * 3600 * 1000;

/// The most schedules one tenant may have.
pub const MAX_SCHEDULES_PER_TENANT: usize = 64;

/// The zone a schedule without one reads its pattern in.
pub const UTC: &str = "UTC";

/// What a handler woken by a timer finds in `event.timer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct TimerInfo {
    /// The timer's id, as `timers.after` returned it.
    pub id: u64,
    /// When it was due, Unix milliseconds (the handler runs at or after it).
    pub due_at: i64,
    /// 1 for the first delivery, 2 for the first retry, and so on.
    pub attempt: u32,
    /// The schedule whose run this is, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
}

/// A schedule: every time `cron` matches in `timezone`, the tenant gets
/// `event` with `data`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct ScheduleSpec {
    /// Unique per tenant; putting a name again replaces the schedule.
    pub name: String,
    /// Five fields (minute hour day-of-month month day-of-week), or six
    /// with seconds first.
    pub cron: String,
    /// The event each run dispatches.
    pub event: String,
    /// The event's data.
    #[serde(default)]
    pub data: Packed,
    /// An IANA zone (`Europe/Stockholm`); UTC when absent.
    #[serde(default = "utc")]
    pub timezone: String,
}

fn utc() -> String {
    UTC.to_owned()
}

/// A schedule with its next run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Schedule {
    /// What was put.
    #[serde(flatten)]
    pub spec: ScheduleSpec,
    /// When it runs next, Unix milliseconds.
    pub next_due: i64,
}

/// A pending timer as listed (without its data).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct PendingTimer {
    /// Its id.
    pub id: u64,
    /// The event it dispatches.
    pub event: String,
    /// When it is due, Unix milliseconds.
    pub due_at: i64,
    /// Deliveries tried so far (0 until the first).
    pub attempt: u32,
    /// The schedule it is the next run of, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
}

/// One `POST /db/timers` call: an operation for a tenant of the caller's
/// shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimerRequest {
    /// The tenant whose handler asks.
    pub tenant: Tenant,
    /// What it asks.
    pub op: TimerOp,
}

/// What a handler can ask of its timers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TimerOp {
    /// `timers.after` and `timers.at`: a new timer.
    Set {
        /// The event it dispatches.
        event: String,
        /// The event's data.
        data: Packed,
        /// When.
        when: When,
    },
    /// `timers.cancel`.
    Cancel {
        /// The timer's id.
        id: u64,
    },
    /// `timers.every`: puts a schedule.
    Every(ScheduleSpec),
    /// `timers.unschedule`.
    Unschedule {
        /// The schedule's name.
        name: String,
    },
    /// `timers.list`: the tenant's pending timers and schedules.
    List,
}

/// When a new timer is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum When {
    /// This many milliseconds after the master takes it (`timers.after`:
    /// the master's clock, not the worker's, so that a skew between them
    /// does not move it).
    After(u64),
    /// At this Unix millisecond (`timers.at`; one in the past fires at
    /// once).
    At(i64),
}

/// The answer to a [`TimerOp`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TimerReply {
    /// The timer is in the store.
    Set {
        /// Its id.
        id: u64,
    },
    /// Whether there was such a pending timer (or schedule) to remove.
    Removed(bool),
    /// The schedule is in the store.
    Scheduled(Schedule),
    /// The tenant's pending timers (the first 1,000 by due time) and its
    /// schedules.
    Listed {
        /// Pending timers.
        timers: Vec<PendingTimer>,
        /// Schedules.
        schedules: Vec<Schedule>,
    },
}

/// Why a timer or schedule name is refused, if it is.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_TIMER_NAME_BYTES {
        return Err(format!(
            "{what} must be 1 to {MAX_TIMER_NAME_BYTES} bytes (this one: {})",
            name.len()
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(format!("{what} {name:?} holds a control character"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_schedule_without_a_zone_reads_its_pattern_in_utc() {
        let spec: ScheduleSpec =
            serde_json::from_value(json!({"name": "n", "cron": "* * * * *", "event": "e"}))
                .unwrap();
        assert_eq!(spec.timezone, "UTC");
        assert!(spec.data.is_nil());
    }

    #[test]
    fn names_are_bounded_and_printable() {
        assert!(check_name("x", "daily").is_ok());
        assert!(check_name("x", "").is_err());
        assert!(check_name("x", &"a".repeat(129)).is_err());
        assert!(check_name("x", "a\nb").is_err());
    }

    #[test]
    fn requests_survive_messagepack() {
        let req = TimerRequest {
            tenant: Tenant::new("guild", "1"),
            op: TimerOp::Set {
                event: "remind".into(),
                data: json!({"text": "hi"}).into(),
                when: When::After(5),
            },
        };
        let bytes = rmp_serde::to_vec_named(&req).unwrap();
        assert_eq!(rmp_serde::from_slice::<TimerRequest>(&bytes).unwrap(), req);
    }
}
