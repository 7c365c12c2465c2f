//! The simulated cluster: nodes that start, crash and restart, on the
//! toolkit's in-memory network.
//!
//! Every node runs the real stack of a `tsoracle-paxos` node: a
//! [`StandaloneHost`] (OmniPaxos on the toolkit runner, placed on the
//! simulation's runtime, and the driver's apply path), a [`PaxosDriver`] with
//! its lease on a drifting clock, and a [`SimServer`] on top. Only the disk
//! ([`Disk`]), the network (`MemNetwork`) and the clocks are simulated.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use omnipaxos::ClusterConfig;
use omnipaxos::messages::Message;
use omnipaxos::messages::sequence_paxos::{PaxosMessage, PaxosMsg};
use omnipaxos::storage::StopSign;
use omnipaxos::util::NodeId;
use tokio::task::JoinHandle;
use tsoracle_core::PeerEndpoint;
use tsoracle_driver_paxos::{
    ConfigError, DriverConfig, Member, PaxosDriver, PaxosHighWaterHost, Role, StandaloneHost,
    StartMode, Timing,
};
use tsoracle_paxos_harness::memnet::{MemNetwork, NetControl};
use tsoracle_paxos_state::{Membership, PaxosEntry, SnapshotPolicy};
use tsoracle_paxos_toolkit::{InstanceId, Placement, RunnerConfig};

use crate::SimError;
use crate::client::Directory;
use crate::clock::DriftingClock;
use crate::disk::Disk;
use crate::history::Recorder;
use crate::leaders::{LeaderLog, Monitor};
use crate::membership::{Disks, Record, Runs, SimNext, lock, record_of};
use crate::server::{Driver, ServerParams, SimServer};

/// How every node of a cluster is configured.
#[derive(Debug, Clone)]
pub(crate) struct NodeSetup {
    pub(crate) timing: Timing,
    pub(crate) driver: DriverConfig,
    pub(crate) snapshots: SnapshotPolicy,
    pub(crate) server: ServerParams,
    /// Each node's clock rate, inside `1 ± drift`.
    pub(crate) rates: BTreeMap<NodeId, f64>,
    /// Each node's wall-clock offset, in ms.
    pub(crate) wall_offsets: BTreeMap<NodeId, u64>,
}

struct Live {
    driver: Arc<Driver>,
    server: Arc<SimServer>,
    watch: JoinHandle<()>,
    monitor: (Monitor, JoinHandle<()>),
    clock: DriftingClock,
    /// Paused (SIGSTOP), with the epoch it was leading under then.
    paused: Option<Option<u128>>,
}

struct Slot {
    /// One disk per configuration this node ran.
    disks: Disks,
    /// The configuration it boots (durable, like the data directory).
    record: Arc<Mutex<Record>>,
    /// Removed from the cluster by a membership change: stopped for good.
    removed: bool,
    incarnation: u64,
    live: Option<Live>,
    /// The data directory's instance (a wipe draws another).
    instance: InstanceId,
    /// Directories this node lost so far.
    wipes: u64,
    /// Whether the node may start on empty storage: a founding member and a
    /// directory it initialized may; a wiped one restarted as a member that
    /// ran before may not.
    start_mode: StartMode,
    /// Why its host refused to start (it stays down for good).
    refused: Option<String>,
}

pub(crate) struct Cluster {
    net: Arc<MemNetwork<PaxosEntry>>,
    /// The configuration each node began.
    runs: Runs,
    setup: NodeSetup,
    slots: BTreeMap<NodeId, Slot>,
    directory: Directory,
    recorder: Recorder,
    leaders: LeaderLog,
    seed: u64,
}

impl Cluster {
    /// Starts `nodes` nodes (ids `1..=nodes`) on `net`.
    pub(crate) fn start(
        nodes: u64,
        net: MemNetwork<PaxosEntry>,
        setup: NodeSetup,
        recorder: Recorder,
        seed: u64,
    ) -> Result<Self, SimError> {
        let founding = Membership::new(1, (1..=nodes).map(record_of).collect())
            .map_err(|e| SimError::Setup(e.to_string()))?;
        let mut cluster = Self {
            net: Arc::new(net),
            runs: Arc::new(Mutex::new(
                (1..=nodes).map(|id| (id, founding.clone())).collect(),
            )),
            setup,
            slots: (1..=nodes)
                .map(|id| {
                    let slot = Slot::new(
                        Record {
                            membership: founding.clone(),
                            joining: false,
                        },
                        instance_of(seed, id, 0),
                    );
                    (id, slot)
                })
                .collect(),
            directory: Directory::default(),
            recorder,
            leaders: LeaderLog::default(),
            seed,
        };
        for id in 1..=nodes {
            cluster.boot(id)?;
        }
        Ok(cluster)
    }

