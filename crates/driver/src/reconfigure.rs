//! Following membership changes: the StopSign admission of a host's inbox
//! and the task that moves a [`StandaloneHost`](crate::StandaloneHost) from
//! one OmniPaxos configuration to the next.
//!
//! The decisions are [`core::change`](crate::core::change)'s; this module
//! carries them out. Once the applied state agreed on a change
//! (`Command::PrepareChange`), the node that leads proposes the StopSign
//! that names it (whichever node leads: a leader that crashed mid-change is
//! replaced by one that finishes it). Once the StopSign is decided and
//! applied, each member of the next list starts that configuration's
//! instance through the host's [`NextConfiguration`] (fresh storage, a sink
//! of that configuration), and a member that holds the final state proposes
//! the genesis that begins its log; a node outside the next list leaves.

use std::sync::Arc;
use std::time::Duration;

use omnipaxos::OmniPaxosConfig;
use omnipaxos::storage::{SnapshotType, StopSign};
use omnipaxos::util::{LogSync, NodeId};
use tsoracle_core::Epoch;
use tsoracle_paxos_state::{
    ApplyState, Command, Membership, PaxosEnvelope, PaxosSnapshot, ProposalId, SnapshotPolicy,
};
use tsoracle_paxos_toolkit::{
    ConfigBuilder, Error as ToolkitError, Inbox, InstanceId, Runner, RunnerConfig,
    StopSignAdmission,
};

use crate::applier::{ApplierHandle, PaxosApplier};
use crate::core::change::{self, AfterStop};
use crate::identity::RegistryAdmission;
use crate::runner_glue::submit_to_runner;
use crate::runner_host::RunnerHost;

/// How a host starts this node's instance of a later configuration. The
/// node's binary implements it over RocksDB and the tonic transport, a test
/// over memory storage and the in-memory network.
pub trait NextConfiguration<E: PaxosEnvelope>: Send + Sync + 'static {
    /// Starts the consensus thread of this node in `membership`'s
    /// configuration: builds `config` on storage of its own whose log is
    /// empty (never the previous configuration's), and spawns a
    /// [`Runner`] with `hook`, `runner` and a sink whose messages reach the
    /// peers' instances of that configuration (and no other).
    ///
    /// # Errors
    ///
    /// What went wrong, in words for the log.
    fn spawn(
        &self,
        membership: &Membership,
        config: OmniPaxosConfig,
        hook: PaxosApplier,
        runner: RunnerConfig,
    ) -> Result<Runner<E>, String>;

    /// Hands the new runner's inbox to the transport, once the host set its
    /// admissions on it.
    fn attach(&self, membership: &Membership, inbox: Inbox<E>);

    /// The member list of a configuration newer than `configuration` that a
    /// peer runs, if the transport can ask (the newest it knows). A node
    /// that missed its configuration's StopSign (its peers moved on, and no
    /// one is left to sync it) learns the change this way. The default
    /// knows of none.
    fn newer(&self, configuration: u32) -> Option<Membership> {
        let _ = configuration;
        None
    }

    /// This node applied the genesis of `membership`'s configuration: from
    /// now on a restart starts that configuration (record it durably), and
    /// the previous configuration's storage is no longer needed once every
    /// peer has moved on. The default records nothing.
    fn started(&self, membership: &Membership) {
        let _ = membership;
    }
}

/// The runner's StopSign check: a StopSign passes only when it names the
/// change agreed in this node's applied state, in the entries this node
/// holds past it, or in the log sync it travels with (rule:
/// [`change::admits`]).
#[derive(Debug, Clone)]
pub struct ChangeAdmission {
    applier: ApplierHandle,
}

impl ChangeAdmission {
    /// The admission of the node whose applied state `applier` reads.
    #[must_use]
    pub fn new(applier: ApplierHandle) -> Self {
        Self { applier }
    }
}

