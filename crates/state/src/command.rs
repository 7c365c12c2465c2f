//! The replicated command and its versioned log entry.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tsoracle_core::{Epoch, LeaseRecord, SeqKey};

use crate::codec::{self, epoch_u128};
use crate::{Membership, PaxosSnapshot, StateError};

/// Format version written in front of every [`PaxosEntry`].
///
/// Bump it (and keep a reader for the old one) whenever the encoding of
/// [`Command`] changes; new variants go at the end of the enum, never between
/// existing ones, because postcard encodes the variant index.
pub const COMMAND_FORMAT_VERSION: u8 = 1;

/// Identity of one proposal, unique across restarts of its proposer.
///
/// `incarnation` is a number the host persists and bumps at every start, so a
/// restarted node never reuses an id still present in the durable log. A node
/// proposes its commands in increasing `(incarnation, seq)` order; the derived
/// order (`node`, then `incarnation`, then `seq`) therefore orders one node's
/// proposals in the order they were minted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ProposalId {
    /// The proposing node's OmniPaxos pid.
    pub node: u64,
    /// The proposer's incarnation (bumped and persisted at each start).
    pub incarnation: u64,
    /// Sequence number within the incarnation.
    pub seq: u64,
}

impl ProposalId {
    /// Builds a proposal id.
    #[must_use]
    pub const fn new(node: u64, incarnation: u64, seq: u64) -> Self {
        Self {
            node,
            incarnation,
            seq,
        }
    }
}

/// A lease record as replicated: mirrors [`tsoracle_core::LeaseRecord`] field
/// for field, which has no serde support of its own.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Lease {
    /// See [`LeaseRecord::lease_id`].
    pub lease_id: u64,
    /// See [`LeaseRecord::holder`].
    pub holder: Vec<u8>,
    /// See [`LeaseRecord::holder_epoch`].
    pub holder_epoch: u64,
    /// See [`LeaseRecord::ttl_ms`].
    pub ttl_ms: u64,
    /// See [`LeaseRecord::ts_upper_bound`].
    pub ts_upper_bound: u64,
    /// See [`LeaseRecord::expires_at_ms`].
    pub expires_at_ms: u64,
    /// See [`LeaseRecord::superseded`].
    pub superseded: bool,
}

// Both conversions destructure exhaustively, so a field added upstream breaks
// the build here instead of being silently dropped from the replicated state.
impl From<LeaseRecord> for Lease {
    fn from(record: LeaseRecord) -> Self {
        let LeaseRecord {
            lease_id,
            holder,
            holder_epoch,
            ttl_ms,
            ts_upper_bound,
            expires_at_ms,
            superseded,
        } = record;
        Self {
            lease_id,
            holder,
            holder_epoch,
            ttl_ms,
            ts_upper_bound,
            expires_at_ms,
            superseded,
        }
    }
}

impl From<Lease> for LeaseRecord {
    fn from(lease: Lease) -> Self {
        let Lease {
            lease_id,
            holder,
            holder_epoch,
            ttl_ms,
            ts_upper_bound,
            expires_at_ms,
            superseded,
        } = lease;
        Self {
            lease_id,
            holder,
            holder_epoch,
            ttl_ms,
            ts_upper_bound,
            expires_at_ms,
            superseded,
        }
    }
}