    /// Virtual time since the run began, in µs (for traces).
    pub(crate) fn now_us(&self) -> u64 {
        self.recorder.now_us()
    }

    pub(crate) fn control(&self) -> NetControl {
        self.net.control()
    }

    /// Who claimed leadership when.
    pub(crate) fn leaders(&self) -> &LeaderLog {
        &self.leaders
    }

    pub(crate) fn directory(&self) -> Directory {
        Arc::clone(&self.directory)
    }

    /// The nodes that are members (or joining): every node the
    /// simulation started and did not remove.
    pub(crate) fn ids(&self) -> Vec<NodeId> {
        self.slots
            .iter()
            .filter(|(_, slot)| !slot.removed)
            .map(|(id, _)| *id)
            .collect()
    }

    /// The largest node id ever used (a node added gets the next one).
    pub(crate) fn max_id(&self) -> NodeId {
        self.slots.keys().copied().max().unwrap_or(0)
    }

    /// The newest member list the live nodes run, once the last change
    /// settled (no change agreed and unfinished, no configuration started
    /// and not begun); `None` otherwise.
    pub(crate) fn membership(&self) -> Option<Membership> {
        let mut newest: Option<Membership> = None;
        for live in self.slots.values().filter_map(|slot| slot.live.as_ref()) {
            let mut seen = (None, false);
            live.driver.host().read_state(&mut |state| {
                seen = (
                    state.membership().cloned(),
                    state.pending_change().is_some(),
                );
            });
            // A change in progress: not settled, so no list to change yet.
            if seen.1 {
                return None;
            }
            if let Some(list) = seen.0
                && newest
                    .as_ref()
                    .is_none_or(|n| n.configuration() < list.configuration())
            {
                newest = Some(list);
            }
        }
        // A configuration started somewhere and not begun on the nodes read:
        // the last change has not settled either.
        let started = lock(&self.runs)
            .values()
            .map(Membership::configuration)
            .max()
            .unwrap_or(0);
        newest.filter(|list| list.configuration() >= started)
    }

    /// Sends, from one live member, a `ForwardStopSign` to every other
    /// member of `membership`'s configuration: a StopSign that ends it for
    /// a next configuration of the same members, which no change agreed
    /// on, as a buggy or compromised peer would. The admission must drop
    /// it everywhere. How many messages were queued.
    pub(crate) fn forge_stop_sign(&self, membership: &Membership, from: NodeId) -> usize {
        let ids: Vec<NodeId> = membership.members().iter().map(|m| m.id).collect();
        let Some(slot) = self.slots.get(&from) else {
            return 0;
        };
        let next = ClusterConfig {
            configuration_id: membership.configuration() + 1,
            nodes: ids.clone(),
            flexible_quorum: None,
        };
        let mut queued = 0;
        for &to in ids.iter().filter(|&&to| to != from) {
            let message = Message::SequencePaxos(PaxosMessage {
                from,
                to,
                msg: PaxosMsg::ForwardStopSign(StopSign::with(next.clone(), None)),
            });
            if self.net.forge(
                from,
                to,
                membership.configuration(),
                Some(slot.instance),
                message,
            ) {
                queued += 1;
            }
        }
        queued
    }

    /// Adds node `id`, which joins `next` (the list a change is about to
    /// agree on) with an empty data directory, and starts it.
    pub(crate) fn add_joiner(&mut self, id: NodeId, next: Membership) -> Result<(), SimError> {
        // Its clock: a rate inside the drift and a wall-clock offset as the
        // founding nodes draw them, from a generator of its own.
        let mut rng = fastrand::Rng::with_seed(self.seed ^ id.wrapping_mul(0x2545_F491_4F6C_DD1D));
        let drift = self.setup.timing.drift;
        self.setup
            .rates
            .insert(id, 1.0 + (rng.f64() * 2.0 - 1.0) * drift);
        self.setup
            .wall_offsets
            .insert(id, 1_000_000 + rng.u64(0..=5_000));
        let slot = Slot::new(
            Record {
                membership: next,
                joining: true,
            },
            instance_of(self.seed, id, 0),
        );
        self.slots.insert(id, slot);
        self.boot(id)
    }

