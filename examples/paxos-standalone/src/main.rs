//! Three tsoracle nodes in one process, each a `StandaloneHost` on RocksDB
//! with the tonic peer transport on 127.0.0.1, a `PaxosDriver`, and a real
//! `tsoracle-server`. The real `tsoracle-client` fetches timestamps and dense
//! blocks, the leader is stopped, and the client carries on: every timestamp
//! after the stop is above every timestamp before it.
//!
//! Run with `cargo run -p paxos-standalone` (`cargo xtask ci` runs it).

// An example reports to its terminal.
#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::transport::server::TcpIncoming;
use tsoracle_paxos_reply_gate::ReplyGateLayer;

use anyhow::{Context, Result, bail};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tsoracle_client::{Client, ClientBuilder};
use tsoracle_consensus::ConsensusDriver;
use tsoracle_core::PeerEndpoint;
use tsoracle_driver_paxos::{
    DriverConfig, Member, PaxosDriver, Role, StandaloneHost, Timing, next_incarnation,
};
use tsoracle_paxos_state::PaxosEntry;
use tsoracle_paxos_tonic::{PeerService, ServerHandle, TonicSink, TransportConfig, serve};
use tsoracle_paxos_toolkit::storage::{RocksdbOptions, RocksdbStorage, StorageIdentity};

const CLUSTER: &str = "example-standalone";
const NODES: [u64; 3] = [1, 2, 3];
/// Timestamps fetched before and after the leader stop.
const FETCHES: usize = 200;
/// Longest the client may take to get its first timestamp after the stop.
const FAILOVER_LIMIT: Duration = Duration::from_secs(20);

fn timing() -> Timing {
    Timing::lan()
}

/// One running node and the handles that stop it.
struct Node {
    host: Arc<StandaloneHost>,
    driver: Arc<PaxosDriver<StandaloneHost>>,
    peers: ServerHandle,
    client_stop: oneshot::Sender<()>,
    client_server: JoinHandle<()>,
}

impl Node {
    async fn start(
        id: u64,
        dir: &Path,
        members: &[Member],
        peer_listener: TcpListener,
        client_listener: TcpListener,
    ) -> Result<Self> {
        let node_dir = dir.join(format!("node-{id}"));
        std::fs::create_dir_all(&node_dir)?;
        let incarnation = next_incarnation(&node_dir.join("incarnation"))?;
        let storage = RocksdbStorage::<PaxosEntry>::open(
            node_dir.join("db"),
            StorageIdentity::new(CLUSTER, id),
            RocksdbOptions::default(),
        )?;
        let durability = storage.group_commit();
        let transport = TransportConfig::new(CLUSTER, id, 1, NODES);
        let peers = members.iter().map(|m| (m.id, m.peer_address.clone()));
        let sink = Arc::new(TonicSink::spawn(&transport, peers, None)?);
        let host = Arc::new(
            StandaloneHost::builder()
                .node_id(id)
                .cluster_id(CLUSTER)
                .members(members.to_vec())
                .incarnation(incarnation)
                .timing(timing())
                .start(storage, durability, sink)?,
        );
        let service = PeerService::new(host.inbox(), &transport)?;
        let peers = serve(peer_listener, service, &transport, None)?;
        let driver = Arc::new(PaxosDriver::start(
            Arc::clone(&host),
            DriverConfig::new(timing()),
        )?);
        let server = tsoracle_server::Server::builder()
            .consensus_driver(Arc::clone(&driver) as Arc<dyn ConsensusDriver>)
            .build()?;
        // The server's routes behind the reply gate: a reply carrying data
        // leaves only while this node still holds its lease under the
        // reply's epoch (a node paused mid-request answers "not leader").
        let (routes, watch) = server.into_router()?;
        let gate = ReplyGateLayer::new(driver.reply_gate());
        let (client_stop, stop_rx) = oneshot::channel::<()>();
        let client_server = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop_rx.await;
            };
            let served = tonic::transport::Server::builder()
                .layer(gate)
                .add_routes(routes)
                .serve_with_incoming_shutdown(TcpIncoming::from(client_listener), shutdown)
                .await;
            if let Err(err) = served {
                println!("node {id}: tsoracle-server stopped: {err}");
            }
            // Serving ended: stop the server's leadership watch too.
            drop(watch);
        });
        Ok(Self {
            host,
            driver,
            peers,
            client_stop,
            client_server,
        })
    }

    /// Stops the client server, the driver, the peer server and the
    /// consensus thread (after its last sync), in that order.
    async fn stop(self) -> Result<()> {
        let _ = self.client_stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(10), self.client_server).await;
        self.driver.shutdown().await;
        self.peers.shutdown().await?;
        self.host.shutdown().await?;
        Ok(())
    }
}

