//! The runner: one thread that owns an OmniPaxos instance and drives it.
//!
//! OmniPaxos calls its storage synchronously and panics on storage errors, so
//! the instance lives on a dedicated thread (with a single-threaded tokio
//! runtime for its timers and channels), never on the async workers. Async
//! code talks to it through bounded channels only.
//!
//! One *round* of the loop takes every ready input (inbound messages,
//! proposals, a due tick), feeds them to OmniPaxos, hands the newly decided
//! entries to the [`DecidedHook`], makes every write of the round durable with
//! one sync (group commit), and only then sends the round's acknowledgements:
//! OmniPaxos' durability contract is that no `Promise` or `Accepted` leaves
//! the node before the state it reports is synced. A leader's replication
//! messages leave before that sync, so its followers sync beside it; its own
//! acceptance can help decide an entry only once a follower's `Accepted`
//! arrives, in a later round, after this round's sync (`send_order`).

use std::collections::{BTreeMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::messages::Message;
use omnipaxos::messages::lease::{LeaseMessage, LeaseMsg};
use omnipaxos::messages::sequence_paxos::{PaxosMessage, PaxosMsg};
use omnipaxos::storage::{Entry, StopSign, Storage};
use omnipaxos::util::{LogEntry, NodeId};
use omnipaxos::{ClusterConfig, OmniPaxos, ProposeErr};
use tokio::sync::{mpsc, oneshot, watch};

use crate::clock::Clock;
use crate::durability::Durability;
use crate::error::Error;
use crate::lease::{Grants, LeaseTiming, Requests};
use crate::links::PeerLinks;
use crate::send_order;
use crate::sink::{Inbox, MessageSink, StopSignGate, stop_sign_of};

/// Tuning of a [`Runner`]. Every field is explicit; see [`RunnerConfig::default`].
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Period of `OmniPaxos::tick`. Election and resend timeouts are counted
    /// in ticks (see OmniPaxos' `ServerConfig`), so this sets the time scale.
    pub tick: Duration,
    /// Capacity of the inbound message queue (all peers together).
    pub inbound_capacity: usize,
    /// Capacity of the proposal queue; a full queue makes proposers wait.
    pub proposal_capacity: usize,
    /// Most inputs taken into one round, so a flood cannot delay a tick or
    /// the outgoing messages for long.
    pub max_round_inputs: usize,
    /// Most decided entries handed to the hook in one round. A long backlog
    /// (a restart, a catch-up) is applied over several back-to-back rounds,
    /// so ticks and heartbeats keep flowing meanwhile.
    pub max_apply_per_round: usize,
    /// Where the consensus loop runs. Keep [`Placement::Thread`] for real
    /// nodes.
    pub placement: Placement,
    /// The leader lease ([`crate::lease`]): request rounds, grants and
    /// their holds, on this clock. `None`: no lease messages, no grants, and
    /// [`RunnerStatus::lease_until`] stays `None`.
    pub lease: Option<RunnerLease>,
}

/// The leader lease a [`Runner`] keeps: its timing and the node's clock (the
/// one its lease is read against, e.g. by the driver).
#[derive(Clone)]
pub struct RunnerLease {
    /// The lease's durations.
    pub timing: LeaseTiming,
    /// This node's monotonic clock.
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for RunnerLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunnerLease")
            .field("timing", &self.timing)
            .finish_non_exhaustive()
    }
}

/// Where a [`Runner`]'s consensus loop runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Placement {
    /// A dedicated OS thread with its own single-threaded tokio runtime:
    /// OmniPaxos' synchronous storage I/O never blocks an async worker.
    #[default]
    Thread,
    /// A task on the caller's tokio runtime, timed by that runtime's clock.
    ///
    /// For deterministic simulation only: with a single-threaded runtime whose
    /// clock is paused, every node of a cluster, its timers and its network
    /// run in one thread in virtual time, and a seed replays a run exactly.
    /// The storage must not block (in-memory storage); a real node's storage
    /// I/O would stall every other task of the runtime.
    CurrentRuntime,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            tick: Duration::from_millis(10),
            inbound_capacity: 8192,
            proposal_capacity: 4096,
            max_round_inputs: 1024,
            max_apply_per_round: 4096,
            placement: Placement::Thread,
            lease: None,
        }
    }
}

impl RunnerConfig {
    fn validate(&self) -> Result<(), Error> {
        let problem = if self.tick.is_zero() {
            Some("tick must be longer than zero")
        } else if self.inbound_capacity == 0 || self.proposal_capacity == 0 {
            Some("queue capacities must be at least 1")
        } else if self.max_round_inputs == 0 {
            Some("max_round_inputs must be at least 1")
        } else if self.max_apply_per_round == 0 {
            Some("max_apply_per_round must be at least 1")
        } else {
            None
        };
        if let Some(reason) = problem {
            return Err(Error::InvalidConfig(reason.to_owned()));
        }
        match &self.lease {
            Some(lease) => lease.timing.validate().map_err(Error::InvalidConfig),
            None => Ok(()),
        }
    }
}

/// Consumes decided entries on the consensus thread.
///
/// The runner reads `OmniPaxos::read_decided_suffix(next_idx())` whenever the
/// decided index passes `next_idx()` and hands the result over. Keep it fast:
/// it runs between ticks.
pub trait DecidedHook<T: Entry>: Send + 'static {
    /// Absolute log index of the next entry the hook has not consumed.
    fn next_idx(&self) -> usize;

    /// Consumes decided entries starting at `next_idx()` (a snapshot or trim
    /// marker may come first). Returns `Some(idx)` to ask the runner for a
    /// local snapshot of the log below `idx`.
    ///
    /// An error stops the runner: the state built from the log can no longer
    /// be trusted.
    fn on_decided(
        &mut self,
        entries: Vec<LogEntry<T>>,
    ) -> Result<Option<usize>, Box<dyn std::error::Error + Send + Sync>>;

    /// Called right before [`on_decided`](Self::on_decided) with the node's
    /// status at that instant (this round's messages, appends and tick
    /// already handled). A hook that must know under which ballot entries
    /// were decided (a leader lease) reads it here: the published
    /// [`Runner::status`] of the previous round can be one ballot behind.
    fn before_decided(&mut self, status: &RunnerStatus) {
        let _ = status;
    }
}