impl<E: PaxosEnvelope> StopSignAdmission<E> for ChangeAdmission {
    fn admit(&self, stop_sign: &StopSign, sync: Option<&LogSync<E>>, own: &[E]) -> bool {
        #[cfg(feature = "mutations")]
        if !crate::mutation::is_on(crate::mutation::Guard::StopSignAdmission) {
            crate::mutation::count_bypass();
            return true;
        }
        let mut agreed: Vec<Membership> = pending_change(&self.applier).into_iter().collect();
        agreed.extend(agreed_in(own));
        if let Some(sync) = sync {
            agreed.extend(carried(sync));
        }
        change::admits(&agreed, stop_sign)
    }

    /// A membership change is proposed only by the leader's own admin path
    /// (`PaxosDriver::change_membership` refuses on a follower): a
    /// forwarded `PrepareChange` is dropped, so a peer link alone can
    /// never start one.
    fn admit_forward(&self, entry: &E) -> bool {
        #[cfg(feature = "mutations")]
        if !crate::mutation::is_on(crate::mutation::Guard::StopSignAdmission) {
            return true;
        }
        agreed_in(std::slice::from_ref(entry)).next().is_none()
    }
}

/// Every change agreed by a `PrepareChange` among `entries`.
fn agreed_in<E: PaxosEnvelope>(entries: &[E]) -> impl Iterator<Item = Membership> + '_ {
    entries
        .iter()
        .filter_map(PaxosEnvelope::paxos_command)
        .filter_map(|command| match command {
            Command::PrepareChange { next, .. } => Some(next.clone()),
            _ => None,
        })
}

/// The changes agreed in a log sync: in its snapshot, or among its entries.
fn carried<E: PaxosEnvelope>(sync: &LogSync<E>) -> Vec<Membership> {
    let mut agreed: Vec<Membership> = match &sync.decided_snapshot {
        Some(SnapshotType::Complete(snapshot) | SnapshotType::Delta(snapshot)) => {
            E::paxos_snapshot(snapshot)
                .agreed_change()
                .cloned()
                .into_iter()
                .collect()
        }
        None => Vec::new(),
    };
    agreed.extend(agreed_in(&sync.suffix));
    agreed
}

fn pending_change(applier: &ApplierHandle) -> Option<Membership> {
    let mut pending = None;
    applier.read_state(&mut |state| pending = state.pending_change().cloned());
    pending
}

/// What this node needs to start an instance of a later configuration.
#[derive(Debug, Clone)]
pub(crate) struct InstanceSettings {
    pub(crate) node_id: NodeId,
    pub(crate) incarnation: u64,
    pub(crate) election_ticks: u64,
    pub(crate) buffer_size: usize,
    pub(crate) snapshot_policy: SnapshotPolicy,
    pub(crate) runner: RunnerConfig,
    pub(crate) instance: Option<InstanceId>,
}

/// How often the task looks again without news from the runner (a pending
/// change applied while the leader's status did not move).
const RECHECK: Duration = Duration::from_millis(100);

/// How often the task asks whether peers run a newer configuration (a node
/// that missed a StopSign).
const ASK_PEERS_EVERY: Duration = Duration::from_secs(2);

/// How a configuration ended for this node.
enum Ended {
    /// Its StopSign was decided and applied here.
    Stopped(StopSign),
    /// Peers run a newer configuration: this node missed the end of its
    /// own (nothing left to sync it), and learns the change from them.
    Missed(Membership),
}

