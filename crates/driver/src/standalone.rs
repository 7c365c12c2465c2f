//! [`StandaloneHost`]: a [`PaxosHighWaterHost`] that runs its own OmniPaxos
//! node, for a service whose only replicated state is tsoracle's.
//!
//! It is generic over the storage (`MemoryStorage`, `RocksdbStorage`, or a
//! host's own), the durability of a round (group commit) and the message
//! sink (the tonic transport, or the in-memory network in tests), so it
//! compiles neither RocksDB nor tonic itself.

use std::sync::{Arc, Mutex, PoisonError};

use omnipaxos::storage::Storage;
use omnipaxos::util::NodeId;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tsoracle_core::PeerEndpoint;
use tsoracle_paxos_state::{MemberRecord, Membership, PaxosEntry, PaxosEnvelope, SnapshotPolicy};
use tsoracle_paxos_toolkit::{
    Clock, ConfigBuilder, Durability, Error as ToolkitError, Inbox, InstanceId, MessageSink,
    MonotonicClock, Runner, RunnerConfig, RunnerLease, RunnerStatus,
};

use crate::applier::PaxosApplier;
use crate::core::timing::Timing;
use crate::error::{ConfigError, RuntimeError};
#[cfg(doc)]
use crate::host::PaxosHighWaterHost;
use crate::membership;
use crate::reconfigure::{self, InstanceSettings, NextConfiguration};
use crate::runner_host::{RunnerBackedHost, RunnerHost};

/// A member of the configuration as the host needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// OmniPaxos pid (distinct, in `1..=MAX_NODE_ID`).
    pub id: NodeId,
    /// Where the node's peer transport listens (`host:port`); what a sink
    /// such as the tonic transport connects to.
    pub peer_address: String,
    /// The node's client-facing tsoracle endpoint, for redirects.
    pub client_endpoint: PeerEndpoint,
}

/// Whether a host may start on storage that holds no Paxos state at all
/// (no promise, no accepted round, no entry, no snapshot).
///
/// Such storage cannot tell a node that never promised anything from one
/// that lost its directory, and the second must not vote again under its
/// old id (it forgot its promises). So empty storage is refused unless the
/// caller knows better.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StartMode {
    /// Empty storage is refused ([`ConfigError::NoStateToRejoin`]).
    #[default]
    Rejoin,
    /// Empty storage is used: the cluster is being founded, or the storage
    /// proves on its own that it was initialized for this node (the
    /// RocksDB storage's `open_existing` refuses a directory it did not
    /// initialize, so a node that opened it may hold no Paxos state yet).
    Initialize,
}

/// Builds a [`StandaloneHost`]. Every field but the snapshot policy, the
/// queue sizes, the start mode and the instance must be set.
#[derive(Debug, Clone)]
pub struct StandaloneHostBuilder {
    node_id: Option<NodeId>,
    cluster_id: Option<String>,
    configuration_id: u32,
    members: Vec<Member>,
    incarnation: Option<u64>,
    timing: Option<Timing>,
    snapshot_policy: SnapshotPolicy,
    runner: RunnerConfig,
    buffer_size: usize,
    start_mode: StartMode,
    instance: Option<InstanceId>,
    joining: bool,
    clock: LeaseClock,
}

/// The node's lease clock, shared by its runners and its driver.
#[derive(Clone)]
struct LeaseClock(Arc<dyn Clock>);

impl std::fmt::Debug for LeaseClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LeaseClock")
    }
}

impl Default for StandaloneHostBuilder {
    fn default() -> Self {
        Self {
            node_id: None,
            cluster_id: None,
            configuration_id: 1,
            members: Vec::new(),
            incarnation: None,
            timing: None,
            snapshot_policy: SnapshotPolicy::default(),
            runner: RunnerConfig::default(),
            buffer_size: 100_000,
            start_mode: StartMode::Rejoin,
            instance: None,
            joining: false,
            clock: LeaseClock(Arc::new(MonotonicClock::new())),
        }
    }
}