/// What the runner last observed of its OmniPaxos instance, published after
/// every round that changed it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunnerStatus {
    /// This node's id.
    pub node_id: NodeId,
    /// `OmniPaxos::get_current_leader`: the node this one promised to, and
    /// whether this node is in the accept phase (its prepare phase is over).
    pub leader: Option<(NodeId, bool)>,
    /// The ballot this node has promised.
    pub promise: Ballot,
    /// Absolute index below which the log is decided.
    pub decided_idx: usize,
    /// Absolute index below which the log is compacted.
    pub compacted_idx: usize,
    /// Number of rounds run; tells an observer the thread is alive.
    pub rounds: u64,
    /// Set when the runner stopped on an error or panic; it never restarts.
    pub failed: Option<String>,
    /// Whether the runner has stopped (after a shutdown or a failure).
    pub stopped: bool,
    /// The decided StopSign that ended this configuration
    /// (`OmniPaxos::is_reconfigured`), set once the hook has consumed every
    /// entry up to and including it (so the applied state is final). From
    /// then on every proposal fails with [`Error::ConfigurationStopped`],
    /// across restarts: the StopSign is persisted.
    ///
    /// A runner never proposes a StopSign (it has no call for it) and its
    /// [`Inbox`] drops every message that carries one, so a value here was
    /// never asked for: it was decided before this filter existed, or it
    /// came from a data directory written by something else.
    pub stop_sign: Option<StopSign>,
    /// When this node's leader lease of its promised ballot ends, on the
    /// lease clock ([`RunnerConfig::lease`]); it may lie in the past. `None`
    /// when no lease round of that ballot was granted by a majority (or
    /// the runner keeps no lease).
    pub lease_until: Option<std::time::Duration>,
}

/// How long a proposer whose reply was dropped waits for the runner's final
/// status before classifying the error.
const FINAL_STATUS_WAIT: Duration = Duration::from_secs(1);

type Proposal<T> = (T, oneshot::Sender<Result<(), Error>>);

/// Rounds of proposals whose decision the commit latency waits for, at
/// most (a leader that cannot decide stops tracking the oldest).
const MAX_COMMITS_TRACKED: usize = 1024;

/// Capacity of the queue of administrative requests (reconfiguration,
/// leadership): an operator's pace, never a flood.
const ADMIN_CAPACITY: usize = 8;