/// Follows configuration changes for `core` until its runner stops or this
/// node leaves. Owned by the host, which aborts it at shutdown.
pub(crate) async fn follow<E>(
    core: Arc<RunnerHost<E>>,
    settings: InstanceSettings,
    next: Arc<dyn NextConfiguration<E>>,
) where
    E: PaxosEnvelope + Send + Sync + 'static,
    E::Snapshot: Send,
{
    let me = settings.node_id;
    // A node that joined waits for its configuration's genesis first (or
    // catches up with its peers, should they have moved on meanwhile).
    if core.awaiting_genesis().is_some() {
        match await_genesis(&core, next.as_ref()).await {
            Genesis::Applied => {
                if let Some(list) = core.membership() {
                    next.started(&list);
                }
            }
            Genesis::Stopped => return,
            Genesis::Newer(newer) => {
                if !catch_up(&core, &settings, next.as_ref(), me, &newer).await {
                    return;
                }
            }
        }
    }
    loop {
        let stop_sign = match finish_or_wait(&core, me, next.as_ref()).await {
            None => return,
            Some(Ended::Stopped(stop_sign)) => stop_sign,
            Some(Ended::Missed(newer)) => {
                if !catch_up(&core, &settings, next.as_ref(), me, &newer).await {
                    return;
                }
                continue;
            }
        };
        let mut final_state = ApplyState::new();
        core.read_state(&mut |state| final_state = state.clone());
        // Who led the configuration that ended, as this node saw it, and
        // its members: the hand-over below.
        let led_by = core.runner().status().borrow().leader.map(|(id, _)| id);
        let ended = core.membership();
        match change::after_stop(me, final_state.pending_change(), &stop_sign) {
            AfterStop::Continue(list) => {
                let configuration = list.configuration();
                if let Err(reason) = start_next(&core, &settings, next.as_ref(), &list) {
                    tracing::error!(
                        configuration,
                        %reason,
                        "cannot start this node's instance of the next configuration"
                    );
                    core.leave();
                    return;
                }
                tracing::info!(configuration, members = %list, "configuration started on this node");
                if ended
                    .as_ref()
                    .is_some_and(|ended| change::takes_over(me, led_by, ended, &list))
                {
                    // The hand-over: the next configuration gets its leader
                    // in one round trip instead of an election timeout.
                    match core.runner().take_leadership().await {
                        Ok(()) => tracing::debug!(
                            configuration,
                            "taking the lead of the next configuration"
                        ),
                        Err(err) => tracing::debug!(%err, "could not take the lead"),
                    }
                }
                if begin_log(&core, &settings, final_state).await {
                    next.started(&list);
                }
            }
            AfterStop::Removed(list) => {
                tracing::warn!(
                    next = %list,
                    "this node is not a member of the next configuration: it left the cluster"
                );
                core.leave();
                return;
            }
            AfterStop::Unexplained => {
                tracing::error!(
                    ?stop_sign,
                    "the configuration ended with a StopSign that names no agreed change; this \
                     node cannot know its next members"
                );
                core.leave();
                return;
            }
        }
    }
}

/// Waits for the current configuration's decided StopSign, proposing the
/// one that finishes an agreed change whenever this node leads. `None`
/// when the runner stopped.
async fn finish_or_wait<E>(
    core: &RunnerHost<E>,
    me: NodeId,
    next: &dyn NextConfiguration<E>,
) -> Option<Ended>
where
    E: PaxosEnvelope + Send + 'static,
    E::Snapshot: Send,
{
    let runner = core.runner();
    let applier = core.applier();
    let configuration = core.membership().map(|list| list.configuration());
    let mut status = runner.status();
    let mut asked = None;
    let mut asked_peers = tokio::time::Instant::now();
    loop {
        let now = status.borrow_and_update().clone();
        if now.stopped {
            return None;
        }
        if let Some(stop_sign) = now.stop_sign {
            return Some(Ended::Stopped(stop_sign));
        }
        if asked_peers.elapsed() >= ASK_PEERS_EVERY {
            asked_peers = tokio::time::Instant::now();
            if let Some(current) = configuration
                && let Some(newer) = next.newer(current).filter(|n| n.configuration() > current)
            {
                return Some(Ended::Missed(newer));
            }
        }
        // Asked once per ballot: a StopSign proposed under a ballot that was
        // then lost may be gone from the log, and a leader elected again
        // must propose it again.
        if now.leader == Some((me, true))
            && let Some(next) = pending_change(&applier)
            && asked != Some((next.configuration(), now.promise))
        {
            match runner
                .reconfigure(change::cluster_config(&next), None)
                .await
            {
                Ok(()) | Err(ToolkitError::ConfigurationStopped) => {
                    tracing::info!(next = %next, "proposed the StopSign that ends this configuration");
                    asked = Some((next.configuration(), now.promise));
                }
                Err(err) => tracing::debug!(%err, "the StopSign is not proposed yet"),
            }
        }
        if let Ok(Err(_)) = tokio::time::timeout(RECHECK, status.changed()).await {
            return None;
        }
    }
}

