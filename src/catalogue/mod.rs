//! The catalogue: what the master and the workers both know of plugins and
//! filters, and nothing of how either runs them.
//!
//! It sits beside [`crate::mesophyll`], below the master and the worker,
//! which both use it: the master checks an upload here before it accepts
//! it, and a worker builds what it runs from what passed the same checks.
//!
//! - [`name`]: what a plugin or filter may be called;
//! - [`manifest`]: `plugin.toml`, its fields and their defaults;
//! - [`allowed_host`]: the manifest's `allowed_hosts` and the URLs
//!   `http.fetch` is handed;
//! - [`plugin`]: a plugin bundle checked and compiled to Luau bytecode;
//! - [`folder`]: plugin folders and `.wasm` files read from disk;
//! - [`filter`]: a WebAssembly module checked against the filter ABI, and
//!   its hash;
//! - [`proxy_abi`]: what a proxy-wasm 0.2.1 module may import and must
//!   export;
//! - [`abi`]: what a filter is handed and what it answers;
//! - [`subject`]: NATS subjects and the manifest's `publishes` patterns.
//!
//! The crate's `catalogue` feature builds this layer without the runtime
//! (all but the module check, which needs wasmtime and comes with
//! `server`): the fuzz targets use it so.
//!
//! Everything here is pure checking: no VM is started, no instance is made,
//! no thread is spawned.

pub mod abi;
pub mod allowed_host;
pub mod filter;
pub mod folder;
pub mod manifest;
pub mod name;
pub mod plugin;
#[cfg(feature = "server")]
pub mod proxy_abi;
pub mod subject;
