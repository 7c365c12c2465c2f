//! The pure, deterministic apply state every replica folds the log into.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use tsoracle_core::{Epoch, SeqKey};

use crate::codec::epoch_u128;
use crate::{Command, Lease, Membership, PaxosSnapshot, ProposalId};

/// Why a [`Command::DenseAdvance`] advanced nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DenseRejection {
    /// The command's epoch is below an epoch already applied: a newer leader
    /// exists, so a fetch-add from the old one must not commit.
    Fenced {
        /// The highest epoch applied so far.
        current: Epoch,
    },
    /// The batch would create keys beyond the command's `key_cap`.
    CardinalityExceeded {
        /// The cap carried by the command.
        cap: u64,
    },
    /// A key's counter would pass `u64::MAX`.
    Overflow {
        /// The first key that would overflow.
        key: SeqKey,
    },
}

impl fmt::Display for DenseRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fenced { current } => write!(f, "fenced by epoch {}", current.0),
            Self::CardinalityExceeded { cap } => {
                write!(f, "dense key-cardinality cap {cap} reached")
            }
            Self::Overflow { key } => {
                write!(f, "dense counter of key {:?} would overflow", key.as_str())
            }
        }
    }
}

/// Why a [`Command::ReplaceLeases`] changed nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseRejection {
    /// The command's epoch is below an epoch already applied. The lease set is
    /// absolute state, so `max` cannot absorb a stale write: it is refused.
    Fenced {
        /// The highest epoch applied so far.
        current: Epoch,
    },
}

impl fmt::Display for LeaseRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fenced { current } => write!(f, "fenced by epoch {}", current.0),
        }
    }
}

/// Why a [`Command::PrepareChange`] changed nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChangeRejection {
    /// No member list is on record yet, so there is no configuration to
    /// change.
    #[error("no member list is on record yet")]
    NoMemberList,
    /// Another change is agreed and not finished: one change at a time.
    #[error("a change to {pending} is in progress; finish it first")]
    AnotherChangePending {
        /// The change in progress.
        pending: Membership,
    },
    /// The proposed list is not for the configuration after the current one.
    #[error(
        "the proposed list is for configuration {proposed}, but the next configuration is \
         {current} + 1"
    )]
    NotTheNextConfiguration {
        /// The current configuration.
        current: u32,
        /// The configuration the proposed list names.
        proposed: u32,
    },
}

/// Why a [`Command::Genesis`] changed nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GenesisRejection {
    /// The log already holds state: a second genesis (another member
    /// proposed one too), or one in a log that did not start with it.
    #[error("this log's state has begun already")]
    AlreadyStarted,
    /// The carried state agreed on no next configuration.
    #[error("the carried state has no agreed change to start")]
    NoChange,
}

/// What applying one command did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The proposal id is not above the last one applied for its node: this is
    /// a replay (or a proposal overtaken by a later one of the same node), so
    /// nothing changed. The proposer must not assume its command took effect.
    Duplicate,
    /// An [`Command::Advance`] applied; the high-water after it.
    HighWater(u64),
    /// A [`Command::Barrier`] applied; the high-water at that point of the log.
    Barrier {
        /// The high-water when the barrier applied.
        high_water: u64,
    },
    /// A [`Command::DenseAdvance`]: the pre-advance block start of each entry,
    /// in request order, or why nothing advanced.
    Dense(Result<Vec<u64>, DenseRejection>),
    /// A [`Command::ReplaceLeases`]: replaced, or why not.
    Leases(Result<(), LeaseRejection>),
    /// A [`Command::Register`]: the instance now on record for the node,
    /// which is the proposed one unless the node was registered before
    /// with another.
    Registered {
        /// The instance on record.
        instance: u128,
    },
    /// A [`Command::RecordMembership`]: the member list now on record, which
    /// is the proposed one unless a list was recorded before.
    MembershipRecorded {
        /// The list on record.
        membership: Membership,
    },
    /// A [`Command::PrepareChange`]: the agreed next member list (the
    /// proposed one, or the same one agreed before), or why none.
    ChangePrepared(Result<Membership, ChangeRejection>),
    /// A [`Command::Genesis`]: the configuration it started, or why not.
    Genesis(Result<u32, GenesisRejection>),
}

/// The replicated state: high-water, dense counters, leases, the fencing epoch
/// and the per-node proposal ledger.
///
/// Pure and deterministic: [`apply`](Self::apply) reads nothing but the state
/// and the command, so every replica that folds the same commands from the
/// same state reaches the same state and the same outcomes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyState {
    high_water: u64,
    /// Next block start per key; absent means 0.
    dense: BTreeMap<SeqKey, u64>,
    leases: Vec<Lease>,
    /// Highest epoch carried by any applied (non-duplicate) command.
    #[serde(with = "epoch_u128")]
    max_epoch: Epoch,
    /// Last applied `(incarnation, seq)` per proposer node. Stored without the
    /// node so an entry can never disagree with its key.
    ledger: BTreeMap<u64, (u64, u64)>,
    /// Number of non-duplicate commands applied. Monotone, so it tells which
    /// of two states of one history is the later (used to merge leases).
    applied: u64,
    /// The data-directory instance of each registered member (the first
    /// [`Command::Register`] of a node stands).
    instances: BTreeMap<u64, u128>,
    /// The cluster's member list (the first [`Command::RecordMembership`]
    /// stands; a [`Command::Genesis`] sets the new configuration's).
    membership: Option<Membership>,
    /// The next configuration's list, agreed by a
    /// [`Command::PrepareChange`] (the first stands until the change ends
    /// this configuration's log).
    pending_change: Option<Membership>,
}

