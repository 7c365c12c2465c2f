//! An in-memory network with fault injection, for tests and simulation.
//!
//! A [`MemNetwork`] connects runners of one process. Each node gets a
//! [`MemSink`] (its [`MessageSink`]) from [`MemNetwork::add_node`] and hands
//! its runner's [`Inbox`] back with [`MemNetwork::attach`]: the sink must
//! exist before the runner, and the inbox only after it.
//!
//! Nodes of several OmniPaxos configurations share the network: each sink
//! and each attached inbox belongs to a configuration id
//! ([`MemNetwork::add_node_in`], [`MemNetwork::attach_in`]; the plain
//! methods use [`FIRST_CONFIGURATION`]), every message travels stamped with
//! its sender's configuration and reaches only the receiver's inbox of that
//! configuration, as the real transport routes by the link's configuration
//! id. Faults and partitions act on nodes, whatever the configuration.
//!
//! Every directed link `from -> to` has its own bounded queue served by its
//! own task, so one slow or cut link never delays another, like the real
//! transport. The tasks belong to the network: [`MemNetwork::shutdown`] (or
//! dropping the network) stops all of them.
//!
//! Faults are set at runtime through a [`NetControl`] handle:
//! [`Faults`] (loss, duplication, delay with jitter, reordering; drawn from a
//! per-link RNG seeded from [`MemNetConfig::seed`]) and partitions
//! ([`NetControl::isolate`], [`NetControl::cut`], [`NetControl::cut_one_way`],
//! [`NetControl::heal_all`]). When a cut link heals, the sending node's sink
//! reports the peer through [`MessageSink::take_reconnected`], as a transport
//! reports a re-established connection.
//!
//! # Memory bound and overflow policy
//!
//! A link holds at most [`MemNetConfig::link_capacity`] messages in its
//! queue and as many again in its delay line (plus up to the reorder window
//! held back). When the queue is full, [`MessageSink::send`] drops the *new*
//! message and counts it in [`LinkStats::overflow`]: the sender never waits,
//! and Paxos resends what is lost. Delivery into a runner's inbox waits for
//! room (flow control), so a busy runner fills the link queues, which then
//! overflow: memory stays bounded whatever the receiver does.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use omnipaxos::messages::Message;
use omnipaxos::storage::Entry;
use omnipaxos::util::NodeId;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use tsoracle_paxos_toolkit::{Error, Inbox, InstanceId, MessageSink, Refusal};

/// The configuration id of [`MemNetwork::add_node`], [`MemNetwork::add_node_as`]
/// and [`MemNetwork::attach`]: a cluster's founding configuration.
pub const FIRST_CONFIGURATION: u32 = 1;

/// Settings of a [`MemNetwork`], fixed at creation.
#[derive(Debug, Clone)]
pub struct MemNetConfig {
    /// Messages one directed link queues before it drops new ones (see the
    /// module docs for the overflow policy). At least 1.
    pub link_capacity: usize,
    /// Seed of the per-link fault RNGs. Each link draws from its own RNG
    /// (seeded from this and the link's ends), so one link's traffic does not
    /// shift another's fault pattern.
    pub seed: u64,
    /// Longest time a reordered message is held back when no later message
    /// arrives to overtake it.
    pub reorder_max_hold: Duration,
    /// Deliver each message at most once, as the real transport's streams
    /// do: copies made by [`Faults::duplicate`] still travel the link (and
    /// count in [`LinkStats::duplicated`]) but the receiving end drops them
    /// ([`LinkStats::deduplicated`]). OmniPaxos 0.2.4 assumes at-most-once
    /// links; turn this off only to test code that must survive duplicates.
    pub at_most_once: bool,
}

impl Default for MemNetConfig {
    fn default() -> Self {
        Self {
            link_capacity: 4096,
            seed: 0,
            reorder_max_hold: Duration::from_millis(20),
            at_most_once: false,
        }
    }
}

/// Faults applied to every link, changeable at runtime with
/// [`NetControl::set_faults`]. The default is a perfect network.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Faults {
    /// Probability that a message is lost.
    pub drop: f64,
    /// Probability that a message is delivered twice.
    pub duplicate: f64,
    /// Fixed delay added to every message.
    pub delay: Duration,
    /// Extra random delay, uniform in `[0, jitter]`. Delays never reorder a
    /// link on their own (a link stays FIFO); only `reorder` does.
    pub jitter: Duration,
    /// Probability that a message is held back and overtaken by up to
    /// `reorder_window` later messages of the same link.
    pub reorder: f64,
    /// How many later messages may overtake a held-back one (at least 1 when
    /// `reorder` is above zero).
    pub reorder_window: usize,
}

impl Faults {
    fn validate(&self) -> Result<(), Error> {
        let probability = |p: f64| (0.0..=1.0).contains(&p);
        if !(probability(self.drop) && probability(self.duplicate) && probability(self.reorder)) {
            return Err(Error::InvalidConfig(
                "fault probabilities must lie in [0, 1]".to_owned(),
            ));
        }
        if self.reorder > 0.0 && self.reorder_window == 0 {
            return Err(Error::InvalidConfig(
                "reorder_window must be at least 1 when reorder is above zero".to_owned(),
            ));
        }
        Ok(())
    }
}

