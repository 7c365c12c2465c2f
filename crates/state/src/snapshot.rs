//! The exact OmniPaxos snapshot of the apply state.

use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::apply::{ApplyStateV1, ApplyStateV2, ApplyStateV3};
use crate::codec;
use crate::{ApplyState, Command, Membership, PaxosEntry, PaxosEnvelope, StateError};

/// Format version written in front of every encoded [`PaxosSnapshot`].
///
/// Version 2 added the registered member instances to the state, version 3
/// the recorded member list, version 4 the pending membership change;
/// versions 1 to 3 are still read (as a state with no member registered,
/// with no member list, with no change pending).
pub const SNAPSHOT_FORMAT_VERSION: u8 = 4;

/// The oldest snapshot format version this build reads.
const OLDEST_SNAPSHOT_FORMAT_VERSION: u8 = 1;

/// A snapshot meaning "fold `tail` onto `folded`".
///
/// Why not just a folded state: fencing, deduplication, the key cap and
/// overflow all depend on the state a command is applied to, so a delta made
/// by folding a slice of the log onto the *empty* state would decide those
/// differently than the real fold. [`Snapshot::create`](omnipaxos::storage::Snapshot::create)
/// therefore keeps the raw commands, and [`merge`](omnipaxos::storage::Snapshot::merge)
/// folds them onto the state they really follow. Merging is exact: the merged
/// snapshot's state equals folding every command in log order.
///
/// OmniPaxos stores the first snapshot of a fresh log without merging it into
/// anything, so a stored snapshot may carry a raw tail. That tail is bounded by
/// the snapshot interval and is folded at the next compaction (or by
/// [`to_state`](Self::to_state) / [`into_state`](Self::into_state)).
///
/// Equality is structural: two snapshots with the same state may compare
/// unequal if one is not normalized; compare [`to_state`](Self::to_state).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PaxosSnapshot {
    folded: ApplyState,
    tail: Vec<Command>,
}

impl PaxosSnapshot {
    /// A snapshot of an already folded state.
    #[must_use]
    pub fn from_state(state: ApplyState) -> Self {
        Self {
            folded: state,
            tail: Vec::new(),
        }
    }

    /// A delta holding the commands of `entries` (a host's own entries are
    /// skipped), for use in a piggyback host's composite `Snapshot::create`.
    #[must_use]
    pub fn create_from_envelopes<E: PaxosEnvelope>(entries: &[E]) -> Self {
        Self {
            folded: ApplyState::default(),
            tail: entries
                .iter()
                .filter_map(PaxosEnvelope::paxos_command)
                .cloned()
                .collect(),
        }
    }

    /// Folds the raw tail into the state, leaving the tail empty.
    pub fn normalize(&mut self) {
        let tail = std::mem::take(&mut self.tail);
        self.folded.apply_all(&tail);
    }

    /// The state this snapshot stands for.
    #[must_use]
    pub fn to_state(&self) -> ApplyState {
        let mut state = self.folded.clone();
        state.apply_all(&self.tail);
        state
    }

    /// The state this snapshot stands for, consuming it.
    #[must_use]
    pub fn into_state(mut self) -> ApplyState {
        self.normalize();
        self.folded
    }

    /// The member list this snapshot's state records, without folding it:
    /// the folded state's, else the first list in the raw tail (the first
    /// stands).
    #[must_use]
    pub fn membership(&self) -> Option<&Membership> {
        self.folded.membership().or_else(|| {
            // A genesis starts a log, so it can only be the first; its
            // prior state is a folded one (a host builds it with
            // `from_state`).
            self.tail.iter().find_map(|command| match command {
                Command::RecordMembership { membership, .. } => Some(membership),
                Command::Genesis { prior, .. } => prior.folded.pending_change(),
                _ => None,
            })
        })
    }

    /// The next configuration's list this snapshot agreed on, as far as it
    /// shows without folding: the folded state's, else the first
    /// `PrepareChange` of the raw tail. For a StopSign admission (which
    /// also requires the StopSign to name the list), not for the state:
    /// fold with [`to_state`](Self::to_state) for that.
    #[must_use]
    pub fn agreed_change(&self) -> Option<&Membership> {
        self.folded.pending_change().or_else(|| {
            self.tail.iter().find_map(|command| match command {
                Command::PrepareChange { next, .. } => Some(next),
                _ => None,
            })
        })
    }

    /// Number of raw, not yet folded commands.
    #[must_use]
    pub fn tail_len(&self) -> usize {
        self.tail.len()
    }

    /// Merges `delta`, a snapshot of the log that follows this one (or a full
    /// snapshot of a later point of the same log). The result is normalized.
    ///
    /// Steps: fold our own tail; take the later value of every component of
    /// `delta`'s folded state (a no-op for a delta made by `create`, whose
    /// folded state is empty, and exactly the later state for a full later
    /// snapshot, since every component is monotone); then fold `delta`'s tail.
    pub fn merge_delta(&mut self, delta: PaxosSnapshot) {
        self.normalize();
        self.folded.merge_later(&delta.folded);
        self.folded.apply_all(&delta.tail);
    }

