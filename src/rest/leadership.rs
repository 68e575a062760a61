//! What `/api/v1/status` says of leadership when masters share one
//! PostgreSQL (`serve --standby`): which master leads, with which epoch,
//! and which stand by.

use serde::{Deserialize, Serialize};

/// One master of the set, as the masters' table has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct MasterSeen {
    /// Its id (host, process, a random part).
    pub id: String,
    /// Where its API listens.
    pub api_addr: String,
    /// Where its hub listens.
    pub mesophyll_addr: String,
    /// Whether it holds the lease.
    pub leads: bool,
    /// How long ago it last spoke to the database, in milliseconds.
    pub seen_ms_ago: i64,
}

/// Leadership, seen from the master that answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct LeadershipStatus {
    /// `leader` or `standby`: this master's part.
    pub role: String,
    /// This master's id.
    pub id: String,
    /// The lease's epoch as this master knows it (0: nobody leads).
    pub epoch: i64,
    /// The leader's API address, when one leads.
    pub leader_api_addr: Option<String>,
    /// Every master seen lately, the leader first.
    pub masters: Vec<MasterSeen>,
}