/// A command of the replicated log, folded by [`ApplyState::apply`](crate::ApplyState::apply).
///
/// Every command names the leader `epoch` it was proposed under and a unique
/// `proposal` id (for the waiter and for deduplication).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Raise the high-water to at least `at_least` (`max`, never fenced).
    Advance {
        /// The value the high-water must reach.
        at_least: u64,
        /// Epoch of the proposing leader.
        #[serde(with = "epoch_u128")]
        epoch: Epoch,
        /// Proposal id.
        proposal: ProposalId,
    },
    /// A linearized read barrier; also the leader's no-op that renews its lease.
    Barrier {
        /// Epoch of the proposing leader.
        #[serde(with = "epoch_u128")]
        epoch: Epoch,
        /// Proposal id.
        proposal: ProposalId,
    },
    /// Atomic fetch-add of dense counters (one key is a one-element batch).
    DenseAdvance {
        /// `(key, count)` pairs, in request order.
        entries: Vec<(SeqKey, u32)>,
        /// Maximum number of distinct keys; carried in the command so every
        /// replica decides alike whatever its local configuration.
        key_cap: u64,
        /// Epoch of the proposing leader.
        #[serde(with = "epoch_u128")]
        epoch: Epoch,
        /// Proposal id.
        proposal: ProposalId,
    },
    /// Replace the whole lease set atomically.
    ReplaceLeases {
        /// The new live lease set.
        leases: Vec<Lease>,
        /// Epoch of the proposing leader.
        #[serde(with = "epoch_u128")]
        epoch: Epoch,
        /// Proposal id.
        proposal: ProposalId,
    },
    /// Record that member `node` is the data directory with random
    /// `instance` (drawn when that directory was initialized). The first
    /// record of a node stands: peers refuse messages from `node` that
    /// present another instance, so a member that lost its directory cannot
    /// vote again under its old id. Proposed by `node` itself, so its
    /// `epoch` is whatever leader it knew of (never fenced).
    Register {
        /// The member.
        node: u64,
        /// Its data directory's instance id.
        instance: u128,
        /// Epoch of the leader the proposer knew of (zero when none).
        #[serde(with = "epoch_u128")]
        epoch: Epoch,
        /// Proposal id.
        proposal: ProposalId,
    },
    /// Record the cluster's member list (ids, peer and client addresses).
    /// The first record stands: a node whose own list disagrees with it
    /// stops rather than run with another quorum than its peers. Proposed
    /// by any node from the list it was started with, so its `epoch` is
    /// whatever leader it knew of (never fenced).
    RecordMembership {
        /// The member list.
        membership: Membership,
        /// Epoch of the leader the proposer knew of (zero when none).
        #[serde(with = "epoch_u128")]
        epoch: Epoch,
        /// Proposal id.
        proposal: ProposalId,
    },
    /// Agree on the next configuration's member list: the first step of a
    /// membership change, decided in the configuration it ends. A StopSign
    /// (which ends a configuration for good) is admitted only when it names
    /// the configuration a decided `PrepareChange` agreed on, so a peer link
    /// cannot end a configuration nobody asked to change. At most one change
    /// is pending: another list is refused until the change finished.
    /// Proposed by the leader on an operator's request; never fenced.
    PrepareChange {
        /// The next configuration's member list (its configuration id is the
        /// current one plus one).
        next: Membership,
        /// Epoch of the proposing leader.
        #[serde(with = "epoch_u128")]
        epoch: Epoch,
        /// Proposal id.
        proposal: ProposalId,
    },
    /// The first entry of a new configuration's log: the final state of the
    /// configuration before it (which ends with the StopSign its
    /// `PrepareChange` admitted). Applied to the pristine state of the new
    /// log it carries the high-water, dense counters, leases, the ledger
    /// and registrations over, with the agreed list as the member list.
    /// Every member that holds the final state may propose it; the first
    /// decided stands and later ones change nothing.
    Genesis {
        /// The previous configuration's final state.
        prior: Box<PaxosSnapshot>,
        /// Epoch of the leader the proposer knew of (zero when none).
        #[serde(with = "epoch_u128")]
        epoch: Epoch,
        /// Proposal id, for the proposer's waiter; not recorded in the
        /// ledger (the first genesis stands whatever its id).
        proposal: ProposalId,
    },
}

impl Command {
    /// The epoch the command was proposed under.
    #[must_use]
    pub fn epoch(&self) -> Epoch {
        match self {
            Self::Advance { epoch, .. }
            | Self::Barrier { epoch, .. }
            | Self::DenseAdvance { epoch, .. }
            | Self::ReplaceLeases { epoch, .. }
            | Self::Register { epoch, .. }
            | Self::RecordMembership { epoch, .. }
            | Self::PrepareChange { epoch, .. }
            | Self::Genesis { epoch, .. } => *epoch,
        }
    }

