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
//!   counter of its key, when final counters are given;
//! - high-water regression: a `persist_high_water` or linearized
//!   `load_high_water` invoked after another completed returned less;
//! - stale dense read: a linearized `load_dense_seq` invoked after a block
//!   of its key was acknowledged returned a counter below that block's end;
//! - lease anomaly: for one holder group, an acquire acknowledged at a lower
//!   holder epoch after a higher one was acknowledged, two lease ids
//!   acknowledged for one holder epoch, a renewal acknowledged for a lease
//!   already superseded, or one lease id granted to two holder epochs. (The
//!   lease rules assume TTLs longer than the run and a holder that never
//!   re-acquires an epoch it released: leases then never lapse on their
//!   own.)
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
    /// A high-water returned by `persist_high_water` (`read: false`: the
    /// stored value after the write) or by a linearized `load_high_water`
    /// (`read: true`).
    HighWater {
        /// The value returned.
        value: u64,
        /// Whether it was a read.
        read: bool,
    },
    /// A linearized `load_dense_seq`: the committed counter of `key`.
    DenseRead {
        /// The sequence key.
        key: String,
        /// The counter returned (the next block start).
        value: u64,
    },
    /// An acknowledged lease acquisition (new or idempotent).
    LeaseAcquired {
        /// The holder group.
        holder: String,
        /// The holder epoch asked for.
        holder_epoch: u64,
        /// The lease granted.
        lease_id: u64,
    },
    /// An acknowledged renewal of `lease_id`.
    LeaseRenewed {
        /// The holder group the lease belongs to.
        holder: String,
        /// The lease renewed.
        lease_id: u64,
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
    /// `later` was invoked after `earlier` completed, yet returned a smaller
    /// high-water.
    HighWaterRegression {
        /// The operation that completed first.
        earlier: usize,
        /// The operation invoked after it.
        later: usize,
    },
    /// A read of `key`'s counter, invoked after `block` was acknowledged,
    /// returned less than the block's end.
    StaleDenseRead {
        /// The key.
        key: String,
        /// The read.
        read: usize,
        /// The acknowledged block it missed.
        block: usize,
    },
    /// Two lease operations of one holder group that cannot both be right.
    LeaseAnomaly {
        /// The holder group.
        holder: String,
        /// Which rule broke.
        rule: LeaseRule,
        /// The operation that completed first, and the later one.
        ops: (usize, usize),
    },
}

/// The lease rules of [`Violation::LeaseAnomaly`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseRule {
    /// An acquire at a lower holder epoch was acknowledged after one at a
    /// higher epoch (the higher lease was lost).
    StaleEpochGranted,
    /// One holder epoch was granted two lease ids (not idempotent).
    EpochGrantedTwice,
    /// A lease was renewed after a higher epoch superseded it.
    SupersededRenewed,
    /// One lease id was granted to two holder epochs.
    LeaseIdReused,
}

