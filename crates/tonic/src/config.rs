//! Transport settings and the link metadata keys.

use std::path::PathBuf;

use std::time::Duration;
use tonic::metadata::errors::InvalidMetadataValue;
use tonic::metadata::{MetadataMap, MetadataValue};

use omnipaxos::util::NodeId;
use tsoracle_paxos_toolkit::InstanceId;

use crate::accept::HandshakeLimits;
use crate::error::Error;

/// The version of the link protocol (metadata keys and frame format) this
/// build speaks. A receiver refuses links that announce another version.
///
/// Version 2 carries the leader lease's messages (`Message::Lease`) and
/// nodes keep the lease by grants, not by decided entries. A version-1 node
/// beside a version-2 one could serve while the other still holds a lease,
/// so the two refuse each other: upgrade a cluster from version 1 by
/// stopping every node, then starting them on the new build.
pub const PROTOCOL_VERSION: u32 = 2;

/// Default largest frame payload: 4 MiB (tonic's own default). A message
/// above it (a catch-up snapshot) goes as a transfer in frame-sized chunks,
/// so this is also the memory one chunk takes on either end.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;

/// Default largest single message: 1 GiB, sent in frame-sized chunks (a
/// snapshot of a million dense keys is some tens of MiB).
pub const DEFAULT_MAX_CHUNKED_MESSAGE_BYTES: usize = 1024 * 1024 * 1024;

/// Request metadata keys a sender sets when it opens a link.
pub mod metadata {
    /// The cluster id (printable ASCII).
    pub const CLUSTER_ID: &str = "x-tsoracle-paxos-cluster";
    /// The sender's node id (decimal).
    pub const SENDER: &str = "x-tsoracle-paxos-sender";
    /// The receiver's node id (decimal).
    pub const RECEIVER: &str = "x-tsoracle-paxos-receiver";
    /// The OmniPaxos configuration id (decimal).
    pub const CONFIGURATION_ID: &str = "x-tsoracle-paxos-configuration";
    /// The protocol version (decimal, [`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION)).
    pub const PROTOCOL: &str = "x-tsoracle-paxos-protocol";
    /// The sender's data-directory instance (32 hex digits). Optional: a
    /// sender without one presents none, and is refused once the cluster
    /// registered an instance for it.
    pub const INSTANCE: &str = "x-tsoracle-paxos-instance";
    /// Set (to [`REFUSAL_IMPOSTOR`]) on the status that ends a link whose
    /// sender presented another instance than the registered one.
    pub const REFUSAL: &str = "x-tsoracle-paxos-refusal";
    /// The value of [`REFUSAL`] for an impostor.
    pub const REFUSAL_IMPOSTOR: &str = "impostor";
}

/// Settings shared by the inbound [`PeerService`](crate::PeerService) and the
/// outbound [`TonicSink`](crate::TonicSink) of one node.
///
/// Build it with [`TransportConfig::new`], then adjust fields. A
/// configuration belongs to one OmniPaxos configuration: after a
/// reconfiguration, build a new one with the new `configuration_id` and
/// members (links of the old configuration are then refused).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TransportConfig {
    /// The cluster's id; links from another cluster are refused. Printable
    /// ASCII, 1 to 255 bytes (it travels as gRPC metadata).
    pub cluster_id: String,
    /// This node's OmniPaxos pid.
    pub node_id: NodeId,
    /// The OmniPaxos `configuration_id` this node runs.
    pub configuration_id: u32,
    /// Every node of the configuration (this node may be listed).
    pub peers: Vec<NodeId>,
    /// This node's data-directory instance, presented on every link it
    /// opens (`None`: presents none).
    pub instance: Option<InstanceId>,
    /// Largest frame payload in bytes, both ways. A batch that encodes larger
    /// is split over several frames, and a single message larger than this
    /// travels in chunks of at most this size (see `frame`). tonic's message
    /// size limits are set from it.
    pub max_frame_bytes: usize,
    /// Largest single message, both ways. One above `max_frame_bytes` (a
    /// catch-up snapshot of a large state is one message) is spooled to
    /// `spool_dir` and sent as a resumable transfer in frame-sized chunks. A
    /// larger one is dropped and counted; a receiver spools at most this
    /// much of one unfinished transfer per sender.
    pub max_chunked_message_bytes: usize,
    /// Where transfers of large messages are spooled, on both sides
    /// (anonymous files, gone when the transfer ends or the process exits).
    /// `None`: the system's temporary directory. A node puts them on its data
    /// disk.
    pub spool_dir: Option<PathBuf>,
    /// Outbound queue capacity per peer, in batches (one batch is one runner
    /// round's messages to that peer). When full, new batches are dropped.
    pub queue_capacity: usize,
    /// Deadline of one connection attempt (TCP, TLS and HTTP/2 handshakes).
    pub connect_timeout: Duration,
    /// How long a frame may wait for room on an open link before the link is
    /// declared stuck and reconnected.
    pub send_timeout: Duration,
    /// First reconnection delay; doubles per failure up to `backoff_max`,
    /// with jitter.
    pub backoff_min: Duration,
    /// Longest reconnection delay.
    pub backoff_max: Duration,
    /// HTTP/2 keep-alive ping interval on both sides, so a silently dead
    /// peer is noticed; a ping unanswered for the same time ends the
    /// connection.
    pub keepalive: Duration,
    /// How long a server shutdown waits for open links to close before it
    /// drops their connections.
    pub shutdown_grace: Duration,
    /// Bounds of the TLS handshakes in progress on the peer port.
    pub handshakes: HandshakeLimits,
}

