//! Three tsoracle nodes in one process, each a `StandaloneHost` on RocksDB
//! with the tonic peer transport on 127.0.0.1, a `PaxosDriver`, and a real
//! `tsoracle-server`, wired by the node library (`tsoracle_paxos::Node`,
//! the same wiring as `tsoracle-paxos serve`). The real `tsoracle-client`
//! fetches timestamps and dense blocks, the leader is stopped, and the
//! client carries on: every timestamp after the stop is above every
//! timestamp before it.
//!
//! Run with `cargo run -p paxos-standalone` (`cargo xtask ci` runs it).

// An example reports to its terminal.
#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::net::TcpListener;
use tsoracle_client::{Client, ClientBuilder};
use tsoracle_driver_paxos::Role;
use tsoracle_paxos::{InitialClusterState, Listeners, Member, Node, NodeConfig, Timing, member};

const CLUSTER: &str = "example-standalone";
const NODES: [u64; 3] = [1, 2, 3];
/// Timestamps fetched before and after the leader stop.
const FETCHES: usize = 200;
/// Longest the client may take to get its first timestamp after the stop.
const FAILOVER_LIMIT: Duration = Duration::from_secs(20);

fn timing() -> Timing {
    Timing::lan()
}

/// Starts node `id` on the listeners bound for it: the node library wires
/// RocksDB, the consensus thread, the tonic peer transport, the driver and
/// a `tsoracle-server` whose routes sit behind the reply gate (a reply
/// carrying data leaves only while this node still holds its lease under
/// the reply's epoch, so a node paused mid-request answers "not leader").
/// `Node::shutdown` stops the client server, the driver, the peer server
/// and the consensus thread (after its last sync), in that order.
async fn start(id: u64, dir: &Path, members: &[Member], listeners: Listeners) -> Result<Node> {
    let mut config = NodeConfig::new(
        id,
        CLUSTER,
        dir.join(format!("node-{id}")),
        listeners.client.local_addr()?,
        listeners.peer.local_addr()?,
        members.to_vec(),
    );
    config.timing = timing();
    // A new cluster's founding start (a restarted node finds its state).
    config.initial_cluster_state = InitialClusterState::New;
    Ok(Node::start_on(config, listeners).await?)
}

async fn wait_leader(nodes: &BTreeMap<u64, Node>, within: Duration) -> Result<u64> {
    let deadline = Instant::now() + within;
    loop {
        for (&id, node) in nodes {
            if matches!(node.driver().role(), Role::Leader(_)) {
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
    // Bound first, so every node's addresses are known to the member list
    // without a window in which another process could take them.
    let mut listeners = BTreeMap::new();
    let mut members = Vec::new();
    for id in NODES {
        let peer = TcpListener::bind("127.0.0.1:0").await?;
        let client = TcpListener::bind("127.0.0.1:0").await?;
        members.push(member(
            id,
            &peer.local_addr()?.to_string(),
            &client.local_addr()?.to_string(),
        )?);
        listeners.insert(id, Listeners { client, peer });
    }
    let mut nodes = BTreeMap::new();
    for id in NODES {
        let bound = listeners.remove(&id).context("listeners")?;
        let node = start(id, dir.path(), &members, bound).await?;
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
        .shutdown()
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
        node.shutdown().await?;
    }
    Ok(())
}