    /// Encodes the snapshot (version byte, then postcard).
    ///
    /// # Errors
    ///
    /// [`StateError::Encode`] if postcard fails.
    pub fn to_bytes(&self) -> Result<Vec<u8>, StateError> {
        codec::to_bytes(self, "snapshot")
    }

    /// Decodes exactly one snapshot from `bytes`.
    ///
    /// # Errors
    ///
    /// [`StateError::UnsupportedVersion`], [`StateError::Decode`] or
    /// [`StateError::TrailingBytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, StateError> {
        codec::from_bytes_since(
            bytes,
            OLDEST_SNAPSHOT_FORMAT_VERSION,
            SNAPSHOT_FORMAT_VERSION,
            "snapshot",
        )
    }
}

impl omnipaxos::storage::Snapshot<PaxosEntry> for PaxosSnapshot {
    fn create(entries: &[PaxosEntry]) -> Self {
        Self::create_from_envelopes(entries)
    }

    fn merge(&mut self, delta: Self) {
        self.merge_delta(delta);
    }

    fn use_snapshots() -> bool {
        true
    }
}

impl Serialize for PaxosSnapshot {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        codec::serialize_versioned(
            serializer,
            SNAPSHOT_FORMAT_VERSION,
            &(&self.folded, &self.tail),
        )
    }
}

impl<'de> Deserialize<'de> for PaxosSnapshot {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Upgrading;

        impl<'de> Visitor<'de> for Upgrading {
            type Value = PaxosSnapshot;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(
                    f,
                    "a snapshot of format version {OLDEST_SNAPSHOT_FORMAT_VERSION} to \
                     {SNAPSHOT_FORMAT_VERSION}"
                )
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PaxosSnapshot, A::Error> {
                let found: u8 = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let missing = || de::Error::invalid_length(1, &Upgrading);
                let (folded, tail) = match found {
                    1 => {
                        let (v1, tail): (ApplyStateV1, Vec<Command>) =
                            seq.next_element()?.ok_or_else(missing)?;
                        (ApplyState::from_v1(v1), tail)
                    }
                    2 => {
                        let (v2, tail): (ApplyStateV2, Vec<Command>) =
                            seq.next_element()?.ok_or_else(missing)?;
                        (ApplyState::from_v2(v2), tail)
                    }
                    3 => {
                        let (v3, tail): (ApplyStateV3, Vec<Command>) =
                            seq.next_element()?.ok_or_else(missing)?;
                        (ApplyState::from_v3(v3), tail)
                    }
                    SNAPSHOT_FORMAT_VERSION => seq.next_element()?.ok_or_else(missing)?,
                    other => {
                        return Err(de::Error::custom(format_args!(
                            "snapshot has format version {other}, this build reads versions \
                             {OLDEST_SNAPSHOT_FORMAT_VERSION} to {SNAPSHOT_FORMAT_VERSION}"
                        )));
                    }
                };
                Ok(PaxosSnapshot { folded, tail })
            }
        }

        deserializer.deserialize_tuple(2, Upgrading)
    }
}

#[cfg(test)]
mod tests {
    use omnipaxos::storage::Snapshot;
    use tsoracle_core::{Epoch, SeqKey};

    use super::*;
    use crate::{Lease, ProposalId};

    fn commands() -> Vec<Command> {
        let p = |seq| ProposalId::new(1, 0, seq);
        vec![
            Command::Advance {
                at_least: 500,
                epoch: Epoch(3),
                proposal: p(1),
            },
            Command::DenseAdvance {
                entries: vec![(SeqKey::try_new("orders").unwrap(), 4)],
                key_cap: 8,
                epoch: Epoch(3),
                proposal: p(2),
            },
            Command::ReplaceLeases {
                leases: vec![Lease {
                    lease_id: 500,
                    holder: b"h".to_vec(),
                    holder_epoch: 1,
                    ttl_ms: 5_000,
                    ts_upper_bound: 500,
                    expires_at_ms: 9_000,
                    superseded: false,
                }],
                epoch: Epoch(3),
                proposal: p(3),
            },
            Command::Barrier {
                epoch: Epoch(3),
                proposal: p(4),
            },
        ]
    }

    fn entries(cmds: &[Command]) -> Vec<PaxosEntry> {
        cmds.iter().cloned().map(PaxosEntry).collect()
    }

    fn golden_snapshot() -> PaxosSnapshot {
        let cmds = commands();
        let mut snapshot = PaxosSnapshot::from_state(ApplyState::new());
        snapshot.merge(PaxosSnapshot::create(&entries(&cmds[..3])));
        let mut with_tail = PaxosSnapshot::create(&entries(&cmds[3..]));
        with_tail.folded = snapshot.into_state();
        with_tail
    }

    #[test]
    fn golden_bytes_are_pinned() {
        use crate::command::tests::{hex, unhex};
        let golden = include_str!("../testdata/snapshot_v4.hex");
        let snapshot = golden_snapshot_v4();
        assert_eq!(snapshot.tail_len(), 1);
        assert_eq!(hex(&snapshot.to_bytes().unwrap()), hex(&unhex(golden)));
        assert_eq!(PaxosSnapshot::from_bytes(&unhex(golden)).unwrap(), snapshot);
    }

