//! `serve --standby` and the lease's timing: a master that shares its
//! PostgreSQL with others and leads only while it holds the lease
//! ([`crate::master::leadership`]).

use crate::master::leadership::LeaseConfig;
use clap::Args;
use std::time::Duration;

/// Standing by for the lease.
#[derive(Debug, Args)]
pub(super) struct StandbyArgs {
    /// Compete for leadership with the other masters on the same
    /// `--store postgres://...`: lead while holding the lease, stand by
    /// (API and hub answering 503 `not_leader`, naming the leader)
    /// otherwise. Every worker then joins (`worker --join`).
    #[arg(long)]
    pub(super) standby: bool,
    /// How long the lease runs from each renewal, in ms.
    #[arg(long, default_value_t = 2000, requires = "standby", value_parser = clap::value_parser!(u64).range(300..=600_000))]
    pub(super) lease_ttl_ms: u64,
    /// How often the leader renews it, in ms (well inside the lease).
    #[arg(long, default_value_t = 1000, requires = "standby", value_parser = clap::value_parser!(u64).range(50..=300_000))]
    pub(super) lease_renew_ms: u64,
    /// How often a standby asks for it, in ms.
    #[arg(long, default_value_t = 250, requires = "standby", value_parser = clap::value_parser!(u64).range(20..=60_000))]
    pub(super) lease_poll_ms: u64,
}

impl StandbyArgs {
    /// The lease's timing, when standing by; an error when the renewal
    /// does not leave room inside the lease.
    pub(super) fn config(&self) -> Result<Option<LeaseConfig>, String> {
        if !self.standby {
            return Ok(None);
        }
        let ttl = Duration::from_millis(self.lease_ttl_ms);
        let renew = Duration::from_millis(self.lease_renew_ms);
        // The leader counts its lease out a tenth sooner than the
        // database, at least 100 ms: a clock that runs a little fast, or
        // a late answer, never lets two masters believe they lead.
        let margin = (ttl / 10).max(Duration::from_millis(100));
        if renew + margin >= ttl {
            return Err(format!(
                "--lease-renew-ms {} leaves no room inside --lease-ttl-ms {}: renew at most \
                 every {} ms",
                self.lease_renew_ms,
                self.lease_ttl_ms,
                (ttl - margin).as_millis().saturating_sub(1)
            ));
        }
        Ok(Some(LeaseConfig {
            ttl,
            renew,
            poll: Duration::from_millis(self.lease_poll_ms),
            margin,
        }))
    }
}
