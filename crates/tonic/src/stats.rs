//! Counters of the transport, shared by its tasks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

/// Why the inbound service refused a link or part of one.
///
/// Link-level reasons (metadata, identity) refuse the whole stream before
/// any frame is read; frame- and message-level reasons refuse what they name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefusalReason {
    /// A required request metadata key is absent.
    MissingMetadata,
    /// A metadata value is not what its key requires (not ASCII, not a number).
    GarbledMetadata,
    /// The sender speaks another protocol version.
    UnsupportedProtocol,
    /// The sender belongs to another cluster.
    ForeignCluster,
    /// The sender runs another OmniPaxos configuration.
    ForeignConfiguration,
    /// The link is addressed to another node.
    WrongReceiver,
    /// The sender claims to be this node.
    SenderIsSelf,
    /// The sender is not a member of this configuration.
    UnknownSender,
    /// TLS is on but the client presented no certificate.
    MissingCertificate,
    /// The client certificate does not name the claimed sender (`node-<id>`).
    CertificateMismatch,
    /// A frame is larger than the frame limit (tonic refuses it unread).
    OversizeFrame,
    /// A frame does not decode; the stream is closed.
    GarbledFrame,
    /// A message names a sender other than the link's sender; it is dropped.
    SenderMismatch,
    /// A message is addressed to another node; it is dropped.
    ReceiverMismatch,
    /// The sender presents another data-directory instance than the one
    /// the cluster registered for it (a wiped or replaced directory); the
    /// link is closed with `PERMISSION_DENIED` and the reason.
    Impostor,
}

impl RefusalReason {
    /// Every reason, in counter order.
    pub const ALL: [RefusalReason; 15] = [
        RefusalReason::MissingMetadata,
        RefusalReason::GarbledMetadata,
        RefusalReason::UnsupportedProtocol,
        RefusalReason::ForeignCluster,
        RefusalReason::ForeignConfiguration,
        RefusalReason::WrongReceiver,
        RefusalReason::SenderIsSelf,
        RefusalReason::UnknownSender,
        RefusalReason::MissingCertificate,
        RefusalReason::CertificateMismatch,
        RefusalReason::OversizeFrame,
        RefusalReason::GarbledFrame,
        RefusalReason::SenderMismatch,
        RefusalReason::ReceiverMismatch,
        RefusalReason::Impostor,
    ];