    /// The version-3 golden snapshot with a change to four members agreed.
    fn golden_snapshot_v4() -> PaxosSnapshot {
        let mut snapshot = golden_snapshot_v3();
        snapshot.folded.apply(&Command::PrepareChange {
            next: crate::membership::tests::four_members(),
            epoch: Epoch(0),
            proposal: ProposalId::new(1, 1, 2),
        });
        assert!(snapshot.folded.pending_change().is_some());
        snapshot
    }

    #[test]
    fn a_version_3_snapshot_is_read_as_a_state_with_no_change_pending() {
        use crate::command::tests::unhex;
        let golden = include_str!("../testdata/snapshot_v3.hex");
        let read = PaxosSnapshot::from_bytes(&unhex(golden)).unwrap();
        assert_eq!(read, golden_snapshot_v3());
        assert_eq!(read.to_state().pending_change(), None);
        assert!(read.to_state().membership().is_some());
    }

    /// The version-2 golden snapshot with a member list on record.
    fn golden_snapshot_v3() -> PaxosSnapshot {
        let mut snapshot = golden_snapshot_v2();
        snapshot.folded.apply(&Command::RecordMembership {
            membership: crate::membership::tests::three_members(),
            epoch: Epoch(0),
            proposal: ProposalId::new(1, 1, 1),
        });
        snapshot
    }

    #[test]
    fn the_member_list_is_found_folded_or_in_the_tail() {
        let members = crate::membership::tests::three_members();
        let record = Command::RecordMembership {
            membership: members.clone(),
            epoch: Epoch(0),
            proposal: ProposalId::new(3, 1, 1),
        };
        assert_eq!(golden_snapshot().membership(), None);
        let in_tail = PaxosSnapshot::create(&entries(&[record]));
        assert_eq!(in_tail.membership(), Some(&members));
        assert_eq!(golden_snapshot_v3().membership(), Some(&members));
    }

    #[test]
    fn a_version_2_snapshot_is_read_as_a_state_with_no_member_list() {
        use crate::command::tests::unhex;
        let golden = include_str!("../testdata/snapshot_v2.hex");
        let read = PaxosSnapshot::from_bytes(&unhex(golden)).unwrap();
        assert_eq!(read, golden_snapshot_v2());
        assert_eq!(read.to_state().instance_of(2), Some(0xfeed));
        assert_eq!(read.to_state().membership(), None);
    }

    /// The golden snapshot with a member registered in its folded state.
    fn golden_snapshot_v2() -> PaxosSnapshot {
        let mut snapshot = golden_snapshot();
        snapshot.folded.apply(&Command::Register {
            node: 2,
            instance: 0xfeed,
            epoch: Epoch(0),
            proposal: ProposalId::new(2, 1, 1),
        });
        snapshot
    }

    #[test]
    fn a_version_1_snapshot_is_read_as_a_state_with_no_member_registered() {
        use crate::command::tests::unhex;
        let golden = include_str!("../testdata/snapshot_v1.hex");
        let read = PaxosSnapshot::from_bytes(&unhex(golden)).unwrap();
        assert_eq!(read, golden_snapshot());
        assert_eq!(read.to_state().instances().count(), 0);
    }

    #[test]
    fn unknown_version_is_a_typed_error() {
        let mut bytes = golden_snapshot().to_bytes().unwrap();
        bytes[0] = 7;
        assert!(matches!(
            PaxosSnapshot::from_bytes(&bytes),
            Err(StateError::UnsupportedVersion { found: 7, .. })
        ));
    }

    #[test]
    fn create_keeps_raw_commands_and_merge_folds_them_in_order() {
        let cmds = commands();
        let mut s = PaxosSnapshot::create(&entries(&cmds[..2]));
        assert_eq!(s.tail_len(), 2);
        s.merge(PaxosSnapshot::create(&entries(&cmds[2..])));
        assert_eq!(s.tail_len(), 0);
        let mut folded = ApplyState::new();
        folded.apply_all(&cmds);
        assert_eq!(s.into_state(), folded);
    }

    #[test]
    fn delta_is_folded_onto_the_real_base_not_the_empty_state() {
        // The replay of proposal 1 inside the delta must be seen as a duplicate.
        let cmds = commands();
        let mut s = PaxosSnapshot::create(&entries(&cmds[..2]));
        s.merge(PaxosSnapshot::create(&entries(&cmds[1..2])));
        let mut folded = ApplyState::new();
        folded.apply_all(&cmds[..2]);
        assert_eq!(s.to_state(), folded);
    }

    #[test]
    fn merging_a_full_later_snapshot_yields_the_later_state() {
        let cmds = commands();
        let mut early = PaxosSnapshot::create(&entries(&cmds[..1]));
        let mut late = ApplyState::new();
        late.apply_all(&cmds);
        early.merge(PaxosSnapshot::from_state(late.clone()));
        assert_eq!(early.into_state(), late);
    }

    #[test]
    fn snapshots_are_enabled() {
        assert!(<PaxosSnapshot as Snapshot<PaxosEntry>>::use_snapshots());
    }
}
