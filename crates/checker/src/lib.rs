//! A checker for histories of timestamp-oracle client operations, shared by
//! the demo, the simulation and the chaos run.
//!
//! A history is a list of [`Op`]s, each with the worker that issued it, when
//! it was invoked and when it completed (on one clock), and what it returned.
//! [`check`] reports every:
//!
//! - duplicate timestamp (two results, in one operation or two, equal);
//! - real-time order violation: an operation invoked after another
//!   *completed* returned a timestamp not above every timestamp of that one;
//! - non-increasing timestamps within one worker;
//! - overlapping dense blocks of one key;
//! - lost dense block: an acknowledged block that reaches above the final
//!   counter of its key, when final counters are given.
//!
//! Failed operations are not part of a history: they returned nothing.
//!
//! ```
//! use tsoracle_paxos_checker::{History, Op, Outcome, check};
//!
//! let mut history = History::default();
//! history.push(Op { worker: 0, invoked: 0, completed: 10, outcome: Outcome::Timestamps(vec![5]) });
//! history.push(Op { worker: 1, invoked: 20, completed: 30, outcome: Outcome::Timestamps(vec![4]) });
//! let report = check(&history);
//! assert_eq!(report.violations.len(), 1); // 4 was returned after 5 was received
//! assert!(!report.is_ok());
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};

/// What one successful operation returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// `get_ts` / `get_ts_batch`: the timestamps, in the order returned.
    Timestamps(Vec<u64>),
    /// `get_seq`: the block `[start, start + count)` of `key`.
    Dense {
        /// The sequence key.
        key: String,
        /// First value of the block.
        start: u64,
        /// Length of the block.
        count: u32,
    },
}

/// One successful client operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// The issuing worker; a worker issues one operation at a time.
    pub worker: u32,
    /// When the request was sent (any fixed clock, e.g. microseconds since
    /// the run started).
    pub invoked: u64,
    /// When the response arrived, on the same clock.
    pub completed: u64,
    /// What it returned.
    pub outcome: Outcome,
}

/// A recorded history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// The operations, in any order.
    pub ops: Vec<Op>,
    /// Each key's counter read after the run, if known (for lost blocks).
    pub final_counters: BTreeMap<String, u64>,
}

impl History {
    /// Adds an operation.
    pub fn push(&mut self, op: Op) {
        self.ops.push(op);
    }
}

/// One broken rule, naming the operations involved (indices into
/// [`History::ops`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// The same timestamp was returned twice.
    DuplicateTimestamp {
        /// The timestamp.
        value: u64,
        /// The two operations that returned it (equal when one operation
        /// returned it twice).
        ops: (usize, usize),
    },
    /// `later` was invoked after `earlier` completed, yet returned a
    /// timestamp not above all of `earlier`'s.
    RealTimeOrder {
        /// The operation that completed first.
        earlier: usize,
        /// The operation invoked after it.
        later: usize,
    },
    /// A worker's timestamps did not strictly increase.
    WorkerNotIncreasing {
        /// The worker.
        worker: u32,
        /// The operation that went back.
        op: usize,
    },
    /// Two dense blocks of one key overlap.
    DenseOverlap {
        /// The key.
        key: String,
        /// The two operations.
        ops: (usize, usize),
    },
    /// An acknowledged block reaches above its key's final counter: the
    /// counter lost an acknowledged advance.
    DenseLost {
        /// The key.
        key: String,
        /// The operation.
        op: usize,
        /// The final counter.
        counter: u64,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DuplicateTimestamp { value, ops } => {
                write!(
                    f,
                    "timestamp {value} returned twice (ops {} and {})",
                    ops.0, ops.1
                )
            }
            Self::RealTimeOrder { earlier, later } => write!(
                f,
                "op {later} started after op {earlier} completed but returned a smaller timestamp"
            ),
            Self::WorkerNotIncreasing { worker, op } => {
                write!(
                    f,
                    "worker {worker}: op {op} returned a timestamp not above its previous one"
                )
            }
            Self::DenseOverlap { key, ops } => {
                write!(
                    f,
                    "dense key {key:?}: blocks of ops {} and {} overlap",
                    ops.0, ops.1
                )
            }
            Self::DenseLost { key, op, counter } => write!(
                f,
                "dense key {key:?}: op {op}'s block ends above the final counter {counter}"
            ),
        }
    }
}

