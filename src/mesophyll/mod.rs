//! Mesophyll: the protocol between the master and its workers, and nothing
//! else (it knows neither Luau, nor WASM, nor the store).
//!
//! - [`message`]: the frames, master -> worker and worker -> master;
//! - [`codec`]: MessagePack encoding with a maximum frame size;
//! - [`correlation`]: request ids matched to waiting callers, with deadlines;
//! - [`hub`]: the master's side (WebSocket server, auth, liveness);
//! - [`client`]: the worker's side (connect, reconnect, heartbeat);
//! - [`backoff`]: the jittered exponential backoff both sides use;
//! - [`db`]: the DB endpoints' operations and answers;
//! - [`db_client`]: the worker's HTTP/2 client for them.

pub mod backoff;
pub mod client;
pub mod codec;
pub mod correlation;
pub mod db;
pub mod db_client;
pub mod hub;
pub mod message;