impl StandaloneHostBuilder {
    /// Whether empty storage is used or refused (default: refused; see
    /// [`StartMode`]).
    #[must_use]
    pub fn start_mode(mut self, mode: StartMode) -> Self {
        self.start_mode = mode;
        self
    }

    /// This node's data-directory instance (e.g.
    /// `RocksdbStorage::instance`): registered in the replicated state, and
    /// the node stops if another instance is on record for its id. Without
    /// one the node registers nothing (its peers still check theirs).
    #[must_use]
    pub fn instance(mut self, instance: InstanceId) -> Self {
        self.instance = Some(instance);
        self
    }

    /// This node joins the configuration of [`members`](Self::members) and
    /// [`configuration_id`](Self::configuration_id), which a membership
    /// change started: its storage is empty, and nothing is proposed
    /// before the configuration's genesis (carrying the previous
    /// configuration's state, proposed by the members that held it) is
    /// applied. Implies [`StartMode::Initialize`].
    #[must_use]
    pub fn joining(mut self) -> Self {
        self.joining = true;
        self.start_mode = StartMode::Initialize;
        self
    }

    /// This node's pid; it must be one of the members.
    #[must_use]
    pub fn node_id(mut self, id: NodeId) -> Self {
        self.node_id = Some(id);
        self
    }

    /// The cluster's name: the same one the storage identity and the peer
    /// transport check, so a node of another cluster is told apart.
    #[must_use]
    pub fn cluster_id(mut self, id: impl Into<String>) -> Self {
        self.cluster_id = Some(id.into());
        self
    }

    /// OmniPaxos configuration id (default 1).
    #[must_use]
    pub fn configuration_id(mut self, id: u32) -> Self {
        self.configuration_id = id;
        self
    }

    /// Every member of the configuration, this node included.
    #[must_use]
    pub fn members(mut self, members: Vec<Member>) -> Self {
        self.members = members;
        self
    }

    /// This start's incarnation: larger than at any earlier start of this
    /// node, and persisted before use (see [`crate::next_incarnation`]).
    #[must_use]
    pub fn incarnation(mut self, incarnation: u64) -> Self {
        self.incarnation = Some(incarnation);
        self
    }

    /// Tick and election timing (the same [`Timing`] the driver gets).
    #[must_use]
    pub fn timing(mut self, timing: Timing) -> Self {
        self.timing = Some(timing);
        self
    }

    /// When to compact the log (default: every 4096 decided entries).
    #[must_use]
    pub fn snapshot_policy(mut self, policy: SnapshotPolicy) -> Self {
        self.snapshot_policy = policy;
        self
    }