    /// The command's proposal id.
    #[must_use]
    pub fn proposal(&self) -> ProposalId {
        match self {
            Self::Advance { proposal, .. }
            | Self::Barrier { proposal, .. }
            | Self::DenseAdvance { proposal, .. }
            | Self::ReplaceLeases { proposal, .. }
            | Self::Register { proposal, .. }
            | Self::RecordMembership { proposal, .. }
            | Self::PrepareChange { proposal, .. }
            | Self::Genesis { proposal, .. } => *proposal,
        }
    }
}

/// The OmniPaxos log entry of a standalone node: a [`Command`] serialized behind
/// a leading [`COMMAND_FORMAT_VERSION`] byte.
///
/// Deserializing any other version fails with a serde error naming both
/// versions; it never panics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaxosEntry(pub Command);

impl PaxosEntry {
    /// Encodes the entry (version byte, then the postcard command).
    ///
    /// # Errors
    ///
    /// [`StateError::Encode`] if postcard fails (it does not for this type in practice).
    pub fn to_bytes(&self) -> Result<Vec<u8>, StateError> {
        codec::to_bytes(self, "command")
    }

    /// Decodes exactly one entry from `bytes`.
    ///
    /// # Errors
    ///
    /// [`StateError::UnsupportedVersion`], [`StateError::Decode`] (including an
    /// invalid [`SeqKey`]) or [`StateError::TrailingBytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, StateError> {
        codec::from_bytes(bytes, COMMAND_FORMAT_VERSION, "command")
    }
}

impl From<Command> for PaxosEntry {
    fn from(command: Command) -> Self {
        Self(command)
    }
}

impl Serialize for PaxosEntry {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        codec::serialize_versioned(serializer, COMMAND_FORMAT_VERSION, &self.0)
    }
}

impl<'de> Deserialize<'de> for PaxosEntry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        codec::deserialize_versioned(deserializer, COMMAND_FORMAT_VERSION, "command").map(Self)
    }
}

impl omnipaxos::storage::Entry for PaxosEntry {
    type Snapshot = PaxosSnapshot;
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn key(s: &str) -> SeqKey {
        SeqKey::try_new(s).unwrap()
    }

    fn lease() -> Lease {
        Lease {
            lease_id: 7,
            holder: b"g1".to_vec(),
            holder_epoch: 2,
            ttl_ms: 10_000,
            ts_upper_bound: 1_000,
            expires_at_ms: 20_000,
            superseded: false,
        }
    }

    /// One command of each variant, with the golden file pinning its bytes.
    pub(crate) fn fixtures() -> Vec<(Command, &'static str)> {
        let epoch = Epoch((1u128 << 96) | (3u128 << 64) | 2);
        let proposal = ProposalId::new(2, 1, 5);
        vec![
            (
                Command::Advance {
                    at_least: 1_000,
                    epoch,
                    proposal,
                },
                include_str!("../testdata/command_v1_advance.hex"),
            ),
            (
                Command::Barrier { epoch, proposal },
                include_str!("../testdata/command_v1_barrier.hex"),
            ),
            (
                Command::DenseAdvance {
                    entries: vec![(key("orders"), 3), (key("users"), 1)],
                    key_cap: 64,
                    epoch,
                    proposal,
                },
                include_str!("../testdata/command_v1_dense_advance.hex"),
            ),
            (
                Command::ReplaceLeases {
                    leases: vec![lease()],
                    epoch,
                    proposal,
                },
                include_str!("../testdata/command_v1_replace_leases.hex"),
            ),
            (
                Command::Register {
                    node: 2,
                    instance: 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210,
                    epoch,
                    proposal,
                },
                include_str!("../testdata/command_v1_register.hex"),
            ),
            (
                Command::RecordMembership {
                    membership: crate::membership::tests::three_members(),
                    epoch,
                    proposal,
                },
                include_str!("../testdata/command_v1_record_membership.hex"),
            ),
            (
                Command::PrepareChange {
                    next: crate::membership::tests::four_members(),
                    epoch,
                    proposal,
                },
                include_str!("../testdata/command_v1_prepare_change.hex"),
            ),
            (
                Command::Genesis {
                    prior: Box::new(crate::PaxosSnapshot::from_state(
                        crate::apply::tests::changing_three_to_four(),
                    )),
                    epoch,
                    proposal,
                },
                include_str!("../testdata/command_v1_genesis.hex"),
            ),
        ]
    }

