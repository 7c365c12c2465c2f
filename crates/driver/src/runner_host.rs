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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::util::NodeId;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tsoracle_core::PeerEndpoint;
use tsoracle_paxos_state::{ApplyState, Command, Membership, PaxosEnvelope};
use tsoracle_paxos_toolkit::{
    Clock, Error as ToolkitError, InstanceId, MonotonicClock, Runner, RunnerStatus,
};

use crate::applier::ApplierHandle;
use crate::core::lease::LeaderView;
use crate::host::{HostError, PaxosHighWaterHost, PendingApply, PendingHandOver, ProposerSlot};
use crate::runner_glue::{Bridge, bridge_runner, submit_to_runner};

/// The instance a [`RunnerHost`] serves through: one configuration's
/// runner and applier. A host that follows membership changes replaces it
/// when its configuration ends (`RunnerHost::switch_to`).
struct Current<E: PaxosEnvelope> {
    runner: Arc<Runner<E>>,
    applier: ApplierHandle,
    members: Vec<NodeId>,
    membership: Option<Membership>,
    /// `Some(c)`: this instance runs configuration `c`, started from a
    /// StopSign, whose log must begin with the genesis; nothing else is
    /// submitted before the genesis is applied.
    starting: Option<u32>,
    /// Set once the genesis was seen applied, so later submissions do not
    /// read the state again.
    begun: AtomicBool,
    /// The applier of the configuration this one replaced: until the
    /// genesis is applied here, its final state is this node's state (a
    /// read whose barrier that configuration applied reads it).
    previous: Option<ApplierHandle>,
}

impl<E: PaxosEnvelope> Current<E> {
    /// Whether submissions may go to this instance: its log began (a
    /// genesis applied) or it needs no genesis.
    fn started(&self) -> bool {
        if self.begun.load(Ordering::Acquire) {
            return true;
        }
        let started = self
            .starting
            .is_none_or(|configuration| self.applier.started(configuration));
        if started {
            self.begun.store(true, Ordering::Release);
        }
        started
    }
}

/// What every [`PaxosHighWaterHost`] on a toolkit [`Runner`] holds: the
/// runner, the applier's handle, the members, this start's proposer slot
/// and the leadership watch bridged from the runner's status.
pub struct RunnerHost<E: PaxosEnvelope> {
    node_id: NodeId,
    proposer: ProposerSlot,
    current: RwLock<Arc<Current<E>>>,
    /// Runners of ended configurations, kept running so that peers that
    /// missed the StopSign can still learn it; stopped by `shutdown`.
    retired: Mutex<Vec<Arc<Runner<E>>>>,
    bridge: Bridge,
    task: Mutex<Option<JoinHandle<()>>>,
    instance: Option<InstanceId>,
}

