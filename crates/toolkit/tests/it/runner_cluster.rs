//! Three runners over the in-memory network: elections, group-committed
//! decisions, partitions, message faults, crash and restart, storage panics,
//! snapshots and inbox refusals. Every wait is bounded, so a bug fails a test
//! instead of hanging it.

use std::collections::{BTreeMap, BTreeSet};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use omnipaxos::{
    OmniPaxosConfig,
    ballot_leader_election::Ballot,
    messages::{
        Message,
        sequence_paxos::{PaxosMessage, PaxosMsg, PrepareReq},
    },
    storage::{Entry, NoSnapshot, StopSign, Storage, StorageOp, StorageResult},
    util::{LogEntry, NodeId},
};
use serde::{Deserialize, Serialize};
use tsoracle_paxos_harness::memnet::{Faults, MemNetConfig, MemNetwork, MemSink, NetControl};
use tsoracle_paxos_toolkit::{
    ConfigBuilder, DecidedHook, Durability, Error, MessageSink, Refusal, Runner, RunnerConfig,
    RunnerStatus, SyncedWrites, storage::MemoryStorage,
};

use crate::common::{TestEntry, TestSnapshot};

const NODES: [NodeId; 3] = [1, 2, 3];
/// Upper bound for any single wait; a healthy cluster needs far less.
const WAIT: Duration = Duration::from_secs(15);

/// An entry without snapshots, so every node's hook sees each value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Val(u64);

impl Entry for Val {
    type Snapshot = NoSnapshot;
}

/// What the tests need from an entry type.
trait Valued: Entry<Snapshot: Send> + Send + 'static {
    fn new(value: u64) -> Self;
    fn value(&self) -> u64;
    fn snapshot_sum(snapshot: &Self::Snapshot) -> u64;
}

impl Valued for Val {
    fn new(value: u64) -> Self {
        Val(value)
    }
    fn value(&self) -> u64 {
        self.0
    }
    fn snapshot_sum(_: &NoSnapshot) -> u64 {
        unreachable!("Val has no snapshots")
    }
}

impl Valued for TestEntry {
    fn new(value: u64) -> Self {
        TestEntry(value)
    }
    fn value(&self) -> u64 {
        self.0
    }
    fn snapshot_sum(snapshot: &TestSnapshot) -> u64 {
        snapshot.sum
    }
}

/// What a node's hook consumed: a snapshot covering `[0, base)` (sum only),
/// then the values of `[base, next)` one by one.
#[derive(Debug, Default)]
struct Applied {
    next: usize,
    base: usize,
    base_sum: u64,
    values: Vec<u64>,
    snapshots_installed: usize,
}

struct RecordingHook<E> {
    applied: Arc<Mutex<Applied>>,
    snapshot_every: Option<usize>,
    _entry: PhantomData<fn() -> E>,
}

impl<E: Valued> DecidedHook<E> for RecordingHook<E> {
    fn next_idx(&self) -> usize {
        self.applied.lock().unwrap().next
    }

    fn on_decided(
        &mut self,
        entries: Vec<LogEntry<E>>,
    ) -> Result<Option<usize>, Box<dyn std::error::Error + Send + Sync>> {
        let mut a = self.applied.lock().unwrap();
        let mut snapshot_below = None;
        for entry in entries {
            match entry {
                LogEntry::Decided(e) => {
                    a.values.push(e.value());
                    a.next += 1;
                    if let Some(every) = self.snapshot_every
                        && a.next.is_multiple_of(every)
                    {
                        snapshot_below = Some(a.next);
                    }
                }
                LogEntry::Snapshotted(s) => {
                    // Only read when the log below our cursor was compacted
                    // by someone else: the snapshot replaces what we had.
                    if s.trimmed_idx <= a.next {
                        return Err(format!(
                            "snapshot at {} behind the cursor {}",
                            s.trimmed_idx, a.next
                        )
                        .into());
                    }
                    a.base = s.trimmed_idx;
                    a.base_sum = E::snapshot_sum(&s.snapshot);
                    a.values.clear();
                    a.next = s.trimmed_idx;
                    a.snapshots_installed += 1;
                }
                LogEntry::Trimmed(idx) => {
                    return Err(format!("entries below {idx} trimmed without a snapshot").into());
                }
                LogEntry::Undecided(_) => {
                    return Err("undecided entry in the decided suffix".into());
                }
                LogEntry::StopSign(..) => a.next += 1,
            }
        }
        Ok(snapshot_below)
    }
}

fn omnipaxos_config(pid: NodeId) -> OmniPaxosConfig {
    ConfigBuilder::new(NODES)
        .election_ticks(5)
        .build(pid)
        .unwrap()
}

fn runner_config() -> RunnerConfig {
    RunnerConfig {
        tick: Duration::from_millis(10),
        // Small on purpose: every test then applies its decided entries over
        // many back-to-back rounds, the path a restart with a long log takes.
        max_apply_per_round: 16,
        ..RunnerConfig::default()
    }
}

