//! What a worker loads from the master through the DB endpoints before
//! and after each connection (the catalogue, the tenant states, the plugin
//! variables), retried until a master answers: with several masters, a
//! call that finds no leader moves on to the next one.

use super::LOAD_DEADLINE;
use super::services::Services;
use crate::mesophyll::addresses::Addresses;
use crate::mesophyll::db_client::{DbClient, DbClientError};
use crate::mesophyll::message::{ErrorKind, RemoteError};
use crate::mesophyll::uplink::UplinkError;
use crate::wire::backoff::Backoff;

/// Calls `load` until it succeeds, with backoff; refused credentials are
/// fatal.
pub(super) async fn retry<T, F, Fut>(
    what: &str,
    masters: &Addresses,
    mut load: F,
) -> Result<T, UplinkError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, DbClientError>>,
{
    let mut backoff = Backoff::reconnect();
    loop {
        let tried = masters.current();
        match load().await {
            Ok(v) => return Ok(v),
            Err(DbClientError::Refused(status)) => return Err(UplinkError::Refused(status)),
            Err(e) => {
                if matches!(e, DbClientError::NotLeader(_) | DbClientError::Transport(_)) {
                    // Another master may lead: the next call asks it.
                    masters.next_after(&tried);
                }
                let delay = backoff.next_delay();
                tracing::warn!(?delay, master = %tried, "cannot load {what} yet: {e}");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Takes the master's plugin variables for this worker's shard.
pub(super) async fn load_vars(db: &DbClient, services: &Services) -> Result<(), RemoteError> {
    match db.vars(LOAD_DEADLINE).await {
        Ok(values) => {
            services.vars.replace(values);
            Ok(())
        }
        Err(e) => {
            tracing::error!("cannot load the plugin variables: {e}");
            Err(RemoteError::new(
                ErrorKind::Unavailable,
                format!("cannot load the plugin variables: {e}"),
            ))
        }
    }
}
