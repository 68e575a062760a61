//! The plugin author's loop: start from a template, run one event, test,
//! see the types in an editor, and ship.
//!
//! Everything here runs on the author's machine without a fleet:
//! [`host`] starts a real master and one worker in this process on a
//! scratch store, and the commands drive it through the same REST API an
//! application uses.
//!
//! - [`scaffold`]: `meshplay new plugin|filter`, folders that work as
//!   they are;
//! - [`call`]: `meshplay call DIR EVENT`, one event through a plugin
//!   folder, with what its handler logged;
//! - [`testing`]: `meshplay test`, the `*.test.luau` files beside each
//!   plugin;
//! - [`definitions`]: `meshplay.d.luau`, every global a plugin sees, for
//!   luau-lsp, and `meshplay setup editor`;
//! - [`folders`]: which plugin folders the arguments name, checked;
//! - [`logbook`]: what handlers logged, caught for the author;
//! - [`deploy`]: `meshplay diff` and `meshplay deploy`;
//! - [`dev`]: `meshplay dev`.
//!
//! It sits on the top floor beside the command line: it uses the master
//! and the worker, which never use it.

pub mod call;
pub mod definitions;
pub mod deploy;
pub mod dev;
pub mod folders;
pub mod host;
pub mod logbook;
pub mod scaffold;
pub mod testing;

use crate::catalogue::plugin::PluginError;

/// Why an author's command could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum AuthorError {
    /// The arguments name nothing usable (exit 2).
    #[error("{0}")]
    Usage(String),
    /// A plugin folder does not load: its manifest or its code.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// The local master or its worker could not start or answer.
    #[error("the local host: {0}")]
    Host(String),
    /// Reading or writing files.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl AuthorError {
    fn host(e: impl std::fmt::Display) -> Self {
        AuthorError::Host(e.to_string())
    }
}

impl From<crate::master::MasterError> for AuthorError {
    fn from(e: crate::master::MasterError) -> Self {
        AuthorError::host(e)
    }
}

impl From<crate::client::ApiClientError> for AuthorError {
    fn from(e: crate::client::ApiClientError) -> Self {
        AuthorError::host(e)
    }
}
