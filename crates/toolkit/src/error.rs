//! The crate's one error type.

use std::path::PathBuf;

use crate::storage::StorageIdentity;

/// Everything that can go wrong in this crate.
///
/// OmniPaxos panics on any storage error, so every variant here means "stop
/// this node and tell the operator why": none of them is expected in normal
/// operation. The type is `Send + Sync + 'static`, so it boxes into the
/// `Box<dyn std::error::Error>` that [`omnipaxos::storage::Storage`] returns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A persisted record failed its length, checksum or payload check, or a
    /// record that must exist is missing. The node must not start from it.
    #[error("corrupt {what}: {reason}")]
    Corrupt {
        /// Which record, e.g. `meta/promise` or `log entry 17`.
        what: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A record was written by a newer (or unknown) format version.
    #[error(
        "{what} has record format version {found}, this build reads only version {supported}; \
         run a build that understands version {found}"
    )]
    UnsupportedFormat {
        /// Which record.
        what: String,
        /// The version byte found on disk.
        found: u8,
        /// The version this build writes and reads.
        supported: u8,
    },

    /// A value could not be serialized; nothing was written.
    #[error("cannot encode {what}: {reason}")]
    Encode {
        /// Which record.
        what: String,
        /// The serializer's message.
        reason: String,
    },

    /// A write would break the log's structure (a gap, a rewrite of trimmed
    /// entries, a compacted index past the end of the log). Nothing was
    /// written. OmniPaxos never issues such a write; it means a caller bug.
    #[error("invalid storage operation: {reason}")]
    InvalidOperation {
        /// Why the write was refused.
        reason: String,
    },

    /// Another process, or another open storage in this process, holds the
    /// directory.
    #[error(
        "storage directory {} is in use: another process (or another open storage in this \
         process) holds its lock file; stop it before opening the directory again",
        path.display()
    )]
    Locked {
        /// The storage directory.
        path: PathBuf,
    },

    /// The directory belongs to another cluster or another node.
    #[error(
        "storage directory {} belongs to {found}, but this node is {expected}; refusing to \
         open it (wrong --data-dir?)",
        path.display()
    )]
    ForeignDirectory {
        /// The storage directory.
        path: PathBuf,
        /// The identity the caller asked for.
        expected: StorageIdentity,
        /// The identity recorded in the directory.
        found: StorageIdentity,
    },

    /// The directory is missing or empty, and the open was one that may not
    /// create a storage (`RocksdbStorage::open_existing`).
    #[error(
        "storage directory {} holds no storage (it is missing or empty), and this open may not \
         create one",
        path.display()
    )]
    NotInitialized {
        /// The storage directory.
        path: PathBuf,
    },

    /// The directory holds something that is not a tsoracle-paxos storage.
    #[error("{} is not a tsoracle-paxos storage directory: {reason}", path.display())]
    NotStorageDirectory {
        /// The directory.
        path: PathBuf,
        /// What was found instead.
        reason: String,
    },

    /// A file-system operation outside RocksDB failed.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// RocksDB reported an error.
    #[cfg(feature = "rocksdb")]
    #[error("RocksDB {operation} failed: {source}")]
    Rocksdb {
        /// What was being done, e.g. `write`.
        operation: &'static str,
        /// The underlying error.
        #[source]
        source: rocksdb::Error,
    },

    /// The operating system could not supply random bytes for a new data
    /// directory's instance id.
    #[error("cannot draw a random instance id: {0}")]
    NoRandomness(String),

    /// A runner or transport setting is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// The consensus thread could not be started.
    #[error("cannot start the consensus thread ({what}): {source}")]
    Thread {
        /// Which step failed.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The runner was shut down; nothing more can be proposed to it.
    #[error("the consensus runner has stopped")]
    RunnerStopped,

    /// The runner stopped on an error or a panic of its OmniPaxos instance
    /// (OmniPaxos panics on storage errors). The node must not go on serving.
    #[error("the consensus runner failed: {0}")]
    RunnerFailed(String),

    /// The decided-entry hook refused the log (for example, state that can
    /// no longer be rebuilt); the runner stops.
    #[error("the decided-entry hook failed: {0}")]
    Hook(String),

    /// The configuration is stopped or being replaced (a StopSign is
    /// pending or decided); a new configuration must take the proposal.
    #[error(
        "the OmniPaxos configuration was ended by a StopSign (accepted or decided); it takes \
         no more proposals"
    )]
    ConfigurationStopped,

    /// [`Runner::reconfigure`](crate::Runner::reconfigure) was asked for a
    /// StopSign that the inbox's
    /// [`StopSignAdmission`](crate::StopSignAdmission) does not admit: the
    /// host has not agreed on that next configuration.
    #[error(
        "no agreed membership change names configuration {configuration} with nodes \
         {nodes:?}; agree on the change first"
    )]
    ChangeNotAgreed {
        /// The configuration id asked for.
        configuration: u32,
        /// Its nodes.
        nodes: Vec<u64>,
    },

    /// [`Runner::hand_over`](crate::Runner::hand_over) was asked on a node
    /// that is not the accept-phase leader, or for a successor that is not
    /// another member.
    #[error(
        "cannot hand leadership over{}: this node is not the leader, the successor is not \
         another member, or no peer granted a lease round to choose one from",
        to.map_or_else(String::new, |to| format!(" to node {to}"))
    )]
    NotLeader {
        /// The successor asked for or chosen, if any.
        to: Option<u64>,
    },

    /// [`Runner::try_propose`](crate::Runner::try_propose) found the proposal
    /// queue full: the node is overloaded; retry later.
    #[error("the proposal queue is full ({capacity} proposals waiting)")]
    ProposalQueueFull {
        /// The queue's capacity.
        capacity: usize,
    },
}

impl Error {
    pub(crate) fn corrupt(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            what: what.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        Error::InvalidOperation {
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_is_send_sync_and_boxes_into_omnipaxos_result() {
        fn assert_bounds<E: std::error::Error + Send + Sync + 'static>() {}
        assert_bounds::<Error>();
        let boxed: Box<dyn std::error::Error> = Box::new(Error::invalid("x"));
        assert!(boxed.to_string().contains("invalid storage operation"));
    }
}