/// Counters of one directed link (or of all links, summed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Messages the sender's sink queued on the link.
    pub sent: u64,
    /// Messages handed to the receiver's inbox (duplicates included).
    pub delivered: u64,
    /// Messages lost to [`Faults::drop`].
    pub dropped: u64,
    /// Messages lost because the link was cut (at send or while in flight).
    pub cut: u64,
    /// Messages dropped because the link's queue was full.
    pub overflow: u64,
    /// Extra copies made by [`Faults::duplicate`].
    pub duplicated: u64,
    /// Copies dropped at the receiving end by
    /// [`MemNetConfig::at_most_once`].
    pub deduplicated: u64,
    /// Messages held back by [`Faults::reorder`].
    pub reordered: u64,
    /// Messages the receiver did not take: no inbox attached, its runner
    /// stopped, or its inbox refused them (for another reason than below).
    pub undeliverable: u64,
    /// Messages the receiver's inbox refused because the sender presented
    /// another data-directory instance than the one registered for it.
    pub refused: u64,
}

impl LinkStats {
    fn add(&mut self, other: &LinkStats) {
        self.sent += other.sent;
        self.delivered += other.delivered;
        self.dropped += other.dropped;
        self.cut += other.cut;
        self.overflow += other.overflow;
        self.duplicated += other.duplicated;
        self.deduplicated += other.deduplicated;
        self.reordered += other.reordered;
        self.undeliverable += other.undeliverable;
        self.refused += other.refused;
    }
}

#[derive(Debug, Default)]
struct LinkCounters {
    sent: AtomicU64,
    delivered: AtomicU64,
    dropped: AtomicU64,
    cut: AtomicU64,
    overflow: AtomicU64,
    duplicated: AtomicU64,
    deduplicated: AtomicU64,
    reordered: AtomicU64,
    undeliverable: AtomicU64,
    refused: AtomicU64,
}

impl LinkCounters {
    fn snapshot(&self) -> LinkStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        LinkStats {
            sent: get(&self.sent),
            delivered: get(&self.delivered),
            dropped: get(&self.dropped),
            cut: get(&self.cut),
            overflow: get(&self.overflow),
            duplicated: get(&self.duplicated),
            deduplicated: get(&self.deduplicated),
            reordered: get(&self.reordered),
            undeliverable: get(&self.undeliverable),
            refused: get(&self.refused),
        }
    }
}

fn bump(counter: &AtomicU64, n: usize) {
    counter.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
}

/// The non-generic state of one directed link: whether it is cut, and its
/// counters. The sink and the link task read the flag without a lock.
#[derive(Debug, Default)]
struct LinkState {
    cut: AtomicBool,
    /// Delay added to this link alone, in nanoseconds (a congested path).
    extra_delay_ns: AtomicU64,
    counters: LinkCounters,
}

/// Partitions, as the operator set them.
#[derive(Debug, Default)]
struct Topology {
    nodes: BTreeSet<NodeId>,
    isolated: BTreeSet<NodeId>,
    /// Directed links cut one by one.
    cut: BTreeSet<(NodeId, NodeId)>,
    links: BTreeMap<(NodeId, NodeId), Arc<LinkState>>,
    /// Per sending node, the peers whose link healed since its sink last
    /// asked.
    reconnected: BTreeMap<NodeId, BTreeSet<NodeId>>,
}

impl Topology {
    fn blocked(&self, from: NodeId, to: NodeId) -> bool {
        self.isolated.contains(&from)
            || self.isolated.contains(&to)
            || self.cut.contains(&(from, to))
    }

    /// Brings every link's flag in line with the partitions; a link that goes
    /// from cut to open is reported to its sender as reconnected.
    fn refresh(&mut self) {
        let mut healed = Vec::new();
        for (&(from, to), link) in &self.links {
            let blocked = self.blocked(from, to);
            let was = link.cut.swap(blocked, Ordering::AcqRel);
            if was && !blocked {
                healed.push((from, to));
            }
        }
        for (from, to) in healed {
            self.reconnected.entry(from).or_default().insert(to);
        }
    }
}

struct ControlState {
    faults: Mutex<Faults>,
    topology: Mutex<Topology>,
    /// Messages sent to a node the network does not know.
    unroutable: AtomicU64,
}

/// Locks `mutex`, ignoring poisoning: every critical section here leaves the
/// data consistent, and a test that panicked elsewhere must still be able to
/// shut the network down.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runtime control of a [`MemNetwork`]'s faults and partitions. Cheap to
/// clone; it is not generic, so simulation code can hold it anywhere.
#[derive(Clone)]
pub struct NetControl {
    state: Arc<ControlState>,
}

impl std::fmt::Debug for NetControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetControl")
            .field("faults", &self.faults())
            .finish_non_exhaustive()
    }
}

impl NetControl {
    /// Replaces the faults of every link. Messages already in a delay line
    /// keep the delay they were given.
    pub fn set_faults(&self, faults: Faults) -> Result<(), Error> {
        faults.validate()?;
        *lock(&self.state.faults) = faults;
        Ok(())
    }

    /// The current faults.
    pub fn faults(&self) -> Faults {
        *lock(&self.state.faults)
    }

    /// Back to a perfect network (partitions are kept).
    pub fn clear_faults(&self) {
        *lock(&self.state.faults) = Faults::default();
    }

