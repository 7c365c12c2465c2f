//! [`RunnerHost`] and [`RunnerBackedHost`]: the [`PaxosHighWaterHost`]
//! methods that are the same for every host on a toolkit [`Runner`], written
//! once.
//!
//! A host on a runner differs from another only in its entry type, its
//! decided-entry hook and where its nodes' clients connect. Everything else
//! the trait asks (this node's id, the one proposer claim per start, the
//! members, the leadership watch, `submit` and `read_state` through the
//! [`PaxosApplier`](crate::PaxosApplier)) comes from a [`RunnerHost`]. A host
//! keeps one, implements [`RunnerBackedHost`] (that `RunnerHost` and
//! `client_endpoint_of`) and is a [`PaxosHighWaterHost`] through the blanket
//! implementation. [`StandaloneHost`](crate::StandaloneHost) is one; the
//! piggyback example's host is another. A host that does not run on a
//! toolkit runner implements [`PaxosHighWaterHost`] by hand, as before.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use omnipaxos::util::NodeId;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tsoracle_core::PeerEndpoint;
use tsoracle_paxos_state::{ApplyState, Command, Membership, PaxosEnvelope};
use tsoracle_paxos_toolkit::{Error as ToolkitError, InstanceId, Runner};

use crate::applier::ApplierHandle;
use crate::core::lease::LeaderView;
use crate::host::{HostError, PaxosHighWaterHost, PendingApply, ProposerSlot};
use crate::runner_glue::{leadership_from_runner, submit_to_runner};

/// What every [`PaxosHighWaterHost`] on a toolkit [`Runner`] holds: the
/// runner, the applier's handle, the members, this start's proposer slot
/// and the leadership watch bridged from the runner's status.
pub struct RunnerHost<E: PaxosEnvelope> {
    node_id: NodeId,
    members: Vec<NodeId>,
    proposer: ProposerSlot,
    runner: Arc<Runner<E>>,
    applier: ApplierHandle,
    leadership: watch::Receiver<LeaderView>,
    bridge: Mutex<Option<JoinHandle<()>>>,
    instance: Option<InstanceId>,
    membership: Option<Membership>,
}

impl<E: PaxosEnvelope> std::fmt::Debug for RunnerHost<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunnerHost")
            .field("node_id", &self.node_id)
            .field("members", &self.members)
            .finish_non_exhaustive()
    }
}

