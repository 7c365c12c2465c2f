//! [`PaxosApplier`]: the apply path a host runs on its consensus thread.
//!
//! It folds decided entries into the [`ApplyState`] through an
//! [`ApplyCursor`] (never skipping or re-applying an entry), completes the
//! waiter of each of this node's proposals with *that* proposal's outcome,
//! and says when the snapshot policy wants the log compacted. The
//! [`ApplierHandle`] is its async-side half: register a waiter before
//! proposing, read the state after a barrier.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Instant;

use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::util::{LogEntry, NodeId};
use tokio::sync::oneshot;
use tsoracle_paxos_state::{
    Absorbed, ApplyCursor, ApplyState, HostItem, Membership, Outcome, PaxosEnvelope, ProposalId,
    SnapshotPolicy, SnapshotTracker, StateError,
};
use tsoracle_paxos_toolkit::{DecidedHook, InstanceId, RunnerStatus};

use crate::core::identity::{Registration, registration};
use crate::core::membership::{self, Recording};
use crate::error::{MembershipMismatch, RuntimeError};
use crate::host::{Applied, HostError};

// Ordered, so waiters fail in one order and a seeded simulation replays.
type Waiters = Mutex<BTreeMap<ProposalId, oneshot::Sender<Result<Applied, HostError>>>>;

#[derive(Debug, Default)]
struct Shared {
    state: RwLock<ApplyState>,
    waiters: Waiters,
    /// The registered instances of `state`, copied when they change (rarely)
    /// so that the peer admission, asked for every inbound message on a
    /// transport task, never waits behind the applier's write lock.
    instances: RwLock<BTreeMap<NodeId, u128>>,
    /// The cursor's next index after the last batch (for operators' tools).
    applied_idx: std::sync::atomic::AtomicUsize,
}

impl Shared {
    fn registered_instance(&self, node: NodeId) -> Option<u128> {
        self.instances
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&node)
            .copied()
    }

    fn refresh_instances(&self) {
        let instances = self
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .instances()
            .collect();
        *self
            .instances
            .write()
            .unwrap_or_else(PoisonError::into_inner) = instances;
    }
}

/// The apply path of one node: owned by the consensus thread (inside a
/// [`DecidedHook`]). It implements `DecidedHook<E>` itself for a host whose
/// log carries nothing else; a piggyback host wraps it in its own hook and
/// calls [`absorb`](Self::absorb) with a callback for its own entries.
#[derive(Debug)]
pub struct PaxosApplier {
    node_id: NodeId,
    cursor: ApplyCursor,
    snapshots: SnapshotTracker,
    promise: Ballot,
    shared: Arc<Shared>,
    /// This node's data-directory instance, checked against the one the
    /// applied state registered for it.
    instance: Option<InstanceId>,
    /// The member list this node was given, checked against the one the
    /// applied state recorded.
    membership: Option<Membership>,
    /// Whether the recorded list was found equal to the given one: it
    /// stands once recorded, so it is compared once.
    membership_agreed: bool,
    /// `Some(c)`: this log is configuration `c`'s, started by a change, and
    /// must begin with the genesis that carries the previous state over.
    expected_genesis: Option<u32>,
    /// The recovered decided index and when recovery began, until the state
    /// has been rebuilt up to it (logged once: restart time is a figure
    /// operators watch).
    replay: Option<(usize, Instant)>,
}

/// The async-side half of a [`PaxosApplier`]; cheap to clone.
#[derive(Debug, Clone)]
pub struct ApplierHandle {
    shared: Arc<Shared>,
}

/// A registered wait for one proposal's outcome. Dropping it unregisters it,
/// so a caller that gives up (a deadline, a dropped future) leaves nothing
/// behind.
#[derive(Debug)]
pub struct Waiter {
    id: ProposalId,
    rx: oneshot::Receiver<Result<Applied, HostError>>,
    shared: Arc<Shared>,
}

