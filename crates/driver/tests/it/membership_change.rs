//! Online membership change on `StandaloneHost`s over memory storage and
//! the in-memory network (which routes each message to the receiver's
//! instance of its sender's configuration, as the tonic transport does): a
//! member added, one removed, the state carried across, epochs rising,
//! dense blocks handed out under a steady load.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use omnipaxos::OmniPaxosConfig;
use omnipaxos::util::NodeId;
use tsoracle_consensus::ConsensusDriver;
use tsoracle_core::{Epoch, PeerEndpoint, SeqKey};
use tsoracle_driver_paxos::{
    ChangeFailure, ChangeRequest, DriverConfig, Member, NextConfiguration, PaxosApplier,
    PaxosDriver, PaxosHighWaterHost, Role, StandaloneHost, StartMode,
};
use tsoracle_paxos_harness::memnet::{MemNetConfig, MemNetwork, MemSink};
use tsoracle_paxos_state::{
    Command, MemberRecord, Membership, PaxosEntry, ProposalId, SnapshotPolicy,
};
use tsoracle_paxos_toolkit::storage::MemoryStorage;
use tsoracle_paxos_toolkit::{Inbox, InstanceId, Runner, RunnerConfig, SyncedWrites};

use crate::cluster::timing;

type Driver = PaxosDriver<StandaloneHost>;

const WAIT: Duration = Duration::from_secs(30);

fn key() -> SeqKey {
    SeqKey::try_new("orders").unwrap()
}

/// The network every configuration shares.
struct Networks(MemNetwork<PaxosEntry>);

impl Default for Networks {
    fn default() -> Self {
        Self(MemNetwork::new(MemNetConfig::default()).unwrap())
    }
}

impl Networks {
    fn sink(&self, configuration: u32, node: NodeId, instance: InstanceId) -> MemSink<PaxosEntry> {
        self.0.add_node_in(configuration, node, instance)
    }

    fn attach(&self, configuration: u32, inbox: Inbox<PaxosEntry>) {
        self.0.attach_in(configuration, inbox);
    }
}

/// How node `me` starts its instance of a later configuration.
struct NextOnMemory {
    me: NodeId,
    instance: InstanceId,
    networks: Arc<Networks>,
}

impl NextConfiguration<PaxosEntry> for NextOnMemory {
    fn spawn(
        &self,
        membership: &Membership,
        config: OmniPaxosConfig,
        hook: PaxosApplier,
        runner: RunnerConfig,
    ) -> Result<Runner<PaxosEntry>, String> {
        let ids: Vec<NodeId> = membership.members().iter().map(|m| m.id).collect();
        let omnipaxos = config
            .build(MemoryStorage::<PaxosEntry>::new())
            .map_err(|err| err.to_string())?;
        let sink = self
            .networks
            .sink(membership.configuration(), self.me, self.instance);
        Runner::spawn(omnipaxos, &ids, sink, SyncedWrites, hook, runner).map_err(|e| e.to_string())
    }

    fn attach(&self, membership: &Membership, inbox: Inbox<PaxosEntry>) {
        self.networks.attach(membership.configuration(), inbox);
    }
}

fn record(id: NodeId) -> MemberRecord {
    MemberRecord {
        id,
        peer_address: format!("memnet-{id}"),
        client_endpoint: format!("127.0.0.1:{}", 7000 + id),
    }
}

fn member(record: &MemberRecord) -> Member {
    Member {
        id: record.id,
        peer_address: record.peer_address.clone(),
        client_endpoint: PeerEndpoint::try_from(record.client_endpoint.clone()).unwrap(),
    }
}

struct Node {
    host: Arc<StandaloneHost>,
    driver: Arc<Driver>,
}

struct Cluster {
    networks: Arc<Networks>,
    nodes: BTreeMap<NodeId, Node>,
}

impl Cluster {
    async fn start(ids: &[NodeId]) -> Self {
        let mut cluster = Self {
            networks: Arc::default(),
            nodes: BTreeMap::new(),
        };
        let list = Membership::new(1, ids.iter().map(|&id| record(id)).collect()).unwrap();
        for &id in ids {
            cluster.start_node(id, &list, false);
        }
        cluster
    }

