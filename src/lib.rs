//! Meshplay: a master/worker plugin host.
//!
//! The crate is built in floors; each imports only the floors below it.
//!
//! 1. **Protocol and vocabulary** (no runtime of tenant code):
//!    [`mesophyll`], the master <-> worker protocol (messages, codec,
//!    correlation, the hub and the worker's uplink, the DB endpoints'
//!    operations); [`rest`], the REST API's bodies; [`datadir`], where a
//!    running master says where it is; [`client`], the typed REST client;
//!    [`tls`], TLS for every client connection; [`wire`], the WebSocket
//!    plumbing the protocol and the client API share (batched writes,
//!    backoff); [`hostname`](mod@hostname), this machine's name.
//! 2. **Catalogue**, beside the protocol: [`catalogue`], what both sides
//!    know of plugins and filters (manifests, names, the Luau compile check,
//!    the filter ABI check).
//! 3. **Master and worker**, above and apart (they meet only through the
//!    protocol): [`master`] (supervisor, shards, store, catalogue, REST API)
//!    and [`worker`] (tenant VMs, the filter runtime).
//! 4. **Command line** on top: [`cli`], with [`author`] (the plugin
//!    author's loop: a master and a worker in one process) and
//!    [`bench`](mod@bench), which drive all of the above.
//!
//! With `--no-default-features --features client`, only floor 1 builds:
//! an application gets the REST client without wasmtime, mlua or sled.
//!
//! `docs/architecture.md` tells how the processes divide the work and how
//! an event travels; the README's tour shows it running.
//!
//! Modules:
//!
//! - [`causes`]: how errors are worded for people: an error and every
//!   cause behind it;
//! - [`clock`]: wall-clock time as the rest of Meshplay stores and shows
//!   it;
//! - `fixtures`: the repository's example filters and misbehaving modules,
//!   for unit tests (`.wat` fixtures are assembled on the fly);
//! - `http`: one HTTP exchange as both of our HTTP clients make it;
//! - `uri`: percent-encoding of one URI component (a path segment or a
//!   query value), shared by the REST client and the worker's DB client.

// Every public item says what it is and how it fails; what is public only
// to its neighbours says so.
#![warn(missing_docs, unreachable_pub)]

#[cfg(feature = "server")]
pub mod author;
#[cfg(feature = "server")]
pub mod bench;
#[cfg(feature = "catalogue")]
pub mod catalogue;
pub mod causes;
#[cfg(feature = "server")]
pub mod cli;
pub mod client;
pub mod clock;
pub mod datadir;
#[cfg(test)]
mod fixtures;
#[cfg(feature = "server")]
pub mod hostname;
mod http;
#[cfg(feature = "server")]
pub mod master;
pub mod mesophyll;
pub mod rest;
pub mod tls;
mod uri;
pub mod wire;
#[cfg(feature = "server")]
pub mod worker;