/// [`ApplyState`] as snapshot format version 3 encoded it (before the
/// pending change), read to upgrade old snapshots.
#[derive(Deserialize)]
pub(crate) struct ApplyStateV3 {
    high_water: u64,
    dense: BTreeMap<SeqKey, u64>,
    leases: Vec<Lease>,
    #[serde(with = "epoch_u128")]
    max_epoch: Epoch,
    ledger: BTreeMap<u64, (u64, u64)>,
    applied: u64,
    instances: BTreeMap<u64, u128>,
    membership: Option<Membership>,
}

/// [`ApplyState`] as snapshot format version 2 encoded it (before the
/// member list), read to upgrade old snapshots.
#[derive(Deserialize)]
pub(crate) struct ApplyStateV2 {
    high_water: u64,
    dense: BTreeMap<SeqKey, u64>,
    leases: Vec<Lease>,
    #[serde(with = "epoch_u128")]
    max_epoch: Epoch,
    ledger: BTreeMap<u64, (u64, u64)>,
    applied: u64,
    instances: BTreeMap<u64, u128>,
}

/// [`ApplyState`] as snapshot format version 1 encoded it (before
/// instances), read to upgrade old snapshots.
#[derive(Deserialize)]
pub(crate) struct ApplyStateV1 {
    high_water: u64,
    dense: BTreeMap<SeqKey, u64>,
    leases: Vec<Lease>,
    #[serde(with = "epoch_u128")]
    max_epoch: Epoch,
    ledger: BTreeMap<u64, (u64, u64)>,
    applied: u64,
}

