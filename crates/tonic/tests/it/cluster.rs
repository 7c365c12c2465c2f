//! Three OmniPaxos nodes over plain tonic links: election, 10,000 decided
//! entries, and a peer server stopped and restarted mid-stream.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use tsoracle_paxos_tonic::DropReason;

use crate::common::{Cluster, NODES};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_decide_10k_entries_across_a_server_restart() {
    let started = Instant::now();
    let mut cluster = Cluster::start(None).await;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;

    // First half, several proposals in flight.
    cluster.propose((0..5_000).collect(), 32).await;

    // Stop a follower's server while entries are still being decided: the
    // other two keep deciding without it.
    let follower = NODES.into_iter().find(|&id| id != leader).unwrap();
    let other = NODES
        .into_iter()
        .find(|&id| id != leader && id != follower)
        .unwrap();
    let before = cluster.node(leader).sink.stats().reconnects();
    cluster.stop_server(follower).await;
    cluster.propose((5_000..7_500).collect(), 32).await;
    let majority: BTreeSet<u64> = (0..7_500).collect();
    cluster
        .wait_decided_on(&[leader, other], &majority, Duration::from_secs(20))
        .await;
    let lagging = cluster.decided(follower).len();
    assert!(lagging < 7_500, "the stopped follower decided {lagging}");

    // Bring it back mid-stream and keep proposing.
    cluster.restart_server(follower).await;
    cluster.propose((7_500..10_000).collect(), 32).await;

    let expected: BTreeSet<u64> = (0..10_000).collect();
    cluster
        .wait_all_decided(&expected, Duration::from_secs(40))
        .await;

    // Every link towards the restarted server came back and was reported.
    let leader_sink = cluster.node(leader).sink.stats();
    assert!(leader_sink.reconnects() > before, "no reconnection seen");
    let decided = cluster.decided(1);
    assert_eq!(decided, cluster.decided(2));
    assert_eq!(decided, cluster.decided(3));
    // Nothing was lost: the decided sequence holds every proposed value.
    let decided: BTreeSet<u64> = decided.into_iter().collect();
    assert!(expected.is_subset(&decided));
    for &id in &NODES {
        let stats = cluster.node(id).service.stats();
        assert_eq!(stats.total_refusals(), 0, "node {id} refused something");
        assert!(stats.frames_in() > 0);
    }
    cluster.shutdown().await;
    eprintln!("10k entries over tonic in {:?}", started.elapsed());
}

/// A follower that missed more than one frame's worth of the log catches
/// up: the leader's `AcceptSync` (the whole missing suffix, one message)
/// travels in chunks. With 4 KiB frames, 3,000 missed entries are a message
/// of some 30 KB; a transport that drops a message above its frame limit
/// (as this one did) leaves the follower behind for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_catches_up_from_a_log_larger_than_one_frame() {
    let mut cluster = Cluster::start_with(None, |config| {
        config.max_frame_bytes = 4096;
        // The leader's batches for the stopped follower overflow this queue
        // and are dropped (waited for below), so the follower must be
        // synced with one large AcceptSync. With room for them all, a
        // follower back within the reconnect backoff received them as
        // ordinary accepts (1 run in 12).
        config.queue_capacity = 1;
    })
    .await;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    cluster.propose((0..100).collect(), 16).await;
    let follower = NODES.into_iter().find(|&id| id != leader).unwrap();
    let other = NODES
        .into_iter()
        .find(|&id| id != leader && id != follower)
        .unwrap();
    cluster.stop_server(follower).await;
    cluster.propose((100..3_100).collect(), 32).await;
    let majority: BTreeSet<u64> = (0..3_100).collect();
    cluster
        .wait_decided_on(&[leader, other], &majority, Duration::from_secs(20))
        .await;
    let dropped = || {
        let stats = cluster.node(leader).sink.stats();
        stats.drops(DropReason::QueueFull) + stats.drops(DropReason::LinkLost)
    };
    crate::common::wait_until(
        "the leader to drop batches for the stopped follower",
        Duration::from_secs(10),
        || dropped() > 0,
    )
    .await;
    cluster.restart_server(follower).await;
    // A later accept shows the follower the gap, so it asks to be synced.
    cluster.propose((3_100..3_110).collect(), 5).await;
    let majority: BTreeSet<u64> = (0..3_110).collect();
    cluster
        .wait_decided_on(&[follower], &majority, Duration::from_secs(30))
        .await;
    let chunked = cluster.node(leader).sink.stats().chunked_messages_out();
    assert!(chunked > 0, "nothing was sent in chunks");
    let transfers = cluster.node(follower).service.stats().transfers_in();
    assert!(transfers > 0, "the follower completed no transfer");
    for &id in &NODES {
        let stats = cluster.node(id).service.stats();
        assert_eq!(stats.total_refusals(), 0, "node {id} refused something");
        let oversize = cluster
            .node(id)
            .sink
            .stats()
            .drops(DropReason::OversizeMessage);
        assert_eq!(oversize, 0, "node {id} dropped a message as too large");
    }
    cluster.shutdown().await;
}