/// A request that is not a log entry, carried out in the next round.
enum Admin {
    /// `OmniPaxos::reconfigure`: propose the StopSign that ends this
    /// configuration.
    Reconfigure {
        next: ClusterConfig,
        metadata: Option<Vec<u8>>,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    /// `OmniPaxos::try_become_leader`.
    TakeLeadership,
    /// Give up the lease of the ballot this node leads under and ask `to`
    /// to take over (see [`Runner::hand_over`]).
    HandOver {
        ballot: Ballot,
        to: Option<NodeId>,
        reply: oneshot::Sender<Result<NodeId, Error>>,
    },
}

/// Handle to a running consensus thread. Dropping it stops the thread
/// without waiting; [`Runner::shutdown`] stops it and waits.
pub struct Runner<T: Entry> {
    inbox: Inbox<T>,
    proposals: mpsc::Sender<Proposal<T>>,
    admin: mpsc::Sender<Admin>,
    status: watch::Receiver<RunnerStatus>,
    // Behind mutexes so `shutdown(&self)` works on a shared runner; each is
    // taken once and never held across an await.
    stop: Mutex<Option<oneshot::Sender<()>>>,
    worker: Mutex<Option<Worker>>,
    frozen: watch::Sender<bool>,
    lease_clock: Option<Arc<dyn Clock>>,
    links: Arc<PeerLinks>,
}

/// What runs the consensus loop (see [`Placement`]).
enum Worker {
    Thread(JoinHandle<()>),
    Task(tokio::task::JoinHandle<()>),
}

impl<T> Runner<T>
where
    T: Entry + Send + 'static,
    T::Snapshot: Send,
{
    /// Starts the consensus thread for `omnipaxos`. `peers` lists every node
    /// of the configuration (this node may be included); inbound messages from
    /// any other id are refused.
    pub fn spawn<B, S, D, H>(
        omnipaxos: OmniPaxos<T, B>,
        peers: &[NodeId],
        sink: S,
        durability: D,
        hook: H,
        config: RunnerConfig,
    ) -> Result<Self, Error>
    where
        B: Storage<T> + Send + 'static,
        S: MessageSink<T>,
        D: Durability,
        H: DecidedHook<T>,
    {
        config.validate()?;
        let node_id = omnipaxos.get_pid();
        let (inbound_tx, inbound_rx) = mpsc::channel(config.inbound_capacity);
        let (proposal_tx, proposal_rx) = mpsc::channel(config.proposal_capacity);
        let (admin_tx, admin_rx) = mpsc::channel(ADMIN_CAPACITY);
        let (stop_tx, stop_rx) = oneshot::channel();
        let lease_clock = config.lease.as_ref().map(|lease| Arc::clone(&lease.clock));
        let (frozen_tx, frozen_rx) = watch::channel(false);
        let initial = observe(&omnipaxos, 0, hook.next_idx(), None);
        let (status_tx, status_rx) = watch::channel(initial);
        let inbox = Inbox::new(node_id, peers.into(), inbound_tx);
        let lease = config.lease.as_ref().map(|lease| {
            let now = lease.clock.now();
            let others: Vec<NodeId> = peers.iter().copied().filter(|p| *p != node_id).collect();
            LeaseKeeper {
                clock: Arc::clone(&lease.clock),
                grants: Grants::new(now, &lease.timing),
                requests: Requests::new(node_id, others.len() + 1, lease.timing),
                peers: others,
                retake: None,
                retake_after: lease.timing.hold.saturating_mul(2),
                outgoing: Vec::new(),
                accepted: BTreeMap::new(),
            }
        });
        let links = Arc::new(PeerLinks::default());
        let mut core = Core {
            links: Arc::clone(&links),
            commits: VecDeque::new(),
            lease,
            gate: inbox.stop_sign_gate(),
            omnipaxos,
            sink,
            durability,
            hook,
            status: status_tx,
            rounds: 0,
            outgoing: Vec::new(),
            reconnected: Vec::new(),
            max_apply_per_round: config.max_apply_per_round,
            unreadable: None,
        };
        let worker = match config.placement {
            Placement::Thread => {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                    .map_err(|source| Error::Thread {
                        what: "building its runtime",
                        source,
                    })?;
                let thread = std::thread::Builder::new()
                    .name(format!("omnipaxos-{node_id}"))
                    .spawn(move || {
                        runtime.block_on(core.run(
                            Inputs {
                                inbound: inbound_rx,
                                proposals: proposal_rx,
                                admin: admin_rx,
                            },
                            stop_rx,
                            frozen_rx,
                            config,
                        ));
                    })
                    .map_err(|source| Error::Thread {
                        what: "spawning it",
                        source,
                    })?;
                Worker::Thread(thread)
            }
            Placement::CurrentRuntime => {
                let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
                    Error::InvalidConfig(
                        "Placement::CurrentRuntime needs a tokio runtime".to_owned(),
                    )
                })?;
                Worker::Task(runtime.spawn(async move {
                    let inputs = Inputs {
                        inbound: inbound_rx,
                        proposals: proposal_rx,
                        admin: admin_rx,
                    };
                    core.run(inputs, stop_rx, frozen_rx, config).await;
                }))
            }
        };
        Ok(Self {
            inbox,
            proposals: proposal_tx,
            admin: admin_tx,
            status: status_rx,
            stop: Mutex::new(Some(stop_tx)),
            worker: Mutex::new(Some(worker)),
            frozen: frozen_tx,
            lease_clock,
            links,
        })
    }

    /// Freezes (or thaws) the consensus loop as SIGSTOP (or SIGCONT) would:
    /// while frozen it takes no input, ticks nothing, applies and sends
    /// nothing; inbound messages and proposals wait in their bounded queues.
    /// A frozen loop still stops on [`shutdown`](Self::shutdown).
    ///
    /// For simulations of a paused process; a real node never calls it.
    pub fn set_frozen(&self, frozen: bool) {
        self.frozen.send_replace(frozen);
    }

    /// What this node last heard from each peer (on the lease clock).
    pub fn links(&self) -> Arc<PeerLinks> {
        Arc::clone(&self.links)
    }

    /// The clock [`RunnerStatus::lease_until`] is read on, when the runner
    /// keeps a lease ([`RunnerConfig::lease`]).
    pub fn lease_clock(&self) -> Option<Arc<dyn Clock>> {
        self.lease_clock.clone()
    }

    /// The inbound side, to hand to a transport.
    pub fn inbox(&self) -> Inbox<T> {
        self.inbox.clone()
    }

    /// A receiver of status updates; the first value is available at once.
    pub fn status(&self) -> watch::Receiver<RunnerStatus> {
        self.status.clone()
    }

    /// Appends `entry` to the log through `OmniPaxos::append`, waiting for
    /// room in the proposal queue. `Ok` means the entry was appended, not that
    /// it will be decided: tag entries and wait for them in the hook.
    pub async fn propose(&self, entry: T) -> Result<(), Error> {
        let (reply_tx, reply_rx) = oneshot::channel();
        if self.proposals.send((entry, reply_tx)).await.is_err() {
            return Err(stopped_error(self.status.clone()).await);
        }
        match reply_rx.await {
            Ok(result) => result,
            Err(_) => Err(stopped_error(self.status.clone()).await),
        }
    }

    /// Like [`propose`](Self::propose), but never waits for room in the
    /// queue: the entry is queued (in call order) before this returns, or
    /// refused with [`Error::ProposalQueueFull`]. The returned future resolves
    /// when the entry was appended. Callers that mint ids which must reach
    /// the log in order (per-node monotonic proposal ids) mint and call this
    /// under one lock.
    pub fn try_propose(
        &self,
        entry: T,
    ) -> Result<impl Future<Output = Result<(), Error>> + Send + 'static, Error> {
        let (reply_tx, reply_rx) = oneshot::channel();
        match self.proposals.try_send((entry, reply_tx)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                return Err(Error::ProposalQueueFull {
                    capacity: self.proposals.max_capacity(),
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                let error = match self.status.borrow().failed.clone() {
                    Some(reason) => Error::RunnerFailed(reason),
                    None => Error::RunnerStopped,
                };
                return Err(error);
            }
        }
        let status = self.status.clone();
        Ok(async move {
            match reply_rx.await {
                Ok(result) => result,
                Err(_) => Err(stopped_error(status).await),
            }
        })
    }

    /// Proposes the StopSign that ends this configuration, naming `next` as
    /// the one that follows (`OmniPaxos::reconfigure`). Only a StopSign the
    /// inbox's [`StopSignAdmission`](crate::StopSignAdmission) admits is
    /// proposed (asked on the consensus thread, with this node's own log):
    /// the host agrees on the change in its log first, so the peers admit
    /// it too. `Ok` means proposed, not decided: watch
    /// [`RunnerStatus::stop_sign`]. Call it on the leader (a follower
    /// forwards it).
    ///
    /// # Errors
    ///
    /// [`Error::ChangeNotAgreed`] when the admission refuses the StopSign,
    /// [`Error::ConfigurationStopped`] when one is already pending or
    /// decided, [`Error::InvalidConfig`] when OmniPaxos refuses `next`, and
    /// the runner's stop or failure.
    pub async fn reconfigure(
        &self,
        next: ClusterConfig,
        metadata: Option<Vec<u8>>,
    ) -> Result<(), Error> {
        let (reply, replied) = oneshot::channel();
        let request = Admin::Reconfigure {
            next,
            metadata,
            reply,
        };
        if self.admin.send(request).await.is_err() {
            return Err(stopped_error(self.status.clone()).await);
        }
        match replied.await {
            Ok(result) => result,
            Err(_) => Err(stopped_error(self.status.clone()).await),
        }
    }

    /// Asks OmniPaxos to take leadership (`OmniPaxos::try_become_leader`):
    /// a ballot above the current promise, then the prepare phase. It may
    /// fail to win; watch [`RunnerStatus::leader`]. Used to hand leadership
    /// over before the leader leaves the configuration.
    ///
    /// # Errors
    ///
    /// The runner's stop or failure.
    pub async fn take_leadership(&self) -> Result<(), Error> {
        if self.admin.send(Admin::TakeLeadership).await.is_err() {
            return Err(stopped_error(self.status.clone()).await);
        }
        Ok(())
    }

    /// Hands leadership to `to` (`None`: the peer that granted a lease round
    /// most recently, so one that is reachable and follows this leader):
    /// this node gives up the lease of the ballot
    /// it leads under for good (it asks no round of it again and reports no
    /// lease), tells every grantor to drop its hold of that ballot, and asks
    /// `to` to take leadership (`OmniPaxos::try_become_leader` there). The
    /// grantors' holds would otherwise keep `to` from a lease for up to one
    /// hold.
    ///
    /// **Call it only once nothing is served under the ballot any more**
    /// (the driver stops serving first): a grantor that drops its hold may
    /// grant `to` at once. `ballot` is the ballot the caller stopped
    /// serving under: the request is refused, with nothing changed, when
    /// this node no longer leads under exactly that ballot (it may have
    /// been re-elected under another meanwhile). Returns the successor.
    ///
    /// Should the successor not take over (it went down meanwhile), this
    /// node takes leadership again under a new ballot once twice the hold
    /// passed, so a cluster never stays with a leader that serves nothing.
    ///
    /// # Errors
    ///
    /// [`Error::NotLeader`] when this node is not the accept-phase leader
    /// under `ballot`, `to` is not another member, or no peer granted a
    /// round to choose from; [`Error::InvalidConfig`] when the runner keeps
    /// no lease (in all of these nothing is released); the runner's stop or
    /// failure.
    pub async fn hand_over(&self, ballot: Ballot, to: Option<NodeId>) -> Result<NodeId, Error> {
        let (reply, replied) = oneshot::channel();
        let request = Admin::HandOver { ballot, to, reply };
        if self.admin.send(request).await.is_err() {
            return Err(stopped_error(self.status.clone()).await);
        }
        match replied.await {
            Ok(result) => result,
            Err(_) => Err(stopped_error(self.status.clone()).await),
        }
    }

    /// Stops the consensus thread after its current round and waits for it
    /// (its last sync included). Later proposals get [`Error::RunnerStopped`].
    /// Calling it again returns the same verdict without waiting.
    pub async fn shutdown(&self) -> Result<(), Error> {
        if let Some(stop) = take(&self.stop) {
            let _ = stop.send(());
        }
        let mut status = self.status.clone();
        // Wait without blocking the async worker: the thread publishes
        // `stopped` once its loop has ended; the join below then waits for
        // its last sync and for the storage to close.
        let _ = status.wait_for(|s| s.stopped).await;
        let joined = match take(&self.worker) {
            Some(Worker::Thread(thread)) => {
                matches!(
                    tokio::task::spawn_blocking(move || thread.join()).await,
                    Ok(Ok(()))
                )
            }
            Some(Worker::Task(task)) => task.await.is_ok(),
            None => true,
        };
        if !joined {
            return Err(Error::RunnerFailed("the consensus thread panicked".into()));
        }
        match status.borrow().failed.clone() {
            Some(reason) => Err(Error::RunnerFailed(reason)),
            None => Ok(()),
        }
    }
}