    /// The clock the lease is timed on (default: the process's monotonic
    /// clock). The driver reads the same one, through
    /// [`PaxosHighWaterHost::clock`](crate::PaxosHighWaterHost::clock); a
    /// simulation gives each node a drifting one.
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = LeaseClock(clock);
        self
    }

    /// Queue sizes and round budgets of the consensus thread (its `tick` and
    /// its lease are taken from the timing and the clock).
    #[must_use]
    pub fn runner_config(mut self, config: RunnerConfig) -> Self {
        self.runner = config;
        self
    }

    /// Starts the OmniPaxos node on `storage`: recovers from what the storage
    /// holds, then spawns the consensus thread. Wire the transport's inbound
    /// side with [`StandaloneHost::inbox`] afterwards.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Host`] for a missing field, this node missing from the
    /// members, fewer than two members, repeated or out-of-range ids, or an
    /// OmniPaxos or runner start-up failure; the [`Timing::validate`] errors.
    pub fn start<E, B, S, D>(
        self,
        storage: B,
        durability: D,
        sink: S,
    ) -> Result<StandaloneHost<E>, ConfigError>
    where
        E: PaxosEnvelope + Send + 'static,
        E::Snapshot: Send,
        B: Storage<E> + Send + 'static,
        S: MessageSink<E>,
        D: Durability,
    {
        let node_id = self.node_id.ok_or_else(|| missing("node_id"))?;
        let cluster_id = self
            .cluster_id
            .filter(|id| !id.is_empty())
            .ok_or_else(|| missing("cluster_id"))?;
        let incarnation = self.incarnation.ok_or_else(|| missing("incarnation"))?;
        let timing = self.timing.ok_or_else(|| missing("timing"))?;
        timing.validate()?;
        let ids: Vec<NodeId> = self.members.iter().map(|m| m.id).collect();
        check_members(node_id, &ids)?;
        // A lost message is resent after two heartbeat rounds (the
        // builder's default: twice the election ticks).
        let config = ConfigBuilder::new(ids.clone())
            .configuration_id(self.configuration_id)
            .election_ticks(timing.election_ticks)
            .buffer_size(self.buffer_size)
            .build(node_id)
            .map_err(|err| {
                ConfigError::Host(format!("OmniPaxos refused the configuration: {err}"))
            })?;
        refuse_empty_storage(self.start_mode, node_id, &storage)?;
        let given = member_list(self.configuration_id, &self.members)?;
        membership::check_before_start(node_id, &given, &storage)?;
        let omnipaxos = config.build(storage).map_err(|err| {
            ConfigError::Host(format!("OmniPaxos refused the configuration: {err}"))
        })?;
        let (mut applier, handle) = PaxosApplier::new(
            node_id,
            self.snapshot_policy.clone(),
            omnipaxos.get_decided_idx(),
        );
        if let Some(instance) = self.instance {
            applier = applier.with_instance(instance);
        }
        applier = applier.with_membership(given.clone());
        if self.joining {
            applier = applier.expecting_genesis(self.configuration_id);
        }
        let runner_config = RunnerConfig {
            tick: timing.tick,
            lease: Some(RunnerLease {
                timing: timing.lease_timing(),
                clock: self.clock.0,
            }),
            ..self.runner
        };
        let runner = Runner::spawn(
            omnipaxos,
            &ids,
            sink,
            durability,
            applier,
            runner_config.clone(),
        )
        .map_err(|err| ConfigError::Host(format!("cannot start the consensus thread: {err}")))?;
        // Before the inbox is handed to any transport.
        reconfigure::set_admissions(&runner.inbox(), &handle).map_err(ConfigError::Host)?;
        let mut core =
            RunnerHost::new(Arc::new(runner), handle, ids, incarnation).with_membership(given);
        if let Some(instance) = self.instance {
            core = core.with_instance(instance);
        }
        if self.joining {
            core = core.starting(self.configuration_id);
        }
        let settings = InstanceSettings {
            node_id,
            incarnation,
            election_ticks: timing.election_ticks,
            buffer_size: self.buffer_size,
            snapshot_policy: self.snapshot_policy,
            runner: runner_config,
            instance: self.instance,
        };
        Ok(StandaloneHost {
            cluster_id,
            members: self.members,
            core: Arc::new(core),
            settings,
            follower: Mutex::new(None),
        })
    }
}

/// Refuses storage that holds nothing at all (no promise, no accepted
/// round, no entry, no snapshot) unless `mode` allows it.
fn refuse_empty_storage<E, B>(
    mode: StartMode,
    node_id: NodeId,
    storage: &B,
) -> Result<(), ConfigError>
where
    E: PaxosEnvelope,
    B: Storage<E>,
{
    if mode == StartMode::Initialize {
        return Ok(());
    }
    let unreadable = |err: Box<dyn std::error::Error>| {
        ConfigError::Host(format!("cannot read the storage: {err}"))
    };
    let empty = storage.get_promise().map_err(unreadable)?.is_none()
        && storage.get_accepted_round().map_err(unreadable)?.is_none()
        && storage.get_decided_idx().map_err(unreadable)? == 0
        && storage.get_compacted_idx().map_err(unreadable)? == 0
        && storage.get_log_len().map_err(unreadable)? == 0
        && storage.get_snapshot().map_err(unreadable)?.is_none();
    if !empty {
        return Ok(());
    }
    #[cfg(feature = "mutations")]
    if !crate::mutation::is_on(crate::mutation::Guard::IdentityCheck) {
        crate::mutation::count_bypass();
        return Ok(());
    }
    Err(ConfigError::NoStateToRejoin { node: node_id })
}