impl<E: PaxosEnvelope> std::fmt::Debug for RunnerHost<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunnerHost")
            .field("node_id", &self.node_id)
            .field(
                "members",
                &self
                    .current
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .members,
            )
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
    /// bridge ([`leadership_from_runner`](crate::leadership_from_runner)),
    /// so call it inside a tokio runtime.
    #[must_use]
    pub fn new(
        runner: Arc<Runner<E>>,
        applier: ApplierHandle,
        members: Vec<NodeId>,
        incarnation: u64,
    ) -> Self {
        let bridge = Bridge::new(&runner.status().borrow());
        let task = bridge_runner(&bridge, runner.status(), None);
        Self {
            node_id: runner.inbox().node_id(),
            proposer: ProposerSlot::new(incarnation),
            current: RwLock::new(Arc::new(Current {
                runner,
                applier,
                members,
                membership: None,
                starting: None,
                begun: AtomicBool::new(false),
                previous: None,
            })),
            retired: Mutex::new(Vec::new()),
            bridge,
            task: Mutex::new(Some(task)),
            instance: None,
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
    pub fn with_membership(self, membership: Membership) -> Self {
        self.reshaped(|current| current.membership = Some(membership))
    }

    /// The runner runs configuration `configuration`, started by a change
    /// (a node that joins): nothing is submitted before its genesis.
    #[must_use]
    pub(crate) fn starting(self, configuration: u32) -> Self {
        self.reshaped(|current| current.starting = Some(configuration))
    }

    /// The host with its current instance changed by `change` (while it is
    /// still being built, so nothing shares it).
    fn reshaped(mut self, change: impl FnOnce(&mut Current<E>)) -> Self {
        let slot = self
            .current
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        let mut next = Current {
            runner: Arc::clone(&slot.runner),
            applier: slot.applier.clone(),
            members: slot.members.clone(),
            membership: slot.membership.clone(),
            starting: slot.starting,
            begun: AtomicBool::new(false),
            previous: slot.previous.clone(),
        };
        change(&mut next);
        *slot = Arc::new(next);
        self
    }

    fn current(&self) -> Arc<Current<E>> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The member list of the current configuration, if set.
    #[must_use]
    pub fn membership(&self) -> Option<Membership> {
        self.current().membership.clone()
    }

    /// The configuration whose genesis the current instance waits for
    /// (started by a change, not begun yet), if any.
    pub(crate) fn awaiting_genesis(&self) -> Option<u32> {
        let current = self.current();
        current.starting.filter(|_| !current.started())
    }

    /// The current configuration's runner, e.g. to propose the
    /// application's own entries.
    #[must_use]
    pub fn runner(&self) -> Arc<Runner<E>> {
        Arc::clone(&self.current().runner)
    }

    /// The current configuration's applier handle (waiters, the applied
    /// state).
    #[must_use]
    pub fn applier(&self) -> ApplierHandle {
        self.current().applier.clone()
    }

    /// The current runner's status, followed across configuration changes
    /// (a host that follows membership changes switches runners): a configuration that ended
    /// into a next one that includes this node shows no StopSign here.
    #[must_use]
    pub fn status(&self) -> watch::Receiver<RunnerStatus> {
        self.bridge.status()
    }

    /// Makes `runner` (of configuration `membership`, started from a
    /// StopSign: its log must begin with a genesis) the current one. The
    /// previous runner keeps running, retired, until
    /// [`shutdown`](Self::shutdown), so peers that missed its StopSign can
    /// still learn it.
    pub(crate) fn switch_to(
        &self,
        runner: Arc<Runner<E>>,
        applier: ApplierHandle,
        membership: Membership,
    ) {
        let members = membership.members().iter().map(|m| m.id).collect();
        let configuration = membership.configuration();
        let next_applier = applier.clone();
        let next = Arc::new(Current {
            runner: Arc::clone(&runner),
            applier,
            members,
            starting: Some(membership.configuration()),
            membership: Some(membership),
            begun: AtomicBool::new(false),
            previous: Some(self.current().applier.clone()),
        });
        let previous = std::mem::replace(
            &mut *self.current.write().unwrap_or_else(PoisonError::into_inner),
            next,
        );
        self.retired
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::clone(&previous.runner));
        let task = bridge_runner(
            &self.bridge,
            runner.status(),
            Some((next_applier, configuration)),
        );
        if let Some(old) = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(task)
        {
            old.abort();
        }
    }

    /// Follow configuration changes: a StopSign decided in the current
    /// configuration shows as no leader, not as an ended configuration
    /// (the next one is about to start), until [`leave`](Self::leave).
    pub(crate) fn follow_changes(&self) {
        let status = self.runner().status().borrow().clone();
        self.bridge
            .follow_changes(&status, self.awaiting_genesis().is_none());
    }

    /// This node is not in the next configuration: report the
    /// configuration as ended (the driver fails every call for good).
    pub(crate) fn leave(&self) {
        let status = self.runner().status().borrow().clone();
        self.bridge.leave(&status);
    }

    /// Stops the consensus thread after its current round, its last sync
    /// included, and then the leadership bridge. Later submissions fail.
    ///
    /// # Errors
    ///
    /// The runner's error when the consensus thread had failed.
    pub async fn shutdown(&self) -> Result<(), ToolkitError> {
        let result = self.runner().shutdown().await;
        let retired: Vec<_> = self
            .retired
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
            .collect();
        for runner in retired {
            let _ = runner.shutdown().await;
        }
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            // The runner's final status ends the bridge on its own; wait a
            // little for it, then stop it regardless.
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(1), task)
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
        self.current().members.clone()
    }

    /// [`PaxosHighWaterHost::leadership`].
    #[must_use]
    pub fn leadership(&self) -> watch::Receiver<LeaderView> {
        self.bridge.leadership()
    }

    /// [`PaxosHighWaterHost::hand_over`] on the current configuration's
    /// runner.
    #[must_use]
    pub fn hand_over(&self, ballot: Ballot, to: Option<NodeId>) -> PendingHandOver {
        let runner = Arc::clone(&self.current().runner);
        Box::pin(async move {
            runner.hand_over(ballot, to).await.map_err(|err| match err {
                // Refused before anything was released.
                ToolkitError::NotLeader { .. } | ToolkitError::InvalidConfig(_) => {
                    HostError::Unavailable(err.to_string())
                }
                other => HostError::Failed(other.to_string()),
            })
        })
    }

    /// [`PaxosHighWaterHost::clock`]: the runner's lease clock (every
    /// configuration's runner of a node gets the same one).
    #[must_use]
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.current()
            .runner
            .lease_clock()
            .unwrap_or_else(|| Arc::new(MonotonicClock::new()))
    }

    /// [`PaxosHighWaterHost::submit`], through [`submit_to_runner`]. A
    /// configuration that is starting takes nothing before its genesis.
    ///
    /// # Errors
    ///
    /// [`HostError::Unavailable`] when the proposal queue is full or the
    /// configuration is starting, [`HostError::Failed`] when the runner has
    /// stopped.
    pub fn submit(&self, command: Command) -> Result<PendingApply, HostError> {
        let current = self.current();
        if !current.started() {
            return Err(HostError::Unavailable(format!(
                "configuration {} is starting: its first entry is not decided yet",
                current.starting.unwrap_or_default()
            )));
        }
        submit_to_runner(&current.runner, &current.applier, command)
    }

    /// [`PaxosHighWaterHost::read_state`]. Until a configuration started by
    /// a change applied its genesis, the state is the previous
    /// configuration's final one: a read whose barrier that configuration
    /// applied must not see the new log's empty state (simulation seed
    /// 505675 read a dense counter of 0 so).
    pub fn read_state(&self, read: &mut dyn FnMut(&ApplyState)) {
        let current = self.current();
        match &current.previous {
            Some(previous) if !current.started() => previous.read_state(read),
            _ => current.applier.read_state(read),
        }
    }
}

impl<E: PaxosEnvelope> Drop for RunnerHost<E> {
    fn drop(&mut self) {
        if let Some(task) = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
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

    fn clock(&self) -> Arc<dyn Clock> {
        self.runner_host().clock()
    }

    fn hand_over(&self, ballot: Ballot, to: Option<NodeId>) -> PendingHandOver {
        self.runner_host().hand_over(ballot, to)
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

    fn membership(&self) -> Option<Membership> {
        self.runner_host().membership()
    }
}