impl PaxosApplier {
    /// An applier for node `node_id`, starting from an empty state at log
    /// index 0. `recovered_decided_idx` is the decided index read from
    /// storage at start-up, so the snapshot policy does not fire at once on a
    /// restart (the stored snapshot and log are re-applied by the first
    /// rounds, before this node can hold a lease).
    #[must_use]
    pub fn new(
        node_id: NodeId,
        policy: SnapshotPolicy,
        recovered_decided_idx: usize,
    ) -> (Self, ApplierHandle) {
        let shared = Arc::new(Shared::default());
        let applier = Self {
            node_id,
            cursor: ApplyCursor::new(0),
            snapshots: SnapshotTracker::new(policy, recovered_decided_idx),
            promise: Ballot::default(),
            shared: Arc::clone(&shared),
            instance: None,
            membership: None,
            membership_agreed: false,
            expected_genesis: None,
            replay: (recovered_decided_idx > 0).then(|| (recovered_decided_idx, Instant::now())),
        };
        (applier, ApplierHandle { shared })
    }

    /// Checks, after every applied batch, that the applied state registered
    /// no other instance for this node than `instance` (see
    /// [`check_identity`](Self::check_identity)).
    #[must_use]
    pub fn with_instance(mut self, instance: InstanceId) -> Self {
        self.instance = Some(instance);
        self
    }

    /// Checks, after every applied batch, that the member list the applied
    /// state recorded is `membership` (see
    /// [`check_identity`](Self::check_identity)).
    #[must_use]
    pub fn with_membership(mut self, membership: Membership) -> Self {
        self.membership = Some(membership);
        self
    }

    /// The log is configuration `configuration`'s, started by a membership
    /// change: its first entry must be the genesis (checked after every
    /// applied batch by [`check_identity`](Self::check_identity)).
    #[must_use]
    pub fn expecting_genesis(mut self, configuration: u32) -> Self {
        self.expected_genesis = Some(configuration);
        self
    }

    /// `Err` once the applied state registered another data directory
    /// instance for this node than its own (its directory lost the node's
    /// promises), or recorded another member list than the one it was
    /// given: the node must stop. A piggyback host that calls
    /// [`absorb`](Self::absorb) itself calls this after it.
    ///
    /// # Errors
    ///
    /// [`RuntimeError::NotTheRegisteredInstance`],
    /// [`RuntimeError::Membership`].
    pub fn check_identity(&mut self) -> Result<(), RuntimeError> {
        self.check_genesis()?;
        self.check_instance()?;
        self.check_membership()
    }

    /// A log started by a change that applied anything before its genesis
    /// lost the previous configuration's state: the node must stop.
    fn check_genesis(&mut self) -> Result<(), RuntimeError> {
        let Some(configuration) = self.expected_genesis else {
            return Ok(());
        };
        let state = self
            .shared
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        if *state == ApplyState::default() {
            return Ok(());
        }
        if state
            .membership()
            .is_some_and(|list| list.configuration() == configuration)
        {
            drop(state);
            self.expected_genesis = None;
            return Ok(());
        }
        Err(RuntimeError::GenesisMissing { configuration })
    }

    fn check_membership(&mut self) -> Result<(), RuntimeError> {
        if self.membership_agreed {
            return Ok(());
        }
        let state = self
            .shared
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        match membership::recording(self.membership.as_ref(), state.membership()) {
            Recording::Refused(differences) => match state.membership() {
                Some(recorded) => Err(RuntimeError::Membership(MembershipMismatch {
                    node: self.node_id,
                    recorded: recorded.clone(),
                    differences,
                })),
                None => Ok(()),
            },
            Recording::Done(other_addresses) => {
                self.membership_agreed = true;
                for difference in other_addresses {
                    // How this node reaches a peer may differ from the
                    // record (a proxy, NAT, another name): not refused.
                    tracing::warn!(%difference, "member addresses differ from the recorded list");
                }
                Ok(())
            }
            Recording::Propose => Ok(()),
        }
    }

