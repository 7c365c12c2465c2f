//! The node's one error type. Every variant prints as one line that says
//! what is wrong and, where it helps, what to do.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Why the node stopped (or never started).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A missing, malformed or inconsistent setting.
    #[error("configuration: {0}")]
    Config(String),
    /// A listen address could not be bound.
    #[error("cannot listen on {addr} for {what}: {reason}")]
    Bind {
        /// What was to listen there (the client service, the peer
        /// transport, the metrics endpoint).
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why it could not be bound.
        reason: String,
    },
    /// TLS files could not be read or do not fit together.
    #[error("TLS: {0}")]
    Tls(String),
    /// The data directory could not be opened (locked, another node's or
    /// cluster's, corrupt).
    #[error("data directory {}: {reason}", dir.display())]
    DataDir {
        /// The node's data directory.
        dir: PathBuf,
        /// Why it could not be used.
        reason: String,
    },
    /// Starting or running a component failed.
    #[error("{what}: {reason}")]
    Runtime {
        /// The component.
        what: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// A client command failed.
    #[error("{0}")]
    Client(String),
    /// A membership change removed this node: it left the cluster for good
    /// (not a failure; `serve` exits 0). Its data directory is no longer
    /// needed.
    #[error(
        "this node was removed from the cluster by a membership change (the next configuration, \
         {configuration}, does not list it); it stops. Its data directory is no longer needed; \
         to bring the machine back, add it as a new member with an empty directory"
    )]
    Removed {
        /// The configuration that no longer lists it.
        configuration: u32,
    },
}

impl Error {
    pub(crate) fn runtime(what: &'static str, reason: impl std::fmt::Display) -> Self {
        Self::Runtime {
            what,
            reason: reason.to_string(),
        }
    }
}