    /// Cuts every link to and from `node`.
    pub fn isolate(&self, node: NodeId) {
        self.update(|t| {
            t.isolated.insert(node);
        });
    }

    /// Undoes [`isolate`](Self::isolate) for `node` (one-by-one cuts stay).
    pub fn rejoin(&self, node: NodeId) {
        self.update(|t| {
            t.isolated.remove(&node);
        });
    }

    /// Cuts both directions between `a` and `b`.
    pub fn cut(&self, a: NodeId, b: NodeId) {
        self.update(|t| {
            t.cut.insert((a, b));
            t.cut.insert((b, a));
        });
    }

    /// Cuts only the direction `from -> to`.
    pub fn cut_one_way(&self, from: NodeId, to: NodeId) {
        self.update(|t| {
            t.cut.insert((from, to));
        });
    }

    /// Heals both directions between `a` and `b` (isolation stays).
    pub fn heal(&self, a: NodeId, b: NodeId) {
        self.update(|t| {
            t.cut.remove(&(a, b));
            t.cut.remove(&(b, a));
        });
    }

    /// Heals only the direction `from -> to`.
    pub fn heal_one_way(&self, from: NodeId, to: NodeId) {
        self.update(|t| {
            t.cut.remove(&(from, to));
        });
    }

    /// Adds `extra` delay to every message sent on `from -> to` from now on,
    /// on top of [`Faults::delay`] (zero removes it); the link stays FIFO.
    /// Does nothing for a link between nodes not added yet.
    pub fn set_link_delay(&self, from: NodeId, to: NodeId, extra: Duration) {
        if let Some(link) = lock(&self.state.topology).links.get(&(from, to)) {
            let nanos = u64::try_from(extra.as_nanos()).unwrap_or(u64::MAX);
            link.extra_delay_ns.store(nanos, Ordering::Release);
        }
    }

    /// Removes every partition.
    pub fn heal_all(&self) {
        self.update(|t| {
            t.isolated.clear();
            t.cut.clear();
        });
    }

    /// Whether messages from `from` to `to` are currently cut.
    pub fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        lock(&self.state.topology).blocked(from, to)
    }

    /// The counters of the link `from -> to`, if both nodes were added.
    pub fn link_stats(&self, from: NodeId, to: NodeId) -> Option<LinkStats> {
        lock(&self.state.topology)
            .links
            .get(&(from, to))
            .map(|link| link.counters.snapshot())
    }

    /// The counters of every link, summed.
    pub fn total_stats(&self) -> LinkStats {
        let mut total = LinkStats::default();
        for link in lock(&self.state.topology).links.values() {
            total.add(&link.counters.snapshot());
        }
        total
    }

    /// Messages sent to a node that was never added to the network.
    pub fn unroutable(&self) -> u64 {
        self.state.unroutable.load(Ordering::Relaxed)
    }

    fn update(&self, change: impl FnOnce(&mut Topology)) {
        let mut topology = lock(&self.state.topology);
        change(&mut topology);
        topology.refresh();
    }
}

/// The sending half of a link, kept by the network for the sinks.
struct LinkTx<T: Entry> {
    tx: mpsc::Sender<Stamped<T>>,
    state: Arc<LinkState>,
}

struct Shared<T: Entry> {
    control: NetControl,
    links: RwLock<HashMap<(NodeId, NodeId), LinkTx<T>>>,
    /// Where each node's messages of each configuration are delivered;
    /// absent before `attach` and after `detach`.
    inboxes: Mutex<HashMap<(NodeId, u32), Inbox<T>>>,
}

impl<T: Entry> Shared<T> {
    fn inbox(&self, node: NodeId, configuration: u32) -> Option<Inbox<T>> {
        lock(&self.inboxes).get(&(node, configuration)).cloned()
    }
}

/// An in-memory network between runners of one process. See the
/// [module docs](self).
pub struct MemNetwork<T: Entry> {
    shared: Arc<Shared<T>>,
    config: MemNetConfig,
    runtime: Handle,
    /// The link tasks; their owner is the network. Taken by `shutdown`.
    tasks: Mutex<JoinSet<()>>,
    stop: watch::Sender<bool>,
}

