//! [`PaxosHighWaterHost`]: the one trait a host implements to lend the
//! driver its OmniPaxos log.
//!
//! A host owns an OmniPaxos instance (its own, for a piggyback host, or the
//! one [`StandaloneHost`](crate::StandaloneHost) runs) and folds the decided
//! [`Command`]s into an [`ApplyState`] (see [`PaxosApplier`](crate::PaxosApplier)).
//! The driver asks it for four things: submit a command and wait for this
//! node to apply it, read the applied state, watch this node's view of the
//! leadership, and name each node's client-facing endpoint. Everything
//! tsoracle-specific (fencing, the lease, leadership events) stays in the
//! driver.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::util::NodeId;
use tokio::sync::watch;
use tsoracle_core::PeerEndpoint;
use tsoracle_paxos_state::{ApplyState, Command, Membership, Outcome};
use tsoracle_paxos_toolkit::{Clock, InstanceId, MonotonicClock};

use crate::core::lease::LeaderView;

/// A command of this node's, applied by this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// What applying it did.
    pub outcome: Outcome,
    /// This node's promised ballot when it applied the entry. Ballots only
    /// grow, so when it equals the ballot this node led under when it
    /// proposed, the entry was decided by this node under that ballot: the
    /// decision can renew the leader lease.
    pub promise: Ballot,
}

/// Why a host could not apply a command. The driver maps each variant to the
/// transient or permanent side of `ConsensusError`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// The command may succeed if retried: a full queue, a lost proposal.
    #[error("host unavailable: {0}")]
    Unavailable(String),
    /// The consensus thread failed or stopped, or the configuration ended:
    /// no later command on this host can succeed.
    #[error("host failed: {0}")]
    Failed(String),
}

/// The right to mint proposal ids on a host, granted once per start.
#[derive(Debug)]
pub struct ProposerSlot {
    incarnation: u64,
    claimed: AtomicBool,
}

impl ProposerSlot {
    /// A slot for this start's `incarnation` (see
    /// [`next_incarnation`](crate::next_incarnation)).
    #[must_use]
    pub const fn new(incarnation: u64) -> Self {
        Self {
            incarnation,
            claimed: AtomicBool::new(false),
        }
    }

    /// The incarnation, the first time; `None` afterwards.
    pub fn claim(&self) -> Option<u64> {
        (!self.claimed.swap(true, Ordering::SeqCst)).then_some(self.incarnation)
    }
}

/// The wait for one submitted command: resolves once this node applied it.
pub type PendingApply = Pin<Box<dyn Future<Output = Result<Applied, HostError>> + Send>>;

/// The wait for [`PaxosHighWaterHost::hand_over`]: the successor asked to
/// take over.
pub type PendingHandOver = Pin<Box<dyn Future<Output = Result<NodeId, HostError>> + Send>>;

/// The one trait a host implements to give the driver its OmniPaxos log.
///
/// Object-safe: the driver holds it as `H` or as `Arc<dyn PaxosHighWaterHost>`.
/// Implementations must be cancel-safe: the driver drops a [`PendingApply`]
/// at its deadline, and dropping it must corrupt nothing (the command may
/// still be decided later; every command is safe to apply late).
pub trait PaxosHighWaterHost: Send + Sync + 'static {
    /// This node's OmniPaxos pid.
    fn node_id(&self) -> NodeId;

    /// Hands this start's incarnation to the one driver that mints proposal
    /// ids on this host, and `None` to any later caller (see
    /// [`ProposerSlot`]).
    ///
    /// Proposal ids are `(node_id, incarnation, seq)` and must grow: the apply
    /// state takes an id at or below the last one applied for a node as a
    /// duplicate. The incarnation grows at every start of the node and is
    /// persisted before use (an id still in the durable log from an earlier
    /// run must never be minted again), and only one driver per start may
    /// count `seq` from zero.
    fn claim_proposer(&self) -> Option<u64>;

    /// Every node of the configuration, this one included.
    fn members(&self) -> Vec<NodeId>;

    /// The client-facing tsoracle `host:port` of `node` (not its peer
    /// address), for `Follower` redirects.
    fn client_endpoint(&self, node: NodeId) -> Option<PeerEndpoint>;

    /// A watch of this node's leadership view; the current value is
    /// available at once and a new one is published when it changes. Its
    /// [`LeaderView::lease_until`] is read on [`clock`](Self::clock).
    fn leadership(&self) -> watch::Receiver<LeaderView>;

    /// Releases the lease of `ballot`, the ballot this node leads under,
    /// and asks `to` (`None`: a peer the host picks, one that follows this
    /// leader) to take leadership (a toolkit runner's `Runner::hand_over`).
    /// The driver calls it only after it stopped serving under `ballot`.
    ///
    /// [`HostError::Unavailable`] means refused with nothing released (this
    /// node no longer leads under `ballot`, no such successor): the driver
    /// then serves again. The default refuses so: a host without it has no
    /// planned hand-over.
    fn hand_over(&self, ballot: Ballot, to: Option<NodeId>) -> PendingHandOver {
        let _ = (ballot, to);
        Box::pin(std::future::ready(Err(HostError::Unavailable(
            "this host cannot hand leadership over".to_owned(),
        ))))
    }

    /// The clock the host's lease is timed on; the driver reads the lease
    /// against it. The default is the process's monotonic clock (every
    /// [`MonotonicClock`] of a process agrees).
    fn clock(&self) -> Arc<dyn Clock> {
        Arc::new(MonotonicClock::new())
    }

    /// Queues `command` for `OmniPaxos::append` without waiting and returns
    /// the wait for *this node* to apply it. Resolve only with the outcome of
    /// this very command (match on its proposal id), never on log progress
    /// alone.
    ///
    /// Commands must reach the log in the order of `submit` calls: the
    /// driver mints per-node increasing proposal ids under a lock and the
    /// apply state treats an id below one already applied as a duplicate.
    /// Hence `submit` never waits: a full queue is
    /// [`HostError::Unavailable`].
    ///
    /// # Errors
    ///
    /// [`HostError::Unavailable`] when the queue is full,
    /// [`HostError::Failed`] when the host has stopped or failed.
    fn submit(&self, command: Command) -> Result<PendingApply, HostError>;

    /// Runs `read` on the applied state. After `submit` of a barrier returns,
    /// this sees every command decided before the barrier: a linearizable
    /// read.
    fn read_state(&self, read: &mut dyn FnMut(&ApplyState));

    /// This node's data-directory instance, if the host has one: the driver
    /// then registers it in the replicated state (`Command::Register`) once
    /// it is not on record, so peers can refuse a wiped or replaced
    /// directory that speaks under this node's id. `None` (the default): no
    /// registration.
    fn instance(&self) -> Option<InstanceId> {
        None
    }

    /// The member list of this node's current configuration (the one it
    /// was started with, until a membership change), if the host keeps one:
    /// the driver then records it in the replicated state
    /// (`Command::RecordMembership`) while no list is on record, and the
    /// host's applier stops the node when another list is. `None` (the
    /// default): nothing recorded, nothing compared.
    fn membership(&self) -> Option<Membership> {
        None
    }
}