    /// Whether node `id` is up and learned that a change removed it.
    ///
    /// It is stopped only once a member of the next configuration began it:
    /// until then its runner may be the only one that can still tell the
    /// others the change was decided (it may have led the ending
    /// configuration), as a removed node waits for its peers to move on
    /// before it exits.
    pub(crate) fn left(&self, id: NodeId) -> bool {
        let Some(live) = self.slots.get(&id).and_then(|slot| slot.live.as_ref()) else {
            return false;
        };
        if !live.driver.host().leadership().borrow().configuration_ended {
            return false;
        }
        let ended = live
            .driver
            .host()
            .membership()
            .map_or(0, |list| list.configuration());
        self.slots.iter().any(|(other, slot)| {
            *other != id
                && !slot.removed
                && lock(&slot.record).membership.configuration() > ended
                && !lock(&slot.record).joining
        })
    }

    /// Stops node `id` for good: a change removed it, and the operator
    /// stops what is no longer a member.
    pub(crate) async fn retire(&mut self, id: NodeId) {
        self.crash(id).await;
        if let Some(slot) = self.slots.get_mut(&id) {
            slot.removed = true;
        }
    }

    pub(crate) fn is_up(&self, id: NodeId) -> bool {
        self.slots.get(&id).is_some_and(|slot| slot.live.is_some())
    }

    /// Nodes that are down or paused: neither takes part.
    pub(crate) fn down_count(&self) -> usize {
        self.slots
            .values()
            .filter(|s| !s.removed)
            .filter(|s| s.live.as_ref().is_none_or(|live| live.paused.is_some()))
            .count()
    }

    /// The server of a node that is up.
    pub(crate) fn server(&self, id: NodeId) -> Option<Arc<SimServer>> {
        self.slots
            .get(&id)
            .and_then(|slot| slot.live.as_ref())
            .map(|live| Arc::clone(&live.server))
    }

    /// Pauses node `id` as SIGSTOP would: its clock stops (it reads no
    /// later time), its consensus loop takes no input, its requests wait in
    /// its sockets and no reply leaves. Time goes on for everyone else.
    /// Returns whether it was up and running.
    pub(crate) fn pause(&mut self, id: NodeId) -> bool {
        let Some(live) = self.slots.get_mut(&id).and_then(|slot| slot.live.as_mut()) else {
            return false;
        };
        if live.paused.is_some() {
            return false;
        }
        live.clock.freeze();
        live.driver.host().set_frozen(true);
        live.server.set_paused(true);
        live.paused = Some(live.monitor.0.pause());
        true
    }

    /// Resumes a paused node as SIGCONT would: its clock jumps by the pause,
    /// then its waiting requests and its consensus loop run again, in an
    /// order drawn by the caller (nothing orders them in a real process).
    pub(crate) fn resume(&mut self, id: NodeId, requests_first: bool) {
        let Some(live) = self.slots.get_mut(&id).and_then(|slot| slot.live.as_mut()) else {
            return;
        };
        let Some(was_leading) = live.paused.take() else {
            return;
        };
        live.clock.thaw();
        // Whatever its stream last said, it claims now what its driver
        // reports now (the lease read on the clock that jumped).
        let still = was_leading.filter(
            |&epoch| matches!(live.driver.role(), Role::Leader(term) if term.epoch().0 == epoch),
        );
        live.monitor.0.resume(still);
        if requests_first {
            live.server.set_paused(false);
            live.driver.host().set_frozen(false);
        } else {
            live.driver.host().set_frozen(false);
            live.server.set_paused(false);
        }
    }

    /// A node that currently claims to lead, if any.
    pub(crate) fn leader(&self) -> Option<NodeId> {
        self.slots.iter().find_map(|(&id, slot)| {
            slot.live
                .as_ref()
                .filter(|live| live.driver.role().is_leader())
                .map(|_| id)
        })
    }

    /// The driver of a node that is up.
    pub(crate) fn driver(&self, id: NodeId) -> Option<Arc<Driver>> {
        self.slots
            .get(&id)
            .and_then(|slot| slot.live.as_ref())
            .map(|live| Arc::clone(&live.driver))
    }