impl<T: Entry> std::fmt::Debug for MemNetwork<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemNetwork")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<T> MemNetwork<T>
where
    T: Entry + Send + 'static,
    T::Snapshot: Send,
{
    /// A network whose link tasks run on the current tokio runtime.
    pub fn new(config: MemNetConfig) -> Result<Self, Error> {
        let runtime = Handle::try_current().map_err(|_| {
            Error::InvalidConfig("MemNetwork::new must be called inside a tokio runtime".to_owned())
        })?;
        Self::with_runtime(config, runtime)
    }

    /// A network whose link tasks run on `runtime`.
    pub fn with_runtime(config: MemNetConfig, runtime: Handle) -> Result<Self, Error> {
        if config.link_capacity == 0 {
            return Err(Error::InvalidConfig(
                "link_capacity must be at least 1".to_owned(),
            ));
        }
        let control = NetControl {
            state: Arc::new(ControlState {
                faults: Mutex::new(Faults::default()),
                topology: Mutex::new(Topology::default()),
                unroutable: AtomicU64::new(0),
            }),
        };
        let (stop, _) = watch::channel(false);
        Ok(Self {
            shared: Arc::new(Shared {
                control,
                links: RwLock::new(HashMap::new()),
                inboxes: Mutex::new(HashMap::new()),
            }),
            config,
            runtime,
            tasks: Mutex::new(JoinSet::new()),
            stop,
        })
    }

    /// The handle that sets faults and partitions and reads counters.
    pub fn control(&self) -> NetControl {
        self.shared.control.clone()
    }

    /// [`add_node`](Self::add_node) for a node that presents `instance`
    /// (its data directory's) with every message it sends through the
    /// returned sink; a restart with a wiped directory presents another.
    pub fn add_node_as(&self, node: NodeId, instance: InstanceId) -> MemSink<T> {
        MemSink {
            instance: Some(instance),
            ..self.add_node(node)
        }
    }

    /// [`add_node_as`](Self::add_node_as) for node `node`'s instance of
    /// configuration `configuration`: the sink's messages reach only the
    /// receivers' inboxes attached for that configuration.
    pub fn add_node_in(
        &self,
        configuration: u32,
        node: NodeId,
        instance: InstanceId,
    ) -> MemSink<T> {
        MemSink {
            configuration,
            ..self.add_node_as(node, instance)
        }
    }

    /// Adds `node` (if new) with links to and from every node already
    /// added, and returns a sink that sends as `node`. Adding a node again,
    /// for a restart, keeps its links and returns another sink.
    pub fn add_node(&self, node: NodeId) -> MemSink<T> {
        let new_links: Vec<((NodeId, NodeId), Arc<LinkState>)> = {
            let mut topology = lock(&self.shared.control.state.topology);
            let mut created = Vec::new();
            if topology.nodes.insert(node) {
                let others: Vec<NodeId> = topology
                    .nodes
                    .iter()
                    .copied()
                    .filter(|&n| n != node)
                    .collect();
                for other in others {
                    for key in [(node, other), (other, node)] {
                        let state = Arc::new(LinkState::default());
                        state
                            .cut
                            .store(topology.blocked(key.0, key.1), Ordering::Release);
                        topology.links.insert(key, Arc::clone(&state));
                        created.push((key, state));
                    }
                }
            }
            created
        };
        if !new_links.is_empty() {
            let mut links = self
                .shared
                .links
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            let mut tasks = lock(&self.tasks);
            for ((from, to), state) in new_links {
                let (tx, rx) = mpsc::channel(self.config.link_capacity);
                links.insert(
                    (from, to),
                    LinkTx {
                        tx,
                        state: Arc::clone(&state),
                    },
                );
                let task = LinkTask {
                    to,
                    shared: Arc::clone(&self.shared),
                    state,
                    rng: fastrand::Rng::with_seed(link_seed(self.config.seed, from, to)),
                    capacity: self.config.link_capacity,
                    max_hold: self.config.reorder_max_hold,
                    stop: self.stop.subscribe(),
                    delayed: VecDeque::new(),
                    held: Vec::new(),
                    next_seq: 0,
                    delivered: BTreeSet::new(),
                    at_most_once: self.config.at_most_once,
                    last_due: Instant::now(),
                };
                tasks.spawn_on(task.run(rx), &self.runtime);
            }
        }
        MemSink {
            me: node,
            instance: None,
            configuration: FIRST_CONFIGURATION,
            shared: Arc::clone(&self.shared),
        }
    }

    /// Delivers messages addressed to `inbox.node_id()` into `inbox` from now
    /// on, replacing any inbox attached before (a restarted node).
    pub fn attach(&self, inbox: Inbox<T>) {
        self.attach_in(FIRST_CONFIGURATION, inbox);
    }

    /// [`attach`](Self::attach) for the node's instance of configuration
    /// `configuration`.
    pub fn attach_in(&self, configuration: u32, inbox: Inbox<T>) {
        lock(&self.shared.inboxes).insert((inbox.node_id(), configuration), inbox);
    }

    /// Puts `message` on the link `from -> to` as if `from`'s instance
    /// `instance` of configuration `configuration` had sent it (subject to
    /// the link's faults like any other): a message no runner sent, as a
    /// buggy or compromised peer would send it. Whether it was queued.
    pub fn forge(
        &self,
        from: NodeId,
        to: NodeId,
        configuration: u32,
        instance: Option<InstanceId>,
        message: Message<T>,
    ) -> bool {
        let links = self
            .shared
            .links
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(link) = links.get(&(from, to)) else {
            return false;
        };
        link.tx
            .try_send(Stamped {
                instance,
                configuration,
                message,
            })
            .is_ok()
    }

    /// Stops delivering to `node`, in every configuration: its messages
    /// count as undeliverable until an inbox is attached again (a crashed
    /// node).
    pub fn detach(&self, node: NodeId) {
        lock(&self.shared.inboxes).retain(|(to, _), _| *to != node);
    }

    /// Stops every link task and waits for them. Returns how many tasks ended
    /// cleanly (two per pair of nodes unless one panicked).
    pub async fn shutdown(self) -> usize {
        self.stop.send_replace(true);
        let mut tasks = std::mem::take(&mut *lock(&self.tasks));
        let mut clean = 0;
        while let Some(result) = tasks.join_next().await {
            if result.is_ok() {
                clean += 1;
            }
        }
        clean
    }
}