impl<E> RunnerHost<E>
where
    E: PaxosEnvelope + Send + 'static,
    E::Snapshot: Send,
{
    /// The host parts of `runner`, whose decided-entry hook applies the
    /// oracle's commands through the [`PaxosApplier`](crate::PaxosApplier)
    /// that `applier` belongs to. `members` are every node of the
    /// configuration, as given to [`Runner::spawn`]; `incarnation` is this
    /// start's (see [`crate::next_incarnation`]). Starts the leadership
    /// bridge ([`leadership_from_runner`]), so call it inside a tokio
    /// runtime.
    #[must_use]
    pub fn new(
        runner: Arc<Runner<E>>,
        applier: ApplierHandle,
        members: Vec<NodeId>,
        incarnation: u64,
    ) -> Self {
        let (leadership, bridge) = leadership_from_runner(runner.status());
        Self {
            node_id: runner.inbox().node_id(),
            members,
            proposer: ProposerSlot::new(incarnation),
            runner,
            applier,
            leadership,
            bridge: Mutex::new(Some(bridge)),
            instance: None,
            membership: None,
        }
    }

    /// Presents `instance` as this node's data-directory instance (see
    /// [`PaxosHighWaterHost::instance`]).
    #[must_use]
    pub fn with_instance(mut self, instance: InstanceId) -> Self {
        self.instance = Some(instance);
        self
    }

    /// This node's data-directory instance, if set.
    #[must_use]
    pub fn instance(&self) -> Option<InstanceId> {
        self.instance
    }

    /// Presents `membership` as the member list this node was started with
    /// (see [`PaxosHighWaterHost::membership`]).
    #[must_use]
    pub fn with_membership(mut self, membership: Membership) -> Self {
        self.membership = Some(membership);
        self
    }

    /// The member list this node was started with, if set.
    #[must_use]
    pub fn membership(&self) -> Option<&Membership> {
        self.membership.as_ref()
    }

    /// The runner, e.g. to propose the application's own entries.
    #[must_use]
    pub fn runner(&self) -> &Arc<Runner<E>> {
        &self.runner
    }

    /// The applier's handle (waiters, the applied state).
    #[must_use]
    pub fn applier(&self) -> &ApplierHandle {
        &self.applier
    }

    /// Stops the consensus thread after its current round, its last sync
    /// included, and then the leadership bridge. Later submissions fail.
    ///
    /// # Errors
    ///
    /// The runner's error when the consensus thread had failed.
    pub async fn shutdown(&self) -> Result<(), ToolkitError> {
        let result = self.runner.shutdown().await;
        let bridge = self
            .bridge
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(bridge) = bridge {
            // The runner's final status ends the bridge on its own; wait a
            // little for it, then stop it regardless.
            let abort = bridge.abort_handle();
            if tokio::time::timeout(Duration::from_secs(1), bridge)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        result
    }

    /// [`PaxosHighWaterHost::node_id`]: the runner's OmniPaxos pid.
    #[must_use]
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// [`PaxosHighWaterHost::claim_proposer`].
    pub fn claim_proposer(&self) -> Option<u64> {
        self.proposer.claim()
    }

    /// [`PaxosHighWaterHost::members`].
    #[must_use]
    pub fn members(&self) -> Vec<NodeId> {
        self.members.clone()
    }

    /// [`PaxosHighWaterHost::leadership`].
    #[must_use]
    pub fn leadership(&self) -> watch::Receiver<LeaderView> {
        self.leadership.clone()
    }

    /// [`PaxosHighWaterHost::submit`], through [`submit_to_runner`].
    ///
    /// # Errors
    ///
    /// [`HostError::Unavailable`] when the proposal queue is full,
    /// [`HostError::Failed`] when the runner has stopped.
    pub fn submit(&self, command: Command) -> Result<PendingApply, HostError> {
        submit_to_runner(&self.runner, &self.applier, command)
    }

    /// [`PaxosHighWaterHost::read_state`].
    pub fn read_state(&self, read: &mut dyn FnMut(&ApplyState)) {
        self.applier.read_state(read);
    }
}

impl<E: PaxosEnvelope> Drop for RunnerHost<E> {
    fn drop(&mut self) {
        if let Some(bridge) = self
            .bridge
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            bridge.abort();
        }
    }
}

/// A host on a toolkit [`Runner`]: it names its [`RunnerHost`] and its
/// nodes' client endpoints, and is a [`PaxosHighWaterHost`] through the
/// blanket implementation, which takes every other method from the
/// `RunnerHost`.
pub trait RunnerBackedHost: Send + Sync + 'static {
    /// The host's log entry.
    type Entry: PaxosEnvelope<Snapshot: Send> + Send + Sync + 'static;

    /// The parts every runner host shares.
    fn runner_host(&self) -> &RunnerHost<Self::Entry>;

    /// [`PaxosHighWaterHost::client_endpoint`]: the client-facing tsoracle
    /// `host:port` of `node`, for `Follower` redirects. (Named apart from
    /// the trait method, so code with both traits in scope stays
    /// unambiguous.)
    fn client_endpoint_of(&self, node: NodeId) -> Option<PeerEndpoint>;
}

impl<H: RunnerBackedHost> PaxosHighWaterHost for H {
    fn node_id(&self) -> NodeId {
        self.runner_host().node_id()
    }

    fn claim_proposer(&self) -> Option<u64> {
        self.runner_host().claim_proposer()
    }

    fn members(&self) -> Vec<NodeId> {
        self.runner_host().members()
    }

    fn client_endpoint(&self, node: NodeId) -> Option<PeerEndpoint> {
        self.client_endpoint_of(node)
    }

    fn leadership(&self) -> watch::Receiver<LeaderView> {
        self.runner_host().leadership()
    }

    fn submit(&self, command: Command) -> Result<PendingApply, HostError> {
        self.runner_host().submit(command)
    }

    fn read_state(&self, read: &mut dyn FnMut(&ApplyState)) {
        self.runner_host().read_state(read);
    }

    fn instance(&self) -> Option<InstanceId> {
        self.runner_host().instance()
    }

    fn membership(&self) -> Option<&Membership> {
        self.runner_host().membership()
    }
}