impl ApplyState {
    /// An empty state (high-water 0, no keys, no leases, epoch zero).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Folds `commands` onto `self` in order, discarding the outcomes.
    pub fn apply_all<'a>(&mut self, commands: impl IntoIterator<Item = &'a Command>) {
        for command in commands {
            self.apply(command);
        }
    }

    /// Applies one decided command and says what it did.
    ///
    /// Rules, in order:
    /// 1. A proposal id not above the ledger entry of its node is a
    ///    [`Outcome::Duplicate`]: nothing changes (a replay must never re-run
    ///    a fetch-add). Otherwise the id is recorded.
    /// 2. The command's effect, fenced for `DenseAdvance` and `ReplaceLeases`
    ///    when its epoch is below [`max_epoch`](Self::max_epoch).
    /// 3. `max_epoch` rises to the command's epoch.
    ///
    /// `DenseAdvance` is all-or-nothing. Entries with count 0 reserve nothing:
    /// they report the key's current value and neither create the key nor
    /// count against the cap. New keys are refused only when they would push
    /// the number of keys above `key_cap`, so lowering the cap never freezes
    /// existing keys. The same key may appear several times in one batch; each
    /// occurrence starts where the previous one ended.
    ///
    /// A [`Command::Genesis`] applies only to the pristine (empty) state: it replaces it with the carried final state of the
    /// previous configuration, whose agreed next list becomes the member
    /// list; ledger entries and registrations of nodes that left are
    /// dropped (a node added back later under the same id starts afresh).
    /// A [`Command::PrepareChange`] agrees on the next list when a list is
    /// on record, none is pending, and it names the next configuration.
    pub fn apply(&mut self, command: &Command) -> Outcome {
        if let Command::Genesis { prior, epoch, .. } = command {
            return Outcome::Genesis(self.start_from(prior, *epoch));
        }
        let proposal = command.proposal();
        let stamp = (proposal.incarnation, proposal.seq);
        if self
            .ledger
            .get(&proposal.node)
            .is_some_and(|last| stamp <= *last)
        {
            return Outcome::Duplicate;
        }
        self.ledger.insert(proposal.node, stamp);
        self.applied = self.applied.saturating_add(1);

        let outcome = match command {
            Command::Advance { at_least, .. } => {
                // Same rule as tsoracle-consensus' AdvancePayload::merge.
                self.high_water = self.high_water.max(*at_least);
                Outcome::HighWater(self.high_water)
            }
            Command::Barrier { .. } => Outcome::Barrier {
                high_water: self.high_water,
            },
            Command::DenseAdvance {
                entries,
                key_cap,
                epoch,
                ..
            } => Outcome::Dense(self.apply_dense(entries, *key_cap, *epoch)),
            Command::Register { node, instance, .. } => Outcome::Registered {
                instance: *self.instances.entry(*node).or_insert(*instance),
            },
            Command::RecordMembership { membership, .. } => Outcome::MembershipRecorded {
                membership: self
                    .membership
                    .get_or_insert_with(|| membership.clone())
                    .clone(),
            },
            Command::PrepareChange { next, .. } => {
                Outcome::ChangePrepared(self.prepare_change(next))
            }
            // Handled above, before the ledger.
            Command::Genesis { .. } => Outcome::Genesis(Err(GenesisRejection::AlreadyStarted)),
            Command::ReplaceLeases { leases, epoch, .. } => {
                Outcome::Leases(if *epoch < self.max_epoch {
                    Err(LeaseRejection::Fenced {
                        current: self.max_epoch,
                    })
                } else {
                    self.leases.clone_from(leases);
                    Ok(())
                })
            }
        };
        // After the fence: a command is judged against the epochs before it.
        self.max_epoch = self.max_epoch.max(command.epoch());
        outcome
    }

    fn prepare_change(&mut self, next: &Membership) -> Result<Membership, ChangeRejection> {
        let current = self
            .membership
            .as_ref()
            .ok_or(ChangeRejection::NoMemberList)?;
        if let Some(pending) = &self.pending_change {
            return if pending == next {
                Ok(pending.clone())
            } else {
                Err(ChangeRejection::AnotherChangePending {
                    pending: pending.clone(),
                })
            };
        }
        if current.configuration().checked_add(1) != Some(next.configuration()) {
            return Err(ChangeRejection::NotTheNextConfiguration {
                current: current.configuration(),
                proposed: next.configuration(),
            });
        }
        self.pending_change = Some(next.clone());
        Ok(next.clone())
    }

    /// The genesis's own proposal id is not recorded in the ledger: a
    /// genesis is deduplicated by the pristine check, so a host may propose
    /// it under an id its driver never mints.
    fn start_from(&mut self, prior: &PaxosSnapshot, epoch: Epoch) -> Result<u32, GenesisRejection> {
        // Pristine: exactly the empty state (cheap: the derived comparison
        // stops at the first field that differs).
        if *self != Self::default() {
            return Err(GenesisRejection::AlreadyStarted);
        }
        let mut state = prior.to_state();
        let next = state
            .pending_change
            .take()
            .ok_or(GenesisRejection::NoChange)?;
        let stays = |node: &u64| next.member(*node).is_some();
        state.ledger.retain(|node, _| stays(node));
        state.instances.retain(|node, _| stays(node));
        state.applied = state.applied.saturating_add(1);
        state.max_epoch = state.max_epoch.max(epoch);
        let configuration = next.configuration();
        state.membership = Some(next);
        *self = state;
        Ok(configuration)
    }

    fn apply_dense(
        &mut self,
        entries: &[(SeqKey, u32)],
        key_cap: u64,
        epoch: Epoch,
    ) -> Result<Vec<u64>, DenseRejection> {
        if epoch < self.max_epoch {
            return Err(DenseRejection::Fenced {
                current: self.max_epoch,
            });
        }
        let new_keys: BTreeSet<&SeqKey> = entries
            .iter()
            .filter(|(key, count)| *count > 0 && !self.dense.contains_key(key))
            .map(|(key, _)| key)
            .collect();
        if !new_keys.is_empty() {
            let total = self.dense.len().saturating_add(new_keys.len());
            if u64::try_from(total).unwrap_or(u64::MAX) > key_cap {
                return Err(DenseRejection::CardinalityExceeded { cap: key_cap });
            }
        }
        // Stage every advance first, so a rejection leaves every key untouched.
        let mut staged: BTreeMap<&SeqKey, u64> = BTreeMap::new();
        let mut starts = Vec::with_capacity(entries.len());
        for (key, count) in entries {
            let start = staged
                .get(key)
                .copied()
                .unwrap_or_else(|| self.dense_value(key));
            if *count > 0 {
                let next = start
                    .checked_add(u64::from(*count))
                    .ok_or_else(|| DenseRejection::Overflow { key: key.clone() })?;
                staged.insert(key, next);
            }
            starts.push(start);
        }
        for (key, next) in staged {
            self.dense.insert(key.clone(), next);
        }
        Ok(starts)
    }

    /// Merges a state of the same history by taking, component by component,
    /// the later value. Every component is monotone along a fold (the lease set
    /// is chosen by `applied`), so merging a later state yields exactly it, and
    /// merging an earlier one (or the empty state) changes nothing.
    pub(crate) fn merge_later(&mut self, other: &ApplyState) {
        if other.applied > self.applied {
            self.leases.clone_from(&other.leases);
        }
        self.applied = self.applied.max(other.applied);
        self.high_water = self.high_water.max(other.high_water);
        for (key, value) in &other.dense {
            let entry = self.dense.entry(key.clone()).or_insert(0);
            *entry = (*entry).max(*value);
        }
        for (node, stamp) in &other.ledger {
            let entry = self.ledger.entry(*node).or_insert(*stamp);
            *entry = (*entry).max(*stamp);
        }
        // `self` is the earlier state of the history: its records stood first.
        for (node, instance) in &other.instances {
            self.instances.entry(*node).or_insert(*instance);
        }
        if self.membership.is_none() {
            self.membership.clone_from(&other.membership);
        }
        if self.pending_change.is_none() {
            self.pending_change.clone_from(&other.pending_change);
        }
        self.max_epoch = self.max_epoch.max(other.max_epoch);
    }

    /// The high-water.
    #[must_use]
    pub fn high_water(&self) -> u64 {
        self.high_water
    }

    /// The next block start of `key` (its committed counter); 0 if absent.
    #[must_use]
    pub fn dense_value(&self, key: &SeqKey) -> u64 {
        self.dense.get(key).copied().unwrap_or(0)
    }

    /// Every dense key with its counter, in key order.
    pub fn dense_entries(&self) -> impl Iterator<Item = (&SeqKey, u64)> {
        self.dense.iter().map(|(key, value)| (key, *value))
    }

    /// Number of dense keys.
    #[must_use]
    pub fn dense_len(&self) -> usize {
        self.dense.len()
    }

    /// The current lease set.
    #[must_use]
    pub fn leases(&self) -> &[Lease] {
        &self.leases
    }

    /// The highest epoch carried by any applied command.
    #[must_use]
    pub fn max_epoch(&self) -> Epoch {
        self.max_epoch
    }

    /// The last proposal applied for `node`, if any.
    #[must_use]
    pub fn last_applied(&self, node: u64) -> Option<ProposalId> {
        self.ledger
            .get(&node)
            .map(|&(incarnation, seq)| ProposalId::new(node, incarnation, seq))
    }

    /// The instance registered for `node`, if any (see [`Command::Register`]).
    #[must_use]
    pub fn instance_of(&self, node: u64) -> Option<u128> {
        self.instances.get(&node).copied()
    }

    /// Every registered member and its instance.
    pub fn instances(&self) -> impl Iterator<Item = (u64, u128)> + '_ {
        self.instances
            .iter()
            .map(|(node, instance)| (*node, *instance))
    }

    /// The member list on record (see [`Command::RecordMembership`]).
    #[must_use]
    pub fn membership(&self) -> Option<&Membership> {
        self.membership.as_ref()
    }

    /// The next configuration's list, once a [`Command::PrepareChange`]
    /// agreed on it (see [`Command::PrepareChange`]).
    #[must_use]
    pub fn pending_change(&self) -> Option<&Membership> {
        self.pending_change.as_ref()
    }

    /// Number of non-duplicate commands applied since the empty state.
    #[must_use]
    pub fn applied_count(&self) -> u64 {
        self.applied
    }

    /// Builds a state from raw parts, for tests that need states a short fold
    /// cannot reach (counters near `u64::MAX`).
    #[cfg(test)]
    pub(crate) fn from_parts(
        high_water: u64,
        dense: BTreeMap<SeqKey, u64>,
        leases: Vec<Lease>,
        max_epoch: Epoch,
        ledger: BTreeMap<u64, (u64, u64)>,
        applied: u64,
    ) -> Self {
        Self::from_v1(ApplyStateV1 {
            high_water,
            dense,
            leases,
            max_epoch,
            ledger,
            applied,
        })
    }

    /// A state read from a version-1 snapshot, which had no instances.
    pub(crate) fn from_v1(v1: ApplyStateV1) -> Self {
        let ApplyStateV1 {
            high_water,
            dense,
            leases,
            max_epoch,
            ledger,
            applied,
        } = v1;
        Self::from_v2(ApplyStateV2 {
            high_water,
            dense,
            leases,
            max_epoch,
            ledger,
            applied,
            instances: BTreeMap::new(),
        })
    }

    /// A state read from a version-2 snapshot, which had no member list.
    pub(crate) fn from_v2(v2: ApplyStateV2) -> Self {
        let ApplyStateV2 {
            high_water,
            dense,
            leases,
            max_epoch,
            ledger,
            applied,
            instances,
        } = v2;
        Self::from_v3(ApplyStateV3 {
            high_water,
            dense,
            leases,
            max_epoch,
            ledger,
            applied,
            instances,
            membership: None,
        })
    }

    /// A state read from a version-3 snapshot, which had no pending change.
    pub(crate) fn from_v3(v3: ApplyStateV3) -> Self {
        let ApplyStateV3 {
            high_water,
            dense,
            leases,
            max_epoch,
            ledger,
            applied,
            instances,
            membership,
        } = v3;
        Self {
            high_water,
            dense,
            leases,
            max_epoch,
            ledger,
            applied,
            instances,
            membership,
            pending_change: None,
        }
    }

    /// Drops ledger entries of nodes not in `members`, to keep bookkeeping
    /// bounded by the current membership. Only prune nodes that can no longer
    /// propose into this log (they left the configuration): a pruned node's
    /// replayed proposal would no longer be recognised as a duplicate.
    pub fn retain_ledger_nodes(&mut self, members: &[u64]) {
        self.ledger.retain(|node, _| members.contains(node));
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::membership::tests::{four_members, member, three_members};

    fn key(s: &str) -> SeqKey {
        SeqKey::try_new(s).unwrap()
    }

    fn pid(node: u64, seq: u64) -> ProposalId {
        ProposalId::new(node, 0, seq)
    }

    fn advance(at_least: u64, epoch: u128, proposal: ProposalId) -> Command {
        Command::Advance {
            at_least,
            epoch: Epoch(epoch),
            proposal,
        }
    }

    fn dense(entries: &[(&str, u32)], key_cap: u64, epoch: u128, proposal: ProposalId) -> Command {
        Command::DenseAdvance {
            entries: entries.iter().map(|(k, c)| (key(k), *c)).collect(),
            key_cap,
            epoch: Epoch(epoch),
            proposal,
        }
    }

    fn leases(ids: &[u64], epoch: u128, proposal: ProposalId) -> Command {
        Command::ReplaceLeases {
            leases: ids
                .iter()
                .map(|&lease_id| Lease {
                    lease_id,
                    holder: vec![1],
                    holder_epoch: 1,
                    ttl_ms: 1,
                    ts_upper_bound: 1,
                    expires_at_ms: 1,
                    superseded: false,
                })
                .collect(),
            epoch: Epoch(epoch),
            proposal,
        }
    }

    #[test]
    fn advance_is_max_and_never_fenced() {
        let mut s = ApplyState::new();
        assert_eq!(s.apply(&advance(10, 5, pid(1, 1))), Outcome::HighWater(10));
        assert_eq!(s.apply(&advance(3, 1, pid(1, 2))), Outcome::HighWater(10));
        assert_eq!(s.high_water(), 10);
        assert_eq!(s.max_epoch(), Epoch(5));
    }

    #[test]
    fn barrier_reports_high_water_and_raises_epoch() {
        let mut s = ApplyState::new();
        s.apply(&advance(42, 1, pid(1, 1)));
        let barrier = Command::Barrier {
            epoch: Epoch(9),
            proposal: pid(2, 1),
        };
        assert_eq!(s.apply(&barrier), Outcome::Barrier { high_water: 42 });
        assert_eq!(s.max_epoch(), Epoch(9));
    }

    #[test]
    fn replayed_proposal_is_a_duplicate_and_changes_nothing() {
        let mut s = ApplyState::new();
        let cmd = dense(&[("a", 5)], 10, 1, pid(1, 1));
        assert_eq!(s.apply(&cmd), Outcome::Dense(Ok(vec![0])));
        let before = s.clone();
        assert_eq!(s.apply(&cmd), Outcome::Duplicate);
        assert_eq!(s, before);
        // An older id of the same node is a duplicate too, another node's is not.
        assert_eq!(
            s.apply(&dense(&[("a", 5)], 10, 1, pid(1, 0))),
            Outcome::Duplicate
        );
        assert_eq!(
            s.apply(&dense(&[("a", 5)], 10, 1, pid(2, 1))),
            Outcome::Dense(Ok(vec![5]))
        );
        assert_eq!(s.last_applied(1), Some(pid(1, 1)));
        assert_eq!(s.last_applied(2), Some(pid(2, 1)));
        assert_eq!(s.last_applied(3), None);
    }

    #[test]
    fn new_incarnation_is_not_a_duplicate() {
        let mut s = ApplyState::new();
        s.apply(&advance(1, 1, ProposalId::new(1, 0, 100)));
        let restarted = advance(2, 1, ProposalId::new(1, 1, 0));
        assert_eq!(s.apply(&restarted), Outcome::HighWater(2));
        assert_eq!(s.last_applied(1), Some(ProposalId::new(1, 1, 0)));
    }

    #[test]
    fn dense_returns_pre_advance_starts_in_request_order() {
        let mut s = ApplyState::new();
        assert_eq!(
            s.apply(&dense(&[("a", 3), ("b", 2), ("a", 4)], 10, 1, pid(1, 1))),
            Outcome::Dense(Ok(vec![0, 0, 3]))
        );
        assert_eq!(s.dense_value(&key("a")), 7);
        assert_eq!(s.dense_value(&key("b")), 2);
        assert_eq!(s.dense_value(&key("zz")), 0);
    }

    #[test]
    fn dense_from_a_stale_epoch_is_fenced() {
        let mut s = ApplyState::new();
        s.apply(&advance(1, 5, pid(1, 1)));
        let before = s.clone();
        let out = s.apply(&dense(&[("a", 1)], 10, 4, pid(2, 1)));
        assert_eq!(
            out,
            Outcome::Dense(Err(DenseRejection::Fenced { current: Epoch(5) }))
        );
        assert_eq!(s.dense_value(&key("a")), 0);
        assert_eq!(s.max_epoch(), before.max_epoch());
        // The fenced proposal is still recorded, so its replay is a duplicate.
        assert_eq!(s.last_applied(2), Some(pid(2, 1)));
        // The current epoch and a newer one are accepted.
        assert!(matches!(
            s.apply(&dense(&[("a", 1)], 10, 5, pid(2, 2))),
            Outcome::Dense(Ok(_))
        ));
        assert!(matches!(
            s.apply(&dense(&[("a", 1)], 10, 6, pid(2, 3))),
            Outcome::Dense(Ok(_))
        ));
        assert_eq!(s.max_epoch(), Epoch(6));
    }

    #[test]
    fn cardinality_cap_is_all_or_nothing() {
        let mut s = ApplyState::new();
        s.apply(&dense(&[("a", 1)], 2, 1, pid(1, 1)));
        let out = s.apply(&dense(&[("a", 1), ("b", 1), ("c", 1)], 2, 1, pid(1, 2)));
        assert_eq!(
            out,
            Outcome::Dense(Err(DenseRejection::CardinalityExceeded { cap: 2 }))
        );
        assert_eq!(s.dense_value(&key("a")), 1);
        assert_eq!(s.dense_len(), 1);
        // Existing keys keep working even after the cap is lowered.
        assert_eq!(
            s.apply(&dense(&[("a", 1)], 0, 1, pid(1, 3))),
            Outcome::Dense(Ok(vec![1]))
        );
    }

    #[test]
    fn overflow_is_all_or_nothing() {
        let mut s = ApplyState::new();
        s.dense.insert(key("b"), u64::MAX - 1);
        let out = s.apply(&dense(&[("a", 1), ("b", 2)], 10, 1, pid(1, 1)));
        assert_eq!(
            out,
            Outcome::Dense(Err(DenseRejection::Overflow { key: key("b") }))
        );
        assert_eq!(s.dense_value(&key("a")), 0);
        assert_eq!(s.dense_value(&key("b")), u64::MAX - 1);
        // Exactly reaching u64::MAX is fine; the next unit is not.
        assert_eq!(
            s.apply(&dense(&[("b", 1)], 10, 1, pid(1, 2))),
            Outcome::Dense(Ok(vec![u64::MAX - 1]))
        );
        assert!(matches!(
            s.apply(&dense(&[("b", 1)], 10, 1, pid(1, 3))),
            Outcome::Dense(Err(DenseRejection::Overflow { .. }))
        ));
    }

    #[test]
    fn repeated_key_in_one_batch_counts_toward_overflow() {
        let mut s = ApplyState::new();
        s.dense.insert(key("a"), u64::MAX - 5);
        assert!(matches!(
            s.apply(&dense(&[("a", 3), ("a", 3)], 10, 1, pid(1, 1))),
            Outcome::Dense(Err(DenseRejection::Overflow { .. }))
        ));
        assert_eq!(s.dense_value(&key("a")), u64::MAX - 5);
    }

    #[test]
    fn zero_count_reads_without_creating_the_key() {
        let mut s = ApplyState::new();
        s.apply(&dense(&[("a", 4)], 1, 1, pid(1, 1)));
        // Cap is full, yet a zero-count entry on a new key is a harmless read.
        assert_eq!(
            s.apply(&dense(&[("a", 0), ("b", 0)], 1, 1, pid(1, 2))),
            Outcome::Dense(Ok(vec![4, 0]))
        );
        assert_eq!(s.dense_len(), 1);
        assert_eq!(s.dense_value(&key("a")), 4);
    }

    #[test]
    fn leases_are_replaced_whole_and_fenced_by_epoch() {
        let mut s = ApplyState::new();
        assert_eq!(
            s.apply(&leases(&[1, 2], 3, pid(1, 1))),
            Outcome::Leases(Ok(()))
        );
        assert_eq!(s.leases().len(), 2);
        assert_eq!(
            s.apply(&leases(&[3], 3, pid(1, 2))),
            Outcome::Leases(Ok(()))
        );
        assert_eq!(s.leases()[0].lease_id, 3);
        assert_eq!(
            s.apply(&leases(&[], 2, pid(2, 1))),
            Outcome::Leases(Err(LeaseRejection::Fenced { current: Epoch(3) }))
        );
        assert_eq!(s.leases().len(), 1);
        assert_eq!(s.apply(&leases(&[], 4, pid(2, 2))), Outcome::Leases(Ok(())));
        assert!(s.leases().is_empty());
    }

    #[test]
    fn ledger_is_pruned_to_membership() {
        let mut s = ApplyState::new();
        for node in 1..=4 {
            s.apply(&advance(node, 1, pid(node, 1)));
        }
        s.retain_ledger_nodes(&[1, 3]);
        assert!(s.last_applied(1).is_some());
        assert!(s.last_applied(2).is_none());
        assert!(s.last_applied(3).is_some());
        assert!(s.last_applied(4).is_none());
    }

    #[test]
    fn merging_a_later_state_yields_it_and_an_earlier_one_changes_nothing() {
        let cmds = [
            advance(5, 1, pid(1, 1)),
            dense(&[("a", 2)], 10, 1, pid(1, 2)),
            leases(&[7], 1, pid(2, 1)),
            leases(&[8], 1, pid(2, 2)),
        ];
        let mut early = ApplyState::new();
        early.apply_all(&cmds[..3]);
        let mut late = early.clone();
        late.apply_all(&cmds[3..]);
        // Same max_epoch, different leases: `applied` decides.
        assert_eq!(early.max_epoch(), late.max_epoch());
        let mut merged = early.clone();
        merged.merge_later(&late);
        assert_eq!(merged, late);
        let mut merged = late.clone();
        merged.merge_later(&early);
        assert_eq!(merged, late);
        merged.merge_later(&ApplyState::new());
        assert_eq!(merged, late);
    }

    #[test]
    fn rejections_display_their_cause() {
        assert!(
            DenseRejection::CardinalityExceeded { cap: 3 }
                .to_string()
                .contains("cap 3")
        );
        assert!(
            DenseRejection::Overflow { key: key("k") }
                .to_string()
                .contains("overflow")
        );
        assert!(
            LeaseRejection::Fenced { current: Epoch(4) }
                .to_string()
                .contains('4')
        );
    }

    fn register(node: u64, instance: u128, seq: u64) -> Command {
        Command::Register {
            node,
            instance,
            epoch: Epoch(0),
            proposal: ProposalId::new(node, 1, seq),
        }
    }

    #[test]
    fn the_first_registration_of_a_node_stands() {
        let mut state = ApplyState::new();
        assert_eq!(state.instance_of(2), None);
        assert_eq!(
            state.apply(&register(2, 0xa, 1)),
            Outcome::Registered { instance: 0xa }
        );
        // The same instance again: idempotent.
        assert_eq!(
            state.apply(&register(2, 0xa, 2)),
            Outcome::Registered { instance: 0xa }
        );
        // Another instance under the same id (a wiped directory): the
        // record does not move, and the outcome names the one on record.
        assert_eq!(
            state.apply(&register(2, 0xb, 3)),
            Outcome::Registered { instance: 0xa }
        );
        assert_eq!(state.instance_of(2), Some(0xa));
        assert_eq!(
            state.apply(&register(3, 0xc, 1)),
            Outcome::Registered { instance: 0xc }
        );
        assert_eq!(
            state.instances().collect::<Vec<_>>(),
            vec![(2, 0xa), (3, 0xc)]
        );
    }

    #[test]
    fn a_registration_is_deduplicated_and_never_fenced() {
        let mut state = ApplyState::new();
        state.apply(&Command::Barrier {
            epoch: Epoch(9),
            proposal: ProposalId::new(1, 1, 1),
        });
        // Epoch zero, below the applied epoch 9: still recorded.
        assert_eq!(
            state.apply(&register(2, 0xa, 1)),
            Outcome::Registered { instance: 0xa }
        );
        assert_eq!(state.max_epoch(), Epoch(9));
        let before = state.clone();
        assert_eq!(state.apply(&register(2, 0xb, 1)), Outcome::Duplicate);
        assert_eq!(state, before);
    }

    fn record(membership: &Membership, proposal: ProposalId) -> Command {
        Command::RecordMembership {
            membership: membership.clone(),
            epoch: Epoch(0),
            proposal,
        }
    }

    #[test]
    fn the_first_member_list_stands_and_is_never_fenced() {
        let mut state = ApplyState::new();
        state.apply(&Command::Barrier {
            epoch: Epoch(9),
            proposal: ProposalId::new(1, 1, 1),
        });
        let first = three_members();
        assert_eq!(
            state.apply(&record(&first, pid(2, 1))),
            Outcome::MembershipRecorded {
                membership: first.clone()
            }
        );
        // Another list (an edited peer flag on node 3): the record does not
        // move, and the outcome names the one on record.
        let edited = Membership::new(1, vec![member(1), member(2), member(4)]).unwrap();
        assert_eq!(
            state.apply(&record(&edited, pid(3, 1))),
            Outcome::MembershipRecorded {
                membership: first.clone()
            }
        );
        assert_eq!(state.membership(), Some(&first));
        assert_eq!(state.max_epoch(), Epoch(9));
    }

    #[test]
    fn merging_keeps_the_earlier_member_list() {
        let first = three_members();
        let other = Membership::new(1, vec![member(1), member(2)]).unwrap();
        let mut early = ApplyState::new();
        let mut late = ApplyState::new();
        late.apply(&record(&first, pid(1, 1)));
        early.merge_later(&late);
        assert_eq!(early.membership(), Some(&first));
        let mut later = ApplyState::new();
        later.apply(&record(&other, pid(2, 1)));
        early.merge_later(&later);
        assert_eq!(early.membership(), Some(&first));
    }

    /// A state of configuration 1 (three members, node 2 registered, a
    /// high-water, a dense key, a lease) that agreed to add member 4.
    pub(crate) fn changing_three_to_four() -> ApplyState {
        let mut state = ApplyState::new();
        state.apply(&record(&three_members(), pid(1, 1)));
        state.apply(&register(2, 0xa, 2));
        state.apply(&advance(500, 7, pid(1, 2)));
        state.apply(&dense(&[("orders", 3)], 8, 7, pid(1, 3)));
        state.apply(&leases(&[9], 7, pid(1, 4)));
        assert_eq!(
            state.apply(&prepare(&four_members(), pid(1, 5))),
            Outcome::ChangePrepared(Ok(four_members()))
        );
        state
    }

    fn prepare(next: &Membership, proposal: ProposalId) -> Command {
        Command::PrepareChange {
            next: next.clone(),
            epoch: Epoch(7),
            proposal,
        }
    }

    fn genesis(prior: &ApplyState, proposal: ProposalId) -> Command {
        Command::Genesis {
            prior: Box::new(PaxosSnapshot::from_state(prior.clone())),
            epoch: Epoch(2 << 96),
            proposal,
        }
    }

    #[test]
    fn one_change_at_a_time_and_only_to_the_next_configuration() {
        let mut state = ApplyState::new();
        assert_eq!(
            state.apply(&prepare(&four_members(), pid(1, 1))),
            Outcome::ChangePrepared(Err(ChangeRejection::NoMemberList))
        );
        state.apply(&record(&three_members(), pid(1, 2)));
        let skipping = Membership::new(3, vec![member(1), member(2)]).unwrap();
        assert_eq!(
            state.apply(&prepare(&skipping, pid(1, 3))),
            Outcome::ChangePrepared(Err(ChangeRejection::NotTheNextConfiguration {
                current: 1,
                proposed: 3,
            }))
        );
        assert_eq!(state.pending_change(), None);
        assert_eq!(
            state.apply(&prepare(&four_members(), pid(1, 4))),
            Outcome::ChangePrepared(Ok(four_members()))
        );
        // The same list again (an operator's retry): agreed, unchanged.
        assert_eq!(
            state.apply(&prepare(&four_members(), pid(1, 5))),
            Outcome::ChangePrepared(Ok(four_members()))
        );
        let other = Membership::new(2, vec![member(1), member(2)]).unwrap();
        assert_eq!(
            state.apply(&prepare(&other, pid(1, 6))),
            Outcome::ChangePrepared(Err(ChangeRejection::AnotherChangePending {
                pending: four_members()
            }))
        );
        assert_eq!(state.pending_change(), Some(&four_members()));
        // The member list itself does not move until the next log starts.
        assert_eq!(state.membership(), Some(&three_members()));
    }

    #[test]
    fn a_genesis_carries_the_final_state_into_the_next_configuration() {
        let prior = changing_three_to_four();
        let mut next = ApplyState::new();
        assert_eq!(
            next.apply(&genesis(&prior, pid(3, 9))),
            Outcome::Genesis(Ok(2))
        );
        assert_eq!(next.high_water(), 500);
        assert_eq!(next.dense_value(&key("orders")), 3);
        assert_eq!(next.leases(), prior.leases());
        assert_eq!(next.instance_of(2), Some(0xa));
        assert_eq!(next.membership(), Some(&four_members()));
        assert_eq!(next.pending_change(), None);
        assert_eq!(next.max_epoch(), Epoch(2 << 96));
        assert_eq!(next.applied_count(), prior.applied_count() + 1);
        // The genesis's own id is not in the ledger: node 3 proposes on.
        assert_eq!(next.last_applied(3), prior.last_applied(3));
        // Proposals of node 1 from the old log stay duplicates.
        assert_eq!(
            next.apply(&advance(1, 2 << 96, pid(1, 2))),
            Outcome::Duplicate
        );
        // A second genesis (another member proposed one too) changes nothing.
        let before = next.clone();
        assert_eq!(
            next.apply(&genesis(&prior, pid(1, 9))),
            Outcome::Genesis(Err(GenesisRejection::AlreadyStarted))
        );
        assert_eq!(next, before);
    }

    #[test]
    fn a_genesis_needs_a_pristine_log_and_an_agreed_change() {
        let mut started = ApplyState::new();
        started.apply(&advance(1, 1, pid(1, 1)));
        let before = started.clone();
        assert_eq!(
            started.apply(&genesis(&changing_three_to_four(), pid(2, 1))),
            Outcome::Genesis(Err(GenesisRejection::AlreadyStarted))
        );
        assert_eq!(started, before);
        let mut unchanged = ApplyState::new();
        unchanged.apply(&record(&three_members(), pid(1, 1)));
        let mut next = ApplyState::new();
        assert_eq!(
            next.apply(&genesis(&unchanged, pid(2, 1))),
            Outcome::Genesis(Err(GenesisRejection::NoChange))
        );
        assert_eq!(next, ApplyState::new());
    }

    #[test]
    fn a_genesis_forgets_the_members_that_left() {
        let mut prior = ApplyState::new();
        prior.apply(&record(&three_members(), pid(1, 1)));
        prior.apply(&register(3, 0xc, 1));
        prior.apply(&advance(5, 1, pid(1, 3)));
        let without_3 = Membership::new(2, vec![member(1), member(2)]).unwrap();
        prior.apply(&prepare(&without_3, pid(1, 4)));
        assert_eq!(prior.last_applied(3), Some(ProposalId::new(3, 1, 1)));
        let mut next = ApplyState::new();
        assert_eq!(
            next.apply(&genesis(&prior, pid(2, 1))),
            Outcome::Genesis(Ok(2))
        );
        // Node 3 added back later (with a new directory and new incarnations)
        // registers and proposes afresh.
        assert_eq!(next.instance_of(3), None);
        assert_eq!(next.last_applied(3), None);
        assert_eq!(next.high_water(), 5);
    }
}
