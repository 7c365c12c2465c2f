//! The test kit's one error type. Every variant prints as one line.

use tsoracle_paxos_testkit::cluster;

/// Why a run stopped (or never started).
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// A missing, malformed or inconsistent flag.
    #[error("configuration: {0}")]
    Config(String),
    /// Starting or running a component failed.
    #[error("{what}: {reason}")]
    Runtime { what: &'static str, reason: String },
    /// A client call failed.
    #[error("{0}")]
    Client(String),
    /// The node processes could not be started, signalled or stopped.
    #[error("cluster: {0}")]
    Cluster(#[from] cluster::Error),
}

impl Error {
    pub(crate) fn runtime(what: &'static str, reason: impl std::fmt::Display) -> Self {
        Self::Runtime {
            what,
            reason: reason.to_string(),
        }
    }
}