    /// Ends the servers' long stalls, for the running nodes and every node
    /// booted later (part of the heal).
    pub(crate) fn end_stalls(&mut self) {
        self.setup.server.slow_probability = 0.0;
        for slot in self.slots.values() {
            if let Some(live) = &slot.live {
                live.server.end_stalls();
            }
        }
    }

    /// Starts node `id` from what its disk holds.
    pub(crate) fn boot(&mut self, id: NodeId) -> Result<(), SimError> {
        let setup = &self.setup;
        let slot = self
            .slots
            .get_mut(&id)
            .ok_or_else(|| SimError::Setup(format!("no node {id}")))?;
        if slot.live.is_some() || slot.refused.is_some() || slot.removed {
            return Ok(());
        }
        // Only what was synced survives: fresh disks from the durable copies.
        for disk in lock(&slot.disks).values_mut() {
            *disk = Disk::from_durable(disk.durable());
        }
        slot.incarnation += 1;
        let record = lock(&slot.record).clone();
        let configuration = record.membership.configuration();
        let disk = lock(&slot.disks).entry(configuration).or_default().clone();
        let members = record
            .membership
            .members()
            .iter()
            .map(|m| {
                Ok(Member {
                    id: m.id,
                    peer_address: m.peer_address.clone(),
                    client_endpoint: PeerEndpoint::try_from(m.client_endpoint.clone())
                        .map_err(|e| SimError::Setup(e.to_string()))?,
                })
            })
            .collect::<Result<Vec<_>, SimError>>()?;
        let sink = self.net.add_node_in(configuration, id, slot.instance);
        let rate = setup.rates.get(&id).copied().unwrap_or(1.0);
        let clock = DriftingClock::new(rate);
        let mut builder = StandaloneHost::builder()
            .clock(Arc::new(clock.clone()))
            .node_id(id)
            .cluster_id("sim")
            .configuration_id(configuration)
            .members(members)
            .incarnation(slot.incarnation)
            .timing(setup.timing)
            .snapshot_policy(setup.snapshots.clone())
            .runner_config(RunnerConfig {
                placement: Placement::CurrentRuntime,
                ..RunnerConfig::default()
            })
            .instance(slot.instance)
            .start_mode(slot.start_mode);
        if record.joining {
            builder = builder.joining();
        }
        let started = builder.start(disk.storage(), disk.durability(), sink);
        let host = match started {
            Ok(host) => host,
            // A wiped node started as a member that ran before: refused,
            // and down for the rest of the run (as `serve` exits).
            Err(err @ ConfigError::NoStateToRejoin { .. }) => {
                tracing::debug!(at = self.recorder.now_us(), node = id, %err, "start refused");
                slot.refused = Some(err.to_string());
                return Ok(());
            }
            Err(err) => return Err(SimError::Setup(format!("node {id}: {err}"))),
        };
        // It initialized its storage: from now on it is its own.
        slot.start_mode = StartMode::Initialize;
        self.net.attach_in(configuration, host.inbox());
        host.follow_changes(Arc::new(SimNext {
            id,
            instance: slot.instance,
            disks: Arc::clone(&slot.disks),
            record: Arc::clone(&slot.record),
            net: Arc::clone(&self.net),
            runs: Arc::clone(&self.runs),
        }));
        let driver = PaxosDriver::start(Arc::new(host), setup.driver)
            .map_err(|e| SimError::Setup(format!("node {id}: {e}")))?;
        let driver = Arc::new(driver);
        let params = ServerParams {
            wall_offset_ms: setup.wall_offsets.get(&id).copied().unwrap_or(0),
            ..setup.server
        };
        let server_seed = self
            .seed
            .wrapping_mul(31)
            .wrapping_add(id * 1_000 + slot.incarnation);
        // The monitor first: it must see the driver's first Leader event
        // before the server acts on it.
        let monitor = self.leaders.monitor(id, self.recorder.clone());
        let monitor_task = tokio::spawn(monitor.clone().run(driver.watch_leadership()));
        let server = SimServer::new(
            id,
            Arc::clone(&driver),
            clock.clone(),
            params,
            server_seed,
            self.recorder.clone(),
            monitor.clone(),
        );
        let watch = tokio::spawn(Arc::clone(&server).leader_watch());
        self.directory
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, Arc::clone(&server));
        slot.live = Some(Live {
            driver,
            server,
            watch,
            monitor: (monitor, monitor_task),
            clock,
            paused: None,
        });
        Ok(())
    }

    /// Crashes node `id` and loses its data directory: the disk is empty and
    /// the next start presents a new instance, with `mode` saying whether
    /// the operator restarts it as a member that ran before (refused) or,
    /// by mistake, as a founding one. Its incarnation file is lost too.
    pub(crate) async fn wipe(&mut self, id: NodeId, mode: StartMode) {
        self.crash(id).await;
        let seed = self.seed;
        if let Some(slot) = self.slots.get_mut(&id) {
            // The whole data directory: every configuration's disk and the
            // record (the node restarts from its flags, the founding list).
            let flags = lock(&slot.record).membership.clone();
            lock(&slot.disks).clear();
            *lock(&slot.record) = Record {
                membership: flags,
                joining: false,
            };
            slot.wipes += 1;
            slot.instance = instance_of(seed, id, slot.wipes);
            slot.incarnation = 0;
            slot.start_mode = mode;
        }
    }

    /// Whether every live node's applied state registered every member
    /// with its current instance.
    pub(crate) fn registered_everywhere(&self) -> bool {
        self.slots
            .values()
            .filter(|slot| !slot.removed)
            .all(|slot| {
                let Some(live) = &slot.live else {
                    return false;
                };
                let mut all = true;
                live.driver.host().read_state(&mut |state| {
                    all = self
                        .slots
                        .iter()
                        .filter(|(_, other)| !other.removed)
                        .all(|(id, other)| state.instance_of(*id) == Some(other.instance.0));
                });
                all
            })
    }

    /// The disk node `id` runs its current configuration on, while it runs.
    fn current_disk(&self, id: NodeId) -> Option<Disk> {
        let slot = self.slots.get(&id)?;
        slot.live.as_ref()?;
        let configuration = lock(&slot.record).membership.configuration();
        lock(&slot.disks).get(&configuration).cloned()
    }

    /// Makes the next sync of node `id` that changes its log fail (see
    /// [`Disk::arm_torn_sync`]); whether it is armed now (`false` if the
    /// node does not run, or its sync failed already).
    pub(crate) fn arm_torn_sync(&self, id: NodeId, on: bool) -> bool {
        self.current_disk(id)
            .is_some_and(|disk| disk.arm_torn_sync(on))
    }

    /// Whether the armed sync of node `id` failed (its runner stopped).
    pub(crate) fn torn_sync_fired(&self, id: NodeId) -> bool {
        self.current_disk(id)
            .is_some_and(|disk| disk.torn_sync_fired())
    }

    /// Crashes node `id`: its server answers nothing more, its tasks stop,
    /// and its disk keeps only what was synced.
    pub(crate) async fn crash(&mut self, id: NodeId) {
        let Some(live) = self.slots.get_mut(&id).and_then(|slot| slot.live.take()) else {
            return;
        };
        live.server.kill();
        // A crashed process claims nothing from the moment it dies.
        live.monitor.1.abort();
        live.monitor.0.close();
        self.directory
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        self.net.detach(id);
        live.watch.abort();
        live.driver.shutdown().await;
        // Every round of the runner ends with its sync, so stopping it
        // between rounds loses exactly what a crash there would: nothing
        // synced. (A crash inside a round, after the leader's early
        // messages left and before its sync, is the `TornSync` fault.)
        let _ = live.driver.host().shutdown().await;
    }

    /// Stops every node (end of the run).
    pub(crate) async fn shutdown(mut self) {
        let all: Vec<NodeId> = self.slots.keys().copied().collect();
        for id in all {
            self.crash(id).await;
        }
        // The hosts' follow tasks held the network; they are stopped now.
        if let Ok(net) = Arc::try_unwrap(self.net) {
            net.shutdown().await;
        }
    }
}

impl Slot {
    fn new(record: Record, instance: InstanceId) -> Self {
        Self {
            disks: Arc::default(),
            record: Arc::new(Mutex::new(record)),
            removed: false,
            incarnation: 0,
            live: None,
            instance,
            wipes: 0,
            start_mode: StartMode::Initialize,
            refused: None,
        }
    }
}

/// The instance of node `id`'s data directory after `wipes` losses: drawn
/// from the seed, so a run replays.
fn instance_of(seed: u64, id: NodeId, wipes: u64) -> InstanceId {
    InstanceId((u128::from(seed) << 64) | u128::from(id.wrapping_mul(1_000).wrapping_add(wipes)))
}
