//! Where a tenant job's outcome goes: back to a caller in this process,
//! or straight to the master as the answer to its request.

use crate::mesophyll::message::{Packed, RemoteError};
use crate::mesophyll::uplink::Outbox;
use tokio::sync::oneshot;

/// Where a job's outcome goes.
pub enum Reply {
    /// To a caller in this process, awaiting it ([`crate::worker::tenants::Tenants::run`]).
    Caller(oneshot::Sender<Result<Packed, RemoteError>>),
    /// Straight from the tenant's task to the master, as the answer to its
    /// request: no task waits in between. The guard counts the request as
    /// in flight in the worker until the answer is queued.
    Master {
        /// The master's request.
        req_id: u64,
        /// The connection it came on.
        outbox: Outbox,
        /// Dropped once the answer is sent.
        in_flight: Box<dyn Send + Sync>,
    },
}

impl Reply {
    /// Hands `outcome` over; a caller or connection that went away is no
    /// error (the master has failed the request already).
    pub async fn send(self, outcome: Result<Packed, RemoteError>) {
        match self {
            Reply::Caller(tx) => {
                let _ = tx.send(outcome);
            }
            Reply::Master {
                req_id,
                outbox,
                in_flight,
            } => {
                outbox.reply(req_id, outcome).await;
                drop(in_flight);
            }
        }
    }

    /// Like [`Reply::send`], without waiting for room (a refusal).
    pub fn refuse(self, error: RemoteError) {
        match self {
            Reply::Caller(tx) => {
                let _ = tx.send(Err(error));
            }
            Reply::Master { req_id, outbox, .. } => outbox.try_reply(req_id, Err(error)),
        }
    }
}
