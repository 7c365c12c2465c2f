//! The `ConsensusDriver` contract, called directly on three drivers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt};
use tsoracle_consensus::{ConsensusDriver, ConsensusError, LeaderState};
use tsoracle_core::{Epoch, LeaseRecord, PHYSICAL_MS_MAX, SeqKey};

use crate::cluster::{Cluster, epoch_of};

const ELECTION: Duration = Duration::from_secs(10);

fn key(name: &str) -> SeqKey {
    SeqKey::try_new(name).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_item_is_immediate_and_a_second_subscription_fails_closed() {
    let cluster = Cluster::start(false).await;
    let driver = cluster.driver(1);
    let mut first = driver.leadership_events();
    let item = first.next().now_or_never();
    assert!(
        matches!(item, Some(Some(_))),
        "first item not immediate: {item:?}"
    );

    let mut second = driver.leadership_events();
    assert_eq!(
        second.next().now_or_never(),
        Some(Some(LeaderState::Unknown))
    );
    // It never reports anything else, and never ends.
    let (leader, epoch) = cluster.wait_leader(ELECTION).await;
    assert!(leader > 0 && epoch > Epoch::ZERO);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), second.next())
            .await
            .is_err()
    );

    // A follower names the leader's client endpoint (not its peer address)
    // and the leader's epoch.
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let expected = LeaderState::Follower {
        leader_endpoint: Some(cluster.endpoints(&[leader])[0].as_str().try_into().unwrap()),
        leader_epoch: Some(epoch),
    };
    let mut follower_view = cluster.driver(follower).watch_leadership();
    tokio::time::timeout(ELECTION, follower_view.wait_for(|s| *s == expected))
        .await
        .expect("the follower never named the leader's client endpoint")
        .unwrap();

    // Dropping the live subscription frees the slot; the new one sees the
    // current state at once.
    drop(first);
    drop(second);
    let mut again = driver.leadership_events();
    let state = again.next().now_or_never().flatten().unwrap();
    assert_ne!(
        epoch_of(&state),
        None,
        "re-subscription should see the elected leader: {state:?}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_epochs_are_fenced_and_followers_are_not_leader() {
    let cluster = Cluster::start(false).await;
    let (leader, epoch) = cluster.wait_leader(ELECTION).await;
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let l = cluster.driver(leader);
    let f = cluster.driver(follower);

    assert_eq!(l.persist_high_water(1_000, epoch).await.unwrap(), 1_000);
    // Advance-to-at-least: a lower value never lowers the stored one.
    assert_eq!(l.persist_high_water(10, epoch).await.unwrap(), 1_000);

    let stale = Epoch(epoch.0 - 1);
    match l.persist_high_water(2_000, stale).await {
        Err(ConsensusError::Fenced { expected, current }) => {
            assert_eq!((expected, current), (stale, epoch));
        }
        other => panic!("expected Fenced, got {other:?}"),
    }
    match l.advance_dense(&key("k"), 1, stale).await {
        Err(ConsensusError::Fenced { current, .. }) => assert_eq!(current, epoch),
        other => panic!("expected Fenced, got {other:?}"),
    }
    match l.persist_leases(&[], stale).await {
        Err(ConsensusError::Fenced { current, .. }) => assert_eq!(current, epoch),
        other => panic!("expected Fenced, got {other:?}"),
    }
    // The range check runs first, on any node.
    for d in [l, f] {
        assert!(matches!(
            d.persist_high_water(PHYSICAL_MS_MAX + 1, epoch).await,
            Err(ConsensusError::AdvanceOutOfRange(_))
        ));
    }
    match f.persist_high_water(2_000, epoch).await {
        Err(ConsensusError::NotLeader { observed }) => assert_eq!(observed, Some(epoch)),
        other => panic!("expected NotLeader, got {other:?}"),
    }
    // Nothing fenced reached the state.
    assert_eq!(l.load_high_water().await.unwrap(), 1_000);
    assert_eq!(l.load_dense_seq(&key("k")).await.unwrap(), 0);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_linearized_on_every_node() {
    let cluster = Cluster::start(false).await;
    let (leader, epoch) = cluster.wait_leader(ELECTION).await;
    let l = cluster.driver(leader);
    assert_eq!(l.persist_high_water(5_000, epoch).await.unwrap(), 5_000);
    assert_eq!(l.advance_dense(&key("a"), 7, epoch).await.unwrap(), 0);
    assert_eq!(
        l.advance_dense_batch(&[(key("a"), 3), (key("b"), 2)], epoch)
            .await
            .unwrap(),
        vec![7, 0]
    );
    let lease = LeaseRecord {
        lease_id: 9,
        holder: b"g".to_vec(),
        holder_epoch: 1,
        ttl_ms: 1_000,
        ts_upper_bound: 5_000,
        expires_at_ms: 6_000,
        superseded: false,
    };
    l.persist_leases(std::slice::from_ref(&lease), epoch)
        .await
        .unwrap();
    // A read on any node reflects every write acknowledged before it.
    for id in 1..=3 {
        let d = cluster.driver(id);
        assert_eq!(d.load_high_water().await.unwrap(), 5_000, "node {id}");
        assert_eq!(d.load_dense_seq(&key("a")).await.unwrap(), 10, "node {id}");
        assert_eq!(d.load_dense_seq(&key("b")).await.unwrap(), 2, "node {id}");
        assert_eq!(
            d.load_leases().await.unwrap(),
            vec![lease.clone()],
            "node {id}"
        );
    }
    cluster.shutdown().await;
}

/// Several leader changes (the leader cut off from its peers each time):
/// never two nodes reporting `Leader` at once, epochs on each node's stream
/// never decrease, and a deposed leader's in-flight write lowers nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_changes_keep_epochs_rising_and_never_overlap_leaders() {
    let cluster = Cluster::start(false).await;
    let seen: Arc<Mutex<BTreeMap<u64, Vec<LeaderState>>>> = Arc::default();
    let mut recorders = Vec::new();
    for id in 1..=3u64 {
        let mut rx = cluster.driver(id).watch_leadership();
        let seen = Arc::clone(&seen);
        recorders.push(tokio::spawn(async move {
            loop {
                let state = rx.borrow_and_update().clone();
                seen.lock().unwrap().entry(id).or_default().push(state);
                if rx.changed().await.is_err() {
                    break;
                }
            }
        }));
    }
    let control = cluster.control();
    let mut acknowledged = 0;
    for round in 1..=3u64 {
        let (old, epoch) = cluster.wait_leader(ELECTION).await;
        let value = round * 10_000;
        acknowledged = cluster
            .driver(old)
            .persist_high_water(value, epoch)
            .await
            .unwrap();
        control.isolate(old);
        // The deposed leader tries a lower write while cut off.
        let stale_driver = Arc::clone(cluster.driver(old));
        // Given up (dropped) after a while, as the server does on shutdown:
        // dropping it must corrupt nothing either.
        let in_flight = tokio::spawn(async move {
            tokio::time::timeout(
                Duration::from_secs(2),
                stale_driver.persist_high_water(value - 1, epoch),
            )
            .await
        });
        // Sample roles until another node leads: never two leaders at once.
        let deadline = Instant::now() + ELECTION;
        let new = loop {
            let leaders: Vec<_> = (1..=3)
                .filter(|&id| cluster.driver(id).role().is_leader())
                .collect();
            assert!(leaders.len() <= 1, "two leaders at once: {leaders:?}");
            if let [l] = leaders[..]
                && l != old
            {
                break l;
            }
            assert!(
                Instant::now() < deadline,
                "no new leader after isolating {old}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let new_epoch = match cluster.driver(new).role() {
            tsoracle_driver_paxos::Role::Leader(term) => term.epoch(),
            other => panic!("{other:?}"),
        };
        assert!(new_epoch > epoch);
        let hw = cluster.driver(new).load_high_water().await.unwrap();
        assert!(
            hw >= acknowledged,
            "new leader lost an acknowledged write: {hw} < {acknowledged}"
        );
        control.rejoin(old);
        let stale = in_flight.await.unwrap();
        assert!(
            !matches!(stale, Ok(Ok(v)) if v < acknowledged),
            "a deposed leader's write lowered the high-water: {stale:?}"
        );
    }
    let (leader, _) = cluster.wait_leader(ELECTION).await;
    assert!(cluster.driver(leader).load_high_water().await.unwrap() >= acknowledged);
    tokio::time::sleep(Duration::from_millis(200)).await;
    for r in recorders {
        r.abort();
    }
    let seen = seen.lock().unwrap().clone();
    for (id, states) in &seen {
        let epochs: Vec<Epoch> = states.iter().filter_map(epoch_of).collect();
        assert!(
            epochs.len() >= 2,
            "node {id} saw too few leaders: {states:?}"
        );
        assert!(
            epochs.windows(2).all(|w| w[0] <= w[1]),
            "node {id}: epochs decreased: {epochs:?}"
        );
    }
    cluster.shutdown().await;
}

/// Many concurrent writes on one leader: all succeed (proposal ids reach the
/// log in the order they were minted, so none is taken for a duplicate),
/// and the dense blocks tile the counter exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_all_commit_and_dense_blocks_tile_the_counter() {
    let cluster = Cluster::start(false).await;
    let (leader, epoch) = cluster.wait_leader(ELECTION).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..64u32 {
        let d = Arc::clone(cluster.driver(leader));
        tasks.spawn(async move {
            let count = 1 + i % 5;
            let start = d.advance_dense(&key("c"), count, epoch).await.unwrap();
            let hw = d
                .persist_high_water(u64::from(i) * 10, epoch)
                .await
                .unwrap();
            (start, count, hw)
        });
    }
    let mut blocks = Vec::new();
    while let Some(result) = tasks.join_next().await {
        let (start, count, hw) = result.unwrap();
        assert!(hw <= 630);
        blocks.push((start, count));
    }
    blocks.sort_unstable();
    let mut next = 0;
    for (start, count) in &blocks {
        assert_eq!(*start, next, "gap or overlap in {blocks:?}");
        next += u64::from(*count);
    }
    assert_eq!(
        cluster
            .driver(leader)
            .load_dense_seq(&key("c"))
            .await
            .unwrap(),
        next
    );
    assert_eq!(cluster.driver(leader).load_high_water().await.unwrap(), 630);
    cluster.shutdown().await;
}