    /// Starts node `id` in `list`'s configuration; `joining`: started by a
    /// change, empty until its genesis.
    fn start_node(&mut self, id: NodeId, list: &Membership, joining: bool) {
        let instance = InstanceId(0x1000 + u128::from(id));
        let sink = self.networks.sink(list.configuration(), id, instance);
        let mut builder = StandaloneHost::builder()
            .node_id(id)
            .cluster_id("membership-it")
            .configuration_id(list.configuration())
            .members(list.members().iter().map(member).collect())
            .incarnation(1)
            .timing(timing())
            .snapshot_policy(SnapshotPolicy::Disabled)
            .instance(instance)
            .start_mode(StartMode::Initialize);
        if joining {
            builder = builder.joining();
        }
        let host = Arc::new(
            builder
                .start(MemoryStorage::<PaxosEntry>::new(), SyncedWrites, sink)
                .unwrap(),
        );
        self.networks.attach(list.configuration(), host.inbox());
        host.follow_changes(Arc::new(NextOnMemory {
            me: id,
            instance,
            networks: Arc::clone(&self.networks),
        }));
        let config = DriverConfig {
            request_timeout: Duration::from_secs(5),
            ..DriverConfig::new(timing())
        };
        let driver = Arc::new(PaxosDriver::start(Arc::clone(&host), config).unwrap());
        self.nodes.insert(id, Node { host, driver });
    }

    fn driver(&self, id: NodeId) -> &Arc<Driver> {
        &self.nodes[&id].driver
    }