impl TransportConfig {
    /// A configuration with default limits: 4 MiB frames, 1 GiB messages
    /// (as transfers), transfers spooled in the system's temporary
    /// directory, 1024 batches per
    /// peer queue, 1 s connect timeout, 5 s send timeout, backoff from 50 ms
    /// to 2 s, 1 s keep-alive, 1 s shutdown grace, and the default bounds of
    /// TLS handshakes in progress.
    pub fn new(
        cluster_id: impl Into<String>,
        node_id: NodeId,
        configuration_id: u32,
        peers: impl IntoIterator<Item = NodeId>,
    ) -> Self {
        Self {
            cluster_id: cluster_id.into(),
            node_id,
            configuration_id,
            peers: peers.into_iter().collect(),
            instance: None,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_chunked_message_bytes: DEFAULT_MAX_CHUNKED_MESSAGE_BYTES,
            spool_dir: None,
            queue_capacity: 1024,
            connect_timeout: Duration::from_secs(1),
            send_timeout: Duration::from_secs(5),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            keepalive: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(1),
            handshakes: HandshakeLimits::default(),
        }
    }

    /// Checks every setting; the service and the sink call it.
    pub fn validate(&self) -> Result<(), Error> {
        let id = &self.cluster_id;
        let problem = if id.is_empty() || id.len() > 255 {
            Some("cluster_id must be 1 to 255 bytes long".to_owned())
        } else if !id.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            Some(format!("cluster_id {id:?} must be printable ASCII"))
        } else if self.node_id == 0 {
            Some("node_id must not be 0 (OmniPaxos pids start at 1)".to_owned())
        } else if self.members().count() < 2 {
            Some("an OmniPaxos configuration needs at least two nodes".to_owned())
        } else if !self.peers.contains(&self.node_id) {
            Some(format!(
                "peers {:?} must include this node ({})",
                self.peers, self.node_id
            ))
        } else if self.max_frame_bytes < 64 || self.max_frame_bytes > (u32::MAX as usize) / 2 {
            Some("max_frame_bytes must be between 64 bytes and 2 GiB".to_owned())
        } else if self.max_chunked_message_bytes < self.max_frame_bytes {
            Some("max_chunked_message_bytes must be at least max_frame_bytes".to_owned())
        } else if self.queue_capacity == 0 {
            Some("queue_capacity must be at least 1".to_owned())
        } else if [
            self.connect_timeout,
            self.send_timeout,
            self.backoff_min,
            self.keepalive,
            self.shutdown_grace,
        ]
        .iter()
        .any(Duration::is_zero)
        {
            Some("timeouts, keepalive and backoff_min must be longer than zero".to_owned())
        } else if self.backoff_max < self.backoff_min {
            Some("backoff_max must not be below backoff_min".to_owned())
        } else {
            None
        };
        match problem {
            Some(problem) => Err(Error::InvalidConfig(problem)),
            None => Ok(()),
        }
    }

    /// The configuration's distinct members, this node included.
    fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        let mut seen = Vec::new();
        self.peers.iter().copied().filter(move |id| {
            if seen.contains(id) {
                false
            } else {
                seen.push(*id);
                true
            }
        })
    }

    /// tonic's message size limit: the frame limit plus the protobuf framing
    /// of the `payload` field (one tag byte and a length varint).
    pub(crate) fn grpc_message_limit(&self) -> usize {
        self.max_frame_bytes + 16
    }

    /// Sets the request metadata of a link (or a `Held` call) from this
    /// node to `peer`.
    pub(crate) fn set_link_metadata(
        &self,
        peer: NodeId,
        md: &mut MetadataMap,
    ) -> Result<(), InvalidMetadataValue> {
        let values = [
            (metadata::PROTOCOL, PROTOCOL_VERSION.to_string()),
            (metadata::CLUSTER_ID, self.cluster_id.clone()),
            (
                metadata::CONFIGURATION_ID,
                self.configuration_id.to_string(),
            ),
            (metadata::SENDER, self.node_id.to_string()),
            (metadata::RECEIVER, peer.to_string()),
        ];
        let instance = self
            .instance
            .map(|instance| (metadata::INSTANCE, instance.to_string()));
        for (key, value) in values.into_iter().chain(instance) {
            // The cluster id was checked to be printable ASCII; numbers are.
            md.insert(key, MetadataValue::try_from(value)?);
        }
        Ok(())
    }

    /// Where transfers are spooled: `spool_dir`, or the system's temporary
    /// directory.
    pub(crate) fn spool_dir(&self) -> PathBuf {
        self.spool_dir.clone().unwrap_or_else(std::env::temp_dir)
    }
}

/// The DNS subject alternative name a node's certificate carries, and that
/// its peers check: `node-<id>`.
pub fn node_dns_name(node: NodeId) -> String {
    format!("node-{node}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_refuses_bad_settings() {
        let good = TransportConfig::new("c", 1, 1, [1, 2, 3]);
        good.validate().unwrap();
        let mut bad = good.clone();
        bad.cluster_id = "é".into();
        assert!(bad.validate().is_err());
        let bad = TransportConfig::new("c", 1, 1, [1, 1]);
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("two nodes")
        );
        let bad = TransportConfig::new("c", 4, 1, [1, 2, 3]);
        assert!(bad.validate().is_err());
        let mut bad = good.clone();
        bad.queue_capacity = 0;
        assert!(bad.validate().is_err());
        let mut bad = good;
        bad.backoff_max = Duration::from_millis(1);
        assert!(bad.validate().is_err());
    }
}
