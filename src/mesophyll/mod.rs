//! Mesophyll: the protocol between the master and its workers, and nothing
//! else (it knows neither Luau, nor WASM, nor the store).
//!
//! - [`message`]: the frames, master -> worker and worker -> master;
//! - [`codec`]: MessagePack encoding with a maximum frame size;
//! - [`packed`]: payloads kept as MessagePack from end to end;
//! - [`answers`]: the answer frames, payloads copied in and out whole;
//! - [`auth`]: how a worker proves who it is;
//! - [`bad_frames`]: undecodable frames, counted and dropped;
//! - [`budget`]: the byte budget of every queue between processes;
//! - [`correlation`]: request ids matched to waiting callers, with deadlines;
//! - [`hub`]: the master's side (WebSocket server, auth, liveness);
//! - [`uplink`]: the worker's side (connect, reconnect, heartbeat);
//! - [`db`]: the DB endpoints' operations and answers;
//! - [`db_client`]: the worker's HTTP/2 client for them;
//! - [`join`]: how a worker from elsewhere gets a slot and a session;
//! - [`addresses`]: the masters a worker or client may talk to, and which
//!   one it talks to now;
//! - [`timers`]: timers and schedules a handler sets, and `event.timer`;
//! - [`webhook`]: the outside request a webhook event carries.
//!
//! The value types ([`message`], [`packed`], [`codec`], [`db`]) build in the crate's
//! `client` feature too; the moving parts only with `server`.

pub mod addresses;
pub mod answers;
#[cfg(feature = "server")]
pub mod auth;
#[cfg(feature = "server")]
pub mod bad_frames;
#[cfg(feature = "server")]
pub mod budget;
pub mod codec;
#[cfg(feature = "server")]
pub mod correlation;
pub mod db;
#[cfg(feature = "server")]
pub mod db_client;
#[cfg(feature = "server")]
pub mod hub;
#[cfg(feature = "server")]
pub mod join;
pub mod message;
pub mod packed;
pub mod timers;
#[cfg(feature = "server")]
pub mod uplink;
pub mod webhook;