    pub(crate) fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub(crate) fn unhex(text: &str) -> Vec<u8> {
        let digits: String = text.split_whitespace().collect();
        (0..digits.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn golden_bytes_are_pinned() {
        for (command, golden) in fixtures() {
            let bytes = PaxosEntry(command.clone()).to_bytes().unwrap();
            assert_eq!(
                hex(&bytes),
                hex(&unhex(golden)),
                "encoding of {command:?} changed"
            );
            assert_eq!(PaxosEntry::from_bytes(&unhex(golden)).unwrap().0, command);
        }
    }

    #[test]
    fn entry_starts_with_the_version_byte() {
        for (command, _) in fixtures() {
            assert_eq!(
                PaxosEntry(command).to_bytes().unwrap()[0],
                COMMAND_FORMAT_VERSION
            );
        }
    }

    #[test]
    fn unknown_version_is_a_typed_error() {
        let mut bytes = unhex(include_str!("../testdata/command_v1_barrier.hex"));
        bytes[0] = 2;
        match PaxosEntry::from_bytes(&bytes) {
            Err(StateError::UnsupportedVersion {
                found: 2,
                supported: 1,
                ..
            }) => {}
            other => panic!("expected UnsupportedVersion, got {other:?}"),
        }
    }

    #[test]
    fn unknown_version_is_a_serde_error_with_a_message() {
        // Other serde formats keep the custom message; check it through a
        // minimal deserializer that feeds the version byte first.
        use serde::de::value::{Error, SeqDeserializer};
        let de = SeqDeserializer::<_, Error>::new([9u8].into_iter());
        let err = PaxosEntry::deserialize(de).unwrap_err().to_string();
        assert!(err.contains("format version 9"), "{err}");
        assert!(err.contains("reads version 1"), "{err}");
    }

    #[test]
    fn truncated_and_trailing_bytes_are_errors() {
        let bytes = unhex(include_str!("../testdata/command_v1_dense_advance.hex"));
        for cut in 0..bytes.len() {
            assert!(
                PaxosEntry::from_bytes(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            PaxosEntry::from_bytes(&longer),
            Err(StateError::TrailingBytes { count: 1, .. })
        ));
    }

    #[test]
    fn invalid_seq_key_is_refused_on_decode() {
        let good = PaxosEntry(Command::DenseAdvance {
            entries: vec![(key("k"), 1)],
            key_cap: 1,
            epoch: Epoch(1),
            proposal: ProposalId::new(1, 0, 1),
        })
        .to_bytes()
        .unwrap();
        // version, variant 2, vec len 1, key len 1, 'k' -> make the key empty.
        assert_eq!(&good[..5], &[1, 2, 1, 1, b'k']);
        let mut bad = vec![1, 2, 1, 0];
        bad.extend_from_slice(&good[5..]);
        assert!(matches!(
            PaxosEntry::from_bytes(&bad),
            Err(StateError::Decode { .. })
        ));
    }

    #[test]
    fn lease_converts_both_ways() {
        let record: LeaseRecord = lease().into();
        assert_eq!(Lease::from(record.clone()), lease());
        assert_eq!(record.lease_id, 7);
        assert_eq!(record.holder, b"g1");
    }

    #[test]
    fn proposal_ids_of_one_node_order_by_incarnation_then_seq() {
        assert!(ProposalId::new(1, 0, 9) < ProposalId::new(1, 1, 0));
        assert!(ProposalId::new(1, 1, 0) < ProposalId::new(1, 1, 1));
    }

    #[test]
    fn accessors_return_epoch_and_proposal() {
        for (command, _) in fixtures() {
            assert_eq!(command.proposal(), ProposalId::new(2, 1, 5));
            assert_eq!(command.epoch(), Epoch((1u128 << 96) | (3u128 << 64) | 2));
        }
    }
}
