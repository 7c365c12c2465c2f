//! The runner's leader lease over the in-memory network: kept by lease
//! rounds without a single log entry, and never held by two ballots at once
//! when a leader is cut off while its lease still runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use omnipaxos::storage::{Entry, NoSnapshot};
use omnipaxos::util::{LogEntry, NodeId};
use serde::{Deserialize, Serialize};
use tsoracle_paxos_harness::memnet::{MemNetConfig, MemNetwork};
use tsoracle_paxos_toolkit::lease::LeaseTiming;
use tsoracle_paxos_toolkit::storage::MemoryStorage;
use tsoracle_paxos_toolkit::{
    Clock, ConfigBuilder, DecidedHook, MonotonicClock, Runner, RunnerConfig, RunnerLease,
    SyncedWrites,
};

const NODES: [NodeId; 3] = [1, 2, 3];

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct Val(u64);

impl Entry for Val {
    type Snapshot = NoSnapshot;
}

struct Skip(usize);

impl DecidedHook<Val> for Skip {
    fn next_idx(&self) -> usize {
        self.0
    }

    fn on_decided(
        &mut self,
        entries: Vec<LogEntry<Val>>,
    ) -> Result<Option<usize>, Box<dyn std::error::Error + Send + Sync>> {
        self.0 += entries.len();
        Ok(None)
    }
}

/// Three runners with a lease of `lease` (1% drift, a round every
/// `lease / 4`) and a 50 ms election timeout.
fn cluster(lease: Duration) -> (MemNetwork<Val>, Vec<Runner<Val>>) {
    let net = MemNetwork::new(MemNetConfig::default()).unwrap();
    let timing = LeaseTiming {
        validity: lease.mul_f64(0.99),
        hold: lease.mul_f64(1.01),
        renew_every: lease / 4,
    };
    let runners = NODES
        .iter()
        .map(|&pid| {
            let omnipaxos = ConfigBuilder::new(NODES)
                .election_ticks(5)
                .build(pid)
                .unwrap()
                .build(MemoryStorage::new())
                .unwrap();
            let config = RunnerConfig {
                tick: Duration::from_millis(10),
                lease: Some(RunnerLease {
                    timing,
                    clock: Arc::new(MonotonicClock::new()),
                }),
                ..RunnerConfig::default()
            };
            let runner = Runner::spawn(
                omnipaxos,
                &NODES,
                net.add_node(pid),
                SyncedWrites,
                Skip(0),
                config,
            )
            .unwrap();
            net.attach(runner.inbox());
            runner
        })
        .collect();
    (net, runners)
}

/// The node whose runner reports a lease still running, and its end.
fn leased(runners: &[Runner<Val>], clock: &MonotonicClock) -> Option<(NodeId, Duration)> {
    let now = clock.now();
    runners.iter().find_map(|r| {
        let status = r.status().borrow().clone();
        status
            .lease_until
            .filter(|until| *until > now)
            .map(|until| (status.node_id, until))
    })
}

async fn wait_for_lease(runners: &[Runner<Val>], clock: &MonotonicClock) -> (NodeId, Duration) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(found) = leased(runners, clock) {
            return found;
        }
        assert!(Instant::now() < deadline, "no leader got a lease");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_leader_keeps_its_lease_without_a_log_entry() {
    let clock = MonotonicClock::new();
    let (net, runners) = cluster(Duration::from_millis(100));
    let (leader, first) = wait_for_lease(&runners, &clock).await;
    let decided: Vec<usize> = runners
        .iter()
        .map(|r| r.status().borrow().decided_idx)
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (still, later) = wait_for_lease(&runners, &clock).await;
    assert_eq!(still, leader);
    assert!(
        later >= first + Duration::from_millis(800),
        "{first:?} -> {later:?}"
    );
    let now: Vec<usize> = runners
        .iter()
        .map(|r| r.status().borrow().decided_idx)
        .collect();
    assert_eq!(decided, now, "the lease was kept by log entries");
    for runner in &runners {
        runner.shutdown().await.unwrap();
    }
    net.shutdown().await;
}

