//! Bodies of the schedules and timers routes
//! (`/api/v1/tenants/{type}/{id}/schedules[/{name}]`, `.../timers`).

use crate::mesophyll::timers::{PendingTimer, Schedule};
use serde::{Deserialize, Serialize};

/// `PUT /api/v1/tenants/{type}/{id}/schedules/{name}`: run `event` with
/// `data` each time `cron` matches in `timezone` (UTC when absent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct SchedulePut {
    /// Five fields, or six with seconds first.
    pub cron: String,
    /// The event each run dispatches.
    pub event: String,
    /// Its data.
    #[serde(default)]
    pub data: serde_json::Value,
    /// An IANA zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

/// `GET /api/v1/tenants/{type}/{id}/schedules`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct ScheduleList {
    /// By name.
    pub schedules: Vec<Schedule>,
}

/// `GET /api/v1/tenants/{type}/{id}/timers`: pending timers, the first
/// 1,000 by id (schedules' next runs among them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct TimerList {
    /// Pending timers.
    pub timers: Vec<PendingTimer>,
}
