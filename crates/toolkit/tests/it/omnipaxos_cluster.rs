//! Real OmniPaxos on each storage: a three-node cluster in one thread, with
//! a node cut off while the others decide and snapshot, so that it catches
//! up through the snapshot install path (`Trim` past its log's end, then
//! `AppendOnPrefix`). OmniPaxos panics on any storage error, so a semantic
//! mismatch between OmniPaxos and the storage fails this test.

use std::collections::BTreeMap;

use omnipaxos::{
    OmniPaxos, OmniPaxosConfig,
    messages::Message,
    storage::Storage,
    util::{LogEntry, NodeId},
};

use tsoracle_paxos_toolkit::ConfigBuilder;

use crate::common::TestEntry;

const NODES: [NodeId; 3] = [1, 2, 3];

struct Cluster<S: Storage<TestEntry>> {
    nodes: BTreeMap<NodeId, OmniPaxos<TestEntry, S>>,
    /// Nodes that neither send nor receive.
    cut_off: Vec<NodeId>,
}

fn config(pid: NodeId) -> OmniPaxosConfig {
    ConfigBuilder::new(NODES)
        .election_ticks(5)
        .buffer_size(1_000)
        .flush_batch_ticks(10)
        .build(pid)
        .unwrap()
}

impl<S: Storage<TestEntry>> Cluster<S> {
    fn new(mut storage: impl FnMut(NodeId) -> S) -> Self {
        let nodes = NODES
            .iter()
            .map(|&pid| (pid, config(pid).build(storage(pid)).unwrap()))
            .collect();
        Cluster {
            nodes,
            cut_off: Vec::new(),
        }
    }

    /// One tick everywhere, then messages delivered until none are left.
    fn round(&mut self) {
        for node in self.nodes.values_mut() {
            node.tick();
        }
        for _ in 0..10 {
            let mut outgoing = Vec::new();
            for (pid, node) in &mut self.nodes {
                let mut buf: Vec<Message<TestEntry>> = Vec::new();
                node.take_outgoing_messages(&mut buf);
                if !self.cut_off.contains(pid) {
                    outgoing.extend(buf);
                }
            }
            if outgoing.is_empty() {
                return;
            }
            for m in outgoing {
                let to = m.get_receiver();
                if !self.cut_off.contains(&to)
                    && let Some(node) = self.nodes.get_mut(&to)
                {
                    node.handle_incoming(m);
                }
            }
        }
    }

    fn run_until(&mut self, what: &str, done: impl Fn(&Self) -> bool) {
        for _ in 0..500 {
            if done(self) {
                return;
            }
            self.round();
        }
        panic!("cluster never reached: {what}");
    }

    fn leader(&self) -> Option<NodeId> {
        self.nodes
            .values()
            .find_map(|n| n.get_current_leader().map(|(pid, _)| pid))
            .filter(|pid| !self.cut_off.contains(pid))
    }

    fn decided(&self, pid: NodeId) -> usize {
        self.nodes[&pid].get_decided_idx()
    }

    fn append(&mut self, values: std::ops::Range<u64>) {
        let leader = self.leader().unwrap();
        for v in values {
            self.nodes
                .get_mut(&leader)
                .unwrap()
                .append(TestEntry(v))
                .unwrap();
        }
    }

    fn reconnect(&mut self, pid: NodeId) {
        self.cut_off.retain(|&p| p != pid);
        for (&other, node) in &mut self.nodes {
            if other == pid {
                for p in NODES.iter().filter(|&&p| p != pid) {
                    node.reconnected(*p);
                }
            } else {
                node.reconnected(pid);
            }
        }
    }
}

/// Runs the scenario; `restart(pid)` (RocksDB only) replaces a node with one
/// rebuilt from its reopened storage.
fn scenario<S: Storage<TestEntry>>(
    storage: impl FnMut(NodeId) -> S,
    mut restart: Option<&mut dyn FnMut(NodeId) -> S>,
) {
    let mut c = Cluster::new(storage);
    c.run_until("a leader", |c| c.leader().is_some());
    c.append(0..10);
    c.run_until("10 decided everywhere", |c| {
        NODES.iter().all(|&p| c.decided(p) == 10)
    });

    // Node 3 misses 20 entries and the snapshot that compacts them.
    let lagging = NODES.into_iter().find(|&p| Some(p) != c.leader()).unwrap();
    c.cut_off.push(lagging);
    c.append(10..30);
    let up: Vec<NodeId> = NODES.into_iter().filter(|&p| p != lagging).collect();
    c.run_until("30 decided on the majority", |c| {
        up.iter().all(|&p| c.decided(p) == 30)
    });
    let leader = c.leader().unwrap();
    c.nodes
        .get_mut(&leader)
        .unwrap()
        .snapshot(None, false)
        .unwrap();
    c.run_until("the majority compacted", |c| {
        up.iter().all(|&p| c.nodes[&p].get_compacted_idx() == 30)
    });
    c.append(30..35);
    c.run_until("35 decided on the majority", |c| {
        up.iter().all(|&p| c.decided(p) == 35)
    });

    if let Some(restart) = restart.as_mut() {
        // The lagging node restarts from disk before it catches up.
        c.nodes.remove(&lagging);
        let node = config(lagging).build(restart(lagging)).unwrap();
        assert_eq!(node.get_decided_idx(), 10);
        c.nodes.insert(lagging, node);
    }
    c.reconnect(lagging);
    c.run_until("the lagging node caught up", |c| c.decided(lagging) == 35);
    let lag = &c.nodes[&lagging];
    assert!(
        lag.get_compacted_idx() >= 30,
        "caught up through the snapshot"
    );
    // The snapshot holds the sum and max of 0..30 (or more, if it covers more).
    match lag.read(0) {
        Some(LogEntry::Snapshotted(s)) => {
            assert!(s.snapshot.sum >= (0..30).sum::<u64>());
            assert!(s.snapshot.max >= 29);
        }
        other => panic!("expected a snapshot at index 0, got {other:?}"),
    }
    let mut values: Vec<u64> = Vec::new();
    for entry in lag
        .read_decided_suffix(lag.get_compacted_idx())
        .unwrap_or_default()
    {
        if let LogEntry::Decided(e) = entry {
            values.push(e.0);
        }
    }
    let expected: Vec<u64> = (lag.get_compacted_idx() as u64..35).collect();
    assert_eq!(values, expected);

    if let Some(restart) = restart.as_mut() {
        // Everything survives a restart of every node.
        for pid in NODES {
            c.nodes.remove(&pid);
            let node = config(pid).build(restart(pid)).unwrap();
            assert_eq!(node.get_decided_idx(), 35, "node {pid}");
            c.nodes.insert(pid, node);
        }
    }
}

#[test]
fn cluster_on_memory_storage() {
    scenario(
        |_| tsoracle_paxos_toolkit::storage::MemoryStorage::new(),
        None,
    );
}

#[cfg(feature = "rocksdb")]
#[test]
fn cluster_on_rocksdb_storage_with_restarts() {
    use tsoracle_paxos_toolkit::storage::{RocksdbOptions, RocksdbStorage, StorageIdentity};

    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let open = move |pid: NodeId| -> RocksdbStorage<TestEntry> {
        RocksdbStorage::open(
            root.join(format!("node-{pid}")),
            StorageIdentity::new("omnipaxos-test", pid),
            RocksdbOptions::default(),
        )
        .unwrap()
    };
    let mut reopen = open.clone();
    scenario(open, Some(&mut reopen));
}