/// Why a proposal found the runner gone. A round that fails drops its
/// pending replies before the thread publishes the failure, so wait (briefly,
/// bounded) for the final status instead of racing it: a failure must not be
/// reported as a clean stop.
async fn stopped_error(mut status: watch::Receiver<RunnerStatus>) -> Error {
    let _ = tokio::time::timeout(FINAL_STATUS_WAIT, status.wait_for(|s| s.stopped)).await;
    let failed = status.borrow().failed.clone();
    match failed {
        Some(reason) => Error::RunnerFailed(reason),
        None => Error::RunnerStopped,
    }
}

impl<T: Entry> Drop for Runner<T> {
    fn drop(&mut self) {
        // Closing the stop channel ends the loop; the thread (or task) is
        // detached.
        take(&self.stop);
    }
}

/// Takes the value out of a mutex-guarded slot; a poisoned lock still
/// yields its value (the slot is only ever taken, never left half-written).
fn take<V>(slot: &Mutex<Option<V>>) -> Option<V> {
    slot.lock().unwrap_or_else(PoisonError::into_inner).take()
}

/// The runner's side of the leader lease ([`crate::lease`]).
struct LeaseKeeper<T: Entry> {
    clock: Arc<dyn Clock>,
    grants: Grants,
    requests: Requests,
    /// Every other member.
    peers: Vec<NodeId>,
    /// After a hand-over: the released ballot, and when to take leadership
    /// again if this node still leads under it.
    retake: Option<(Ballot, std::time::Duration)>,
    /// Twice the hold.
    retake_after: std::time::Duration,
    /// Lease messages of this round, sent with OmniPaxos' own.
    outgoing: Vec<Message<T>>,
    /// Each peer's last accepted index and the ballot it accepted under, from
    /// its `Accepted` messages: a hand-over prefers the peer furthest in
    /// the log.
    accepted: BTreeMap<NodeId, (Ballot, usize)>,
}

struct Core<T: Entry, B: Storage<T>, S, D, H> {
    lease: Option<LeaseKeeper<T>>,
    /// What this node last heard from each peer.
    links: Arc<PeerLinks>,
    /// While leading: the log length after each round that appended
    /// proposals, and when that round started (the commit latency, bounded
    /// by [`MAX_COMMITS_TRACKED`]).
    commits: VecDeque<(usize, Instant)>,
    omnipaxos: OmniPaxos<T, B>,
    /// The inbox's StopSign admission, asked before a carrier reaches
    /// OmniPaxos and before this node proposes a StopSign.
    gate: StopSignGate<T>,
    sink: S,
    durability: D,
    hook: H,
    status: watch::Sender<RunnerStatus>,
    rounds: u64,
    outgoing: Vec<Message<T>>,
    reconnected: Vec<NodeId>,
    max_apply_per_round: usize,
    /// `(next, decided)` when the decided entries from `next` could not be
    /// read: not a backlog to run rounds for until either index moves (the
    /// loop would spin without waiting for anything).
    unreadable: Option<(usize, usize)>,
}

