//! A three-node test cluster: RocksDB storage in a temporary directory, the
//! in-memory peer network (so links can be cut), one tsoracle-server per
//! node on a 127.0.0.1 port that survives node restarts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use omnipaxos::util::NodeId;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tsoracle_consensus::{ConsensusDriver, LeaderState};
use tsoracle_core::{Epoch, PeerEndpoint};
use tsoracle_driver_paxos::{
    DriverConfig, Member, PaxosDriver, Role, StandaloneHost, StartMode, Timing, next_incarnation,
};
use tsoracle_paxos_harness::memnet::{MemNetConfig, MemNetwork, NetControl};
use tsoracle_paxos_state::{PaxosEntry, SnapshotPolicy};
use tsoracle_paxos_toolkit::storage::{RocksdbOptions, RocksdbStorage, StorageIdentity};

pub(crate) type Driver = PaxosDriver<StandaloneHost>;

/// The LAN timing: a 400 ms election timeout and a 300 ms lease renewed
/// every 60 ms, so a leader keeps its lease through the slow rounds of a
/// loaded 2-core machine.
pub(crate) fn timing() -> Timing {
    Timing::lan()
}

pub(crate) struct Node {
    pub(crate) host: Arc<StandaloneHost>,
    pub(crate) driver: Arc<Driver>,
    server: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

pub(crate) struct Cluster {
    pub(crate) net: MemNetwork<PaxosEntry>,
    pub(crate) nodes: BTreeMap<NodeId, Node>,
    addrs: BTreeMap<NodeId, SocketAddr>,
    members: Vec<Member>,
    _dir: tempfile::TempDir,
    root: PathBuf,
    with_servers: bool,
    request_timeout: Duration,
}

impl Cluster {
    /// Three nodes, each with a tsoracle-server when `with_servers`.
    ///
    /// A generous call deadline: a loaded test machine can stall an fsync
    /// for seconds, and a timed-out call would fail a test that checks that
    /// every call succeeds.
    pub(crate) async fn start(with_servers: bool) -> Self {
        Self::start_with(with_servers, Duration::from_secs(10)).await
    }

    /// [`start`](Self::start) with the drivers' `request_timeout`.
    pub(crate) async fn start_with(with_servers: bool, request_timeout: Duration) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let mut listeners = BTreeMap::new();
        let mut addrs = BTreeMap::new();
        for id in 1..=3u64 {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            addrs.insert(id, listener.local_addr().unwrap());
            listeners.insert(id, listener);
        }
        let members = addrs
            .iter()
            .map(|(&id, addr)| Member {
                id,
                // The in-memory network needs no address.
                peer_address: format!("memnet-{id}"),
                client_endpoint: PeerEndpoint::try_from(addr.to_string()).unwrap(),
            })
            .collect();
        let mut cluster = Self {
            net: MemNetwork::new(MemNetConfig::default()).unwrap(),
            nodes: BTreeMap::new(),
            addrs,
            members,
            _dir: dir,
            root,
            with_servers,
            request_timeout,
        };
        for (id, listener) in listeners {
            cluster.start_node(id, Some(listener)).await;
        }
        cluster.settle().await;
        cluster
    }

    /// Waits until one leader has kept its epoch through two election
    /// timeouts. Right after a start the ballot leader election can still
    /// move: the nodes started one after the other, and a node that starts
    /// while none of its peers is happy with a leader takes over. A test
    /// that takes the first leader it sees would then race that move.
    async fn settle(&self) {
        let election = timing().election_timeout().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = self.wait_leader(Duration::from_secs(30)).await;
        loop {
            tokio::time::sleep(election * 2).await;
            let now = self.wait_leader(Duration::from_secs(30)).await;
            if now == seen {
                return;
            }
            assert!(Instant::now() < deadline, "the leadership never settled");
            seen = now;
        }
    }

    pub(crate) fn control(&self) -> NetControl {
        self.net.control()
    }

    /// Client endpoints (`host:port`) of the given nodes.
    pub(crate) fn endpoints(&self, ids: &[NodeId]) -> Vec<String> {
        ids.iter().map(|id| self.addrs[id].to_string()).collect()
    }

    pub(crate) fn driver(&self, id: NodeId) -> &Arc<Driver> {
        &self.nodes[&id].driver
    }

