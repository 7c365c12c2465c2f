//! Model check: random operation sequences give the same observable results
//! on a naive reference model, on `MemoryStorage` and (with the `rocksdb`
//! feature) on `RocksdbStorage`, which is also closed and reopened at random
//! points.
//!
//! The reference model is written independently of the crate's shared
//! planner (a `BTreeMap` keyed by absolute index), so it checks the
//! semantics themselves, not only that the two backends agree.

use std::collections::BTreeMap;

use omnipaxos::storage::{StopSign, Storage, StorageOp};
use proptest::prelude::*;
#[cfg(feature = "rocksdb")]
use tsoracle_paxos_harness::conformance::StorageHarness;
use tsoracle_paxos_toolkit::storage::MemoryStorage;

use crate::common::{TestEntry, TestSnapshot, ballot, entries, stopsign};

#[derive(Clone, Debug)]
enum Op {
    AppendEntry(u64),
    AppendEntries(Vec<u64>),
    AppendOnPrefix(usize, Vec<u64>),
    Trim(usize),
    SetPromise(u32),
    SetAcceptedRound(u32),
    SetDecidedIndex(usize),
    SetCompactedIdx(usize),
    SetStopsign(Option<u32>),
    SetSnapshot(Option<(u64, u64)>),
}

#[derive(Clone, Debug)]
enum Step {
    /// One op through its single-op method.
    Single(Op),
    /// Several ops through `write_atomically`.
    Atomic(Vec<Op>),
    /// Close and reopen the durable backend.
    Reopen,
    Entries(usize, usize),
    Suffix(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let idx = 0usize..40;
    let vals = prop::collection::vec(0u64..1000, 0..4);
    prop_oneof![
        3 => (0u64..1000).prop_map(Op::AppendEntry),
        3 => vals.clone().prop_map(Op::AppendEntries),
        3 => (idx.clone(), vals).prop_map(|(i, v)| Op::AppendOnPrefix(i, v)),
        2 => idx.clone().prop_map(Op::Trim),
        1 => (0u32..5).prop_map(Op::SetPromise),
        1 => (0u32..5).prop_map(Op::SetAcceptedRound),
        1 => idx.clone().prop_map(Op::SetDecidedIndex),
        2 => idx.prop_map(Op::SetCompactedIdx),
        1 => prop::option::of(1u32..4).prop_map(Op::SetStopsign),
        1 => prop::option::of((0u64..100, 0u64..100)).prop_map(Op::SetSnapshot),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => op().prop_map(Step::Single),
        4 => prop::collection::vec(op(), 0..5).prop_map(Step::Atomic),
        1 => Just(Step::Reopen),
        2 => (0usize..45, 0usize..45).prop_map(|(a, b)| Step::Entries(a, b)),
        1 => (0usize..45).prop_map(Step::Suffix),
    ]
}

fn snapshot(s: Option<(u64, u64)>) -> Option<TestSnapshot> {
    s.map(|(sum, max)| TestSnapshot { sum, max })
}

fn storage_op(op: &Op) -> StorageOp<TestEntry> {
    match op {
        Op::AppendEntry(v) => StorageOp::AppendEntry(TestEntry(*v)),
        Op::AppendEntries(v) => StorageOp::AppendEntries(entries(v.iter().copied())),
        Op::AppendOnPrefix(i, v) => StorageOp::AppendOnPrefix(*i, entries(v.iter().copied())),
        Op::Trim(i) => StorageOp::Trim(*i),
        Op::SetPromise(n) => StorageOp::SetPromise(ballot(*n)),
        Op::SetAcceptedRound(n) => StorageOp::SetAcceptedRound(ballot(*n)),
        Op::SetDecidedIndex(i) => StorageOp::SetDecidedIndex(*i),
        Op::SetCompactedIdx(i) => StorageOp::SetCompactedIdx(*i),
        Op::SetStopsign(c) => StorageOp::SetStopsign(c.map(stopsign)),
        Op::SetSnapshot(s) => StorageOp::SetSnapshot(snapshot(*s)),
    }
}

/// Sends `op` through the matching single-op method.
fn single<S: Storage<TestEntry>>(s: &mut S, op: &Op) -> bool {
    let r = match op {
        Op::AppendEntry(v) => s.append_entry(TestEntry(*v)),
        Op::AppendEntries(v) => s.append_entries(entries(v.iter().copied())),
        Op::AppendOnPrefix(i, v) => s.append_on_prefix(*i, entries(v.iter().copied())),
        Op::Trim(i) => s.trim(*i),
        Op::SetPromise(n) => s.set_promise(ballot(*n)),
        Op::SetAcceptedRound(n) => s.set_accepted_round(ballot(*n)),
        Op::SetDecidedIndex(i) => s.set_decided_idx(*i),
        Op::SetCompactedIdx(i) => s.set_compacted_idx(*i),
        Op::SetStopsign(c) => s.set_stopsign(c.map(stopsign)),
        Op::SetSnapshot(x) => s.set_snapshot(snapshot(*x)),
    };
    r.is_ok()
}

fn atomic<S: Storage<TestEntry>>(s: &mut S, ops: &[Op]) -> bool {
    s.write_atomically(ops.iter().map(storage_op).collect())
        .is_ok()
}

/// The naive reference: the documented semantics, spelled out.
#[derive(Clone, Debug, Default)]
struct Model {
    log: BTreeMap<usize, u64>,
    first: usize,
    end: usize,
    promise: Option<u32>,
    accepted: Option<u32>,
    decided: usize,
    compacted: usize,
    stopsign: Option<u32>,
    snapshot: Option<(u64, u64)>,
}

impl Model {
    fn apply_one(&mut self, op: &Op) -> Result<(), ()> {
        match op {
            Op::AppendEntry(v) => self.push(&[*v]),
            Op::AppendEntries(v) => self.push(v),
            Op::AppendOnPrefix(from, v) => {
                if *from < self.first || (*from > self.end && !v.is_empty()) {
                    return Err(());
                }
                if *from < self.end {
                    self.log.retain(|i, _| i < from);
                    self.end = *from;
                }
                self.push(v);
            }
            Op::Trim(idx) => {
                if *idx > self.first {
                    self.log.retain(|i, _| i >= idx);
                    self.first = *idx;
                    self.end = self.end.max(*idx);
                }
            }
            Op::SetPromise(n) => self.promise = Some(*n),
            Op::SetAcceptedRound(n) => self.accepted = Some(*n),
            Op::SetDecidedIndex(i) => self.decided = *i,
            Op::SetCompactedIdx(i) => self.compacted = *i,
            Op::SetStopsign(c) => self.stopsign = *c,
            Op::SetSnapshot(s) => self.snapshot = *s,
        }
        Ok(())
    }