/// Inputs gathered for one round.
struct Round<T: Entry> {
    inbound: Vec<Message<T>>,
    proposals: Vec<Proposal<T>>,
    admin: Vec<Admin>,
    tick: bool,
}

/// The queues a consensus loop reads.
struct Inputs<T: Entry> {
    inbound: mpsc::Receiver<Message<T>>,
    proposals: mpsc::Receiver<Proposal<T>>,
    admin: mpsc::Receiver<Admin>,
}

impl<T, B, S, D, H> Core<T, B, S, D, H>
where
    T: Entry + 'static,
    B: Storage<T>,
    S: MessageSink<T>,
    D: Durability,
    H: DecidedHook<T>,
{
    async fn run(
        &mut self,
        inputs: Inputs<T>,
        mut stop: oneshot::Receiver<()>,
        mut frozen: watch::Receiver<bool>,
        config: RunnerConfig,
    ) {
        let Inputs {
            mut inbound,
            mut proposals,
            mut admin,
        } = inputs;
        let mut ticker = tokio::time::interval(config.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let failure = loop {
            if *frozen.borrow_and_update() {
                tokio::select! {
                    biased;
                    _ = &mut stop => break None,
                    _ = frozen.wait_for(|frozen| !*frozen) => {}
                }
                continue;
            }
            let mut round = Round {
                inbound: Vec::new(),
                proposals: Vec::new(),
                admin: Vec::new(),
                tick: false,
            };
            let backlog = self.apply_backlog();
            let lease_due = self.lease_due_in();
            tokio::select! {
                biased;
                _ = &mut stop => break None,
                _ = ticker.tick() => round.tick = true,
                Some(message) = inbound.recv() => round.inbound.push(message),
                Some(proposal) = proposals.recv() => round.proposals.push(proposal),
                Some(request) = admin.recv() => round.admin.push(request),
                // Decided entries still waiting for the hook: run the next
                // round at once instead of waiting for input.
                () = std::future::ready(()), if backlog => {}
                // The next lease round, on time even when the tick is
                // coarser than `renew_every`.
                () = tokio::time::sleep(lease_due.unwrap_or_default()), if lease_due.is_some() => {}
            }
            while let Ok(request) = admin.try_recv() {
                round.admin.push(request);
            }
            // Take whatever else is ready, up to the round's budget: one sync
            // then covers all of it (group commit).
            // Alternate between the queues so a flood of peer messages
            // cannot starve proposals (or the other way round).
            while round.inbound.len() + round.proposals.len() < config.max_round_inputs {
                let mut took = false;
                if let Ok(message) = inbound.try_recv() {
                    round.inbound.push(message);
                    took = true;
                }
                if let Ok(proposal) = proposals.try_recv() {
                    round.proposals.push(proposal);
                    took = true;
                }
                if !took {
                    break;
                }
            }
            // OmniPaxos panics on storage errors; a panic here must become a
            // visible failure, not a silently dead thread.
            match catch_unwind(AssertUnwindSafe(|| self.round(round))) {
                Ok(Ok(())) => {}
                Ok(Err(err)) => break Some(err.to_string()),
                Err(panic) => break Some(panic_message(&panic)),
            }
        };
        // Publish the outcome before closing the proposal queue: a proposer
        // that finds the queue closed reads `failed` from the status, and
        // must see `RunnerFailed`, not `RunnerStopped`, after a failure.
        self.status.send_modify(|status| {
            status.failed = failure.clone();
            status.stopped = true;
        });
        // Refuse queued proposals explicitly rather than leaving callers to
        // find a closed channel.
        proposals.close();
        while let Ok((_, reply)) = proposals.try_recv() {
            let _ = reply.send(Err(match &failure {
                Some(reason) => Error::RunnerFailed(reason.clone()),
                None => Error::RunnerStopped,
            }));
        }
        if failure.is_none() {
            // Whatever the last round wrote is already synced; this covers a
            // stop that raced a deferred write. (`shutdown` joins the thread,
            // so it still returns only after this.)
            let _ = self.durability.commit_round();
        }
    }

    fn round(&mut self, round: Round<T>) -> Result<(), Error> {
        self.rounds += 1;
        self.durability.begin_round();
        let promise_at_start = self.omnipaxos.get_promise();
        // Sampled after the round's inputs arrived: a grant's hold then runs
        // from no earlier than the request's arrival, a request round from
        // no later than its sending (both conservative).
        let now = self.lease.as_ref().map(|lease| lease.clock.now());
        // The commit latency runs from here, for a round with proposals.
        let started = (!round.proposals.is_empty()).then(Instant::now);
        let mut refused = 0u64;
        let mut heard: Vec<NodeId> = Vec::new();
        for message in round.inbound {
            let sender = message.get_sender();
            if !heard.contains(&sender) {
                heard.push(sender);
            }
            if let Message::Lease(lease) = message {
                if let Some(now) = now {
                    self.lease_message(now, lease);
                }
                continue;
            }
            if let (
                Some(lease),
                Message::SequencePaxos(PaxosMessage {
                    from,
                    msg: PaxosMsg::Accepted(accepted),
                    ..
                }),
            ) = (self.lease.as_mut(), &message)
            {
                lease
                    .accepted
                    .insert(*from, (accepted.n, accepted.accepted_idx));
            }
            if let Some((stop_sign, sync)) = stop_sign_of(&message)
                && !self.gate.admits(stop_sign, sync, &self.own_unapplied())
            {
                self.gate.refused(message.get_sender());
                refused += 1;
                continue;
            }
            let message = match message {
                Message::SequencePaxos(PaxosMessage {
                    from,
                    to,
                    msg: PaxosMsg::ProposalForward(entries),
                }) => {
                    let forwarded = entries.len();
                    let kept: Vec<T> = entries
                        .into_iter()
                        .filter(|entry| self.gate.admits_forward(entry))
                        .collect();
                    if kept.len() < forwarded {
                        self.gate.refused(from);
                        refused += 1;
                    }
                    if kept.is_empty() {
                        continue;
                    }
                    Message::SequencePaxos(PaxosMessage {
                        from,
                        to,
                        msg: PaxosMsg::ProposalForward(kept),
                    })
                }
                other => other,
            };
            self.omnipaxos.handle_incoming(message);
        }
        if refused > 0 {
            // Once per round, not per message. A few are a StopSign that
            // overtook the agreement on its change (OmniPaxos sends it
            // again); a steady stream is a peer trying to end the
            // configuration on its own.
            tracing::warn!(
                node = self.omnipaxos.get_pid(),
                dropped = refused,
                "dropped StopSign-carrying messages that name no agreed membership change, or \
                 membership changes forwarded by a peer (only the leader's admin path proposes \
                 one); if the peer port is reachable without mutual TLS, anyone can claim to be \
                 a member"
            );
        }
        if let Some(now) = now {
            self.links.heard(&heard, now);
        }
        let mut replies = Vec::with_capacity(round.proposals.len());
        let mut appended = false;
        for (entry, reply) in round.proposals {
            let result = self.omnipaxos.append(entry).map_err(propose_error);
            appended |= result.is_ok();
            replies.push((reply, result));
        }
        self.track_commits(started.filter(|_| appended));
        for request in round.admin {
            match request {
                Admin::Reconfigure {
                    next,
                    metadata,
                    reply,
                } => {
                    let stop_sign = StopSign::with(next, metadata);
                    let result = if self.gate.admits(&stop_sign, None, &self.own_unapplied()) {
                        self.omnipaxos
                            .reconfigure(stop_sign.next_config, stop_sign.metadata)
                            .map_err(propose_error)
                    } else {
                        Err(Error::ChangeNotAgreed {
                            configuration: stop_sign.next_config.configuration_id,
                            nodes: stop_sign.next_config.nodes,
                        })
                    };
                    replies.push((reply, result));
                }
                Admin::TakeLeadership => self.omnipaxos.try_become_leader(),
                Admin::HandOver { ballot, to, reply } => {
                    let _ = reply.send(self.hand_over(ballot, to));
                }
            }
        }
        self.reconnected.clear();
        self.sink.take_reconnected(&mut self.reconnected);
        for &peer in &self.reconnected {
            self.omnipaxos.reconnected(peer);
        }
        if round.tick {
            self.omnipaxos.tick();
        }
        if let Some(now) = now {
            self.retake_if_stuck(now);
            self.request_lease(now);
        }
        self.record_commits();
        self.apply_decided()?;
        // A leader's replication leaves before its own sync, so the
        // followers' syncs run beside it (invariant 7, `send_order`).
        self.omnipaxos.take_outgoing_messages(&mut self.outgoing);
        let promise_changed = self.omnipaxos.get_promise() != promise_at_start;
        let early = send_order::take_early(promise_changed, &mut self.outgoing);
        self.send(early);
        // One sync for every write of the round, before any acknowledgement
        // leaves.
        self.durability.commit_round()?;
        for (reply, result) in replies {
            let _ = reply.send(result);
        }
        self.send_outgoing();
        let lease_until = self.lease.as_ref().and_then(|lease| {
            lease
                .requests
                .lease(self.omnipaxos.get_promise())
                .map(|(_, until)| until)
        });
        let observed = observe(
            &self.omnipaxos,
            self.rounds,
            self.hook.next_idx(),
            lease_until,
        );
        self.status.send_if_modified(|status| {
            // `rounds` alone changing is not worth waking every watcher.
            let changed = RunnerStatus {
                rounds: status.rounds,
                ..observed.clone()
            } != *status;
            status.rounds = observed.rounds;
            if changed {
                *status = observed;
            }
            changed
        });
        Ok(())
    }

    /// While this node leads: remembers where a round that appended
    /// proposals (`appended_at`: when it started) ended the log, for its
    /// commit latency. Otherwise forgets
    /// every such round (another leader decides them, or nobody does).
    fn track_commits(&mut self, appended_at: Option<Instant>) {
        let me = self.omnipaxos.get_pid();
        if self.omnipaxos.get_current_leader() != Some((me, true)) {
            self.commits.clear();
            return;
        }
        if let Some(started) = appended_at {
            if self.commits.len() >= MAX_COMMITS_TRACKED {
                self.commits.pop_front();
            }
            let end = self
                .omnipaxos
                .get_accepted_idx()
                .saturating_add(self.omnipaxos.get_batched_len());
            self.commits.push_back((end, started));
        }
    }

    /// Records the commit latency of every tracked round now decided: from
    /// the round that appended its proposals to the round that saw them
    /// decided (a majority's syncs and one network round trip).
    fn record_commits(&mut self) {
        let decided = self.omnipaxos.get_decided_idx();
        while let Some(&(end, at)) = self.commits.front() {
            if end > decided {
                break;
            }
            self.commits.pop_front();
            metrics::histogram!(crate::telemetry::COMMIT_SECONDS)
                .record(at.elapsed().as_secs_f64());
        }
    }

    /// The entries this node holds past the hook's index (decided but not
    /// applied yet, or only accepted), for a StopSign admission: a change
    /// agreed there precedes any StopSign this node's log could take.
    fn own_unapplied(&self) -> Vec<T> {
        self.omnipaxos
            .read_entries(self.hook.next_idx()..)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|entry| match entry {
                LogEntry::Decided(value) | LogEntry::Undecided(value) => Some(value),
                _ => None,
            })
            .collect()
    }

    /// How long until the next lease round is due, while this node asks for
    /// rounds.
    fn lease_due_in(&self) -> Option<std::time::Duration> {
        let lease = self.lease.as_ref()?;
        let due = lease.requests.next_due()?;
        Some(due.saturating_sub(lease.clock.now()))
    }

    /// Whether decided entries are waiting for the hook.
    fn apply_backlog(&self) -> bool {
        let (next, decided) = (self.hook.next_idx(), self.omnipaxos.get_decided_idx());
        decided > next && self.unreadable != Some((next, decided))
    }

    fn apply_decided(&mut self) -> Result<(), Error> {
        let next = self.hook.next_idx();
        let decided = self.omnipaxos.get_decided_idx();
        if decided <= next {
            return Ok(());
        }
        let end = decided.min(next.saturating_add(self.max_apply_per_round));
        // A lagging read can return nothing; the hook's cursor then stays
        // put until the next input moves either index.
        let Some(entries) = self
            .omnipaxos
            .read_entries(next..end)
            .filter(|entries| !entries.is_empty())
        else {
            self.unreadable = Some((next, decided));
            return Ok(());
        };
        self.unreadable = None;
        let lease_until = self.status.borrow().lease_until;
        self.hook.before_decided(&observe(
            &self.omnipaxos,
            self.rounds,
            self.hook.next_idx(),
            lease_until,
        ));
        let snapshot_below = self
            .hook
            .on_decided(entries)
            .map_err(|source| Error::Hook(source.to_string()))?;
        if let Some(idx) = snapshot_below {
            // A refused compaction (index already compacted, or undecided) is
            // harmless: the log is just kept longer.
            let _ = self.omnipaxos.snapshot(Some(idx), true);
        }
        Ok(())
    }

    /// A lease request is granted or not; a grant counts towards a round.
    fn lease_message(&mut self, now: std::time::Duration, message: LeaseMessage) {
        let promise = self.omnipaxos.get_promise();
        // A node that accepted a StopSign grants no more: a configuration
        // that follows may start serving once the StopSign is decided, and
        // must not overlap a lease granted after that.
        let ended = self.omnipaxos.has_accepted_stopsign();
        let me = self.omnipaxos.get_pid();
        let Some(lease) = self.lease.as_mut() else {
            return;
        };
        match message.msg {
            LeaseMsg::Request { n, round } => {
                if !ended && lease.grants.grant(now, promise, n) {
                    self.links.granted(message.from, now);
                    lease.outgoing.push(Message::Lease(LeaseMessage {
                        from: me,
                        to: message.from,
                        msg: LeaseMsg::Grant { n, round },
                    }));
                }
            }
            LeaseMsg::Grant { n, round } => {
                if let Some(sent_at) = lease.requests.sent_at(n, round) {
                    self.links
                        .round_trip(message.from, now.saturating_sub(sent_at));
                }
                lease.requests.granted(message.from, n, round);
            }
            LeaseMsg::Release { n } => {
                lease.grants.release(message.from, n);
            }
            LeaseMsg::TakeOver { n } => {
                // Only from the leader this node follows, under the ballot
                // it promised: a stale or stray request changes nothing.
                if n.pid == message.from && promise == n && !ended {
                    self.omnipaxos.try_become_leader();
                }
            }
        }
    }

    /// [`Runner::hand_over`], on the consensus thread.
    fn hand_over(&mut self, ballot: Ballot, to: Option<NodeId>) -> Result<NodeId, Error> {
        let promise = self.omnipaxos.get_promise();
        let me = self.omnipaxos.get_pid();
        let leading = self.omnipaxos.get_current_leader() == Some((me, true))
            && promise.pid == me
            && promise == ballot;
        let Some(lease) = self.lease.as_mut() else {
            return Err(Error::InvalidConfig(
                "this runner keeps no lease".to_owned(),
            ));
        };
        let caught_up: BTreeMap<NodeId, usize> = lease
            .accepted
            .iter()
            .filter(|(_, (n, _))| *n == promise)
            .map(|(&peer, &(_, idx))| (peer, idx))
            .collect();
        let Some(to) = to.or_else(|| lease.requests.successor(&caught_up)) else {
            return Err(Error::NotLeader { to: None });
        };
        if !leading || to == me || !lease.peers.contains(&to) {
            return Err(Error::NotLeader { to: Some(to) });
        }
        let now = lease.clock.now();
        lease.retake = Some((promise, now.saturating_add(lease.retake_after)));
        lease.requests.release(promise);
        lease.grants.release(me, promise);
        for &peer in &lease.peers {
            lease.outgoing.push(Message::Lease(LeaseMessage {
                from: me,
                to: peer,
                msg: LeaseMsg::Release { n: promise },
            }));
        }
        lease.outgoing.push(Message::Lease(LeaseMessage {
            from: me,
            to,
            msg: LeaseMsg::TakeOver { n: promise },
        }));
        Ok(to)
    }

    /// A leader that handed over and still leads under the released ballot
    /// once `retake_after` passed (the successor never took over) takes
    /// leadership again under a new ballot.
    fn retake_if_stuck(&mut self, now: std::time::Duration) {
        let promise = self.omnipaxos.get_promise();
        let Some(lease) = self.lease.as_mut() else {
            return;
        };
        let Some((released, at)) = lease.retake else {
            return;
        };
        if promise != released {
            lease.retake = None;
        } else if now >= at {
            lease.retake = None;
            tracing::warn!(
                node = self.omnipaxos.get_pid(),
                "the successor did not take over; leading again under a new ballot"
            );
            self.omnipaxos.try_become_leader();
        }
    }

    /// The accept-phase leader asks for a lease round when one is due, and
    /// grants itself first.
    fn request_lease(&mut self, now: std::time::Duration) {
        let promise = self.omnipaxos.get_promise();
        let me = self.omnipaxos.get_pid();
        let leading = (self.omnipaxos.get_current_leader() == Some((me, true))
            && promise.pid == me
            && self.omnipaxos.is_reconfigured().is_none())
        .then_some(promise);
        let ended = self.omnipaxos.has_accepted_stopsign();
        let Some(lease) = self.lease.as_mut() else {
            return;
        };
        let Some(due) = lease.requests.due(now, leading) else {
            return;
        };
        if !ended && lease.grants.grant(now, promise, due.n) {
            lease.requests.granted(me, due.n, due.round);
        }
        for &peer in &lease.peers {
            lease.outgoing.push(Message::Lease(LeaseMessage {
                from: me,
                to: peer,
                msg: LeaseMsg::Request {
                    n: due.n,
                    round: due.round,
                },
            }));
        }
    }

    /// Sends the round's remaining messages, OmniPaxos' and the lease's.
    fn send_outgoing(&mut self) {
        self.omnipaxos.take_outgoing_messages(&mut self.outgoing);
        if let Some(lease) = self.lease.as_mut() {
            self.outgoing.append(&mut lease.outgoing);
        }
        let outgoing = std::mem::take(&mut self.outgoing);
        self.send(outgoing);
    }

    /// Hands `messages` to the sink, one batch per peer, in order.
    fn send(&self, messages: Vec<Message<T>>) {
        if messages.is_empty() {
            return;
        }
        let mut by_peer: BTreeMap<NodeId, Vec<Message<T>>> = BTreeMap::new();
        for message in messages {
            by_peer
                .entry(message.get_receiver())
                .or_default()
                .push(message);
        }
        for (peer, batch) in by_peer {
            self.sink.send(peer, batch);
        }
    }
}