    /// The node among `among` whose driver reports `Leader`, once exactly
    /// one does.
    async fn leader(&self, among: &[NodeId]) -> (NodeId, Epoch) {
        let deadline = Instant::now() + WAIT;
        loop {
            let leaders: Vec<_> = among
                .iter()
                .filter_map(|id| match self.driver(*id).role() {
                    Role::Leader(term) => Some((*id, term.epoch())),
                    _ => None,
                })
                .collect();
            if let [leader] = leaders[..] {
                return leader;
            }
            assert!(
                Instant::now() < deadline,
                "no single leader among {among:?}: {leaders:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn shutdown(mut self) {
        let ids: Vec<_> = self.nodes.keys().copied().collect();
        for id in ids {
            let node = self.nodes.remove(&id).unwrap();
            self.networks.0.detach(id);
            node.driver.shutdown().await;
            let _ = node.host.shutdown().await;
        }
    }
}

/// Writes through whichever node leads: a high-water and a dense block.
/// Returns the high-water it persisted and the block's start.
async fn write(cluster: &Cluster, among: &[NodeId], at_least: u64) -> (u64, u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (leader, epoch) = cluster.leader(among).await;
        let driver = cluster.driver(leader);
        let written = async {
            let high_water = driver.persist_high_water(at_least, epoch).await?;
            let start = driver.advance_dense(&key(), 5, epoch).await?;
            Ok::<_, tsoracle_consensus::ConsensusError>((high_water, start))
        }
        .await;
        match written {
            Ok(done) => return done,
            Err(err) => {
                assert!(Instant::now() < deadline, "no write succeeded: {err}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// What the load saw: each dense block handed out (count 1: its start) and
/// when, and how many calls failed.
#[derive(Debug, Default)]
struct Seen {
    blocks: Vec<(u64, Instant)>,
    failed: usize,
}

/// Fetches dense blocks of one through whichever driver leads, until told
/// to stop (bounded in count and time).
fn load(
    drivers: Vec<Arc<Driver>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<Seen> {
    use std::sync::atomic::Ordering;
    tokio::spawn(async move {
        let mut seen = Seen::default();
        let until = Instant::now() + Duration::from_secs(60);
        for _ in 0..100_000 {
            if stop.load(Ordering::SeqCst) || Instant::now() > until {
                break;
            }
            let leader = drivers.iter().find_map(|driver| match driver.role() {
                Role::Leader(term) => Some((driver, term.epoch())),
                _ => None,
            });
            let Some((driver, epoch)) = leader else {
                tokio::time::sleep(Duration::from_millis(2)).await;
                continue;
            };
            match driver.advance_dense(&key(), 1, epoch).await {
                Ok(start) => seen.blocks.push((start, Instant::now())),
                Err(_) => {
                    // As a client backs off.
                    seen.failed += 1;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
        seen
    })
}

/// A member is added (a fresh node that joins), then another is removed:
/// each time the next configuration starts with the state carried over
/// (high-water and dense counter continue above what was acknowledged),
/// its epochs rank above the old ones, and a removed node fails every call
/// for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_is_added_and_another_removed_with_the_state_carried_over() {
    let mut cluster = Cluster::start(&[1, 2, 3]).await;
    let (high_water, first_block) = write(&cluster, &[1, 2, 3], 1_000).await;
    assert_eq!((high_water, first_block), (1_000, 0));
    let (_, old_epoch) = cluster.leader(&[1, 2, 3]).await;

    let four = Membership::new(2, [1, 2, 3, 4].map(record).to_vec()).unwrap();
    cluster.start_node(4, &four, true);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let drivers = cluster
        .nodes
        .values()
        .map(|n| Arc::clone(&n.driver))
        .collect();
    let load = load(drivers, Arc::clone(&stop));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Asked of a follower: refused, naming the leader (only the leader's
    // admin path proposes a change).
    let (leader, _) = cluster.leader(&[1, 2, 3]).await;
    let follower = [1, 2, 3].into_iter().find(|&id| id != leader).unwrap();
    let refused = cluster
        .driver(follower)
        .change_membership(&ChangeRequest::Add(record(4)), WAIT)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, ChangeFailure::NotLeader { leader: Some(l) } if l == leader),
        "{refused}"
    );
    // A change a follower's host forwards anyway (as a peer link could)
    // is dropped by the leader: nothing is agreed.
    let forwarded = cluster.nodes[&follower]
        .host
        .submit(Command::PrepareChange {
            next: four.clone(),
            epoch: Epoch(0),
            // Above any id the follower used, so only the refusal keeps
            // it from being agreed.
            proposal: ProposalId {
                node: follower,
                incarnation: u64::MAX,
                seq: 0,
            },
        })
        .unwrap();
    drop(forwarded);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Neither agreed nor carried out (without the refusal the leader
    // agrees it and finishes the change within this wait).
    let mut seen = (None, None);
    cluster.nodes[&leader].host.read_state(&mut |state| {
        seen = (
            state.pending_change().cloned(),
            state.membership().map(Membership::configuration),
        );
    });
    assert_eq!(seen, (None, Some(1)), "a forwarded change was agreed");
    assert!(
        cluster.nodes[&leader].host.inbox().stats().stop_sign() > 0,
        "the forwarded change was not refused"
    );
    let agreed = cluster
        .driver(leader)
        .change_membership(&ChangeRequest::Add(record(4)), WAIT)
        .await
        .unwrap();
    assert_eq!(agreed, four);

    let (_, new_epoch) = cluster.leader(&[1, 2, 3, 4]).await;
    assert!(new_epoch > old_epoch, "{new_epoch:?} <= {old_epoch:?}");
    let (high_water, block) = write(&cluster, &[1, 2, 3, 4], 2_000).await;
    assert_eq!(high_water, 2_000);
    assert!(block >= 5, "the dense counter did not carry over: {block}");
    // The new member applied the carried state too (once it caught up: a
    // read before its genesis is a transient refusal, retried).
    let deadline = Instant::now() + WAIT;
    let on_four = loop {
        match cluster.driver(4).load_high_water().await {
            Ok(on_four) => break on_four,
            Err(err) => {
                assert!(Instant::now() < deadline, "node 4 never read: {err}");
                assert!(
                    matches!(err, tsoracle_consensus::ConsensusError::TransientDriver(_)),
                    "{err}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert!(on_four >= 2_000, "node 4 reads {on_four}");

    let three = Membership::new(3, [1, 3, 4].map(record).to_vec()).unwrap();
    let (leader, _) = cluster.leader(&[1, 2, 3, 4]).await;
    let removed = cluster
        .driver(leader)
        .change_membership(&ChangeRequest::Remove(2), WAIT)
        .await
        .unwrap();
    assert_eq!(removed, three);
    let (high_water, _) = write(&cluster, &[1, 3, 4], 3_000).await;
    assert_eq!(high_water, 3_000);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = load.await.unwrap();
    // Every block handed out under load is distinct: none repeated across
    // either change.
    let mut starts: Vec<u64> = seen.blocks.iter().map(|(start, _)| *start).collect();
    let handed = starts.len();
    starts.sort_unstable();
    starts.dedup();
    assert_eq!(starts.len(), handed, "a dense block was handed out twice");
    assert!(
        handed >= 20,
        "the load got only {handed} blocks ({} failed)",
        seen.failed
    );
    let gap = seen
        .blocks
        .windows(2)
        .map(|pair| pair[1].1 - pair[0].1)
        .max()
        .unwrap_or_default();
    eprintln!(
        "load: {handed} blocks, {} failed calls, longest gap {gap:?}",
        seen.failed
    );
    // A change costs about one failover (an election and the new leader's
    // lease wait); far less than this bound on a loaded machine.
    assert!(gap < Duration::from_secs(10), "a gap of {gap:?}");
    let mut ended = cluster.nodes[&2].host.leadership();
    let learned = tokio::time::timeout(WAIT, ended.wait_for(|view| view.configuration_ended))
        .await
        .is_ok();
    if !learned {
        let host = &cluster.nodes[&2].host;
        panic!(
            "node 2 never learned it left: {} StopSign carriers refused, view {:?}, status {:?}",
            host.inbox().stats().stop_sign(),
            *ended.borrow(),
            *host.status().borrow(),
        );
    }
    let refused = cluster.driver(2).load_high_water().await;
    assert!(
        matches!(
            refused,
            Err(tsoracle_consensus::ConsensusError::PermanentDriver(_))
        ),
        "{refused:?}"
    );
    cluster.shutdown().await;
}