/// The mutation `carry-state`: a state that holds nothing but the member
/// list and the agreed change (so the genesis still starts the log).
#[cfg(feature = "mutations")]
fn only_the_change(final_state: &ApplyState, settings: &InstanceSettings) -> ApplyState {
    let mut state = ApplyState::new();
    let proposal = |seq| ProposalId::new(settings.node_id, settings.incarnation, seq);
    if let Some(current) = final_state.membership() {
        state.apply(&Command::RecordMembership {
            membership: current.clone(),
            epoch: Epoch(0),
            proposal: proposal(1),
        });
    }
    if let Some(next) = final_state.pending_change() {
        state.apply(&Command::PrepareChange {
            next: next.clone(),
            epoch: Epoch(0),
            proposal: proposal(2),
        });
    }
    state
}

/// How a wait for this node's genesis ended.
enum Genesis {
    /// Applied: the configuration began here.
    Applied,
    /// The runner stopped.
    Stopped,
    /// Peers run a configuration newer than the one awaited (its genesis
    /// may never reach this node: the change after it went on without it).
    Newer(Membership),
}

/// Waits until the current instance applied its genesis, asking the peers
/// every [`ASK_PEERS_EVERY`] whether they run a newer configuration.
async fn await_genesis<E>(core: &RunnerHost<E>, next: &dyn NextConfiguration<E>) -> Genesis
where
    E: PaxosEnvelope + Send + 'static,
    E::Snapshot: Send,
{
    let mut status = core.runner().status();
    let mut asked_peers = tokio::time::Instant::now();
    loop {
        let Some(awaited) = core.awaiting_genesis() else {
            return Genesis::Applied;
        };
        if status.borrow_and_update().stopped {
            return Genesis::Stopped;
        }
        if asked_peers.elapsed() >= ASK_PEERS_EVERY {
            asked_peers = tokio::time::Instant::now();
            if let Some(newer) = next.newer(awaited).filter(|n| n.configuration() > awaited) {
                return Genesis::Newer(newer);
            }
        }
        if let Ok(Err(_)) = tokio::time::timeout(RECHECK, status.changed()).await {
            return Genesis::Stopped;
        }
    }
}

/// A node that missed the end of its configuration (or the genesis of the
/// one it waited for): joins `newer` (its log begins with a genesis the
/// members that hold the final state propose) when it is a member, or
/// leaves; again while its peers keep moving on. `false`: it left, or
/// could not start.
async fn catch_up<E>(
    core: &RunnerHost<E>,
    settings: &InstanceSettings,
    next: &dyn NextConfiguration<E>,
    me: NodeId,
    newer: &Membership,
) -> bool
where
    E: PaxosEnvelope + Send + 'static,
    E::Snapshot: Send,
{
    let mut newer = newer.clone();
    loop {
        match change::after_missing(me, &newer) {
            AfterStop::Continue(list) => {
                tracing::warn!(
                    next = %list,
                    "this node missed the end of its configuration; its peers run a newer one, \
                     which it joins"
                );
                if let Err(reason) = start_next(core, settings, next, &list) {
                    tracing::error!(%reason, "cannot start this node's instance of the newer configuration");
                    core.leave();
                    return false;
                }
                match await_genesis(core, next).await {
                    Genesis::Applied => {
                        next.started(&list);
                        return true;
                    }
                    Genesis::Stopped => return false,
                    Genesis::Newer(moved_on) => newer = moved_on,
                }
            }
            AfterStop::Removed(_) | AfterStop::Unexplained => {
                tracing::warn!(
                    next = %newer,
                    "this node missed the end of its configuration and is not a member of the one \
                     its peers run: it left the cluster"
                );
                core.leave();
                return false;
            }
        }
    }
}