/// An idle leader keeps its lease with lease rounds, writing nothing.
///
/// A lease lasts `lease × (1 − drift)` from the round that earned it: a node
/// that reports `Leader` two lease lengths after the previous check holds a
/// lease of a round sent since. Four such checks in a row show that rounds
/// go on while the cluster is idle, and the decided index does not move:
/// no log entry kept the lease. Each check waits for a leader (bounded) instead of
/// timing the fraction of samples spent leading, so a loaded machine that
/// stalls a renewal past the lease (the lease then lapses until the next
/// one is decided) delays a check but cannot fail it; a driver that stops
/// renewing fails every check after the first lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_leader_keeps_its_lease() {
    let cluster = Cluster::start(false).await;
    let (first, epoch) = cluster.wait_leader(ELECTION).await;
    let lease = crate::cluster::timing().lease;
    let decided = |cluster: &Cluster| -> Vec<usize> {
        (1..=3)
            .map(|id| cluster.nodes[&id].host.status().borrow().decided_idx)
            .collect()
    };
    let before = decided(&cluster);
    let mut kept = 0;
    for _ in 0..4 {
        tokio::time::sleep(lease * 2).await;
        let (leader, now) = cluster.wait_leader(ELECTION).await;
        if (leader, now) == (first, epoch) {
            kept += 1;
        }
    }
    // Normally the same node under the same ballot each time; a spurious
    // election on a starved machine may move it, but not every time.
    assert!(
        kept >= 1,
        "the first leader never kept its lease while idle"
    );
    if kept == 4 {
        assert_eq!(decided(&cluster), before, "log entries kept the lease");
    }
    cluster.shutdown().await;
}

