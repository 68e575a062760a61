//! Meshplay: a master/worker plugin host.
//!
//! A master process ([`master`]) owns the public REST API and supervises N
//! worker processes ([`worker`]), which run tenant code: Luau adapters. The
//! two talk over Mesophyll ([`mesophyll`]), a WebSocket + MessagePack protocol
//! with heartbeats and request-id correlation. [`api_client`] is a typed
//! client for the REST API, used by the CLI and the examples.
//!
//! `../shared/DESIGN.md` (in the repository's parent) is the contract this
//! crate builds to; the README's tour shows it running.

pub mod api_client;
pub mod bench;
pub mod cli;
pub mod master;
pub mod mesophyll;
pub mod report;
pub mod rest;
mod uri;
pub mod worker;