/// The members as the replicated state records them.
fn member_list(configuration: u32, members: &[Member]) -> Result<Membership, ConfigError> {
    let records = members
        .iter()
        .map(|member| MemberRecord {
            id: member.id,
            peer_address: member.peer_address.clone(),
            client_endpoint: member.client_endpoint.as_str().to_owned(),
        })
        .collect();
    Membership::new(configuration, records)
        .map_err(|err| ConfigError::Host(format!("member list: {err}")))
}

fn missing(field: &str) -> ConfigError {
    ConfigError::Host(format!("StandaloneHostBuilder: `{field}` must be set"))
}

/// The members' checks of the toolkit's [`ConfigBuilder`] (at least two,
/// distinct ids in range, this node among them), as a host error with the builder's
/// own words.
fn check_members(node_id: NodeId, ids: &[NodeId]) -> Result<(), ConfigError> {
    match ConfigBuilder::new(ids).build(node_id) {
        Ok(_) => Ok(()),
        Err(ToolkitError::InvalidConfig(reason)) => Err(ConfigError::Host(reason)),
        Err(other) => Err(ConfigError::Host(other.to_string())),
    }
}

/// A [`PaxosHighWaterHost`] running its own OmniPaxos node on a toolkit
/// [`Runner`]. Build it with [`StandaloneHost::builder`].
pub struct StandaloneHost<E: PaxosEnvelope = PaxosEntry> {
    cluster_id: String,
    members: Vec<Member>,
    /// Everything else of the host: runner, applier, proposer slot,
    /// leadership watch.
    core: Arc<RunnerHost<E>>,
    /// What a later configuration's instance on this node is built with.
    settings: InstanceSettings,
    /// The task that follows membership changes, once asked to.
    follower: Mutex<Option<JoinHandle<()>>>,
}

impl StandaloneHost {
    /// A builder with nothing set.
    #[must_use]
    pub fn builder() -> StandaloneHostBuilder {
        StandaloneHostBuilder::default()
    }
}