/// A stopped consensus thread is permanent: calls fail with
/// `PermanentDriver` at once, and the node stops claiming leadership.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_host_is_a_permanent_error_and_not_a_leader() {
    let cluster = Cluster::start(false).await;
    let (leader, epoch) = cluster.wait_leader(ELECTION).await;
    let node = &cluster.nodes[&leader];
    node.host.shutdown().await.unwrap();
    let started = Instant::now();
    let read = node.driver.load_high_water().await;
    assert!(
        matches!(read, Err(ConsensusError::PermanentDriver(_))),
        "{read:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "not at once: {:?}",
        started.elapsed()
    );
    // Within a lease, the role goes and the stream follows.
    let mut events = node.driver.watch_leadership();
    tokio::time::timeout(
        Duration::from_secs(5),
        events.wait_for(|s| *s == LeaderState::Unknown),
    )
    .await
    .expect("the stream still reports a leader")
    .unwrap();
    assert!(!node.driver.role().is_leader());
    match node.driver.persist_high_water(1, epoch).await {
        Err(ConsensusError::NotLeader { .. } | ConsensusError::PermanentDriver(_)) => {}
        other => panic!("expected NotLeader or PermanentDriver, got {other:?}"),
    }
    cluster.shutdown().await;
}

/// Without a quorum a call does not hang: it returns `TransientDriver`
/// after the request deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_without_a_quorum_is_transient_after_the_deadline() {
    let cluster = Cluster::start_with(false, Duration::from_millis(800)).await;
    let (leader, _) = cluster.wait_leader(ELECTION).await;
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    cluster.control().isolate(follower);
    let started = Instant::now();
    let read = cluster.driver(follower).load_high_water().await;
    assert!(
        matches!(read, Err(ConsensusError::TransientDriver(_))),
        "{read:?}"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(5),
        "{took:?}"
    );
    cluster.control().rejoin(follower);
    cluster.shutdown().await;
}