    /// Node `id`'s RocksDB directory.
    pub(crate) fn db_dir(&self, id: NodeId) -> PathBuf {
        self.root.join(format!("node-{id}")).join("db")
    }

    /// Starts node `id` from its data directory (creating it on first start).
    pub(crate) async fn start_node(&mut self, id: NodeId, listener: Option<TcpListener>) {
        let node_dir = self.root.join(format!("node-{id}"));
        std::fs::create_dir_all(&node_dir).unwrap();
        let incarnation = next_incarnation(&node_dir.join("incarnation")).unwrap();
        let storage = RocksdbStorage::<PaxosEntry>::open(
            self.db_dir(id),
            StorageIdentity::new("driver-it", id),
            RocksdbOptions::default(),
        )
        .unwrap();
        let durability = storage.group_commit();
        let instance = storage.instance();
        let sink = self.net.add_node_as(id, instance);
        let host = StandaloneHost::builder()
            .node_id(id)
            .cluster_id("driver-it")
            .members(self.members.clone())
            .incarnation(incarnation)
            .timing(timing())
            // Small, so every test compacts its log a few times.
            .snapshot_policy(SnapshotPolicy::EveryDecided(
                std::num::NonZeroU64::new(16).unwrap(),
            ))
            .instance(instance)
            // RocksDB initialized (or verified) the directory above.
            .start_mode(StartMode::Initialize)
            .start(storage, durability, sink)
            .unwrap();
        let host = Arc::new(host);
        self.net.attach(host.inbox());
        let config = DriverConfig {
            request_timeout: self.request_timeout,
            ..DriverConfig::new(timing())
        };
        let driver = Arc::new(PaxosDriver::start(Arc::clone(&host), config).unwrap());
        let server = if self.with_servers {
            let listener = match listener {
                Some(listener) => listener,
                None => bind_again(self.addrs[&id]).await,
            };
            let server = tsoracle_server::Server::builder()
                .consensus_driver(Arc::clone(&driver) as Arc<dyn ConsensusDriver>)
                .build()
                .unwrap();
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            let task = tokio::spawn(async move {
                let _ = server
                    .serve_with_listener(listener, async move {
                        let _ = stop_rx.await;
                    })
                    .await;
            });
            Some((stop_tx, task))
        } else {
            None
        };
        self.nodes.insert(
            id,
            Node {
                host,
                driver,
                server,
            },
        );
    }

    /// Stops node `id`: its server, its driver, its consensus thread (last
    /// sync included); its links go dead.
    pub(crate) async fn stop_node(&mut self, id: NodeId) {
        let node = self.nodes.remove(&id).unwrap();
        self.net.detach(id);
        if let Some((stop, task)) = node.server {
            let _ = stop.send(());
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        node.driver.shutdown().await;
        node.host.shutdown().await.unwrap();
    }

    pub(crate) async fn restart_node(&mut self, id: NodeId) {
        self.start_node(id, None).await;
    }

    /// The node whose driver reports `Leader`, once exactly one does.
    pub(crate) async fn wait_leader(&self, within: Duration) -> (NodeId, Epoch) {
        let deadline = Instant::now() + within;
        loop {
            let leaders: Vec<_> = self
                .nodes
                .iter()
                .filter_map(|(&id, node)| match node.driver.role() {
                    Role::Leader(term) => Some((id, term.epoch())),
                    _ => None,
                })
                .collect();
            if let [leader] = leaders[..] {
                return leader;
            }
            assert!(
                Instant::now() < deadline,
                "no single leader within {within:?}: {leaders:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(crate) async fn shutdown(mut self) {
        let ids: Vec<_> = self.nodes.keys().copied().collect();
        for id in ids {
            self.stop_node(id).await;
        }
    }
}

/// Binds the node's old client address again (a restarted node keeps its
/// endpoint); retries briefly while the old socket closes.
async fn bind_again(addr: SocketAddr) -> TcpListener {
    for _ in 0..100 {
        if let Ok(listener) = TcpListener::bind(addr).await {
            return listener;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("cannot bind {addr} again");
}

/// The epoch a leadership state carries, if any.
pub(crate) fn epoch_of(state: &LeaderState) -> Option<Epoch> {
    match state {
        LeaderState::Leader { epoch } => Some(*epoch),
        LeaderState::Follower { leader_epoch, .. } => *leader_epoch,
        LeaderState::Unknown => None,
    }
}
