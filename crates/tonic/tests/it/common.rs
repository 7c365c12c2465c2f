//! Test entry, recording hook, certificates and a three-node cluster over
//! real tonic links.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use omnipaxos::OmniPaxosConfig;
use omnipaxos::messages::Message;
use omnipaxos::storage::{Entry, NoSnapshot};
use omnipaxos::util::{LogEntry, NodeId};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tsoracle_paxos_tonic::{
    PeerService, ServerHandle, TlsMaterial, TonicSink, TransportConfig, serve,
};
use tsoracle_paxos_toolkit::storage::MemoryStorage;
use tsoracle_paxos_toolkit::{
    ConfigBuilder, DecidedHook, MessageSink, Runner, RunnerConfig, SyncedWrites,
};

pub(crate) const CLUSTER: &str = "test-cluster";
pub(crate) const NODES: [NodeId; 3] = [1, 2, 3];

/// A log entry carrying one number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TestEntry(pub(crate) u64);

impl Entry for TestEntry {
    type Snapshot = NoSnapshot;
}

/// Records every decided value in order.
pub(crate) struct RecordingHook {
    next: usize,
    decided: Arc<Mutex<Vec<u64>>>,
}

impl DecidedHook<TestEntry> for RecordingHook {
    fn next_idx(&self) -> usize {
        self.next
    }

    fn on_decided(
        &mut self,
        entries: Vec<LogEntry<TestEntry>>,
    ) -> Result<Option<usize>, Box<dyn std::error::Error + Send + Sync>> {
        let mut decided = self.decided.lock().unwrap();
        for entry in entries {
            match entry {
                LogEntry::Decided(TestEntry(v)) => {
                    decided.push(v);
                    self.next += 1;
                }
                other => return Err(format!("unexpected log entry {other:?}").into()),
            }
        }
        Ok(None)
    }
}

/// A sink that discards everything (for a runner that only receives).
pub(crate) struct NullSink;

impl MessageSink<TestEntry> for NullSink {
    fn send(&self, _: NodeId, _: Vec<Message<TestEntry>>) {}
    fn take_reconnected(&self, _: &mut Vec<NodeId>) {}
}

pub(crate) fn omnipaxos_config(pid: NodeId) -> OmniPaxosConfig {
    ConfigBuilder::new(NODES)
        .election_ticks(5)
        .build(pid)
        .unwrap()
}

pub(crate) fn runner_config() -> RunnerConfig {
    RunnerConfig {
        tick: Duration::from_millis(10),
        ..RunnerConfig::default()
    }
}

pub(crate) fn transport_config(node: NodeId) -> TransportConfig {
    let mut config = TransportConfig::new(CLUSTER, node, 1, NODES);
    config.backoff_min = Duration::from_millis(20);
    config.backoff_max = Duration::from_millis(500);
    config.shutdown_grace = Duration::from_millis(500);
    config
}

/// A runner on node `pid` whose outbound messages go nowhere.
pub(crate) fn receiving_runner(pid: NodeId) -> Runner<TestEntry> {
    let omnipaxos = omnipaxos_config(pid)
        .build(MemoryStorage::<TestEntry>::new())
        .unwrap();
    let hook = RecordingHook {
        next: 0,
        decided: Arc::default(),
    };
    Runner::spawn(
        omnipaxos,
        &NODES,
        NullSink,
        SyncedWrites,
        hook,
        runner_config(),
    )
    .unwrap()
}

/// Waits for `condition`, polling, or panics after `timeout`.
pub(crate) async fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A test CA and node certificates named `node-<id>`.
pub(crate) struct Certs {
    ca_pem: String,
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Certs {
    pub(crate) fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "tsoracle-paxos test CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let issuer =
            rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap())
                .unwrap();
        Self {
            ca_pem: issuer.pem(),
            issuer,
        }
    }

    /// PEM certificate and key for a node whose certificate names `names`.
    pub(crate) fn node_pem(&self, names: &[String]) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(names.to_vec()).unwrap();
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// TLS material for node `id` (certificate naming `node-<id>`).
    pub(crate) fn material(&self, id: NodeId) -> TlsMaterial {
        self.material_named(&[format!("node-{id}")])
    }

    pub(crate) fn material_named(&self, names: &[String]) -> TlsMaterial {
        let (cert, key) = self.node_pem(names);
        TlsMaterial::from_pem(self.ca_pem.clone(), cert, key).unwrap()
    }

    pub(crate) fn ca_pem(&self) -> &str {
        &self.ca_pem
    }
}