/// A 600 ms lease, and elections that take a few 50 ms timeouts: the
/// followers of a cut-off leader elect a new one long before its lease
/// ends. The new leader holds a lease only after the old one ran out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_leaders_lease_ends_before_its_successor_holds_one() {
    let clock = MonotonicClock::new();
    let (net, runners) = cluster(Duration::from_millis(600));
    let (old, _) = wait_for_lease(&runners, &clock).await;
    net.control().isolate(old);
    let cut_at = clock.now();
    let old_until = runners[old as usize - 1]
        .status()
        .borrow()
        .lease_until
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let (new, seen_at) = loop {
        let now = clock.now();
        let new = runners.iter().find_map(|r| {
            let s = r.status().borrow().clone();
            (s.node_id != old && s.lease_until.is_some_and(|until| until > now))
                .then_some(s.node_id)
        });
        if let Some(new) = new {
            break (new, now);
        }
        assert!(Instant::now() < deadline, "no successor got a lease");
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    // The isolated node kept renewing nothing after the cut: its last
    // lease is the one read at the cut, or one granted just before it.
    let old_last = runners[old as usize - 1]
        .status()
        .borrow()
        .lease_until
        .unwrap_or(old_until)
        .max(old_until);
    assert!(
        seen_at >= old_last,
        "node {new} held a lease at {seen_at:?} while node {old}'s ran until {old_last:?}"
    );
    // And not much later: the holds ran out, then one round trip.
    assert!(
        seen_at < cut_at + Duration::from_millis(1_500),
        "cut at {cut_at:?}, successor leased at {seen_at:?}"
    );
    for runner in &runners {
        runner.shutdown().await.unwrap();
    }
    net.shutdown().await;
}

/// A hand-over releases the holds: the successor holds a lease long before
/// the 600 ms holds of the old ballot would have run out, and the old leader
/// reports none from the hand-over on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_over_lets_the_successor_lease_before_the_holds_run_out() {
    let clock = MonotonicClock::new();
    let (net, runners) = cluster(Duration::from_millis(600));
    let (old, _) = wait_for_lease(&runners, &clock).await;
    let to = NODES.into_iter().find(|&n| n != old).unwrap();
    // Not the leader: refused, nothing released.
    let ballot = runners[old as usize - 1].status().borrow().promise;
    assert!(
        runners[to as usize - 1]
            .hand_over(ballot, Some(old))
            .await
            .is_err()
    );
    // Another ballot than the one it leads under: refused, nothing released.
    let mut other = ballot;
    other.n += 1;
    assert!(
        runners[old as usize - 1]
            .hand_over(other, Some(to))
            .await
            .is_err()
    );
    assert!(
        runners[old as usize - 1]
            .status()
            .borrow()
            .lease_until
            .is_some()
    );
    let chosen = runners[old as usize - 1]
        .hand_over(ballot, Some(to))
        .await
        .unwrap();
    assert_eq!(chosen, to);
    let released = ballot;
    let handed_at = clock.now();
    // The runner publishes its status after the round that answered: wait
    // for it (bounded) rather than race it.
    let published = Instant::now() + Duration::from_secs(5);
    while runners[old as usize - 1]
        .status()
        .borrow()
        .lease_until
        .is_some()
    {
        assert!(
            Instant::now() < published,
            "the old leader still reports a lease"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    let seen_at = loop {
        let now = clock.now();
        let s = runners[to as usize - 1].status().borrow().clone();
        if s.lease_until.is_some_and(|until| until > now) {
            assert!(s.promise > released);
            break now;
        }
        assert!(Instant::now() < deadline, "the successor never got a lease");
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    assert!(
        seen_at < handed_at + Duration::from_millis(300),
        "handed over at {handed_at:?}, successor leased at {seen_at:?}"
    );
    // The old leader never leases the released ballot again.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let s = runners[old as usize - 1].status().borrow().clone();
    assert!(s.promise > released);
    for runner in &runners {
        runner.shutdown().await.unwrap();
    }
    net.shutdown().await;
}

/// A hand-over to a successor that cannot take over (cut off): the old
/// leader leads again under a new ballot after twice the hold, so the
/// cluster does not stay with a leader that serves nothing; and without a
/// successor named, the runner picks one that granted its rounds (the one
/// furthest in the log, then the freshest grant).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_over_nobody_takes_is_taken_back() {
    let clock = MonotonicClock::new();
    let (net, runners) = cluster(Duration::from_millis(100));
    let (old, _) = wait_for_lease(&runners, &clock).await;
    let to = NODES.into_iter().find(|&n| n != old).unwrap();
    net.control().isolate(to);
    let released = runners[old as usize - 1].status().borrow().promise;
    let chosen = runners[old as usize - 1]
        .hand_over(released, Some(to))
        .await
        .unwrap();
    assert_eq!(chosen, to);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = runners[old as usize - 1].status().borrow().clone();
        if s.promise > released && s.lease_until.is_some_and(|until| until > clock.now()) {
            break;
        }
        assert!(Instant::now() < deadline, "the old leader never led again");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    net.control().rejoin(to);
    // No successor named: the runner picks a peer that granted (the one
    // furthest in the log, then the freshest grant).
    let (leader, _) = wait_for_lease(&runners, &clock).await;
    let ballot = runners[leader as usize - 1].status().borrow().promise;
    let picked = runners[leader as usize - 1]
        .hand_over(ballot, None)
        .await
        .unwrap();
    assert_ne!(picked, leader);
    for runner in &runners {
        runner.shutdown().await.unwrap();
    }
    net.shutdown().await;
}
