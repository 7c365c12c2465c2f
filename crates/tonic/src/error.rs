//! The crate's one error type.

use std::path::PathBuf;

use omnipaxos::util::NodeId;

/// Everything that can go wrong when building or running the transport.
///
/// Nothing here is raised on the hot path: a bad inbound message is refused
/// with a gRPC status and counted in [`TransportStats`](crate::TransportStats),
/// and a lost outbound batch is counted, never returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A [`TransportConfig`](crate::TransportConfig) setting is out of range.
    #[error("invalid transport configuration: {0}")]
    InvalidConfig(String),

    /// A peer address cannot be turned into a gRPC endpoint.
    #[error("invalid address {address:?} for peer node {node}: {reason}")]
    InvalidAddress {
        /// The peer.
        node: NodeId,
        /// The address as given.
        address: String,
        /// Why it was refused.
        reason: String,
    },

    /// A TLS file could not be read.
    #[error("cannot read the TLS {what} file {}: {source}", path.display())]
    TlsFile {
        /// Which file: `CA certificate`, `certificate` or `private key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A TLS file was read but does not hold what it must.
    #[error("the TLS {what} in {origin} is unusable: {reason}")]
    TlsPem {
        /// Which file: `CA certificate`, `certificate` or `private key`.
        what: &'static str,
        /// Where it came from: the file path, or `memory` for PEM given as bytes.
        origin: String,
        /// What is wrong with it.
        reason: String,
    },

    /// This node's own certificate does not carry the `node-<id>` DNS name
    /// its peers will check.
    #[error(
        "the TLS certificate does not name this node: peers expect a DNS subject alternative \
         name {expected:?}"
    )]
    TlsIdentity {
        /// The name the certificate must carry.
        expected: String,
    },

    /// tonic refused a TLS or endpoint setting.
    #[error("transport setup failed: {0}")]
    Setup(#[source] tonic::transport::Error),

    /// The listener's address could not be read.
    #[error("cannot read the listener's local address: {0}")]
    Listener(#[source] std::io::Error),

    /// The peer server stopped with an error.
    #[error("the peer server failed: {0}")]
    Server(#[source] tonic::transport::Error),

    /// The transport must be started from inside a tokio runtime.
    #[error("the transport must be started inside a tokio runtime")]
    NoRuntime,

    /// A frame is empty (it must start with a format byte).
    #[error("empty frame: a frame starts with its format byte")]
    EmptyFrame,

    /// A frame was written in a format this build does not read.
    #[error("frame format {found} is not supported (this build reads format {supported})")]
    UnsupportedFrameFormat {
        /// The format byte found.
        found: u8,
        /// The format this build writes and reads.
        supported: u8,
    },

    /// A frame's payload is not a valid encoding of a message batch.
    #[error("malformed frame: {0}")]
    MalformedFrame(String),

    /// A message batch could not be encoded.
    #[error("cannot encode a message: {0}")]
    Encode(String),
}