impl<T: Entry> Drop for MemNetwork<T> {
    fn drop(&mut self) {
        // The JoinSet aborts what is left when it drops; the signal lets tasks
        // that are running right now end at their next check.
        self.stop.send_replace(true);
    }
}

fn link_seed(seed: u64, from: NodeId, to: NodeId) -> u64 {
    let link = from.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ to.rotate_left(32);
    seed ^ link.wrapping_mul(0xBF58_476D_1CE4_E5B9)
}

/// One node's [`MessageSink`] on a [`MemNetwork`].
pub struct MemSink<T: Entry> {
    me: NodeId,
    /// The instance this sink presents with every message.
    instance: Option<InstanceId>,
    /// The configuration its messages belong to.
    configuration: u32,
    shared: Arc<Shared<T>>,
}

impl<T: Entry> std::fmt::Debug for MemSink<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemSink").field("me", &self.me).finish()
    }
}

impl<T: Entry> MemSink<T> {
    /// The node this sink sends as.
    pub fn node_id(&self) -> NodeId {
        self.me
    }
}

impl<T> MessageSink<T> for MemSink<T>
where
    T: Entry + Send + 'static,
    T::Snapshot: Send,
{
    fn send(&self, to: NodeId, batch: Vec<Message<T>>) {
        let links = self
            .shared
            .links
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(link) = links.get(&(self.me, to)) else {
            bump(&self.shared.control.state.unroutable, batch.len());
            return;
        };
        let counters = &link.state.counters;
        if link.state.cut.load(Ordering::Acquire) {
            bump(&counters.cut, batch.len());
            return;
        }
        for message in batch {
            let stamped = Stamped {
                instance: self.instance,
                configuration: self.configuration,
                message,
            };
            match link.tx.try_send(stamped) {
                Ok(()) => bump(&counters.sent, 1),
                // Drop the newest, never wait: the runner must not block on a
                // slow link, and Paxos resends.
                Err(mpsc::error::TrySendError::Full(_)) => bump(&counters.overflow, 1),
                Err(mpsc::error::TrySendError::Closed(_)) => bump(&counters.undeliverable, 1),
            }
        }
    }

    fn take_reconnected(&self, out: &mut Vec<NodeId>) {
        let mut topology = lock(&self.shared.control.state.topology);
        if let Some(peers) = topology.reconnected.remove(&self.me) {
            out.extend(peers);
        }
    }
}

/// A message held back by the reorder fault.
struct Held<T: Entry> {
    /// Later messages still allowed to overtake it.
    overtakes_left: usize,
    deadline: Instant,
    seq: u64,
    message: Stamped<T>,
}

/// A message with the data-directory instance its sender presented when it
/// was sent (a restarted sender may present another one later).
#[derive(Clone)]
struct Stamped<T: Entry> {
    instance: Option<InstanceId>,
    /// The sender's configuration: only the receiver's inbox of that
    /// configuration gets the message.
    configuration: u32,
    message: Message<T>,
}

/// Serves one directed link: faults, delay line, reordering, delivery.
struct LinkTask<T: Entry> {
    to: NodeId,
    shared: Arc<Shared<T>>,
    state: Arc<LinkState>,
    rng: fastrand::Rng,
    capacity: usize,
    max_hold: Duration,
    stop: watch::Receiver<bool>,
    /// Messages waiting out their delay, in due order (the link is FIFO),
    /// each with its link sequence number (a copy shares its original's).
    delayed: VecDeque<(Instant, u64, Stamped<T>)>,
    held: Vec<Held<T>>,
    next_seq: u64,
    /// Sequence numbers delivered lately, when `at_most_once` (bounded: a
    /// copy travels right behind its original, within the reorder window).
    delivered: BTreeSet<u64>,
    at_most_once: bool,
    /// Due time of the last message put on the delay line. Dues never
    /// decrease along the line, so the head's due is the next wake-up (the
    /// line is popped from the head only, which keeps the link FIFO).
    last_due: Instant,
}

/// The link task was told to stop.
struct Stopped;

