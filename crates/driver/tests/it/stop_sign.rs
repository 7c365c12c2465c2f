//! A configuration that a StopSign ended stays ended across restarts (the
//! StopSign is persisted): issue 12, item 5, where a forged peer frame got
//! one decided before peer links dropped StopSigns. Each node must then say
//! so, with a permanent error naming what happened and what to do, instead
//! of answering `NotLeader` for ever.

use std::time::{Duration, Instant};

use omnipaxos::storage::{StopSign, Storage, StorageOp};
use tsoracle_consensus::{ConsensusDriver, ConsensusError};
use tsoracle_driver_paxos::{PaxosHighWaterHost, Role};
use tsoracle_paxos_state::PaxosEntry;
use tsoracle_paxos_toolkit::ConfigBuilder;
use tsoracle_paxos_toolkit::storage::{RocksdbOptions, RocksdbStorage, StorageIdentity};

use crate::cluster::Cluster;

const NODES: [u64; 3] = [1, 2, 3];

fn assert_says_what_to_do<T: std::fmt::Debug>(
    id: u64,
    what: &str,
    result: Result<T, ConsensusError>,
) {
    match result {
        Err(ConsensusError::PermanentDriver(err)) => {
            let message = err.to_string();
            assert!(
                message.contains("StopSign that names no agreed change"),
                "node {id} {what}: {message}"
            );
            assert!(message.contains("Restore"), "node {id} {what}: {message}");
        }
        other => panic!("node {id} {what}: expected PermanentDriver, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persisted_stop_sign_fails_every_call_permanently_after_a_restart() {
    let mut cluster = Cluster::start(false).await;
    let (leader, epoch) = cluster.wait_leader(Duration::from_secs(10)).await;
    let high_water = cluster
        .driver(leader)
        .persist_high_water(1_000, epoch)
        .await
        .unwrap();

    // Every node holds the Advance before it stops (a majority suffices for
    // the answer; the third may still be receiving it).
    for id in NODES {
        let node = &cluster.nodes[&id];
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut applied = 0;
            node.host
                .read_state(&mut |state| applied = state.high_water());
            if applied == high_water {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {id} applied high-water {applied}, not {high_water}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // Decide a StopSign in every node's storage, as the forged frame did.
    for id in NODES {
        cluster.stop_node(id).await;
    }
    let stop_sign = StopSign::with(
        ConfigBuilder::new(NODES)
            .configuration_id(2)
            .cluster_config()
            .unwrap(),
        None,
    );
    for id in NODES {
        let mut storage = RocksdbStorage::<PaxosEntry>::open(
            cluster.db_dir(id),
            StorageIdentity::new("driver-it", id),
            RocksdbOptions::default(),
        )
        .unwrap();
        // The StopSign takes the index after the log.
        let end = storage.get_compacted_idx().unwrap() + storage.get_log_len().unwrap() + 1;
        storage
            .write_atomically(vec![
                StorageOp::SetStopsign(Some(stop_sign.clone())),
                StorageOp::SetDecidedIndex(end),
            ])
            .unwrap();
    }

    for id in NODES {
        cluster.restart_node(id).await;
    }
    for id in NODES {
        let node = &cluster.nodes[&id];
        let deadline = Instant::now() + Duration::from_secs(10);
        while node.host.status().borrow().stop_sign.is_none() {
            assert!(
                Instant::now() < deadline,
                "node {id} never reported the StopSign"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The driver learns it from the host's leadership view, a moment
        // after the host reports it; from then on every call fails so.
        let deadline = Instant::now() + Duration::from_secs(10);
        while node.driver.role() != Role::Unknown
            || !matches!(
                node.driver.persist_high_water(2_000, epoch).await,
                Err(ConsensusError::PermanentDriver(_))
            )
        {
            assert!(
                Instant::now() < deadline,
                "node {id}'s driver never refused permanently"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Everything before the StopSign was applied.
        let mut applied = 0;
        node.host
            .read_state(&mut |state| applied = state.high_water());
        assert_eq!(applied, high_water, "node {id}");
        assert_says_what_to_do(id, "load_high_water", node.driver.load_high_water().await);
        assert_says_what_to_do(
            id,
            "persist_high_water",
            node.driver.persist_high_water(2_000, epoch).await,
        );
        assert_eq!(node.driver.role(), Role::Unknown, "node {id}");
    }
    cluster.shutdown().await;
}