async fn wait_leader(nodes: &BTreeMap<u64, Node>, within: Duration) -> Result<u64> {
    let deadline = Instant::now() + within;
    loop {
        for (&id, node) in nodes {
            if matches!(node.driver.role(), Role::Leader(_)) {
                return Ok(id);
            }
        }
        if Instant::now() > deadline {
            bail!("no leader within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Fetches `n` timestamps, retrying through a failover; returns them and the
/// longest wait for one.
async fn fetch(client: &Client, n: usize) -> Result<(Vec<u64>, Duration)> {
    let mut out = Vec::with_capacity(n);
    let mut longest = Duration::ZERO;
    while out.len() < n {
        let start = Instant::now();
        let ts = loop {
            match client.get_ts().await {
                Ok(ts) => break ts.0,
                Err(err) if start.elapsed() < FAILOVER_LIMIT => {
                    let _ = err;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(err) => bail!("no timestamp for {FAILOVER_LIMIT:?}: {err}"),
            }
        };
        longest = longest.max(start.elapsed());
        out.push(ts);
    }
    Ok((out, longest))
}

#[tokio::main]
async fn main() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut peer_listeners = BTreeMap::new();
    let mut client_listeners = BTreeMap::new();
    let mut members = Vec::new();
    for id in NODES {
        let peer = TcpListener::bind("127.0.0.1:0").await?;
        let client = TcpListener::bind("127.0.0.1:0").await?;
        members.push(Member {
            id,
            peer_address: peer.local_addr()?.to_string(),
            client_endpoint: PeerEndpoint::try_from(client.local_addr()?.to_string())?,
        });
        peer_listeners.insert(id, peer);
        client_listeners.insert(id, client);
    }
    let mut nodes = BTreeMap::new();
    for id in NODES {
        let peer = peer_listeners.remove(&id).context("peer listener")?;
        let client = client_listeners.remove(&id).context("client listener")?;
        let node = Node::start(id, dir.path(), &members, peer, client).await?;
        nodes.insert(id, node);
    }
    let leader = wait_leader(&nodes, Duration::from_secs(20)).await?;
    println!("three nodes up; node {leader} leads");

    let endpoints = members
        .iter()
        .map(|m| m.client_endpoint.to_string())
        .collect();
    let client = ClientBuilder::endpoints(endpoints).build().await?;
    let (before, _) = fetch(&client, FETCHES).await?;
    let block = client.get_seq("orders", 10).await?;
    println!(
        "{FETCHES} timestamps ({} .. {}), dense block of 10 at {}",
        before[0],
        before[FETCHES - 1],
        block.start
    );

    println!("stopping the leader, node {leader}");
    let stopped_at = Instant::now();
    nodes
        .remove(&leader)
        .context("the leader is running")?
        .stop()
        .await?;
    let (after, longest) = fetch(&client, FETCHES).await?;
    let new_leader = wait_leader(&nodes, Duration::from_secs(20)).await?;
    let next_block = client.get_seq("orders", 10).await?;
    println!(
        "node {new_leader} took over; the client waited at most {longest:?} for a timestamp \
         ({:?} after the stop)",
        stopped_at.elapsed()
    );

    let max_before = before.iter().copied().max().unwrap_or(0);
    let increasing = before
        .windows(2)
        .chain(after.windows(2))
        .all(|w| w[0] < w[1]);
    if !increasing || after[0] <= max_before {
        bail!("timestamps went back: {max_before} then {}", after[0]);
    }
    if next_block.start < block.start + 10 {
        bail!(
            "a dense block repeated: {} after [{}, {})",
            next_block.start,
            block.start,
            block.start + 10
        );
    }
    println!(
        "ok: {} timestamps strictly increasing across the failover; dense blocks disjoint",
        before.len() + after.len()
    );
    for (_, node) in nodes {
        node.stop().await?;
    }
    Ok(())
}