impl<E> StandaloneHost<E>
where
    E: PaxosEnvelope + Send + 'static,
    E::Snapshot: Send,
{
    /// The cluster's name.
    #[must_use]
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// Every member this node was started with, with its peer and client
    /// addresses (see [`membership`](Self::membership) for the current
    /// configuration's).
    #[must_use]
    pub fn member_list(&self) -> &[Member] {
        &self.members
    }

    /// The current configuration's member list.
    #[must_use]
    pub fn membership(&self) -> Option<Membership> {
        self.core.membership()
    }

    /// Follows membership changes from now on: the leader finishes an
    /// agreed change with its StopSign, and once a configuration ends this
    /// node starts its instance of the next one through `next` (or leaves,
    /// when the next list lacks it). Without this, a decided StopSign ends
    /// the host for good. Call once, right after start; a second call
    /// changes nothing.
    pub fn follow_changes(&self, next: Arc<dyn NextConfiguration<E>>)
    where
        E: Sync,
    {
        let mut follower = self.follower.lock().unwrap_or_else(PoisonError::into_inner);
        if follower.is_some() {
            return;
        }
        self.core.follow_changes();
        *follower = Some(tokio::spawn(reconfigure::follow(
            Arc::clone(&self.core),
            self.settings.clone(),
            next,
        )));
    }

    /// The inbound side of the consensus thread, for the transport.
    #[must_use]
    pub fn inbox(&self) -> Inbox<E> {
        self.core.runner().inbox()
    }

    /// The consensus thread's status (decided index, promise, failure),
    /// followed across membership changes: a configuration that ended into
    /// a next one that includes this node shows no StopSign.
    #[must_use]
    pub fn status(&self) -> watch::Receiver<RunnerStatus> {
        self.core.status()
    }

    /// Rounds the current configuration's consensus thread has run (read
    /// from the runner itself: [`Self::status`] is published only when
    /// something besides the round count changed, so on an idle follower
    /// its count stands still while the thread runs).
    #[must_use]
    pub fn rounds(&self) -> u64 {
        self.core.runner().status().borrow().rounds
    }

    /// What the consensus thread of the current configuration last heard
    /// from each peer, on the node's lease clock ([`Self::lease_clock`]).
    #[must_use]
    pub fn links(&self) -> Arc<tsoracle_paxos_toolkit::PeerLinks> {
        self.core.runner().links()
    }

    /// The clock [`Self::links`] and [`RunnerStatus::lease_until`] are read
    /// on.
    #[must_use]
    pub fn lease_clock(&self) -> Option<Arc<dyn Clock>> {
        self.core.runner().lease_clock()
    }

    /// Freezes (or thaws) the consensus thread as SIGSTOP (or SIGCONT)
    /// would; for simulations of a paused process (see
    /// `Runner::set_frozen`).
    pub fn set_frozen(&self, frozen: bool) {
        self.core.runner().set_frozen(frozen);
    }

    /// Absolute index below which this node applied its log.
    #[must_use]
    pub fn applied_idx(&self) -> usize {
        self.core.applier().applied_idx()
    }

    /// Proposals waiting for their outcome.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.core.applier().pending()
    }

    /// Stops the consensus thread after its current round, its last sync
    /// included, and the leadership bridge. Later submissions fail.
    ///
    /// # Errors
    ///
    /// [`RuntimeError::Host`] when the consensus thread had failed.
    pub async fn shutdown(&self) -> Result<(), RuntimeError> {
        let follower = self
            .follower
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(follower) = follower {
            follower.abort();
        }
        self.core
            .shutdown()
            .await
            .map_err(|err| RuntimeError::Host(err.to_string()))
    }
}

/// A [`PaxosHighWaterHost`] through [`RunnerBackedHost`]: only the client
/// endpoints are its own.
impl<E> RunnerBackedHost for StandaloneHost<E>
where
    E: PaxosEnvelope + Send + Sync + 'static,
    E::Snapshot: Send,
{
    type Entry = E;

    fn runner_host(&self) -> &RunnerHost<E> {
        &self.core
    }

    fn client_endpoint_of(&self, node: NodeId) -> Option<PeerEndpoint> {
        let current = self
            .core
            .membership()
            .and_then(|list| list.member(node).cloned())
            .and_then(|member| PeerEndpoint::try_from(member.client_endpoint).ok());
        current.or_else(|| {
            self.members
                .iter()
                .find(|m| m.id == node)
                .map(|m| m.client_endpoint.clone())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_must_be_distinct_contain_this_node_and_number_two_or_more() {
        assert!(check_members(1, &[1, 2, 3]).is_ok());
        assert!(check_members(2, &[2, 1]).is_ok());
        // A replaced member leaves a gap.
        assert!(check_members(1, &[1, 3, 4]).is_ok());
        for (me, ids, needle) in [
            (1, vec![1], "at least two"),
            (1, vec![1, 1, 2], "twice"),
            (1, vec![0, 1], "outside"),
            (4, vec![1, 2, 3], "not one of the members"),
        ] {
            let err = check_members(me, &ids).unwrap_err().to_string();
            assert!(err.contains(needle), "{ids:?}: {err}");
        }
    }
}