/// Polls `done` until it holds, or fails the test after `timeout`.
async fn eventually(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

struct Node<E: Valued> {
    runner: Option<Arc<Runner<E>>>,
    applied: Arc<Mutex<Applied>>,
}

struct Cluster<E: Valued> {
    net: MemNetwork<E>,
    ctl: NetControl,
    nodes: BTreeMap<NodeId, Node<E>>,
}

impl<E: Valued> Cluster<E> {
    fn new(seed: u64) -> Self {
        let net = MemNetwork::new(MemNetConfig {
            link_capacity: 4096,
            seed,
            reorder_max_hold: Duration::from_millis(20),
            // As the real transport: each message at most once per link.
            at_most_once: true,
        })
        .unwrap();
        let ctl = net.control();
        Cluster {
            net,
            ctl,
            nodes: BTreeMap::new(),
        }
    }

    /// Starts (or restarts) `pid` on `storage`, with a hook that starts from
    /// index 0.
    fn start<B, D>(&mut self, pid: NodeId, storage: B, durability: D, snapshot_every: Option<usize>)
    where
        B: Storage<E> + Send + 'static,
        D: Durability,
    {
        self.start_with_sink(pid, storage, durability, snapshot_every, |sink| sink);
    }

    /// [`start`](Self::start), with the node's sink wrapped by `wrap`.
    fn start_with_sink<B, D, S>(
        &mut self,
        pid: NodeId,
        storage: B,
        durability: D,
        snapshot_every: Option<usize>,
        wrap: impl FnOnce(MemSink<E>) -> S,
    ) where
        B: Storage<E> + Send + 'static,
        D: Durability,
        S: MessageSink<E>,
    {
        let omnipaxos = omnipaxos_config(pid).build(storage).unwrap();
        let applied = Arc::new(Mutex::new(Applied::default()));
        let hook = RecordingHook {
            applied: Arc::clone(&applied),
            snapshot_every,
            _entry: PhantomData,
        };
        let sink = wrap(self.net.add_node(pid));
        let runner =
            Runner::spawn(omnipaxos, &NODES, sink, durability, hook, runner_config()).unwrap();
        self.net.attach(runner.inbox());
        self.nodes.insert(
            pid,
            Node {
                runner: Some(Arc::new(runner)),
                applied,
            },
        );
    }

    fn runner(&self, pid: NodeId) -> Arc<Runner<E>> {
        Arc::clone(self.nodes[&pid].runner.as_ref().unwrap())
    }

    fn status(&self, pid: NodeId) -> RunnerStatus {
        self.runner(pid).status().borrow().clone()
    }

    fn values(&self, pid: NodeId) -> Vec<u64> {
        self.nodes[&pid].applied.lock().unwrap().values.clone()
    }

    fn applied<R>(&self, pid: NodeId, f: impl FnOnce(&Applied) -> R) -> R {
        f(&self.nodes[&pid].applied.lock().unwrap())
    }

    /// The node of `among` that leads in the accept phase, with every node
    /// of `among` in the accept phase under its ballot.
    fn current_leader(&self, among: &[NodeId]) -> Option<(NodeId, Ballot)> {
        let first = self.status(*among.first()?);
        let (leader, _) = first.leader?;
        // The leader must be one of `among`: nodes cut off from an isolated
        // leader keep following it until their election timeout fires.
        if !among.contains(&leader) {
            return None;
        }
        among
            .iter()
            .all(|&pid| {
                let s = self.status(pid);
                s.leader == Some((leader, true)) && s.promise == first.promise
            })
            .then_some((leader, first.promise))
    }

    /// Waits for a leader that every node of `among` has followed, in the
    /// accept phase, for a while: right after start-up a second election
    /// can still be under way, and entries appended at a leader that is
    /// being deposed are lost (`Ok` from `propose` does not mean decided).
    async fn leader(&self, among: &[NodeId]) -> NodeId {
        const STABLE: Duration = Duration::from_millis(300);
        let deadline = Instant::now() + WAIT;
        let mut since: Option<((NodeId, Ballot), Instant)> = None;
        loop {
            let now = Instant::now();
            match (self.current_leader(among), since) {
                (Some(seen), Some((held, from))) if seen == held => {
                    if now - from >= STABLE {
                        return seen.0;
                    }
                }
                (Some(seen), _) => since = Some((seen, now)),
                (None, _) => since = None,
            }
            assert!(
                now < deadline,
                "no stable leader among {among:?}: {}",
                self.dump()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Proposes every value concurrently through `pid`'s handle; each
    /// proposal must be accepted into the log.
    async fn propose(&self, pid: NodeId, values: impl IntoIterator<Item = u64>) {
        let runner = self.runner(pid);
        let mut tasks = tokio::task::JoinSet::new();
        for v in values {
            let runner = Arc::clone(&runner);
            tasks.spawn(async move { runner.propose(E::new(v)).await });
        }
        let all = tokio::time::timeout(WAIT, tasks.join_all()).await.unwrap();
        for result in all {
            result.unwrap();
        }
    }

    /// Gets every value of `values` decided by the leader of `among`, as a
    /// client would: propose to the leader, and propose again what a change
    /// of leader lost. Returns the values proposed more than once (those may
    /// be decided more than once; the others must not).
    ///
    /// Values go out in chunks of `chunk`, 5 ms apart, so that a fault test
    /// spreads them over many rounds.
    async fn decide(
        &self,
        among: &[NodeId],
        values: std::ops::Range<u64>,
        chunk: usize,
    ) -> BTreeSet<u64> {
        let all: BTreeSet<u64> = values.collect();
        let mut missing = all.clone();
        let mut reproposed = BTreeSet::new();
        for attempt in 0..6 {
            let leader = self.leader(among).await;
            if attempt > 0 {
                eprintln!(
                    "attempt {attempt}: proposing {} values again",
                    missing.len()
                );
                reproposed.extend(missing.iter().copied());
            }
            let batch: Vec<u64> = missing.iter().copied().collect();
            for part in batch.chunks(chunk) {
                self.propose(leader, part.iter().copied()).await;
                if part.len() == chunk {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            let deadline = Instant::now() + Duration::from_secs(3);
            loop {
                let decided: BTreeSet<u64> = self.values(leader).into_iter().collect();
                missing = all.difference(&decided).copied().collect();
                if missing.is_empty() || Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if missing.is_empty() {
                return reproposed;
            }
        }
        panic!("never decided: {missing:?}: {}", self.dump());
    }

    /// Waits until every node of `pids` consumed the same sequence as
    /// `reference` (at least as long as it), and returns it.
    async fn converged(&self, pids: &[NodeId], reference: NodeId) -> Vec<u64> {
        let min_len = self.values(reference).len();
        let deadline = Instant::now() + WAIT;
        loop {
            let seq = self.values(reference);
            if seq.len() >= min_len && pids.iter().all(|&p| self.values(p) == seq) {
                return seq;
            }
            assert!(
                Instant::now() < deadline,
                "{pids:?} never converged on node {reference}'s sequence: {}",
                self.dump()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until every node of `pids` has consumed `len` values.
    async fn wait_len(&self, pids: &[NodeId], len: usize) {
        let deadline = Instant::now() + WAIT;
        while !pids
            .iter()
            .all(|&p| self.applied(p, |a| a.base + a.values.len()) >= len)
        {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {len} values on {pids:?}: {}",
                self.dump()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Everything a failed wait should print.
    fn dump(&self) -> String {
        let mut out = String::new();
        for (pid, node) in &self.nodes {
            let status = node.runner.as_ref().map(|r| r.status().borrow().clone());
            let len = self.applied(*pid, |a| a.base + a.values.len());
            out.push_str(&format!("\n  node {pid}: consumed {len}, {status:?}"));
        }
        out.push_str(&format!("\n  links: {:?}", self.ctl.total_stats()));
        out
    }

    async fn stop_node(&mut self, pid: NodeId) {
        let node = self.nodes.get_mut(&pid).unwrap();
        let runner = node.runner.take().unwrap();
        let status = runner.status();
        tokio::time::timeout(WAIT, runner.shutdown())
            .await
            .unwrap()
            .unwrap();
        assert!(status.borrow().stopped);
        assert_eq!(status.borrow().failed, None);
        // A stopped runner refuses proposals with a typed error, and a
        // second shutdown is harmless.
        let refused = tokio::time::timeout(WAIT, runner.propose(E::new(u64::MAX)))
            .await
            .unwrap();
        assert!(matches!(refused, Err(Error::RunnerStopped)), "{refused:?}");
        tokio::time::timeout(WAIT, runner.shutdown())
            .await
            .unwrap()
            .unwrap();
        self.net.detach(pid);
    }

    /// Stops every runner, then the network; both must end in time.
    async fn shutdown(mut self) {
        let pids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for pid in pids {
            if self.nodes[&pid].runner.is_some() {
                self.stop_node(pid).await;
            }
        }
        let links = NODES.len() * (NODES.len() - 1);
        let ended = tokio::time::timeout(Duration::from_secs(5), self.net.shutdown())
            .await
            .expect("network tasks did not end");
        assert!(ended >= links, "{ended} link tasks ended, expected {links}");
    }
}

/// Every value of `expected` appears in `seq`; only values proposed more
/// than once may appear more than once; nothing else appears.
fn assert_decided_once(seq: &[u64], expected: std::ops::Range<u64>, reproposed: &BTreeSet<u64>) {
    let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
    for v in seq {
        *counts.entry(*v).or_default() += 1;
    }
    for v in expected.clone() {
        assert!(counts.contains_key(&v), "{v} never decided");
    }
    for (v, n) in &counts {
        assert!(expected.contains(v), "{v} decided but never proposed");
        assert!(
            *n == 1 || reproposed.contains(v),
            "{v} decided {n} times but proposed once"
        );
    }
}

async fn memory_cluster(seed: u64) -> Cluster<Val> {
    let mut c = Cluster::new(seed);
    for pid in NODES {
        c.start(pid, MemoryStorage::<Val>::new(), SyncedWrites, None);
    }
    c
}

const ALL: usize = usize::MAX;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_runners_decide_concurrent_proposals_in_one_order() {
    let c = memory_cluster(1).await;
    let reproposed = c.decide(&NODES, 0..2_000, ALL).await;
    let leader = c.leader(&NODES).await;
    let reference = c.converged(&NODES, leader).await;
    assert_decided_once(&reference, 0..2_000, &reproposed);
    for pid in NODES {
        assert_eq!(c.status(pid).decided_idx, reference.len());
    }
    let stats = c.ctl.total_stats();
    assert_eq!(stats.dropped + stats.cut + stats.overflow, 0, "{stats:?}");
    c.shutdown().await;
}

#[cfg(feature = "rocksdb")]
mod rocks {
    use tsoracle_paxos_toolkit::storage::{RocksdbOptions, RocksdbStorage, StorageIdentity};

    use super::*;

    fn open(root: &std::path::Path, pid: NodeId) -> RocksdbStorage<Val> {
        RocksdbStorage::open(
            root.join(format!("node-{pid}")),
            StorageIdentity::new("runner-test", pid),
            RocksdbOptions::default(),
        )
        .unwrap()
    }

    fn start(c: &mut Cluster<Val>, root: &std::path::Path, pid: NodeId) {
        let storage = open(root, pid);
        let durability = storage.group_commit();
        c.start(pid, storage, durability, None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_runners_on_rocksdb_with_group_commit() {
        let tmp = tempfile::tempdir().unwrap();
        let mut c = Cluster::new(2);
        for pid in NODES {
            start(&mut c, tmp.path(), pid);
        }
        let reproposed = c.decide(&NODES, 0..500, ALL).await;
        let leader = c.leader(&NODES).await;
        let reference = c.converged(&NODES, leader).await;
        assert_decided_once(&reference, 0..500, &reproposed);
        c.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restarted_node_catches_up_from_its_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let mut c = Cluster::new(3);
        for pid in NODES {
            start(&mut c, tmp.path(), pid);
        }
        let mut reproposed = c.decide(&NODES, 0..200, ALL).await;
        let leader = c.leader(&NODES).await;
        c.converged(&NODES, leader).await;

        let down = NODES.into_iter().find(|&p| p != leader).unwrap();
        c.stop_node(down).await;
        let up: Vec<NodeId> = NODES.into_iter().filter(|&p| p != down).collect();
        reproposed.extend(c.decide(&up, 200..400, ALL).await);
        let before_restart = c.converged(&up, leader).await.len();

        // Same directory, new storage handle, new runner, hook from 0.
        start(&mut c, tmp.path(), down);
        assert!(
            c.status(down).decided_idx >= 200,
            "decided index survived the restart"
        );
        c.wait_len(&[down], before_restart).await;
        let reference = c.converged(&NODES, leader).await;
        assert_decided_once(&reference, 0..400, &reproposed);
        c.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_leader_is_replaced_and_catches_up_after_heal() {
    let c = memory_cluster(4).await;
    let mut reproposed = c.decide(&NODES, 0..100, ALL).await;
    let old = c.leader(&NODES).await;
    c.converged(&NODES, old).await;

    c.ctl.isolate(old);
    let rest: Vec<NodeId> = NODES.into_iter().filter(|&p| p != old).collect();
    let new = c.leader(&rest).await;
    assert_ne!(new, old);
    // The isolated old leader still believes it leads and appends: `Ok`
    // does not mean decided. None of these may ever be decided.
    c.propose(old, 10_000..10_010).await;
    reproposed.extend(c.decide(&rest, 100..200, ALL).await);
    let decided = c.converged(&rest, new).await.len();

    let healed = Instant::now();
    c.ctl.heal_all();
    c.wait_len(&[old], decided).await;
    eprintln!("old leader caught up {:?} after heal", healed.elapsed());
    // `assert_decided_once` also proves none of 10_000.. was decided.
    let reference = c.converged(&NODES, new).await;
    assert_decided_once(&reference, 0..200, &reproposed);
    assert!(c.ctl.total_stats().cut > 0);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decides_identically_under_loss_reordering_and_delay() {
    let c = memory_cluster(5).await;
    c.leader(&NODES).await;
    // No duplication: OmniPaxos 0.2.4 assumes at-most-once delivery on a
    // link (as the tonic transport gives: a frame is written once on one
    // stream). A duplicated Prepare re-opens the prepare phase and a
    // duplicated AcceptSync then rewrites the log below the decided index,
    // which trips OmniPaxos' own debug assertion ("log sync from 196 would
    // overwrite decided entries up to 205"). memnet's duplication is for
    // transports and simulations that model that case on purpose.
    c.ctl
        .set_faults(Faults {
            drop: 0.03,
            duplicate: 0.0,
            delay: Duration::from_millis(1),
            jitter: Duration::from_millis(3),
            reorder: 0.05,
            reorder_window: 3,
        })
        .unwrap();
    // A lost heartbeat can move leadership, and entries appended at a
    // deposed leader are lost: `decide` proposes those again.
    let reproposed = c.decide(&NODES, 0..300, 5).await;
    let reference = c.converged(&NODES, 1).await;
    // Not "exactly once": a value re-proposed after a stall may land twice
    // when the first proposal survived after all (OmniPaxos does not
    // deduplicate). That is why the driver tags entries and ignores
    // repeats. The order must still agree on every node.
    let everything: BTreeSet<u64> = (0..300).collect();
    assert_decided_once(&reference, 0..300, &everything);
    let stats = c.ctl.total_stats();
    eprintln!(
        "fault stats: {stats:?}, reproposed {}, decided {} for 300 values",
        reproposed.len(),
        reference.len()
    );
    // The faults really happened, and no message was duplicated (see above).
    assert!(stats.dropped > 0 && stats.reordered > 0 && stats.duplicated == 0);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_runners_and_every_network_task() {
    let c = memory_cluster(6).await;
    c.decide(&NODES, 0..10, ALL).await;
    let statuses: Vec<_> = NODES.iter().map(|&p| c.runner(p).status()).collect();
    // `shutdown` asserts Ok and `stopped` for each runner, then that every
    // link task ends within its timeout.
    c.shutdown().await;
    for status in statuses {
        let s = status.borrow();
        assert!(s.stopped && s.failed.is_none(), "{s:?}");
    }
}

/// Memory storage whose writes fail once a budget is spent; OmniPaxos
/// panics on the failed write.
struct FailingStorage {
    inner: MemoryStorage<Val>,
    writes_left: Arc<AtomicUsize>,
}

impl FailingStorage {
    fn spend(&self) -> StorageResult<()> {
        let left = self.writes_left.load(Ordering::SeqCst);
        if left == 0 {
            return Err(Box::new(std::io::Error::other("injected write failure")));
        }
        self.writes_left.store(left - 1, Ordering::SeqCst);
        Ok(())
    }
}

impl Storage<Val> for FailingStorage {
    fn write_atomically(&mut self, ops: Vec<StorageOp<Val>>) -> StorageResult<()> {
        self.spend()?;
        self.inner.write_atomically(ops)
    }
    fn append_entry(&mut self, entry: Val) -> StorageResult<()> {
        self.spend()?;
        self.inner.append_entry(entry)
    }
    fn append_entries(&mut self, entries: Vec<Val>) -> StorageResult<()> {
        self.spend()?;
        self.inner.append_entries(entries)
    }
    fn append_on_prefix(&mut self, from_idx: usize, entries: Vec<Val>) -> StorageResult<()> {
        self.spend()?;
        self.inner.append_on_prefix(from_idx, entries)
    }
    fn set_promise(&mut self, n_prom: Ballot) -> StorageResult<()> {
        self.spend()?;
        self.inner.set_promise(n_prom)
    }
    fn set_decided_idx(&mut self, ld: usize) -> StorageResult<()> {
        self.spend()?;
        self.inner.set_decided_idx(ld)
    }
    fn get_decided_idx(&self) -> StorageResult<usize> {
        self.inner.get_decided_idx()
    }
    fn set_accepted_round(&mut self, na: Ballot) -> StorageResult<()> {
        self.spend()?;
        self.inner.set_accepted_round(na)
    }
    fn get_accepted_round(&self) -> StorageResult<Option<Ballot>> {
        self.inner.get_accepted_round()
    }
    fn get_entries(&self, from: usize, to: usize) -> StorageResult<Vec<Val>> {
        self.inner.get_entries(from, to)
    }
    fn get_log_len(&self) -> StorageResult<usize> {
        self.inner.get_log_len()
    }
    fn get_suffix(&self, from: usize) -> StorageResult<Vec<Val>> {
        self.inner.get_suffix(from)
    }
    fn get_promise(&self) -> StorageResult<Option<Ballot>> {
        self.inner.get_promise()
    }
    fn set_stopsign(&mut self, s: Option<StopSign>) -> StorageResult<()> {
        self.spend()?;
        self.inner.set_stopsign(s)
    }
    fn get_stopsign(&self) -> StorageResult<Option<StopSign>> {
        self.inner.get_stopsign()
    }
    fn trim(&mut self, idx: usize) -> StorageResult<()> {
        self.spend()?;
        self.inner.trim(idx)
    }
    fn set_compacted_idx(&mut self, idx: usize) -> StorageResult<()> {
        self.spend()?;
        self.inner.set_compacted_idx(idx)
    }
    fn get_compacted_idx(&self) -> StorageResult<usize> {
        self.inner.get_compacted_idx()
    }
    fn set_snapshot(&mut self, snapshot: Option<NoSnapshot>) -> StorageResult<()> {
        self.spend()?;
        self.inner.set_snapshot(snapshot)
    }
    fn get_snapshot(&self) -> StorageResult<Option<NoSnapshot>> {
        self.inner.get_snapshot()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_panic_becomes_a_visible_failure() {
    let mut c = Cluster::<Val>::new(7);
    let writes_left = Arc::new(AtomicUsize::new(usize::MAX));
    let failing = FailingStorage {
        inner: MemoryStorage::new(),
        writes_left: Arc::clone(&writes_left),
    };
    c.start(1, failing, SyncedWrites, None);
    for pid in [2, 3] {
        c.start(pid, MemoryStorage::<Val>::new(), SyncedWrites, None);
    }
    c.decide(&NODES, 0..10, ALL).await;
    let leader = c.leader(&NODES).await;

    // Node 1 writes on every accepted entry, leader or follower.
    writes_left.store(3, Ordering::SeqCst);
    let runner = c.runner(leader);
    for v in 10..30 {
        // Proposals to a failed node are refused; that is checked below.
        let _ = tokio::time::timeout(WAIT, runner.propose(Val(v)))
            .await
            .unwrap();
    }
    drop(runner);
    let status = c.runner(1).status();
    eventually("node 1 reports its failure", WAIT, || {
        status.borrow().failed.is_some()
    })
    .await;
    let failure = status.borrow().clone();
    assert!(failure.stopped, "{failure:?}");
    let reason = failure.failed.unwrap();
    assert!(reason.contains("panicked"), "{reason}");

    let err = tokio::time::timeout(WAIT, c.runner(1).propose(Val(99)))
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, Error::RunnerFailed(_)), "{err}");

    let node = c.nodes.get_mut(&1).unwrap();
    let runner = Arc::into_inner(node.runner.take().unwrap()).unwrap();
    let err = tokio::time::timeout(WAIT, runner.shutdown())
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, Error::RunnerFailed(_)), "{err}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_compact_the_log_and_a_lagging_node_installs_one() {
    let mut c = Cluster::<TestEntry>::new(8);
    for pid in NODES {
        c.start(
            pid,
            MemoryStorage::<TestEntry>::new(),
            SyncedWrites,
            Some(100),
        );
    }
    let leader = c.leader(&NODES).await;
    let lagging = NODES.into_iter().find(|&p| p != leader).unwrap();
    let up: Vec<NodeId> = NODES.into_iter().filter(|&p| p != lagging).collect();
    c.ctl.isolate(lagging);
    let reproposed = c.decide(&up, 0..350, ALL).await;
    let leader = c.leader(&up).await;
    let reference = c.converged(&up, leader).await;
    assert_decided_once(&reference, 0..350, &reproposed);
    assert_eq!(c.applied(leader, |a| a.base), 0);
    eventually("the majority compacted its log", WAIT, || {
        up.iter().all(|&p| c.status(p).compacted_idx >= 300)
    })
    .await;

    c.ctl.heal_all();
    c.wait_len(&[lagging], reference.len()).await;
    let (base, base_sum, values, installed) = c.applied(lagging, |a| {
        (a.base, a.base_sum, a.values.clone(), a.snapshots_installed)
    });
    assert!(installed >= 1, "the lagging node installed a snapshot");
    assert!(base >= 300, "the snapshot covers the compacted log: {base}");
    assert_eq!(base_sum, reference[..base].iter().sum::<u64>());
    assert_eq!(values, reference[base..]);
    assert!(c.status(lagging).compacted_idx >= 300);
    c.shutdown().await;
}

/// A follower that lags while nobody has compacted yet is synced by the
/// leader with a *delta* snapshot (OmniPaxos does so whenever the entry type
/// uses snapshots and the follower's decided index is behind). The follower
/// must merge that delta onto a snapshot of its own decided prefix, not of a
/// prefix it does not have: its state has to cover every decided entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_node_synced_by_a_delta_snapshot_keeps_its_prefix() {
    let mut c = Cluster::<TestEntry>::new(11);
    for pid in NODES {
        c.start(pid, MemoryStorage::<TestEntry>::new(), SyncedWrites, None);
    }
    let leader = c.leader(&NODES).await;
    let mut reproposed = c.decide(&NODES, 1..51, ALL).await;
    c.converged(&NODES, leader).await;
    let lagging = NODES.into_iter().find(|&p| p != leader).unwrap();
    let up: Vec<NodeId> = NODES.into_iter().filter(|&p| p != lagging).collect();
    c.ctl.isolate(lagging);
    reproposed.extend(c.decide(&up, 51..151, ALL).await);
    let leader = c.leader(&up).await;
    let reference = c.converged(&up, leader).await;
    assert_decided_once(&reference, 1..151, &reproposed);

    c.ctl.heal_all();
    c.wait_len(&[lagging], reference.len()).await;
    let (base, base_sum, values) = c.applied(lagging, |a| (a.base, a.base_sum, a.values.clone()));
    let covered: u64 = base_sum + values.iter().sum::<u64>();
    assert_eq!(
        covered,
        reference.iter().sum::<u64>(),
        "node {lagging} lost part of the decided log when it caught up \
         (snapshot base {base}, {} entries after it)",
        values.len()
    );
    c.shutdown().await;
}

fn prepare_req(from: NodeId, to: NodeId) -> Message<Val> {
    Message::SequencePaxos(PaxosMessage {
        from,
        to,
        msg: PaxosMsg::PrepareReq(PrepareReq {
            n: Ballot::default(),
        }),
    })
}

/// A `PrepareReq` that reaches the leader after its follower was synced (a
/// late or duplicated one: a recovering follower sends one to every peer
/// on each resend timeout) must not cut that follower off. Upstream
/// OmniPaxos 0.2.4 forgot the follower's promise and sent it a `Prepare` of
/// the same ballot, which a follower in its accept phase ignores, so the
/// leader waited for a `Promise` that never came and sent the follower
/// nothing more: with the third node gone, nothing was decided again (the
/// simulation's seeds 361516, 365013, ...). See `vendor/README.md`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_prepare_req_does_not_cut_a_synced_follower_off() {
    let mut c = memory_cluster(12).await;
    let mut reproposed = c.decide(&NODES, 0..20, ALL).await;
    let leader = c.leader(&NODES).await;
    c.converged(&NODES, leader).await;
    let follower = NODES.into_iter().find(|&p| p != leader).unwrap();
    let third = NODES
        .into_iter()
        .find(|&p| p != leader && p != follower)
        .unwrap();
    // As the follower sends it: carrying the ballot it promised.
    let stale = Message::SequencePaxos(PaxosMessage {
        from: follower,
        to: leader,
        msg: PaxosMsg::PrepareReq(PrepareReq {
            n: c.status(follower).promise,
        }),
    });
    c.runner(leader).inbox().deliver(None, stale).await.unwrap();
    c.stop_node(third).await;
    let pair = [leader, follower];
    reproposed.extend(c.decide(&pair, 20..40, ALL).await);
    let reference = c.converged(&pair, leader).await;
    assert_decided_once(&reference, 0..40, &reproposed);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbox_refuses_foreign_messages_before_omnipaxos_sees_them() {
    let c = memory_cluster(9).await;
    let leader = c.leader(&NODES).await;
    let other = NODES.into_iter().find(|&p| p != leader).unwrap();
    let inbox = c.runner(leader).inbox();

    // An unknown pid: index out of bounds inside an OmniPaxos leader.
    assert_eq!(
        inbox.try_deliver(None, prepare_req(9, leader)),
        Err(Refusal::UnknownSender(9))
    );
    // Addressed to another node.
    assert_eq!(
        inbox.try_deliver(None, prepare_req(leader, other)),
        Err(Refusal::WrongReceiver(other))
    );
    assert_eq!(
        inbox.deliver(None, prepare_req(9, leader)).await,
        Err(Refusal::UnknownSender(9))
    );
    // Through the network: a node 9 that the configuration does not know.
    let forger = c.net.add_node(9);
    forger.send(leader, vec![prepare_req(9, leader), prepare_req(9, leader)]);
    eventually("the forged messages are refused", WAIT, || {
        c.ctl
            .link_stats(9, leader)
            .is_some_and(|s| s.undeliverable == 2)
    })
    .await;
    assert_eq!(inbox.stats().unknown_sender(), 4);
    assert_eq!(inbox.stats().wrong_receiver(), 1);

    // The leader is unharmed and still decides.
    c.decide(&NODES, 0..10, ALL).await;
    c.converged(&NODES, leader).await;
    assert_eq!(c.status(leader).failed, None);
    c.shutdown().await;
}

/// Issue 12, item 5: a peer (or anything that speaks as one on an
/// unauthenticated link) cannot end the configuration. The inbox drops and
/// counts a `ForwardStopSign`, and the leader keeps deciding; without the
/// filter the leader proposes the StopSign and every later append fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_sign_from_a_peer_never_reaches_omnipaxos() {
    let c = memory_cluster(11).await;
    let leader = c.leader(&NODES).await;
    let other = NODES.into_iter().find(|&p| p != leader).unwrap();
    c.decide(&NODES, 0..10, ALL).await;
    let inbox = c.runner(leader).inbox();
    let stop_sign = StopSign::with(
        ConfigBuilder::new(NODES)
            .configuration_id(2)
            .cluster_config()
            .unwrap(),
        None,
    );
    let forward = Message::SequencePaxos(PaxosMessage {
        from: other,
        to: leader,
        msg: PaxosMsg::ForwardStopSign(stop_sign),
    });
    inbox.deliver(None, forward).await.unwrap();

    // Many rounds later the leader is unharmed and still decides.
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.decide(&NODES, 10..20, ALL).await;
    c.converged(&NODES, leader).await;
    for pid in NODES {
        let status = c.status(pid);
        assert_eq!(status.failed, None);
        assert_eq!(status.stop_sign, None, "node {pid} decided a StopSign");
    }
    // Refused by the runner right before OmniPaxos, and counted.
    assert_eq!(inbox.stats().stop_sign(), 1);
    c.shutdown().await;
}

/// Admits exactly the StopSign whose next configuration is `agreed`, as a
/// host does once its log agreed on a change.
struct Agreed(omnipaxos::ClusterConfig);

impl<E: Entry> tsoracle_paxos_toolkit::StopSignAdmission<E> for Agreed {
    fn admit(
        &self,
        stop_sign: &StopSign,
        _: Option<&omnipaxos::util::LogSync<E>>,
        _: &[E],
    ) -> bool {
        stop_sign.next_config == self.0 && stop_sign.metadata.is_none()
    }
}

/// Every node admits the StopSign that names `agreed`.
fn agree_everywhere<E: Valued>(c: &Cluster<E>, agreed: &omnipaxos::ClusterConfig) {
    for pid in NODES {
        let admission = Arc::new(Agreed(agreed.clone()));
        assert!(
            c.runner(pid)
                .inbox()
                .set_stop_sign_admission(admission)
                .is_ok()
        );
    }
}

fn next_config(nodes: &[NodeId]) -> omnipaxos::ClusterConfig {
    ConfigBuilder::new(nodes.to_vec())
        .configuration_id(2)
        .cluster_config()
        .unwrap()
}

/// Only the agreed change ends the configuration: a StopSign the admission
/// refuses is neither proposed by the runner nor accepted from a peer, and
/// the agreed one is decided on every node, after which proposals fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_agreed_change_ends_the_configuration_on_every_node() {
    let c = memory_cluster(12).await;
    let agreed = next_config(&[1, 2, 3, 4]);
    agree_everywhere(&c, &agreed);
    let leader = c.leader(&NODES).await;
    let other = NODES.into_iter().find(|&p| p != leader).unwrap();
    c.decide(&NODES, 0..10, ALL).await;

    let refused = c
        .runner(leader)
        .reconfigure(next_config(&[1, 2]), None)
        .await;
    assert!(
        matches!(
            refused,
            Err(Error::ChangeNotAgreed {
                configuration: 2,
                ..
            })
        ),
        "{refused:?}"
    );
    let forged = Message::SequencePaxos(PaxosMessage {
        from: other,
        to: leader,
        msg: PaxosMsg::ForwardStopSign(StopSign::with(next_config(&[1, 2]), None)),
    });
    let inbox = c.runner(leader).inbox();
    inbox.deliver(None, forged).await.unwrap();
    eventually("the runner refused the forged StopSign", WAIT, || {
        inbox.stats().stop_sign() == 1
    })
    .await;
    c.decide(&NODES, 10..20, ALL).await;

    c.runner(leader)
        .reconfigure(agreed.clone(), None)
        .await
        .unwrap();
    eventually("every node decided the agreed StopSign", WAIT, || {
        NODES.iter().all(|&pid| {
            c.status(pid)
                .stop_sign
                .is_some_and(|ss| ss.next_config == agreed)
        })
    })
    .await;
    let after = c.runner(leader).propose(Val(99)).await;
    assert!(
        matches!(after, Err(Error::ConfigurationStopped)),
        "{after:?}"
    );
    // Nothing decided before the StopSign was lost on any node.
    let mut decided = c.converged(&NODES, leader).await;
    decided.sort_unstable();
    assert_eq!(decided, (0..20).collect::<Vec<_>>());
    c.shutdown().await;
}

/// A follower asked to take leadership wins it: the way a leader that is
/// about to be removed hands over first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_asked_to_take_leadership_becomes_the_leader() {
    let c = memory_cluster(13).await;
    let leader = c.leader(&NODES).await;
    let successor = NODES.into_iter().find(|&p| p != leader).unwrap();
    c.runner(successor).take_leadership().await.unwrap();
    eventually("the successor leads", WAIT, || {
        c.current_leader(&NODES)
            .is_some_and(|(pid, _)| pid == successor)
    })
    .await;
    c.decide(&NODES, 0..10, ALL).await;
    c.shutdown().await;
}

/// A node cut off while the others decide entries and the StopSign, then
/// healed and made leader, decides the StopSign at the same index as the
/// others and applies it. Without the vendored OmniPaxos' fix 3 its
/// followers, who already held the StopSign, counted it twice: the new
/// leader's decided index ran past its log and it never applied the
/// StopSign (seed 0 failed every time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_node_that_leads_after_the_stop_sign_applies_it_at_the_same_index() {
    for seed in 0..5 {
        let c = memory_cluster(200 + seed).await;
        let agreed = next_config(&[1, 2]);
        agree_everywhere(&c, &agreed);
        let leader = c.leader(&NODES).await;
        c.decide(&NODES, 0..10, ALL).await;
        let lagger = NODES.into_iter().find(|&p| p != leader).unwrap();
        let up: Vec<NodeId> = NODES.into_iter().filter(|&p| p != lagger).collect();
        c.ctl.isolate(lagger);
        c.decide(&up, 10..20, ALL).await;
        let leader = c.leader(&up).await;
        c.runner(leader)
            .reconfigure(agreed.clone(), None)
            .await
            .unwrap();
        eventually("the majority decided the StopSign", WAIT, || {
            up.iter().all(|&pid| c.status(pid).stop_sign.is_some())
        })
        .await;
        let decided = c.status(leader).decided_idx;
        c.ctl.rejoin(lagger);
        c.runner(lagger).take_leadership().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let s = c.status(lagger);
            if s.stop_sign.is_some() {
                assert_eq!(s.decided_idx, decided, "seed {seed}");
                break;
            }
            if Instant::now() > deadline {
                let others: Vec<_> = up.iter().map(|&p| c.status(p)).collect();
                panic!(
                    "seed {seed}: node {lagger} never applied the StopSign: {s:?}; others {others:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        c.shutdown().await;
    }
}

/// Whether every write of the node's current round is synced.
#[derive(Clone, Default)]
struct RoundSynced(Arc<AtomicBool>);

impl Durability for RoundSynced {
    fn begin_round(&self) {
        self.0.store(false, Ordering::SeqCst);
    }

    fn commit_round(&self) -> Result<(), Error> {
        self.0.store(true, Ordering::SeqCst);
        Ok(())
    }
}

/// Records the kind of every message a node sends before its round's sync.
struct SendsBeforeSync<S> {
    inner: S,
    synced: RoundSynced,
    early: Arc<Mutex<BTreeMap<&'static str, usize>>>,
}

impl<E: Entry, S: MessageSink<E>> MessageSink<E> for SendsBeforeSync<S> {
    fn send(&self, to: NodeId, batch: Vec<Message<E>>) {
        if !self.synced.0.load(Ordering::SeqCst) {
            let mut early = self.early.lock().unwrap();
            for message in &batch {
                *early.entry(kind(message)).or_default() += 1;
            }
        }
        self.inner.send(to, batch);
    }

    fn take_reconnected(&self, out: &mut Vec<NodeId>) {
        self.inner.take_reconnected(out);
    }
}

fn kind<E: Entry>(message: &Message<E>) -> &'static str {
    match message {
        Message::SequencePaxos(PaxosMessage { msg, .. }) => match msg {
            PaxosMsg::PrepareReq(_) => "PrepareReq",
            PaxosMsg::Prepare(_) => "Prepare",
            PaxosMsg::Promise(_) => "Promise",
            PaxosMsg::AcceptSync(_) => "AcceptSync",
            PaxosMsg::AcceptDecide(_) => "AcceptDecide",
            PaxosMsg::Accepted(_) => "Accepted",
            PaxosMsg::NotAccepted(_) => "NotAccepted",
            PaxosMsg::Decide(_) => "Decide",
            PaxosMsg::ProposalForward(_) => "ProposalForward",
            PaxosMsg::Compaction(_) => "Compaction",
            PaxosMsg::AcceptStopSign(_) => "AcceptStopSign",
            PaxosMsg::ForwardStopSign(_) => "ForwardStopSign",
        },
        Message::BLE(_) => "BLE",
        Message::Lease(_) => "Lease",
    }
}

/// Invariant 7: a leader's replication (`AcceptDecide`, `Decide`,
/// `AcceptSync`) leaves before its own sync, so its followers sync beside
/// it; a `Promise`, an `Accepted` or a `Prepare` of a new ballot never leaves
/// before the sync of the round that wrote what it reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_leaders_replication_leaves_before_its_sync() {
    let mut c = Cluster::<Val>::new(11);
    let early = Arc::new(Mutex::new(BTreeMap::new()));
    for pid in NODES {
        let synced = RoundSynced::default();
        let early = Arc::clone(&early);
        c.start_with_sink(
            pid,
            MemoryStorage::<Val>::new(),
            synced.clone(),
            None,
            move |inner| SendsBeforeSync {
                inner,
                synced,
                early,
            },
        );
    }
    let leader = c.leader(&NODES).await;
    c.propose(leader, 0..200).await;
    eventually("every node applied 200 values", WAIT, || {
        NODES.iter().all(|&pid| c.values(pid).len() >= 200)
    })
    .await;
    let early = early.lock().unwrap().clone();
    assert!(
        early.get("AcceptDecide").copied().unwrap_or(0) > 0,
        "no AcceptDecide left before its sync: {early:?}"
    );
    for kind in early.keys() {
        assert!(
            ["AcceptDecide", "Decide", "AcceptSync", "AcceptStopSign"].contains(kind),
            "a {kind} left before the sync of its round: {early:?}"
        );
    }
    c.shutdown().await;
}