pub(crate) struct Node {
    pub(crate) id: NodeId,
    pub(crate) runner: Runner<TestEntry>,
    pub(crate) sink: Arc<TonicSink<TestEntry>>,
    pub(crate) service: PeerService<TestEntry>,
    pub(crate) server: Option<ServerHandle>,
    pub(crate) addr: SocketAddr,
    pub(crate) config: TransportConfig,
    pub(crate) tls: Option<TlsMaterial>,
    pub(crate) decided: Arc<Mutex<Vec<u64>>>,
}

/// Three runners over real tonic links on 127.0.0.1.
pub(crate) struct Cluster {
    pub(crate) nodes: Vec<Node>,
}

impl Cluster {
    pub(crate) async fn start(certs: Option<&Certs>) -> Self {
        Self::start_with(certs, |_| {}).await
    }

    /// [`start`](Self::start) with every node's transport settings changed
    /// by `tweak`.
    pub(crate) async fn start_with(
        certs: Option<&Certs>,
        tweak: impl Fn(&mut TransportConfig),
    ) -> Self {
        let mut listeners = HashMap::new();
        for id in NODES {
            listeners.insert(id, TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let addrs: HashMap<NodeId, SocketAddr> = listeners
            .iter()
            .map(|(&id, l)| (id, l.local_addr().unwrap()))
            .collect();
        let mut nodes = Vec::new();
        for id in NODES {
            let mut config = transport_config(id);
            tweak(&mut config);
            let tls = certs.map(|c| c.material(id));
            let peers = addrs.iter().map(|(&p, a)| (p, a.to_string()));
            let sink = Arc::new(TonicSink::spawn(&config, peers, tls.as_ref()).unwrap());
            let decided = Arc::new(Mutex::new(Vec::new()));
            let hook = RecordingHook {
                next: 0,
                decided: Arc::clone(&decided),
            };
            let omnipaxos = omnipaxos_config(id)
                .build(MemoryStorage::<TestEntry>::new())
                .unwrap();
            let runner = Runner::spawn(
                omnipaxos,
                &NODES,
                Arc::clone(&sink),
                SyncedWrites,
                hook,
                runner_config(),
            )
            .unwrap();
            let service = PeerService::new(runner.inbox(), &config).unwrap();
            let listener = listeners.remove(&id).unwrap();
            let server = serve(listener, service.clone(), &config, tls.as_ref()).unwrap();
            nodes.push(Node {
                id,
                runner,
                sink,
                service,
                server: Some(server),
                addr: addrs[&id],
                config,
                tls,
                decided,
            });
        }
        Cluster { nodes }
    }

    pub(crate) fn node(&self, id: NodeId) -> &Node {
        &self.nodes[(id - 1) as usize]
    }

    /// The node that leads and is in its accept phase, as it sees itself,
    /// with the highest ballot of all such claims (a deposed leader that
    /// cannot hear its peers may still believe it leads), among nodes whose
    /// server is up.
    pub(crate) fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter(|n| n.server.is_some())
            .filter_map(|n| {
                let status = n.runner.status().borrow().clone();
                (status.leader == Some((n.id, true))).then_some((status.promise, n.id))
            })
            .max()
            .map(|(_, id)| id)
    }

    pub(crate) async fn wait_leader(&self, timeout: Duration) -> NodeId {
        let mut found = None;
        wait_until("a leader", timeout, || {
            found = self.leader();
            found.is_some()
        })
        .await;
        found.unwrap()
    }

    /// Each node's view, for failure messages.
    pub(crate) fn describe(&self) -> String {
        use tsoracle_paxos_tonic::DropReason;
        self.nodes
            .iter()
            .map(|n| {
                let s = n.runner.status().borrow().clone();
                let out = n.sink.stats();
                let inb = n.service.stats();
                let drops: Vec<String> = DropReason::ALL
                    .iter()
                    .map(|r| format!("{}={}", r.as_str(), out.drops(*r)))
                    .collect();
                format!(
                    "\nnode {} (server {}): leader {:?} promise n={} pid={} decided_idx {} \
                     recorded {}; out: frames {} connects {} reconnects {} links_failed {} \
                     drops [{}]; in: frames {} msgs {} superseded {} refusals {} inbox_full {} \
                     stop_sign {}",
                    n.id,
                    if n.server.is_some() { "up" } else { "down" },
                    s.leader,
                    s.promise.n,
                    s.promise.pid,
                    s.decided_idx,
                    n.decided.lock().unwrap().len(),
                    out.frames_out(),
                    out.connects(),
                    out.reconnects(),
                    out.links_failed(),
                    drops.join(" "),
                    inb.frames_in(),
                    inb.messages_in(),
                    inb.links_superseded(),
                    inb.total_refusals(),
                    n.runner.inbox().stats().queue_full(),
                    n.runner.inbox().stats().stop_sign(),
                )
            })
            .collect()
    }

    pub(crate) fn decided(&self, id: NodeId) -> Vec<u64> {
        self.node(id).decided.lock().unwrap().clone()
    }

    /// Proposes `values` to the current leader, `in_flight` at a time.
    pub(crate) async fn propose(&self, values: Vec<u64>, in_flight: usize) {
        let leader = self.leader().unwrap_or(1);
        let runner = &self.node(leader).runner;
        let mut values = values.into_iter();
        let mut pending = Vec::new();
        loop {
            while pending.len() < in_flight {
                let Some(v) = values.next() else { break };
                pending.push(Box::pin(runner.propose(TestEntry(v))));
            }
            if pending.is_empty() {
                return;
            }
            first_done(&mut pending).await.unwrap();
        }
    }

    /// Waits until every value of `expected` is decided on every node and all
    /// nodes hold the same decided sequence.
    pub(crate) async fn wait_all_decided(&self, expected: &BTreeSet<u64>, timeout: Duration) {
        self.wait_decided_on(&NODES, expected, timeout).await;
    }

    /// Waits until every value of `expected` is decided on each of `nodes` and
    /// they hold the same decided sequence, proposing again (to the current
    /// leader) any value still missing after a stall. A leader change can
    /// drop an appended entry (OmniPaxos' `append` is no promise), for
    /// example when a node that cannot hear its peers prepares a higher
    /// ballot; duplicates are harmless here.
    pub(crate) async fn wait_decided_on(
        &self,
        nodes: &[NodeId],
        expected: &BTreeSet<u64>,
        timeout: Duration,
    ) {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last_progress = (0usize, tokio::time::Instant::now());
        loop {
            let seqs: Vec<Vec<u64>> = nodes.iter().map(|&id| self.decided(id)).collect();
            let complete = seqs.iter().all(|s| {
                let set: BTreeSet<u64> = s.iter().copied().collect();
                expected.is_subset(&set)
            });
            if complete && seqs.windows(2).all(|w| w[0] == w[1]) {
                return;
            }
            let now = tokio::time::Instant::now();
            assert!(now < deadline, "timed out: {}", self.describe());
            let best = seqs.iter().map(Vec::len).max().unwrap_or(0);
            if best > last_progress.0 {
                last_progress = (best, now);
            } else if now - last_progress.1 > Duration::from_secs(1) {
                let have: BTreeSet<u64> = seqs.iter().flatten().copied().collect();
                let missing: Vec<u64> = expected.difference(&have).copied().collect();
                if !missing.is_empty() && self.leader().is_some() {
                    self.propose(missing, 32).await;
                }
                last_progress = (best, now);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops node `id`'s peer server (its runner and sink keep running).
    pub(crate) async fn stop_server(&mut self, id: NodeId) {
        let node = &mut self.nodes[(id - 1) as usize];
        let server = node.server.take().unwrap();
        tokio::time::timeout(Duration::from_secs(5), server.shutdown())
            .await
            .expect("server shutdown timed out")
            .unwrap();
    }

    /// Serves node `id` again on its old address.
    pub(crate) async fn restart_server(&mut self, id: NodeId) {
        let node = &mut self.nodes[(id - 1) as usize];
        let listener = TcpListener::bind(node.addr).await.unwrap();
        node.server = Some(
            serve(
                listener,
                node.service.clone(),
                &node.config,
                node.tls.as_ref(),
            )
            .unwrap(),
        );
    }

    pub(crate) async fn shutdown(self) {
        for node in self.nodes {
            if let Some(server) = node.server {
                tokio::time::timeout(Duration::from_secs(5), server.shutdown())
                    .await
                    .expect("server shutdown timed out")
                    .unwrap();
            }
            tokio::time::timeout(Duration::from_secs(5), node.sink.shutdown())
                .await
                .expect("sink shutdown timed out");
            assert!(node.sink.is_finished());
            tokio::time::timeout(Duration::from_secs(5), node.runner.shutdown())
                .await
                .expect("runner shutdown timed out")
                .unwrap();
        }
    }
}

/// Awaits the first of `futures` to finish and removes it.
async fn first_done<F: std::future::Future + Unpin>(futures: &mut Vec<F>) -> F::Output {
    let (out, i) = std::future::poll_fn(|cx| {
        for (i, future) in futures.iter_mut().enumerate() {
            if let std::task::Poll::Ready(out) = std::pin::Pin::new(future).poll(cx) {
                return std::task::Poll::Ready((out, i));
            }
        }
        std::task::Poll::Pending
    })
    .await;
    futures.swap_remove(i);
    out
}

/// A heartbeat request from `from` to `to`: a small, valid message.
pub(crate) fn heartbeat(from: NodeId, to: NodeId) -> Message<TestEntry> {
    use omnipaxos::messages::ballot_leader_election::{BLEMessage, HeartbeatMsg, HeartbeatRequest};
    Message::BLE(BLEMessage {
        from,
        to,
        msg: HeartbeatMsg::Request(HeartbeatRequest { round: 1 }),
    })
}

/// The metadata a well-behaved sender `from` sets towards `to`.
pub(crate) fn link_metadata(from: NodeId, to: NodeId) -> Vec<(&'static str, String)> {
    use tsoracle_paxos_tonic::config::metadata;
    vec![
        (
            metadata::PROTOCOL,
            tsoracle_paxos_tonic::PROTOCOL_VERSION.to_string(),
        ),
        (metadata::CLUSTER_ID, CLUSTER.into()),
        (metadata::CONFIGURATION_ID, "1".into()),
        (metadata::SENDER, from.to_string()),
        (metadata::RECEIVER, to.to_string()),
    ]
}

/// Opens a raw `Link` on `channel` with `metadata`, sends `frames`, ends the
/// stream and returns the receiver's answer.
pub(crate) async fn raw_link(
    channel: tonic::transport::Channel,
    metadata: Vec<(&'static str, String)>,
    frames: Vec<Vec<u8>>,
) -> Result<tsoracle_paxos_tonic::proto::LinkClosed, tonic::Status> {
    use tsoracle_paxos_tonic::proto::{Frame, paxos_peer_client::PaxosPeerClient};
    let frames: Vec<Frame> = frames
        .into_iter()
        .map(|payload| Frame {
            payload: payload.into(),
        })
        .collect();
    let mut request = tonic::Request::new(tokio_stream::iter(frames));
    for (key, value) in metadata {
        request.metadata_mut().insert(key, value.parse().unwrap());
    }
    let mut client = PaxosPeerClient::new(channel);
    tokio::time::timeout(Duration::from_secs(10), client.link(request))
        .await
        .expect("raw link timed out")
        .map(tonic::Response::into_inner)
}