    /// A stable snake_case name, for metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::MissingMetadata => "missing_metadata",
            RefusalReason::GarbledMetadata => "garbled_metadata",
            RefusalReason::UnsupportedProtocol => "unsupported_protocol",
            RefusalReason::ForeignCluster => "foreign_cluster",
            RefusalReason::ForeignConfiguration => "foreign_configuration",
            RefusalReason::WrongReceiver => "wrong_receiver",
            RefusalReason::SenderIsSelf => "sender_is_self",
            RefusalReason::UnknownSender => "unknown_sender",
            RefusalReason::MissingCertificate => "missing_certificate",
            RefusalReason::CertificateMismatch => "certificate_mismatch",
            RefusalReason::OversizeFrame => "oversize_frame",
            RefusalReason::GarbledFrame => "garbled_frame",
            RefusalReason::SenderMismatch => "sender_mismatch",
            RefusalReason::ReceiverMismatch => "receiver_mismatch",
            RefusalReason::Impostor => "impostor",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Why the outbound side dropped messages. Drops are counted in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// The peer's queue was full; the new batch was dropped (Paxos resends).
    QueueFull,
    /// One message alone encodes larger than the frame limit.
    OversizeMessage,
    /// A message could not be encoded.
    EncodeFailed,
    /// The batch was addressed to a node that is not a configured peer.
    UnknownPeer,
    /// The transport was shut down.
    Closed,
    /// The link broke before these messages were handed to it.
    LinkLost,
    /// A catch-up (`AcceptSync`) too large for a frame, replaced by a newer
    /// one for the same peer before it was sent.
    Superseded,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 7] = [
        DropReason::QueueFull,
        DropReason::OversizeMessage,
        DropReason::EncodeFailed,
        DropReason::UnknownPeer,
        DropReason::Closed,
        DropReason::LinkLost,
        DropReason::Superseded,
    ];

    /// A stable snake_case name, for metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::OversizeMessage => "oversize_message",
            DropReason::EncodeFailed => "encode_failed",
            DropReason::UnknownPeer => "unknown_peer",
            DropReason::Closed => "closed",
            DropReason::LinkLost => "link_lost",
            DropReason::Superseded => "superseded",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Counters of one side of the transport (a [`PeerService`](crate::PeerService)
/// or a [`TonicSink`](crate::TonicSink)). All counters only grow.
#[derive(Debug, Default)]
pub struct TransportStats {
    refusals: [AtomicU64; RefusalReason::ALL.len()],
    drops: [AtomicU64; DropReason::ALL.len()],
    links_accepted: AtomicU64,
    links_superseded: AtomicU64,
    frames_in: AtomicU64,
    bytes_in: AtomicU64,
    messages_in: AtomicU64,
    frames_out: AtomicU64,
    bytes_out: AtomicU64,
    messages_out: AtomicU64,
    connects: AtomicU64,
    reconnects: AtomicU64,
    connect_failures: AtomicU64,
    links_failed: AtomicU64,
    /// The reason a peer gave when it refused this node as an impostor
    /// (sink side only; see [`TransportStats::identity_refusal`]).
    identity_refusal: Mutex<Option<String>>,
    chunked_out: AtomicU64,
    transfer_bytes_skipped: AtomicU64,
    transfers_in: AtomicU64,
    transfers_failed_in: AtomicU64,
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl TransportStats {
    /// Why a peer refused this node's links as an impostor (another data
    /// directory than the one the cluster registered for this node id), if
    /// one did: the node cannot take part and should stop with this reason.
    pub fn identity_refusal(&self) -> Option<String> {
        self.identity_refusal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Messages too large for one frame, set apart to go as transfers
    /// (spooled, sent in chunks).
    pub fn chunked_messages_out(&self) -> u64 {
        get(&self.chunked_out)
    }

    pub(crate) fn chunked_out(&self, messages: usize) {
        add(
            &self.chunked_out,
            u64::try_from(messages).unwrap_or(u64::MAX),
        );
    }

    pub(crate) fn refused_as_impostor(&self, reason: &str) {
        let mut slot = self
            .identity_refusal
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(reason.to_owned());
        }
    }

    /// Refusals for `reason` (links, frames or messages, as the reason says).
    pub fn refusals(&self, reason: RefusalReason) -> u64 {
        get(&self.refusals[reason.index()])
    }

    /// Refusals for every reason together.
    pub fn total_refusals(&self) -> u64 {
        self.refusals.iter().map(get).sum()
    }

    /// Messages dropped for `reason`.
    pub fn drops(&self, reason: DropReason) -> u64 {
        get(&self.drops[reason.index()])
    }

    /// Messages dropped for every reason together.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().map(get).sum()
    }

    /// Inbound links that passed the open checks.
    pub fn links_accepted(&self) -> u64 {
        get(&self.links_accepted)
    }

    /// Inbound links closed because the same sender opened a newer one.
    pub fn links_superseded(&self) -> u64 {
        get(&self.links_superseded)
    }

    /// Frames received on accepted links.
    pub fn frames_in(&self) -> u64 {
        get(&self.frames_in)
    }

    /// Payload bytes received on accepted links.
    pub fn bytes_in(&self) -> u64 {
        get(&self.bytes_in)
    }

    /// Messages handed to the runner's inbox.
    pub fn messages_in(&self) -> u64 {
        get(&self.messages_in)
    }

    /// Frames handed to an open link.
    pub fn frames_out(&self) -> u64 {
        get(&self.frames_out)
    }

    /// Payload bytes handed to an open link.
    pub fn bytes_out(&self) -> u64 {
        get(&self.bytes_out)
    }

    /// Messages handed to an open link.
    pub fn messages_out(&self) -> u64 {
        get(&self.messages_out)
    }

    /// Successful connections, first ones included.
    pub fn connects(&self) -> u64 {
        get(&self.connects)
    }

    /// Successful connections after a peer's first one (each is reported
    /// through `take_reconnected`).
    pub fn reconnects(&self) -> u64 {
        get(&self.reconnects)
    }

    /// Connection attempts that failed or timed out.
    pub fn connect_failures(&self) -> u64 {
        get(&self.connect_failures)
    }

    /// Outbound links that ended (refused by the receiver, broken, stalled
    /// past the send timeout).
    pub fn links_failed(&self) -> u64 {
        get(&self.links_failed)
    }

    /// Body bytes of outbound transfers not sent again because the peer
    /// held them from a cut transfer (sink side).
    pub fn transfer_bytes_skipped(&self) -> u64 {
        get(&self.transfer_bytes_skipped)
    }

    /// Inbound transfers completed and delivered (service side).
    pub fn transfers_in(&self) -> u64 {
        get(&self.transfers_in)
    }

    /// Inbound transfer pieces given up: a chunk that does not continue
    /// the body held, a body that does not match its head, a spool file
    /// that cannot be written, a body that does not decode (service side).
    pub fn transfers_failed_in(&self) -> u64 {
        get(&self.transfers_failed_in)
    }

    pub(crate) fn transfer_skipped(&self, bytes: u64) {
        add(&self.transfer_bytes_skipped, bytes);
    }

    pub(crate) fn transfer_in(&self) {
        add(&self.transfers_in, 1);
    }

    pub(crate) fn transfer_failed_in(&self) {
        add(&self.transfers_failed_in, 1);
    }

    pub(crate) fn refuse(&self, reason: RefusalReason) {
        add(&self.refusals[reason.index()], 1);
    }

    pub(crate) fn drop_messages(&self, reason: DropReason, messages: usize) {
        add(&self.drops[reason.index()], messages as u64);
    }

    pub(crate) fn link_accepted(&self) {
        add(&self.links_accepted, 1);
    }

    pub(crate) fn link_superseded(&self) {
        add(&self.links_superseded, 1);
    }

    pub(crate) fn frame_in(&self, bytes: usize) {
        add(&self.frames_in, 1);
        add(&self.bytes_in, bytes as u64);
    }

    pub(crate) fn message_in(&self) {
        add(&self.messages_in, 1);
    }

    pub(crate) fn frame_out(&self, bytes: usize, messages: usize) {
        add(&self.frames_out, 1);
        add(&self.bytes_out, bytes as u64);
        add(&self.messages_out, messages as u64);
    }

    pub(crate) fn connected(&self, again: bool) {
        add(&self.connects, 1);
        if again {
            add(&self.reconnects, 1);
        }
    }

    pub(crate) fn connect_failed(&self) {
        add(&self.connect_failures, 1);
    }

    pub(crate) fn link_failed(&self) {
        add(&self.links_failed, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_index_their_counters() {
        for (i, reason) in RefusalReason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i);
        }
        for (i, reason) in DropReason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i);
        }
        let stats = TransportStats::default();
        stats.refuse(RefusalReason::ReceiverMismatch);
        stats.drop_messages(DropReason::LinkLost, 3);
        assert_eq!(stats.refusals(RefusalReason::ReceiverMismatch), 1);
        assert_eq!(stats.total_refusals(), 1);
        assert_eq!(stats.drops(DropReason::LinkLost), 3);
    }
}