/// What [`check`] found, with the counts checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Every violation found.
    pub violations: Vec<Violation>,
    /// Timestamps checked.
    pub timestamps: usize,
    /// Dense blocks checked.
    pub dense_blocks: usize,
}

impl Report {
    /// No violation.
    #[must_use]
    pub fn is_ok(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Checks every rule over `history`.
#[must_use]
pub fn check(history: &History) -> Report {
    let mut report = Report::default();
    let ts: Vec<(usize, &Op, &[u64])> = history
        .ops
        .iter()
        .enumerate()
        .filter_map(|(i, op)| match &op.outcome {
            Outcome::Timestamps(values) if !values.is_empty() => Some((i, op, values.as_slice())),
            _ => None,
        })
        .collect();
    report.timestamps = ts.iter().map(|(_, _, v)| v.len()).sum();
    duplicates(&ts, &mut report.violations);
    real_time_order(&ts, &mut report.violations);
    per_worker(&ts, &mut report.violations);
    dense(history, &mut report);
    report
}

fn duplicates(ts: &[(usize, &Op, &[u64])], out: &mut Vec<Violation>) {
    let mut seen: HashMap<u64, usize> = HashMap::new();
    for &(i, _, values) in ts {
        for &value in values {
            if let Some(&first) = seen.get(&value) {
                out.push(Violation::DuplicateTimestamp {
                    value,
                    ops: (first, i),
                });
            } else {
                seen.insert(value, i);
            }
        }
    }
}

/// Sweeps operations by invocation time, keeping the largest timestamp of
/// every operation completed strictly before: each one's smallest result
/// must be above it.
fn real_time_order(ts: &[(usize, &Op, &[u64])], out: &mut Vec<Violation>) {
    let mut by_completion: Vec<(u64, u64, usize)> = ts
        .iter()
        .map(|&(i, op, values)| (op.completed, values.iter().copied().max().unwrap_or(0), i))
        .collect();
    by_completion.sort_unstable();
    let mut by_invocation: Vec<(u64, u64, usize)> = ts
        .iter()
        .map(|&(i, op, values)| (op.invoked, values.iter().copied().min().unwrap_or(0), i))
        .collect();
    by_invocation.sort_unstable();
    let mut done = 0;
    let mut max_done: Option<(u64, usize)> = None;
    for (invoked, min_value, i) in by_invocation {
        while done < by_completion.len() && by_completion[done].0 < invoked {
            let (_, value, j) = by_completion[done];
            if max_done.is_none_or(|(m, _)| value > m) {
                max_done = Some((value, j));
            }
            done += 1;
        }
        if let Some((max, j)) = max_done
            && min_value <= max
        {
            out.push(Violation::RealTimeOrder {
                earlier: j,
                later: i,
            });
        }
    }
}

fn per_worker(ts: &[(usize, &Op, &[u64])], out: &mut Vec<Violation>) {
    type WorkerOps<'a> = Vec<(u64, usize, &'a [u64])>;
    let mut by_worker: BTreeMap<u32, WorkerOps<'_>> = BTreeMap::new();
    for &(i, op, values) in ts {
        by_worker
            .entry(op.worker)
            .or_default()
            .push((op.invoked, i, values));
    }
    for (worker, mut ops) in by_worker {
        ops.sort_unstable_by_key(|&(invoked, i, _)| (invoked, i));
        let mut last: Option<u64> = None;
        for (_, i, values) in ops {
            for &value in values {
                if last.is_some_and(|l| value <= l) {
                    out.push(Violation::WorkerNotIncreasing { worker, op: i });
                    break;
                }
                last = Some(value);
            }
        }
    }
}

fn dense(history: &History, report: &mut Report) {
    let mut by_key: BTreeMap<&str, Vec<(u64, u64, usize)>> = BTreeMap::new();
    for (i, op) in history.ops.iter().enumerate() {
        if let Outcome::Dense { key, start, count } = &op.outcome {
            let end = start.saturating_add(u64::from(*count));
            by_key.entry(key).or_default().push((*start, end, i));
        }
    }
    for (key, mut blocks) in by_key {
        report.dense_blocks += blocks.len();
        blocks.sort_unstable();
        for pair in blocks.windows(2) {
            let ((_, end_a, a), (start_b, _, b)) = (pair[0], pair[1]);
            if start_b < end_a {
                report.violations.push(Violation::DenseOverlap {
                    key: key.to_owned(),
                    ops: (a, b),
                });
            }
        }
        if let Some(&counter) = history.final_counters.get(key) {
            for &(_, end, i) in &blocks {
                if end > counter {
                    report.violations.push(Violation::DenseLost {
                        key: key.to_owned(),
                        op: i,
                        counter,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ts(worker: u32, invoked: u64, completed: u64, values: &[u64]) -> Op {
        Op {
            worker,
            invoked,
            completed,
            outcome: Outcome::Timestamps(values.to_vec()),
        }
    }

    fn seq(invoked: u64, key: &str, start: u64, count: u32) -> Op {
        Op {
            worker: 9,
            invoked,
            completed: invoked + 1,
            outcome: Outcome::Dense {
                key: key.to_owned(),
                start,
                count,
            },
        }
    }

    fn history(ops: Vec<Op>) -> History {
        History {
            ops,
            final_counters: BTreeMap::new(),
        }
    }

    #[test]
    fn a_correct_history_passes() {
        let h = history(vec![
            ts(0, 0, 10, &[1, 2]),
            // Concurrent with the first: any order is fine.
            ts(1, 5, 15, &[0]),
            ts(0, 11, 20, &[30]),
            ts(1, 16, 25, &[31]),
            seq(1, "k", 0, 5),
            seq(2, "k", 5, 5),
            seq(3, "j", 0, 1),
        ]);
        let report = check(&h);
        assert!(report.is_ok(), "{:?}", report.violations);
        assert_eq!((report.timestamps, report.dense_blocks), (5, 3));
    }

    #[test]
    fn each_broken_rule_is_reported() {
        let dup = check(&history(vec![ts(0, 0, 1, &[5]), ts(1, 0, 1, &[5])]));
        assert!(matches!(
            dup.violations[..],
            [Violation::DuplicateTimestamp { value: 5, .. }]
        ));

        let order = check(&history(vec![ts(0, 0, 10, &[50]), ts(1, 11, 12, &[40])]));
        assert!(order.violations.contains(&Violation::RealTimeOrder {
            earlier: 0,
            later: 1
        }));

        let worker = check(&history(vec![ts(3, 0, 1, &[9]), ts(3, 0, 1, &[8])]));
        assert!(
            worker
                .violations
                .iter()
                .any(|v| matches!(v, Violation::WorkerNotIncreasing { worker: 3, .. }))
        );

        let overlap = check(&history(vec![seq(0, "k", 0, 5), seq(1, "k", 4, 2)]));
        assert!(
            matches!(&overlap.violations[..], [Violation::DenseOverlap { key, .. }] if key == "k")
        );

        let mut lost = history(vec![seq(0, "k", 0, 5)]);
        lost.final_counters.insert("k".into(), 3);
        assert!(matches!(
            check(&lost).violations[..],
            [Violation::DenseLost { counter: 3, .. }]
        ));
    }

    #[test]
    fn touching_intervals_are_concurrent() {
        // Invoked exactly when the other completed: not "after".
        let h = history(vec![ts(0, 0, 10, &[50]), ts(1, 10, 12, &[40])]);
        assert!(check(&h).is_ok());
    }

    proptest! {
        /// Sequential operations returning increasing values always pass;
        /// swapping two values of operations that do not overlap in time
        /// always fails.
        #[test]
        fn sequential_histories(n in 2usize..40, swap in any::<proptest::sample::Index>()) {
            let ops: Vec<Op> = (0..n)
                .map(|i| {
                    let t = i as u64 * 10;
                    ts((i % 3) as u32, t, t + 5, &[t + 100])
                })
                .collect();
            prop_assert!(check(&history(ops.clone())).is_ok());
            let i = swap.index(n - 1);
            let mut broken = ops;
            let (a, b) = (broken[i].outcome.clone(), broken[i + 1].outcome.clone());
            broken[i].outcome = b;
            broken[i + 1].outcome = a;
            prop_assert!(!check(&history(broken)).is_ok());
        }
    }
}