/// Starts this node's instance of `list`'s configuration and makes it the
/// host's current one.
fn start_next<E>(
    core: &RunnerHost<E>,
    settings: &InstanceSettings,
    next: &dyn NextConfiguration<E>,
    list: &Membership,
) -> Result<(), String>
where
    E: PaxosEnvelope + Send + 'static,
    E::Snapshot: Send,
{
    let ids: Vec<NodeId> = list.members().iter().map(|member| member.id).collect();
    let config = ConfigBuilder::new(ids)
        .configuration_id(list.configuration())
        .election_ticks(settings.election_ticks)
        .buffer_size(settings.buffer_size)
        .build(settings.node_id)
        .map_err(|err| err.to_string())?;
    let (mut applier, handle) =
        PaxosApplier::new(settings.node_id, settings.snapshot_policy.clone(), 0);
    applier = applier
        .with_membership(list.clone())
        .expecting_genesis(list.configuration());
    if let Some(instance) = settings.instance {
        applier = applier.with_instance(instance);
    }
    let runner = next.spawn(list, config, applier, settings.runner.clone())?;
    let inbox = runner.inbox();
    set_admissions(&inbox, &handle)?;
    core.switch_to(Arc::new(runner), handle, list.clone());
    next.attach(list, inbox);
    Ok(())
}

/// Sets the peer and StopSign admissions of a fresh runner's inbox.
pub(crate) fn set_admissions<E>(inbox: &Inbox<E>, applier: &ApplierHandle) -> Result<(), String>
where
    E: PaxosEnvelope + 'static,
{
    inbox
        .set_admission(Arc::new(RegistryAdmission::new(applier.clone())))
        .map_err(|_| "the runner's inbox already had a peer admission".to_owned())?;
    inbox
        .set_stop_sign_admission(Arc::new(ChangeAdmission::new(applier.clone())))
        .map_err(|_| "the runner's inbox already had a StopSign admission".to_owned())
}

/// Proposes the genesis that begins the current configuration's log from
/// `final_state` until one is applied (this node's or another member's:
/// `true`), or the runner stops (`false`). A genesis lost to a leader
/// change is proposed again; a second one decided changes nothing.
async fn begin_log<E>(
    core: &RunnerHost<E>,
    settings: &InstanceSettings,
    final_state: ApplyState,
) -> bool
where
    E: PaxosEnvelope + Send + 'static,
    E::Snapshot: Send,
{
    let runner = core.runner();
    let applier = core.applier();
    let configuration = core
        .membership()
        .map(|list| list.configuration())
        .unwrap_or_default();
    #[cfg(feature = "mutations")]
    let final_state = if crate::mutation::is_on(crate::mutation::Guard::CarryState) {
        final_state
    } else {
        crate::mutation::count_bypass();
        only_the_change(&final_state, settings)
    };
    let prior = Box::new(PaxosSnapshot::from_state(final_state));
    // Outside the driver's id space (it counts from 1): the genesis is not
    // recorded in the ledger, so its id only names this node's waiter.
    let proposal = ProposalId::new(settings.node_id, settings.incarnation, u64::MAX);
    let again = settings
        .runner
        .tick
        .saturating_mul(u32::try_from(settings.election_ticks.saturating_mul(4)).unwrap_or(400));
    loop {
        if applier.started(configuration) {
            return true;
        }
        if runner.status().borrow().stopped {
            return false;
        }
        let genesis = Command::Genesis {
            prior: prior.clone(),
            epoch: Epoch(0),
            proposal,
        };
        match submit_to_runner(&runner, &applier, genesis) {
            Ok(pending) => {
                let _ = tokio::time::timeout(again, pending).await;
            }
            Err(err) => {
                tracing::debug!(%err, "the genesis is not proposed yet");
                tokio::time::sleep(again).await;
            }
        }
    }
}