    fn check_instance(&self) -> Result<(), RuntimeError> {
        let registered = self.shared.registered_instance(self.node_id);
        match registration(self.instance, registered) {
            Registration::Refused { mine, registered } => {
                #[cfg(feature = "mutations")]
                if !crate::mutation::is_on(crate::mutation::Guard::IdentityCheck) {
                    crate::mutation::count_bypass();
                    return Ok(());
                }
                Err(RuntimeError::NotTheRegisteredInstance {
                    node: self.node_id,
                    mine,
                    registered,
                })
            }
            Registration::Done | Registration::Propose(_) => Ok(()),
        }
    }

    /// Absolute index of the next entry to apply.
    #[must_use]
    pub fn next_idx(&self) -> usize {
        self.cursor.next_idx()
    }

    /// Records this node's promised ballot right before entries are applied
    /// (see [`Applied::promise`]).
    pub fn observe_promise(&mut self, promise: Ballot) {
        self.promise = self.promise.max(promise);
    }

    /// Applies `entries` (read from [`next_idx`](Self::next_idx)), completes
    /// the waiters of this node's proposals, shows every other item to
    /// `on_host`, and returns `Some(idx)` when the snapshot policy asks for
    /// the log below `idx` to be compacted.
    ///
    /// # Errors
    ///
    /// [`StateError::StateLost`]: the log was trimmed past the cursor without
    /// a snapshot. Fatal: the host must stop.
    pub fn absorb<E, F>(
        &mut self,
        entries: Vec<LogEntry<E>>,
        on_host: F,
    ) -> Result<Option<usize>, StateError>
    where
        E: PaxosEnvelope,
        F: FnMut(HostItem<'_, E>),
    {
        let absorbed = {
            let mut state = self
                .shared
                .state
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            self.cursor.absorb_with(&mut state, entries, on_host)?
        };
        let Absorbed {
            applied,
            restored_to,
            ..
        } = absorbed;
        // A snapshot or a genesis replaces them all (a genesis carries the
        // previous configuration's registrations: without this refresh a new
        // configuration admitted any instance, a wiped member's included);
        // otherwise only a Register changes them.
        if restored_to.is_some()
            || applied.iter().any(|a| {
                matches!(
                    a.outcome,
                    Outcome::Registered { .. } | Outcome::Genesis(Ok(_))
                )
            })
        {
            self.shared.refresh_instances();
        }
        if let Some(trimmed_idx) = restored_to {
            // A snapshot replaced the state: count the next interval from it.
            self.snapshots.rebase(trimmed_idx);
            self.fail_waiters_covered_by_snapshot();
        }
        let mine: Vec<_> = applied
            .into_iter()
            .filter(|a| a.proposal.node == self.node_id)
            .collect();
        if !mine.is_empty() {
            let mut waiters = self
                .shared
                .waiters
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for applied in mine {
                if let Some(tx) = waiters.remove(&applied.proposal) {
                    let _ = tx.send(Ok(Applied {
                        outcome: applied.outcome,
                        promise: self.promise,
                    }));
                }
            }
        }
        let applied_to = self.cursor.next_idx();
        if let Some((recovered, since)) = self.replay
            && applied_to >= recovered
        {
            self.replay = None;
            tracing::info!(
                recovered_decided_idx = recovered,
                elapsed = ?since.elapsed(),
                "state rebuilt from the stored snapshot and log"
            );
        }
        if self.snapshots.should_snapshot(applied_to) {
            self.snapshots.snapshotted(applied_to);
            return Ok(Some(applied_to));
        }
        Ok(None)
    }
}

impl PaxosApplier {
    /// A lagging node that catches up from a snapshot never sees the entries
    /// the snapshot covers, its own included: their waiters learn at once
    /// that the outcome is lost instead of waiting out their deadline.
    fn fail_waiters_covered_by_snapshot(&self) {
        let last = {
            let state = self
                .shared
                .state
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            state.last_applied(self.node_id)
        };
        let Some(last) = last else {
            return;
        };
        let mut waiters = self
            .shared
            .waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let covered: Vec<ProposalId> = waiters.keys().filter(|id| **id <= last).copied().collect();
        for id in covered {
            if let Some(tx) = waiters.remove(&id) {
                let _ = tx.send(Err(HostError::Unavailable(
                    "the proposal was applied inside a snapshot this node caught up from; \
                     its outcome is unknown"
                        .to_owned(),
                )));
            }
        }
    }
}

impl<E: PaxosEnvelope> DecidedHook<E> for PaxosApplier {
    fn next_idx(&self) -> usize {
        self.cursor.next_idx()
    }