impl<T> LinkTask<T>
where
    T: Entry + Send + 'static,
    T::Snapshot: Send,
{
    async fn run(mut self, mut rx: mpsc::Receiver<Stamped<T>>) {
        let _ = self.serve(&mut rx).await;
    }

    async fn serve(&mut self, rx: &mut mpsc::Receiver<Stamped<T>>) -> Result<(), Stopped> {
        let mut stop = self.stop.clone();
        loop {
            let wake = self
                .delayed
                .front()
                .map(|(due, _, _)| *due)
                .into_iter()
                .chain(self.held.iter().map(|h| h.deadline))
                .min();
            // The delay line is bounded too: while it is full, the queue
            // fills and the sink drops new messages.
            let accepting = self.delayed.len() < self.capacity;
            tokio::select! {
                biased;
                _ = stop.wait_for(|stopped| *stopped) => return Err(Stopped),
                message = rx.recv(), if accepting => match message {
                    Some(message) => self.admit(message),
                    None => return Ok(()),
                },
                () = sleep_until_opt(wake), if wake.is_some() => {}
            }
            self.deliver_due().await?;
        }
    }

    /// Applies loss, duplication and delay to a message leaving the queue.
    fn admit(&mut self, message: Stamped<T>) {
        let faults = *lock(&self.shared.control.state.faults);
        if faults.drop > 0.0 && self.rng.f64() < faults.drop {
            bump(&self.state.counters.dropped, 1);
            return;
        }
        let extra = Duration::from_nanos(self.state.extra_delay_ns.load(Ordering::Acquire));
        let mut due = Instant::now() + faults.delay + extra;
        if !faults.jitter.is_zero() {
            let jitter_ns = u64::try_from(faults.jitter.as_nanos()).unwrap_or(u64::MAX);
            due += Duration::from_nanos(self.rng.u64(0..=jitter_ns));
        }
        due = due.max(self.last_due);
        self.last_due = due;
        let seq = self.next_seq;
        self.next_seq += 1;
        if faults.duplicate > 0.0 && self.rng.f64() < faults.duplicate {
            bump(&self.state.counters.duplicated, 1);
            self.delayed.push_back((due, seq, message.clone()));
        }
        self.delayed.push_back((due, seq, message));
    }

    /// Delivers every message whose delay is over, and held-back messages
    /// whose turn has come.
    async fn deliver_due(&mut self) -> Result<(), Stopped> {
        loop {
            let now = Instant::now();
            // Computed apart from the `if`, so no borrow of `held` lives
            // across the await (the task must be `Send`).
            let expired = self.held.iter().position(|h| h.deadline <= now);
            if let Some(pos) = expired {
                let held = self.held.swap_remove(pos);
                self.deliver(held.seq, held.message).await?;
                continue;
            }
            let due = matches!(self.delayed.front(), Some((due, _, _)) if *due <= now);
            if !due {
                return Ok(());
            }
            let Some((_, seq, message)) = self.delayed.pop_front() else {
                return Ok(());
            };
            let faults = *lock(&self.shared.control.state.faults);
            if faults.reorder > 0.0
                && self.held.len() < faults.reorder_window
                && self.rng.f64() < faults.reorder
            {
                bump(&self.state.counters.reordered, 1);
                self.held.push(Held {
                    overtakes_left: self.rng.usize(1..=faults.reorder_window),
                    deadline: now + self.max_hold,
                    seq,
                    message,
                });
                continue;
            }
            self.deliver(seq, message).await?;
            // This message overtook every held one; release those whose
            // window is used up, right after it.
            let mut i = 0;
            while i < self.held.len() {
                self.held[i].overtakes_left -= 1;
                if self.held[i].overtakes_left == 0 {
                    let held = self.held.swap_remove(i);
                    self.deliver(held.seq, held.message).await?;
                } else {
                    i += 1;
                }
            }
        }
    }

    async fn deliver(&mut self, seq: u64, stamped: Stamped<T>) -> Result<(), Stopped> {
        let counters = &self.state.counters;
        if self.at_most_once {
            if !self.delivered.insert(seq) {
                bump(&counters.deduplicated, 1);
                return Ok(());
            }
            // A copy is at most a reorder window behind its original.
            while self.delivered.len() > DEDUP_MEMORY {
                self.delivered.pop_first();
            }
        }
        // Checked again here: a cut made while the message was in flight
        // loses it, as a broken connection would.
        if self.state.cut.load(Ordering::Acquire) {
            bump(&counters.cut, 1);
            return Ok(());
        }
        let Some(inbox) = self.shared.inbox(self.to, stamped.configuration) else {
            bump(&counters.undeliverable, 1);
            return Ok(());
        };
        tokio::select! {
            biased;
            _ = self.stop.wait_for(|stopped| *stopped) => Err(Stopped),
            // Waits for room in the runner's queue: flow control back to the
            // link queue, which then overflows instead of growing.
            result = inbox.deliver(stamped.instance, stamped.message) => {
                match result {
                    Ok(()) => bump(&counters.delivered, 1),
                    Err(Refusal::Impostor(_)) => bump(&counters.refused, 1),
                    Err(_) => bump(&counters.undeliverable, 1),
                }
                Ok(())
            }
        }
    }
}

/// Sequence numbers an at-most-once link remembers.
const DEDUP_MEMORY: usize = 4096;

async fn sleep_until_opt(wake: Option<Instant>) {
    if let Some(wake) = wake {
        tokio::time::sleep_until(wake).await;
    }
}

#[cfg(test)]
mod tests {
    use omnipaxos::ballot_leader_election::Ballot;
    use omnipaxos::messages::sequence_paxos::{PaxosMessage, PaxosMsg, PrepareReq};
    use omnipaxos::storage::NoSnapshot;

    use super::*;

    #[derive(Clone, Debug)]
    struct E;

    impl Entry for E {
        type Snapshot = NoSnapshot;
    }

    /// A message that carries `n`, to check order.
    fn msg(from: NodeId, to: NodeId, n: u32) -> Message<E> {
        Message::SequencePaxos(PaxosMessage {
            from,
            to,
            msg: PaxosMsg::PrepareReq(PrepareReq {
                n: Ballot::with(1, n, 0, from),
            }),
        })
    }