    fn push(&mut self, values: &[u64]) {
        for v in values {
            self.log.insert(self.end, *v);
            self.end += 1;
        }
    }

    /// All or nothing, with the end-of-write invariant.
    fn apply(&mut self, ops: &[Op]) -> bool {
        let mut next = self.clone();
        for op in ops {
            if next.apply_one(op).is_err() {
                return false;
            }
        }
        if next.compacted > next.end {
            return false;
        }
        *self = next;
        true
    }

    fn entries(&self, from: usize, to: usize) -> Vec<u64> {
        if self.first <= from && from < to && to <= self.end {
            (from..to).map(|i| self.log[&i]).collect()
        } else {
            Vec::new()
        }
    }
}

fn values(v: Vec<TestEntry>) -> Vec<u64> {
    v.into_iter().map(|e| e.0).collect()
}

/// Every getter of `s` agrees with the model.
fn assert_matches<S: Storage<TestEntry>>(name: &str, s: &S, m: &Model) {
    assert_eq!(s.get_log_len().unwrap(), m.end - m.first, "{name} log_len");
    assert_eq!(
        values(s.get_entries(m.first, m.end).unwrap()),
        m.entries(m.first, m.end),
        "{name} whole log"
    );
    assert_eq!(
        s.get_promise().unwrap(),
        m.promise.map(ballot),
        "{name} promise"
    );
    assert_eq!(
        s.get_accepted_round().unwrap(),
        m.accepted.map(ballot),
        "{name} accepted"
    );
    assert_eq!(s.get_decided_idx().unwrap(), m.decided, "{name} decided");
    assert_eq!(
        s.get_compacted_idx().unwrap(),
        m.compacted,
        "{name} compacted"
    );
    let ss: Option<StopSign> = m.stopsign.map(stopsign);
    assert_eq!(s.get_stopsign().unwrap(), ss, "{name} stopsign");
    assert_eq!(
        s.get_snapshot().unwrap(),
        snapshot(m.snapshot),
        "{name} snapshot"
    );
}

/// The durable backend under test, when built with it.
#[cfg(feature = "rocksdb")]
struct Durable {
    harness: crate::common::RocksHarness,
    storage: Option<<crate::common::RocksHarness as StorageHarness>::Storage>,
}

#[cfg(feature = "rocksdb")]
impl Durable {
    fn new() -> Self {
        let mut harness = crate::common::RocksHarness::new();
        let storage = Some(harness.open().unwrap());
        Durable { harness, storage }
    }