impl fmt::Display for LeaseRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::StaleEpochGranted => "a lower holder epoch was granted after a higher one",
            Self::EpochGrantedTwice => "one holder epoch was granted two lease ids",
            Self::SupersededRenewed => "a superseded lease was renewed",
            Self::LeaseIdReused => "one lease id was granted to two holder epochs",
        })
    }
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
            Self::HighWaterRegression { earlier, later } => write!(
                f,
                "op {later} started after op {earlier} completed but returned a smaller high-water"
            ),
            Self::StaleDenseRead { key, read, block } => write!(
                f,
                "dense key {key:?}: read {read} started after block {block} was acknowledged \
                 but returned a counter below its end"
            ),
            Self::LeaseAnomaly { holder, rule, ops } => write!(
                f,
                "lease holder {holder:?}: {rule} (ops {} then {})",
                ops.0, ops.1
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
    /// High-water writes and reads checked.
    pub high_waters: usize,
    /// Dense counter reads checked.
    pub dense_reads: usize,
    /// Lease acquisitions and renewals checked.
    pub lease_ops: usize,
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
    high_water(history, &mut report);
    dense_reads(history, &mut report);
    leases(history, &mut report);
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

/// Each operation's smallest timestamp must be above the largest timestamp
/// of every operation completed before it was invoked.
fn real_time_order(ts: &[(usize, &Op, &[u64])], out: &mut Vec<Violation>) {
    let ops: Vec<Swept> = ts
        .iter()
        .map(|&(index, op, values)| Swept {
            invoked: op.invoked,
            completed: op.completed,
            low: values.iter().copied().min().unwrap_or(0),
            high: values.iter().copied().max().unwrap_or(0),
            index,
        })
        .collect();
    sweep(&ops, Order::Increasing, |earlier, later| {
        out.push(Violation::RealTimeOrder { earlier, later });
    });
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

/// An operation as [`sweep`] sees it: judged at its invocation by `low`,
/// and, once completed, a bound by `high` for every later operation.
#[derive(Clone, Copy)]
struct Swept {
    invoked: u64,
    completed: u64,
    low: u64,
    high: u64,
    /// Index into [`History::ops`].
    index: usize,
}

impl Swept {
    /// An operation with one value.
    fn single(invoked: u64, completed: u64, value: u64, index: usize) -> Self {
        Self {
            invoked,
            completed,
            low: value,
            high: value,
            index,
        }
    }
}

/// What real time demands of a later operation's `low` against the `high`
/// of the operations completed before it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Order {
    /// Strictly above (timestamps).
    Increasing,
    /// Not below (a high-water, a counter).
    NonDecreasing,
}

/// Sweeps `ops` by invocation time, keeping the largest `high` of every
/// operation completed strictly before, and calls `on_violation(earlier,
/// later)` for each operation whose `low` breaks `order` against it.
fn sweep(ops: &[Swept], order: Order, mut on_violation: impl FnMut(usize, usize)) {
    let mut by_completion: Vec<(u64, u64, usize)> =
        ops.iter().map(|o| (o.completed, o.high, o.index)).collect();
    by_completion.sort_unstable();
    let mut by_invocation: Vec<(u64, u64, usize)> =
        ops.iter().map(|o| (o.invoked, o.low, o.index)).collect();
    by_invocation.sort_unstable();
    let mut done = 0;
    let mut max_done: Option<(u64, usize)> = None;
    for (invoked, low, later) in by_invocation {
        while done < by_completion.len() && by_completion[done].0 < invoked {
            let (_, high, earlier) = by_completion[done];
            if max_done.is_none_or(|(m, _)| high > m) {
                max_done = Some((high, earlier));
            }
            done += 1;
        }
        if let Some((max, earlier)) = max_done {
            let broken = match order {
                Order::Increasing => low <= max,
                Order::NonDecreasing => low < max,
            };
            if broken {
                on_violation(earlier, later);
            }
        }
    }
}

fn high_water(history: &History, report: &mut Report) {
    let ops: Vec<Swept> = history
        .ops
        .iter()
        .enumerate()
        .filter_map(|(i, op)| match op.outcome {
            Outcome::HighWater { value, .. } => {
                Some(Swept::single(op.invoked, op.completed, value, i))
            }
            _ => None,
        })
        .collect();
    report.high_waters = ops.len();
    sweep(&ops, Order::NonDecreasing, |earlier, later| {
        report
            .violations
            .push(Violation::HighWaterRegression { earlier, later });
    });
}

/// Per key, a read must return at least the end of every block acknowledged
/// before it started, and at least what every earlier read returned
/// (counters never go back). Blocks are bounds only: a block starting below
/// an earlier one's end overlaps it, which the overlap rule reports.
fn dense_reads(history: &History, report: &mut Report) {
    let mut by_key: BTreeMap<&str, Vec<Swept>> = BTreeMap::new();
    for (i, op) in history.ops.iter().enumerate() {
        let (key, swept) = match &op.outcome {
            Outcome::Dense { key, start, count } => (
                key,
                Swept {
                    invoked: op.invoked,
                    completed: op.completed,
                    // Never judged itself.
                    low: u64::MAX,
                    high: start.saturating_add(u64::from(*count)),
                    index: i,
                },
            ),
            Outcome::DenseRead { key, value } => {
                report.dense_reads += 1;
                (key, Swept::single(op.invoked, op.completed, *value, i))
            }
            _ => continue,
        };
        by_key.entry(key).or_default().push(swept);
    }
    for (key, ops) in by_key {
        sweep(&ops, Order::NonDecreasing, |block, read| {
            report.violations.push(Violation::StaleDenseRead {
                key: key.to_owned(),
                read,
                block,
            });
        });
    }
}

/// The lease rules, per holder group, over operations ordered in real time.
fn leases(history: &History, report: &mut Report) {
    struct LeaseOp {
        index: usize,
        invoked: u64,
        completed: u64,
        /// `Some(epoch)` for an acquire, `None` for a renewal.
        epoch: Option<u64>,
        lease_id: u64,
    }
    let mut by_holder: BTreeMap<&str, Vec<LeaseOp>> = BTreeMap::new();
    for (index, op) in history.ops.iter().enumerate() {
        let (holder, epoch, lease_id) = match &op.outcome {
            Outcome::LeaseAcquired {
                holder,
                holder_epoch,
                lease_id,
            } => (holder, Some(*holder_epoch), *lease_id),
            Outcome::LeaseRenewed { holder, lease_id } => (holder, None, *lease_id),
            _ => continue,
        };
        report.lease_ops += 1;
        by_holder.entry(holder).or_default().push(LeaseOp {
            index,
            invoked: op.invoked,
            completed: op.completed,
            epoch,
            lease_id,
        });
    }
    // Lease ids are unique across holders too.
    let mut granted: HashMap<u64, (usize, &str, u64)> = HashMap::new();
    for (holder, ops) in &by_holder {
        let epoch_of_id: HashMap<u64, u64> = ops
            .iter()
            .filter_map(|o| o.epoch.map(|e| (o.lease_id, e)))
            .collect();
        for a in ops {
            if let Some(epoch) = a.epoch {
                match granted.get(&a.lease_id) {
                    Some(&(first, h, e)) if (h, e) != (*holder, epoch) => {
                        report.violations.push(Violation::LeaseAnomaly {
                            holder: (*holder).to_owned(),
                            rule: LeaseRule::LeaseIdReused,
                            ops: (first, a.index),
                        });
                    }
                    Some(_) => {}
                    None => {
                        granted.insert(a.lease_id, (a.index, holder, epoch));
                    }
                }
            }
            for b in ops.iter().filter(|b| a.completed < b.invoked) {
                let Some(a_epoch) = a.epoch else { continue };
                let rule = match b.epoch {
                    Some(b_epoch) if b_epoch < a_epoch => Some(LeaseRule::StaleEpochGranted),
                    Some(b_epoch) if b_epoch == a_epoch && b.lease_id != a.lease_id => {
                        Some(LeaseRule::EpochGrantedTwice)
                    }
                    None if epoch_of_id
                        .get(&b.lease_id)
                        .is_some_and(|renewed| *renewed < a_epoch) =>
                    {
                        Some(LeaseRule::SupersededRenewed)
                    }
                    _ => None,
                };
                if let Some(rule) = rule {
                    report.violations.push(Violation::LeaseAnomaly {
                        holder: (*holder).to_owned(),
                        rule,
                        ops: (a.index, b.index),
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

    fn op(invoked: u64, completed: u64, outcome: Outcome) -> Op {
        Op {
            worker: 7,
            invoked,
            completed,
            outcome,
        }
    }

    fn hw(invoked: u64, value: u64, read: bool) -> Op {
        op(invoked, invoked + 5, Outcome::HighWater { value, read })
    }

    fn dense_read(invoked: u64, key: &str, value: u64) -> Op {
        op(
            invoked,
            invoked + 1,
            Outcome::DenseRead {
                key: key.to_owned(),
                value,
            },
        )
    }

    fn acquire(invoked: u64, holder: &str, holder_epoch: u64, lease_id: u64) -> Op {
        op(
            invoked,
            invoked + 1,
            Outcome::LeaseAcquired {
                holder: holder.to_owned(),
                holder_epoch,
                lease_id,
            },
        )
    }

    fn renew(invoked: u64, holder: &str, lease_id: u64) -> Op {
        op(
            invoked,
            invoked + 1,
            Outcome::LeaseRenewed {
                holder: holder.to_owned(),
                lease_id,
            },
        )
    }

    #[test]
    fn correct_reads_and_leases_pass() {
        let h = history(vec![
            hw(0, 100, false),
            // Concurrent with the write: may or may not see it.
            hw(2, 50, true),
            hw(10, 100, true),
            hw(20, 150, false),
            seq(30, "k", 0, 5),
            dense_read(29, "k", 0), // concurrent with the block
            dense_read(40, "k", 5),
            acquire(50, "h", 1, 10),
            acquire(52, "h", 1, 10), // idempotent
            renew(54, "h", 10),
            acquire(56, "h", 2, 11), // supersedes 10
            renew(58, "h", 11),
            acquire(60, "g", 1, 12),
        ]);
        let report = check(&h);
        assert!(report.is_ok(), "{:?}", report.violations);
        assert_eq!(
            (report.high_waters, report.dense_reads, report.lease_ops),
            (4, 2, 6)
        );
    }

    #[test]
    fn read_and_lease_anomalies_are_reported() {
        let regression = check(&history(vec![hw(0, 100, false), hw(10, 90, true)]));
        assert_eq!(
            regression.violations,
            vec![Violation::HighWaterRegression {
                earlier: 0,
                later: 1
            }]
        );

        let stale = check(&history(vec![seq(0, "k", 0, 5), dense_read(10, "k", 3)]));
        assert_eq!(
            stale.violations,
            vec![Violation::StaleDenseRead {
                key: "k".into(),
                read: 1,
                block: 0
            }]
        );
        // A read that goes back after another read is stale too.
        let back = check(&history(vec![
            dense_read(0, "k", 7),
            dense_read(10, "k", 6),
        ]));
        assert_eq!(back.violations.len(), 1);

        let rule_of = |ops: Vec<Op>| -> Vec<LeaseRule> {
            check(&history(ops))
                .violations
                .into_iter()
                .filter_map(|v| match v {
                    Violation::LeaseAnomaly { rule, .. } => Some(rule),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(
            rule_of(vec![acquire(0, "h", 5, 1), acquire(10, "h", 4, 2)]),
            vec![LeaseRule::StaleEpochGranted]
        );
        assert_eq!(
            rule_of(vec![acquire(0, "h", 5, 1), acquire(10, "h", 5, 2)]),
            vec![LeaseRule::EpochGrantedTwice]
        );
        assert_eq!(
            rule_of(vec![
                acquire(0, "h", 5, 1),
                acquire(10, "h", 6, 2),
                renew(20, "h", 1)
            ]),
            vec![LeaseRule::SupersededRenewed]
        );
        assert_eq!(
            rule_of(vec![acquire(0, "h", 5, 1), acquire(0, "g", 1, 1)]),
            vec![LeaseRule::LeaseIdReused]
        );
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
