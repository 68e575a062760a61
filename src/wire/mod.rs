//! Wire plumbing that the protocol and the client API share, and that is
//! not the protocol itself: how a WebSocket's queued frames are written
//! (in batches, one flush each) and how a connection is tried again (a
//! jittered exponential backoff). It sits on floor 1 beside
//! [`crate::mesophyll`], which uses it, as do the binary client API's
//! client and server and the master's supervisor.
//!
//! - [`backoff`]: the jittered exponential backoff every reconnecting
//!   side uses;
//! - [`writer`]: queued frames written in batches, one flush each.

#[cfg(feature = "server")]
pub mod backoff;
#[cfg(feature = "client")]
pub mod writer;
