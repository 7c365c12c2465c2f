//! The real tsoracle-server on each node and the real tsoracle-client.

use std::time::{Duration, Instant};

use tsoracle_client::{Client, ClientBuilder};

use crate::cluster::Cluster;

const ELECTION: Duration = Duration::from_secs(10);
/// Upper bound on a failover as seen by a client (election, new-leader
/// wait, the server's fence and the client's retries), with slack for a
/// loaded machine.
const FAILOVER_BOUND: Duration = Duration::from_secs(15);

async fn client(cluster: &Cluster, ids: &[u64]) -> Client {
    ClientBuilder::endpoints(cluster.endpoints(ids))
        .build()
        .await
        .unwrap()
}

/// Retries `get_ts` until it succeeds (bounded); returns it and the wait.
async fn get_ts_eventually(client: &Client) -> (u64, Duration) {
    let start = Instant::now();
    loop {
        match client.get_ts().await {
            Ok(ts) => return (ts.0, start.elapsed()),
            Err(err) => {
                assert!(
                    start.elapsed() < FAILOVER_BOUND,
                    "no timestamp for {FAILOVER_BOUND:?}: {err}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Retries `get_seq` until it succeeds (bounded). A failed attempt may
/// still have consumed a block (`SeqUncertain`): that block is lost, never
/// handed out twice, so the disjointness checks still hold.
async fn get_seq_eventually(client: &Client, key: &str, count: u32) -> (u64, u32) {
    let start = Instant::now();
    loop {
        match client.get_seq(key, count).await {
            Ok(block) => return (block.start, block.count),
            Err(err) => {
                assert!(
                    start.elapsed() < FAILOVER_BOUND,
                    "no dense block for {FAILOVER_BOUND:?}: {err}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Every dense block `[start, start + count)` of one key is disjoint from
/// every other.
fn assert_disjoint(blocks: &mut [(u64, u32)]) {
    blocks.sort_unstable();
    for w in blocks.windows(2) {
        assert!(
            w[0].0 + u64::from(w[0].1) <= w[1].0,
            "dense blocks overlap: {w:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_succeeds_on_the_leader_and_through_a_follower() {
    let cluster = Cluster::start(true).await;
    let (leader, _) = cluster.wait_leader(ELECTION).await;
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let mut last_ts = 0;
    let mut blocks = Vec::new();
    for ids in [vec![leader], vec![follower]] {
        let client = client(&cluster, &ids).await;
        let (ts, _) = get_ts_eventually(&client).await;
        assert!(ts > last_ts);
        let batch = client.get_ts_batch(10).await.unwrap();
        assert_eq!(batch.len(), 10);
        assert!(batch[0].0 > ts && batch.windows(2).all(|w| w[0] < w[1]));
        last_ts = batch[9].0;

        let block = client.get_seq("orders", 5).await.unwrap();
        assert_eq!(block.count, 5);
        blocks.push((block.start, block.count));
        let multi = client
            .get_seq_batch(&[("orders", 2), ("users", 3)])
            .await
            .unwrap();
        assert_eq!(multi.len(), 2);
        blocks.push((multi[0].start, multi[0].count));

        let lease = client
            .acquire_lease(b"group", 1, Duration::from_secs(5))
            .await
            .unwrap();
        let renewed = client.renew_lease(lease.lease_id).await.unwrap();
        assert!(renewed.expires_at_ms >= lease.expires_at_ms);
        client.release_lease(lease.lease_id).await.unwrap();
    }
    assert_disjoint(&mut blocks);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_carries_on_when_the_leader_stops() {
    let mut cluster = Cluster::start(true).await;
    let (leader, _) = cluster.wait_leader(ELECTION).await;
    let client = client(&cluster, &[1, 2, 3]).await;
    let mut before = Vec::new();
    let mut blocks = Vec::new();
    for _ in 0..20 {
        before.push(get_ts_eventually(&client).await.0);
        blocks.push(get_seq_eventually(&client, "k", 3).await);
    }
    cluster.stop_node(leader).await;
    let (first_after, waited) = get_ts_eventually(&client).await;
    assert!(waited < FAILOVER_BOUND);
    let max_before = *before.iter().max().unwrap();
    assert!(first_after > max_before, "{first_after} <= {max_before}");
    let mut last = first_after;
    for _ in 0..20 {
        let (ts, _) = get_ts_eventually(&client).await;
        assert!(ts > last);
        last = ts;
        blocks.push(get_seq_eventually(&client, "k", 3).await);
    }
    assert_disjoint(&mut blocks);
    // The stopped node comes back and the cluster goes on.
    cluster.restart_node(leader).await;
    let (ts, _) = get_ts_eventually(&client).await;
    assert!(ts > last);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_restart_continues_above_the_old_values() {
    let mut cluster = Cluster::start(true).await;
    cluster.wait_leader(ELECTION).await;
    let client_before = client(&cluster, &[1, 2, 3]).await;
    let mut max_ts = 0;
    let mut seq_end = 0;
    for _ in 0..30 {
        max_ts = max_ts.max(get_ts_eventually(&client_before).await.0);
        let (start, count) = get_seq_eventually(&client_before, "k", 4).await;
        seq_end = seq_end.max(start + u64::from(count));
    }
    drop(client_before);
    // The log was compacted by snapshots, so the restart recovers from one.
    let compacted = (1..=3)
        .map(|id| cluster.nodes[&id].host.status().borrow().compacted_idx)
        .max()
        .unwrap();
    let decided = cluster.nodes[&1].host.status().borrow().decided_idx;
    assert!(
        compacted > 0,
        "no snapshot was taken before the restart (decided {decided})"
    );
    for id in 1..=3 {
        cluster.stop_node(id).await;
    }
    for id in 1..=3 {
        cluster.restart_node(id).await;
    }
    cluster.wait_leader(ELECTION).await;
    let client_after = client(&cluster, &[1, 2, 3]).await;
    let (ts, _) = get_ts_eventually(&client_after).await;
    assert!(
        ts > max_ts,
        "timestamp went back after restart: {ts} <= {max_ts}"
    );
    let b = client_after.get_seq("k", 4).await.unwrap();
    assert!(
        b.start >= seq_end,
        "dense block repeated after restart: {} < {seq_end}",
        b.start
    );
    cluster.shutdown().await;
}

/// Invariant 5 end to end: the leader is cut off from its peers while a
/// client can still reach its server. Requests alternate between the old
/// leader's endpoint and a fresh client of the two others (fresh, so it is
/// not held on the old leader by a cached redirect), one at a time, so each
/// starts after the previous one completed: every timestamp received must be
/// above every earlier one, whichever server answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_old_leader_never_serves_below_the_new_leader() {
    let cluster = Cluster::start(true).await;
    let (old, _) = cluster.wait_leader(ELECTION).await;
    let others: Vec<u64> = (1..=3).filter(|&id| id != old).collect();
    let to_old = client(&cluster, &[old]).await;
    let (mut last, _) = get_ts_eventually(&to_old).await;
    cluster.control().isolate(old);
    let mut from_old = 0;
    let mut from_new_leader = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    // Go on until the majority side has served a while under its new leader.
    while from_new_leader < 20 {
        assert!(Instant::now() < deadline, "the majority side did not serve");
        let attempt = tokio::time::timeout(Duration::from_millis(500), to_old.get_ts()).await;
        if let Ok(Ok(ts)) = attempt {
            assert!(ts.0 > last, "the old leader served {} after {last}", ts.0);
            last = ts.0;
            from_old += 1;
        }
        let fresh = client(&cluster, &others).await;
        let attempt = tokio::time::timeout(Duration::from_secs(1), fresh.get_ts()).await;
        if let Ok(Ok(ts)) = attempt {
            assert!(
                ts.0 > last,
                "the majority side served {} after {last}",
                ts.0
            );
            last = ts.0;
            let new_leader = others
                .iter()
                .any(|&id| cluster.driver(id).role().is_leader());
            if new_leader {
                from_new_leader += 1;
            }
        }
    }
    // The old leader may serve until its lease runs out, never after.
    let _ = from_old;
    cluster.control().rejoin(old);
    cluster.shutdown().await;
}