    fn before_decided(&mut self, status: &RunnerStatus) {
        self.observe_promise(status.promise);
    }

    fn on_decided(
        &mut self,
        entries: Vec<LogEntry<E>>,
    ) -> Result<Option<usize>, Box<dyn std::error::Error + Send + Sync>> {
        let compact = self.absorb(entries, |_| {})?;
        self.shared
            .applied_idx
            .store(self.cursor.next_idx(), std::sync::atomic::Ordering::Release);
        self.check_identity()?;
        Ok(compact)
    }
}

impl ApplierHandle {
    /// Registers a wait for proposal `id`. Register *before* proposing: the
    /// entry can be applied before the proposing call returns.
    #[must_use]
    pub fn register(&self, id: ProposalId) -> Waiter {
        let (tx, rx) = oneshot::channel();
        self.shared
            .waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, tx);
        Waiter {
            id,
            rx,
            shared: Arc::clone(&self.shared),
        }
    }

    /// Absolute index below which the log is applied to the state, as of
    /// the last batch the applier took.
    #[must_use]
    pub fn applied_idx(&self) -> usize {
        self.shared
            .applied_idx
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Number of proposals waiting (for metrics and tests).
    #[must_use]
    pub fn pending(&self) -> usize {
        self.shared
            .waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// The data-directory instance the applied state registered for `node`.
    #[must_use]
    pub fn registered_instance(&self, node: NodeId) -> Option<u128> {
        self.shared.registered_instance(node)
    }

    /// Whether the applied state belongs to configuration `configuration`
    /// (its genesis, or the founding list, is applied).
    #[must_use]
    pub fn started(&self, configuration: u32) -> bool {
        self.shared
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .membership()
            .is_some_and(|list| list.configuration() == configuration)
    }

    /// Runs `read` on the applied state.
    pub fn read_state(&self, read: &mut dyn FnMut(&ApplyState)) {
        read(
            &self
                .shared
                .state
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        );
    }
}

impl Waiter {
    /// Waits for the outcome: `Err` when it was lost (the proposal was
    /// applied inside a snapshot), `None` when the applier was dropped
    /// before applying the proposal.
    pub async fn wait(&mut self) -> Option<Result<Applied, HostError>> {
        (&mut self.rx).await.ok()
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.shared
            .waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use omnipaxos::util::LogEntry;
    use tsoracle_paxos_epoch::encode_epoch;
    use tsoracle_paxos_state::{Command, Outcome, PaxosEntry};

    fn advance(at_least: u64, proposal: ProposalId) -> LogEntry<PaxosEntry> {
        let epoch = encode_epoch(Ballot::with(1, 1, 0, 1)).unwrap();
        LogEntry::Decided(PaxosEntry(Command::Advance {
            at_least,
            epoch,
            proposal,
        }))
    }

    #[tokio::test]
    async fn a_waiter_gets_its_own_outcome_and_the_promise_at_apply() {
        let (mut applier, handle) = PaxosApplier::new(1, SnapshotPolicy::Disabled, 0);
        let mine = ProposalId::new(1, 7, 2);
        let mut waiter = handle.register(mine);
        applier.observe_promise(Ballot::with(1, 3, 0, 1));
        // Another node's proposal and an older one of ours come first.
        let entries = vec![
            advance(50, ProposalId::new(2, 1, 1)),
            advance(10, ProposalId::new(1, 7, 1)),
            advance(40, mine),
        ];
        assert_eq!(applier.absorb(entries, |_| {}).unwrap(), None);
        let applied = waiter.wait().await.unwrap().unwrap();
        assert_eq!(applied.outcome, Outcome::HighWater(50));
        assert_eq!(applied.promise, Ballot::with(1, 3, 0, 1));
        assert_eq!(handle.pending(), 0);
        let mut hw = 0;
        handle.read_state(&mut |s| hw = s.high_water());
        assert_eq!(hw, 50);
    }

    /// A configuration started by a membership change knows the members'
    /// instances from its first entry: a wiped member (another instance) is
    /// refused there too, and notices it must stop. Simulation seed 595120:
    /// a wiped node that the change kept led the new configuration, whose
    /// peers admitted it, and every proposal of its new incarnation was a
    /// duplicate of its old one's: nothing was served again.
    #[test]
    fn a_genesis_brings_the_registered_instances_with_it() {
        use tsoracle_core::Epoch;
        use tsoracle_paxos_state::{ApplyState, MemberRecord, Membership, PaxosSnapshot};
        let member = |id: u64| MemberRecord {
            id,
            peer_address: format!("10.0.0.{id}:6001"),
            client_endpoint: format!("http://10.0.0.{id}:7001"),
        };
        let command = |command: Command| LogEntry::Decided(PaxosEntry(command));
        let mut prior = ApplyState::new();
        prior.apply(&Command::RecordMembership {
            membership: Membership::new(1, vec![member(1), member(2), member(3)]).unwrap(),
            epoch: Epoch(0),
            proposal: ProposalId::new(1, 1, 1),
        });
        prior.apply(&Command::Register {
            node: 2,
            instance: 0xa,
            epoch: Epoch(0),
            proposal: ProposalId::new(2, 1, 1),
        });
        let next = Membership::new(2, vec![member(1), member(2), member(3), member(4)]).unwrap();
        prior.apply(&Command::PrepareChange {
            next,
            epoch: Epoch(0),
            proposal: ProposalId::new(1, 1, 2),
        });
        let (mut applier, handle) = PaxosApplier::new(2, SnapshotPolicy::Disabled, 0);
        applier = applier.with_instance(InstanceId(0xb)).expecting_genesis(2);
        assert_eq!(handle.registered_instance(2), None);
        let genesis = Command::Genesis {
            prior: Box::new(PaxosSnapshot::from_state(prior)),
            epoch: Epoch(2 << 96),
            proposal: ProposalId::new(1, 1, u64::MAX),
        };
        applier.absorb(vec![command(genesis)], |_| {}).unwrap();
        assert_eq!(handle.registered_instance(2), Some(0xa));
        assert!(matches!(
            applier.check_identity(),
            Err(RuntimeError::NotTheRegisteredInstance { node: 2, .. })
        ));
    }

    #[test]
    fn a_dropped_waiter_unregisters() {
        let (_applier, handle) = PaxosApplier::new(1, SnapshotPolicy::Disabled, 0);
        let waiter = handle.register(ProposalId::new(1, 1, 1));
        assert_eq!(handle.pending(), 1);
        drop(waiter);
        assert_eq!(handle.pending(), 0);
    }

    #[test]
    fn the_policy_asks_for_a_snapshot_counting_from_the_recovered_index() {
        let every = std::num::NonZeroU64::new(3).unwrap();
        let (mut applier, _handle) = PaxosApplier::new(1, SnapshotPolicy::EveryDecided(every), 0);
        let ids = (1..=4).map(|s| ProposalId::new(2, 1, s));
        let mut asks = Vec::new();
        for (i, id) in ids.enumerate() {
            asks.push(applier.absorb(vec![advance(i as u64, id)], |_| {}).unwrap());
        }
        assert_eq!(asks, vec![None, None, Some(3), None]);
    }
}