    fn number(m: &Message<E>) -> u32 {
        match m {
            Message::SequencePaxos(PaxosMessage {
                msg: PaxosMsg::PrepareReq(p),
                ..
            }) => p.n.n,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Nodes 1 and 2; node 2's inbox feeds the returned receiver.
    fn pair(
        config: MemNetConfig,
        inbox_capacity: usize,
    ) -> (
        MemNetwork<E>,
        MemSink<E>,
        MemSink<E>,
        mpsc::Receiver<Message<E>>,
    ) {
        let net = MemNetwork::new(config).unwrap();
        let s1 = net.add_node(1);
        let s2 = net.add_node(2);
        let (tx, rx) = mpsc::channel(inbox_capacity);
        net.attach(Inbox::new(2, Arc::from(vec![1, 2]), tx));
        (net, s1, s2, rx)
    }

    async fn recv_n(rx: &mut mpsc::Receiver<Message<E>>, n: usize) -> Vec<u32> {
        let mut out = Vec::new();
        for _ in 0..n {
            let m = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .unwrap()
                .unwrap();
            out.push(number(&m));
        }
        out
    }

    /// Each message reaches the receiver's inbox of its sender's
    /// configuration only, and a cut holds in every configuration.
    #[tokio::test]
    async fn messages_reach_only_their_configurations_inbox() {
        let (net, s1, _s2, mut first) = pair(MemNetConfig::default(), 16);
        let (tx, mut second) = mpsc::channel(16);
        net.attach_in(2, Inbox::new(2, Arc::from(vec![1, 2]), tx));
        let s1_second = net.add_node_in(2, 1, InstanceId(1));
        s1.send(2, vec![msg(1, 2, 10)]);
        s1_second.send(2, vec![msg(1, 2, 20)]);
        assert_eq!(recv_n(&mut first, 1).await, [10]);
        assert_eq!(recv_n(&mut second, 1).await, [20]);
        // A configuration with no inbox attached: undeliverable, not
        // delivered to another configuration's inbox.
        net.add_node_in(3, 1, InstanceId(1))
            .send(2, vec![msg(1, 2, 30)]);
        tokio::time::sleep(Duration::from_millis(50)).await;
        net.control().cut(1, 2);
        s1_second.send(2, vec![msg(1, 2, 40)]);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(first.try_recv().is_err() && second.try_recv().is_err());
        let stats = net.control().link_stats(1, 2).unwrap();
        assert_eq!((stats.undeliverable, stats.cut), (1, 1), "{stats:?}");
        net.detach(2);
        net.control().heal_all();
        s1_second.send(2, vec![msg(1, 2, 50)]);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(second.try_recv().is_err(), "delivered after detach");
        assert_eq!(net.shutdown().await, 2);
    }

    #[tokio::test]
    async fn delay_and_jitter_keep_a_link_fifo() {
        let (net, s1, _s2, mut rx) = pair(MemNetConfig::default(), 1024);
        net.control()
            .set_faults(Faults {
                delay: Duration::from_millis(1),
                jitter: Duration::from_millis(5),
                ..Faults::default()
            })
            .unwrap();
        for n in 0..200 {
            s1.send(2, vec![msg(1, 2, n)]);
        }
        assert_eq!(recv_n(&mut rx, 200).await, (0..200).collect::<Vec<_>>());
        let stats = net.control().link_stats(1, 2).unwrap();
        assert_eq!((stats.sent, stats.delivered), (200, 200));
        assert_eq!(net.shutdown().await, 2);
    }

    /// Sends 200 messages over a link that duplicates and reorders, waits
    /// until every message and copy was delivered or dropped as a copy, and
    /// returns the link's counters and what the receiver got, in order.
    async fn flood_with_copies(at_most_once: bool) -> (LinkStats, Vec<u32>) {
        let config = MemNetConfig {
            seed: 7,
            at_most_once,
            ..MemNetConfig::default()
        };
        let (net, s1, _s2, mut rx) = pair(config, 1024);
        net.control()
            .set_faults(Faults {
                duplicate: 0.2,
                reorder: 0.2,
                reorder_window: 3,
                ..Faults::default()
            })
            .unwrap();
        s1.send(2, (0..200).map(|n| msg(1, 2, n)).collect());
        let stats = || net.control().link_stats(1, 2).unwrap();
        // Held messages arrive within 20 ms.
        tokio::time::timeout(Duration::from_secs(5), async {
            while stats().delivered + stats().deduplicated < 200 + stats().duplicated {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
        let stats = stats();
        let got = recv_n(&mut rx, usize::try_from(stats.delivered).unwrap()).await;
        net.shutdown().await;
        (stats, got)
    }

    #[tokio::test]
    async fn reorder_and_duplicate_change_order_but_lose_nothing() {
        let (stats, got) = flood_with_copies(false).await;
        assert!(stats.duplicated > 0 && stats.reordered > 0, "{stats:?}");
        assert_eq!(stats.delivered, 200 + stats.duplicated, "{stats:?}");
        let mut sorted = got.clone();
        sorted.sort_unstable();
        assert_ne!(got, sorted, "some messages overtook others");
        let distinct: BTreeSet<u32> = got.iter().copied().collect();
        assert_eq!(distinct, (0..200).collect());
    }

    #[tokio::test]
    async fn an_at_most_once_link_drops_the_copies_at_the_receiving_end() {
        let (stats, got) = flood_with_copies(true).await;
        assert!(stats.duplicated > 0, "{stats:?}");
        assert_eq!(stats.deduplicated, stats.duplicated, "{stats:?}");
        assert_eq!(stats.delivered, 200, "{stats:?}");
        let distinct: BTreeSet<u32> = got.iter().copied().collect();
        assert_eq!(distinct, (0..200).collect());
        assert_eq!(got.len(), 200, "a copy got through");
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_link_delays_only_its_own_messages() {
        let (net, s1, s2, mut rx2) = pair(MemNetConfig::default(), 16);
        let (tx1, mut rx1) = mpsc::channel(16);
        net.attach(Inbox::new(1, Arc::from(vec![1, 2]), tx1));
        net.control()
            .set_link_delay(1, 2, Duration::from_millis(300));
        let started = Instant::now();
        s1.send(2, vec![msg(1, 2, 1)]);
        s2.send(1, vec![msg(2, 1, 2)]);
        assert_eq!(recv_n(&mut rx1, 1).await, vec![2]);
        assert!(started.elapsed() < Duration::from_millis(300));
        assert_eq!(recv_n(&mut rx2, 1).await, vec![1]);
        assert!(started.elapsed() >= Duration::from_millis(300));
        net.shutdown().await;
    }

    #[tokio::test]
    async fn a_full_link_drops_new_messages_and_counts_them() {
        let config = MemNetConfig {
            link_capacity: 4,
            ..MemNetConfig::default()
        };
        // The receiver never reads: its inbox (1 slot) and then the link fill.
        let (net, s1, _s2, _rx) = pair(config, 1);
        for round in 0..10 {
            s1.send(2, (0..10).map(|n| msg(1, 2, round * 10 + n)).collect());
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let stats = net.control().link_stats(1, 2).unwrap();
        assert_eq!(stats.sent + stats.overflow, 100, "{stats:?}");
        // Queue (4) + delay line (4) + one delivered + one in the inbox
        // await: nothing else is held.
        assert!(stats.sent <= 4 + 4 + 2, "{stats:?}");
        assert_eq!(
            net.shutdown().await,
            2,
            "a link blocked on a full inbox still stops"
        );
    }

    #[tokio::test]
    async fn a_one_way_cut_blocks_one_direction_and_its_heal_reports_a_reconnect() {
        let (net, s1, s2, mut rx) = pair(MemNetConfig::default(), 16);
        let ctl = net.control();
        ctl.cut_one_way(2, 1);
        assert!(ctl.is_cut(2, 1) && !ctl.is_cut(1, 2));
        s2.send(1, vec![msg(2, 1, 0)]);
        s1.send(2, vec![msg(1, 2, 1)]);
        assert_eq!(recv_n(&mut rx, 1).await, vec![1]);
        assert_eq!(ctl.link_stats(2, 1).unwrap().cut, 1);

        ctl.heal_all();
        let (mut r1, mut r2) = (Vec::new(), Vec::new());
        s1.take_reconnected(&mut r1);
        s2.take_reconnected(&mut r2);
        assert_eq!(
            (r1, r2),
            (vec![], vec![1]),
            "only the healed sender is told"
        );
        let mut again = Vec::new();
        s2.take_reconnected(&mut again);
        assert!(again.is_empty(), "a reconnect is reported once");

        ctl.isolate(1);
        s1.send(2, vec![msg(1, 2, 2)]);
        ctl.heal(1, 2);
        assert!(ctl.is_cut(1, 2), "isolation outlives a pairwise heal");
        ctl.rejoin(1);
        let (mut r1, mut r2) = (Vec::new(), Vec::new());
        s1.take_reconnected(&mut r1);
        s2.take_reconnected(&mut r2);
        assert_eq!((r1, r2), (vec![2], vec![1]));
        s1.send(2, vec![msg(1, 2, 3)]);
        assert_eq!(recv_n(&mut rx, 1).await, vec![3]);
        net.shutdown().await;
    }

    #[tokio::test]
    async fn messages_to_unknown_or_detached_nodes_are_counted() {
        let (net, s1, _s2, _rx) = pair(MemNetConfig::default(), 16);
        s1.send(9, vec![msg(1, 9, 0)]);
        assert_eq!(net.control().unroutable(), 1);
        net.detach(2);
        s1.send(2, vec![msg(1, 2, 0)]);
        tokio::time::timeout(Duration::from_secs(5), async {
            while net.control().link_stats(1, 2).unwrap().undeliverable == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await
        .unwrap();
        net.shutdown().await;
    }

    #[tokio::test]
    async fn bad_settings_are_refused() {
        assert!(
            MemNetwork::<E>::new(MemNetConfig {
                link_capacity: 0,
                ..MemNetConfig::default()
            })
            .is_err()
        );
        let net = MemNetwork::<E>::new(MemNetConfig::default()).unwrap();
        let ctl = net.control();
        for bad in [
            Faults {
                drop: 1.5,
                ..Faults::default()
            },
            Faults {
                duplicate: f64::NAN,
                ..Faults::default()
            },
            Faults {
                reorder: 0.1,
                reorder_window: 0,
                ..Faults::default()
            },
        ] {
            assert!(ctl.set_faults(bad).is_err(), "{bad:?}");
        }
        assert_eq!(ctl.faults(), Faults::default());
    }

    #[test]
    fn new_outside_a_runtime_is_an_error() {
        assert!(MemNetwork::<E>::new(MemNetConfig::default()).is_err());
    }
}