/// `applied_to` is the hook's next index: the StopSign is reported only
/// once the hook has read past it.
fn observe<T: Entry, B: Storage<T>>(
    omnipaxos: &OmniPaxos<T, B>,
    rounds: u64,
    applied_to: usize,
    lease_until: Option<std::time::Duration>,
) -> RunnerStatus {
    let decided_idx = omnipaxos.get_decided_idx();
    RunnerStatus {
        node_id: omnipaxos.get_pid(),
        leader: omnipaxos.get_current_leader(),
        promise: omnipaxos.get_promise(),
        decided_idx,
        compacted_idx: omnipaxos.get_compacted_idx(),
        rounds,
        failed: None,
        stopped: false,
        // The decided StopSign occupies the last decided index.
        stop_sign: (applied_to >= decided_idx)
            .then(|| omnipaxos.is_reconfigured())
            .flatten(),
        lease_until,
    }
}

fn propose_error<T: Entry>(err: ProposeErr<T>) -> Error {
    match err {
        ProposeErr::PendingReconfigEntry(_) | ProposeErr::PendingReconfigConfig(..) => {
            Error::ConfigurationStopped
        }
        ProposeErr::ConfigError(err, ..) => Error::InvalidConfig(err.to_string()),
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    let detail = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic payload".to_owned());
    format!("the OmniPaxos instance panicked: {detail}")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use omnipaxos::storage::NoSnapshot;

    use super::*;
    use crate::config::ConfigBuilder;
    use crate::storage::MemoryStorage;

    #[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
    struct Put(u64);

    impl Entry for Put {
        type Snapshot = NoSnapshot;
    }

    /// Tells whether every write of the current round has been synced.
    #[derive(Clone, Default)]
    struct SyncFlag(Arc<AtomicBool>);

    impl Durability for SyncFlag {
        fn begin_round(&self) {
            self.0.store(false, Ordering::SeqCst);
        }

        fn commit_round(&self) -> Result<(), Error> {
            self.0.store(true, Ordering::SeqCst);
            Ok(())
        }
    }

    /// Counts messages, and those sent while the round was not yet synced.
    #[derive(Default)]
    struct CheckingSink {
        synced: SyncFlag,
        sent: AtomicUsize,
        before_sync: AtomicUsize,
    }

    impl MessageSink<Put> for CheckingSink {
        fn send(&self, _to: NodeId, batch: Vec<Message<Put>>) {
            self.sent.fetch_add(batch.len(), Ordering::SeqCst);
            if !self.synced.0.load(Ordering::SeqCst) {
                self.before_sync.fetch_add(batch.len(), Ordering::SeqCst);
            }
        }

        fn take_reconnected(&self, _out: &mut Vec<NodeId>) {}
    }

    struct Skip(usize);

    impl DecidedHook<Put> for Skip {
        fn next_idx(&self) -> usize {
            self.0
        }

        fn on_decided(
            &mut self,
            entries: Vec<LogEntry<Put>>,
        ) -> Result<Option<usize>, Box<dyn std::error::Error + Send + Sync>> {
            self.0 += entries.len();
            Ok(None)
        }
    }

    /// A candidate's new ballot is synced before its `Prepare` (or any
    /// other message) leaves: the round changed its promise
    /// (`send_order`). Its peers are absent, so it never replicates.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_candidate_sends_nothing_before_its_new_ballot_is_synced() {
        let config = ConfigBuilder::new([1, 2, 3])
            .election_ticks(2)
            .resend_ticks(4)
            .buffer_size(1_000)
            .flush_batch_ticks(100)
            .build(1)
            .unwrap();
        let omnipaxos = config.build(MemoryStorage::<Put>::new()).unwrap();
        let sink = Arc::new(CheckingSink::default());
        let runner = Runner::spawn(
            omnipaxos,
            &[1, 2, 3],
            Arc::clone(&sink),
            sink.synced.clone(),
            Skip(0),
            RunnerConfig {
                tick: Duration::from_millis(2),
                ..RunnerConfig::default()
            },
        )
        .unwrap();
        // Heartbeats and prepares towards the absent peers, with proposals
        // (appends write to storage) in between.
        for i in 0..20 {
            runner.propose(Put(i)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        runner.shutdown().await.unwrap();
        assert!(sink.sent.load(Ordering::SeqCst) > 0, "nothing was sent");
        assert_eq!(sink.before_sync.load(Ordering::SeqCst), 0);
    }

    /// A decided index above what the log can return (a node whose storage
    /// lost its entries) is no backlog: the loop waits for its next input
    /// instead of running empty rounds as fast as it can.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn decided_entries_that_cannot_be_read_do_not_spin_the_loop() {
        let mut storage = MemoryStorage::<Put>::new();
        storage.set_decided_idx(5).unwrap();
        let omnipaxos = ConfigBuilder::new([1, 2, 3])
            .build(1)
            .unwrap()
            .build(storage)
            .unwrap();
        let sink = Arc::new(CheckingSink::default());
        let runner = Runner::spawn(
            omnipaxos,
            &[1, 2, 3],
            Arc::clone(&sink),
            sink.synced.clone(),
            Skip(0),
            RunnerConfig {
                tick: Duration::from_secs(5),
                ..RunnerConfig::default()
            },
        )
        .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let rounds = runner.status().borrow().rounds;
        runner.shutdown().await.unwrap();
        assert!(
            rounds < 10,
            "{rounds} rounds without any input: the loop spins"
        );
    }
}