    fn get(&mut self) -> &mut <crate::common::RocksHarness as StorageHarness>::Storage {
        self.storage.as_mut().unwrap()
    }

    fn reopen(&mut self) {
        let s = self.storage.take().unwrap();
        self.storage = Some(self.harness.reopen(s).unwrap());
    }
}

fn run(steps: Vec<Step>) {
    let mut model = Model::default();
    let mut memory = MemoryStorage::<TestEntry>::new();
    #[cfg(feature = "rocksdb")]
    let mut durable = Durable::new();
    for (n, step) in steps.iter().enumerate() {
        match step {
            Step::Single(op) => {
                let expected = model.apply(std::slice::from_ref(op));
                assert_eq!(single(&mut memory, op), expected, "step {n}: memory {op:?}");
                #[cfg(feature = "rocksdb")]
                assert_eq!(
                    single(durable.get(), op),
                    expected,
                    "step {n}: rocksdb {op:?}"
                );
            }
            Step::Atomic(ops) => {
                let expected = model.apply(ops);
                assert_eq!(
                    atomic(&mut memory, ops),
                    expected,
                    "step {n}: memory {ops:?}"
                );
                #[cfg(feature = "rocksdb")]
                assert_eq!(
                    atomic(durable.get(), ops),
                    expected,
                    "step {n}: rocksdb {ops:?}"
                );
            }
            Step::Reopen => {
                #[cfg(feature = "rocksdb")]
                durable.reopen();
            }
            Step::Entries(a, b) => {
                let expected = model.entries(*a, *b);
                assert_eq!(values(memory.get_entries(*a, *b).unwrap()), expected);
                #[cfg(feature = "rocksdb")]
                assert_eq!(values(durable.get().get_entries(*a, *b).unwrap()), expected);
            }
            Step::Suffix(a) => {
                let expected = model.entries(*a, model.end);
                assert_eq!(values(memory.get_suffix(*a).unwrap()), expected);
                #[cfg(feature = "rocksdb")]
                assert_eq!(values(durable.get().get_suffix(*a).unwrap()), expected);
            }
        }
        assert_matches("memory", &memory, &model);
        #[cfg(feature = "rocksdb")]
        assert_matches("rocksdb", durable.get(), &model);
    }
    #[cfg(feature = "rocksdb")]
    {
        durable.reopen();
        assert_matches("rocksdb after final reopen", durable.get(), &model);
        assert_eq!(
            durable.get().verify_log().unwrap(),
            (model.end - model.first) as u64
        );
    }
}

proptest! {
    // Each case opens a RocksDB in a temporary directory and fsyncs every
    // write, so the case count is modest; PROPTEST_CASES raises it.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(32),
        ..ProptestConfig::default()
    })]

    #[test]
    fn backends_match_the_reference_model(steps in prop::collection::vec(step(), 1..40)) {
        run(steps);
    }
}

#[test]
fn model_check_covers_refusals_and_trims_past_the_end() {
    // A fixed sequence that exercises the branches random runs may miss.
    run(vec![
        Step::Atomic(vec![Op::AppendEntries(vec![1, 2, 3])]),
        Step::Single(Op::Trim(7)),
        Step::Reopen,
        Step::Single(Op::AppendOnPrefix(6, vec![9])),
        Step::Single(Op::AppendOnPrefix(8, vec![9])),
        Step::Single(Op::AppendOnPrefix(7, vec![70, 71])),
        Step::Single(Op::SetCompactedIdx(10)),
        Step::Atomic(vec![Op::SetCompactedIdx(10), Op::AppendEntry(72)]),
        Step::Reopen,
        Step::Entries(7, 10),
        Step::Suffix(8),
    ]);
}
