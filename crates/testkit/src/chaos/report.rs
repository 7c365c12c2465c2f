//! What a chaos run found: operation counts, faults injected, availability,
//! recovery after the final heal, and the checker's verdict, printed as a
//! table and written as JSON (`--report`).

use std::path::Path;

use serde::Serialize;
use tsoracle_paxos_checker::{History, Outcome};

use crate::error::Error;
use crate::load::verdict;
use crate::run::println_out;

/// The availability bucket: a bucket counts as available when at least one
/// operation completed successfully in it.
pub(crate) const BUCKET_MS: u64 = 100;

/// Successful and failed requests of one kind.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct OpCount {
    pub(crate) ok: u64,
    pub(crate) failed: u64,
}

/// Requests by kind.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct Ops {
    pub(crate) get_ts: OpCount,
    pub(crate) get_seq: OpCount,
}

/// Faults injected, by kind.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct Faults {
    /// `kill -9` of a node (the leader's included).
    pub(crate) kills: u64,
    /// Kills whose target was the leader the client saw.
    pub(crate) leader_kills: u64,
    pub(crate) restarts: u64,
    /// Both directed links between two nodes cut.
    pub(crate) link_cuts: u64,
    /// One directed link stalled.
    pub(crate) one_way_cuts: u64,
    /// Every link of the leader cut while clients still reach it.
    pub(crate) leader_isolations: u64,
    /// Isolations of a node that was not known to lead (no leader seen).
    pub(crate) other_isolations: u64,
    /// Link faults undone.
    pub(crate) heals: u64,
    /// SIGSTOP of a node (the leader's included) while clients keep
    /// sending to it.
    pub(crate) pauses: u64,
    /// Pauses whose target was the leader the client saw.
    pub(crate) leader_pauses: u64,
    /// SIGCONT of a paused node.
    pub(crate) resumes: u64,
    /// Members replaced by a new node under load (`member replace`).
    pub(crate) replacements: u64,
    /// Replacements whose old member was the leader the client saw.
    pub(crate) leader_replacements: u64,
    /// SIGTERM of a node (a planned restart), restarted when the fault
    /// ended.
    pub(crate) terminations: u64,
    /// Terminations whose target was the leader the client saw.
    pub(crate) leader_terminations: u64,
    /// Of the leader's terminations, those whose log says it handed its
    /// leadership over before it exited.
    pub(crate) hand_overs: u64,
}

/// The requests of the workers pinned to a paused node (a client that
/// knows only that node's endpoint, so it cannot move on to the others).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct Pinned {
    /// Pinned workers started, over all pauses.
    pub(crate) workers: u64,
    pub(crate) ok: u64,
    pub(crate) failed: u64,
    /// Successful requests invoked while their node was stopped and
    /// answered after its SIGCONT: they waited in the node's sockets, the
    /// case a resumed old leader must not answer from its old window. (The
    /// answer came from that node, or from the leader it redirected to.)
    pub(crate) queued_across_pause: u64,
}

/// How much of the run had successful operations.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub(crate) struct Availability {
    pub(crate) bucket_ms: u64,
    pub(crate) buckets: u64,
    pub(crate) available_buckets: u64,
    /// `available_buckets / buckets`.
    pub(crate) fraction: f64,
    /// The longest stretch without a completed operation, run edges included.
    pub(crate) longest_gap_ms: f64,
    /// When that stretch began (ms since the load started).
    pub(crate) longest_gap_from_ms: u64,
}

/// A timestamped line of the run's timeline.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Event {
    pub(crate) at_ms: u64,
    pub(crate) what: String,
}

/// One named check and its outcome.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Check {
    pub(crate) pass: bool,
    pub(crate) rule: String,
}

/// The whole report; serialized as `--report`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ChaosReport {
    pub(crate) pass: bool,
    pub(crate) seed: u64,
    pub(crate) nodes: u64,
    pub(crate) workers: u32,
    pub(crate) duration_s: f64,
    pub(crate) ops: Ops,
    pub(crate) timestamps: usize,
    pub(crate) dense_blocks: usize,
    pub(crate) faults: Faults,
    /// Requests of the workers pinned to paused nodes; they are part of
    /// `ops` and of the checked history too.
    pub(crate) pinned: Pinned,
    pub(crate) availability: Availability,
    /// Availability over the fault-free period at the end.
    pub(crate) quiet_availability: Availability,
    /// From the final heal to the first completion after it.
    pub(crate) recovery_ms: Option<f64>,
    pub(crate) recovery_bound_ms: u64,
    pub(crate) latency_ms: Latency,
    /// The longest stretch without a completed operation from the start
    /// of a fault to the start of the next (or the end), worst per kind.
    pub(crate) worst_gaps_ms: WorstGaps,
    pub(crate) checks: Vec<Check>,
    /// How many violations the checker found.
    pub(crate) violation_count: usize,
    /// The checker's first violations (at most 20).
    pub(crate) violations: Vec<String>,
    pub(crate) events: Vec<Event>,
}

/// The kinds of fault, for [`worst_gaps`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FaultKind {
    Kill,
    LinkCut,
    OneWayCut,
    Isolation,
    Pause,
    Restart,
    Replace,
}

/// The worst gap after each kind of fault, in milliseconds (`None`: the
/// kind did not occur).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub(crate) struct WorstGaps {
    pub(crate) kill: Option<f64>,
    pub(crate) link_cut: Option<f64>,
    pub(crate) one_way_cut: Option<f64>,
    pub(crate) isolation: Option<f64>,
    pub(crate) pause: Option<f64>,
    pub(crate) restart: Option<f64>,
    pub(crate) replace: Option<f64>,
}

/// Attributes outages to faults: for each fault (kind, start µs, in start
/// order) the longest gap between completions from its start to the next
/// fault's start (or `end`), and the worst of each kind.
pub(crate) fn worst_gaps(completions: &[u64], started: &[(FaultKind, u64)], end: u64) -> WorstGaps {
    let mut worst = WorstGaps::default();
    for (i, &(kind, from)) in started.iter().enumerate() {
        let to = started.get(i + 1).map_or(end, |&(_, next)| next);
        let gap = availability(completions, from, to).longest_gap_ms;
        let slot = match kind {
            FaultKind::Kill => &mut worst.kill,
            FaultKind::LinkCut => &mut worst.link_cut,
            FaultKind::OneWayCut => &mut worst.one_way_cut,
            FaultKind::Isolation => &mut worst.isolation,
            FaultKind::Pause => &mut worst.pause,
            FaultKind::Restart => &mut worst.restart,
            FaultKind::Replace => &mut worst.replace,
        };
        *slot = Some(slot.map_or(gap, |w| w.max(gap)));
    }
    worst
}

/// Latency percentiles of successful requests, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct Latency {
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) max: f64,
}

/// Counts the successful operations of `history` by kind.
pub(crate) fn ok_counts(history: &History) -> (u64, u64) {
    let dense = history
        .ops
        .iter()
        .filter(|op| matches!(op.outcome, Outcome::Dense { .. }))
        .count() as u64;
    (history.ops.len() as u64 - dense, dense)
}

/// Availability of the window `[from, to)` (µs since the load started),
/// given every completion time (µs, any order).
pub(crate) fn availability(completions: &[u64], from: u64, to: u64) -> Availability {
    let bucket = BUCKET_MS * 1000;
    // Whole buckets only: a short last one would count against the run.
    let buckets = to.saturating_sub(from) / bucket;
    let mut inside: Vec<u64> = completions
        .iter()
        .copied()
        .filter(|&t| t >= from && t < to)
        .collect();
    inside.sort_unstable();
    let mut hit: Vec<u64> = inside
        .iter()
        .map(|&t| (t - from) / bucket)
        .filter(|&b| b < buckets)
        .collect();
    hit.dedup();
    let mut edges = Vec::with_capacity(inside.len() + 2);
    edges.push(from);
    edges.extend(&inside);
    edges.push(to.max(from));
    let (longest, longest_from) = edges
        .windows(2)
        .map(|w| (w[1] - w[0], w[0]))
        .max_by_key(|&(gap, _)| gap)
        .unwrap_or((0, from));
    Availability {
        bucket_ms: BUCKET_MS,
        buckets,
        available_buckets: hit.len() as u64,
        fraction: if buckets == 0 {
            0.0
        } else {
            hit.len() as f64 / buckets as f64
        },
        longest_gap_ms: longest as f64 / 1000.0,
        longest_gap_from_ms: longest_from / 1000,
    }
}

/// From `heal` to the first completion after it (µs in, ms out).
pub(crate) fn recovery_ms(completions: &[u64], heal: u64) -> Option<f64> {
    completions
        .iter()
        .copied()
        .filter(|&t| t > heal)
        .min()
        .map(|t| (t - heal) as f64 / 1000.0)
}

impl ChaosReport {
    /// Prints the table and the checks.
    pub(crate) fn print(&self) {
        let f = &self.faults;
        let a = &self.availability;
        let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0} ms"));
        let mut lines = vec![
            String::new(),
            format!(
                "chaos report (seed {}, {:.0} s, {} nodes, {} workers)",
                self.seed, self.duration_s, self.nodes, self.workers
            ),
            format!(
                "  get_ts                {:>8} ok {:>6} failed",
                self.ops.get_ts.ok, self.ops.get_ts.failed
            ),
            format!(
                "  get_seq               {:>8} ok {:>6} failed",
                self.ops.get_seq.ok, self.ops.get_seq.failed
            ),
            format!(
                "  faults                {} kills ({} of the leader), {} restarts, {} link cuts, \
                 {} one-way cuts, {} leader isolations{}, {} heals, {} pauses ({} of the \
                 leader), {} resumes, {} SIGTERM restarts ({} of the leader, {} handed over), \
                 {} replacements ({} of the leader)",
                f.kills,
                f.leader_kills,
                f.restarts,
                f.link_cuts,
                f.one_way_cuts,
                f.leader_isolations,
                if f.other_isolations > 0 {
                    format!(" (+{} of a non-leader)", f.other_isolations)
                } else {
                    String::new()
                },
                f.heals,
                f.pauses,
                f.leader_pauses,
                f.resumes,
                f.terminations,
                f.leader_terminations,
                f.hand_overs,
                f.replacements,
                f.leader_replacements
            ),
            format!(
                "  pinned to paused node {} workers, {} ok ({} sent during a pause, answered after \
                 SIGCONT), {} failed",
                self.pinned.workers,
                self.pinned.ok,
                self.pinned.queued_across_pause,
                self.pinned.failed
            ),
            format!(
                "  availability          {:.1}% of {} ms buckets ({}/{}), longest gap {:.0} ms \
                 (from {:.1} s)",
                a.fraction * 100.0,
                a.bucket_ms,
                a.available_buckets,
                a.buckets,
                a.longest_gap_ms,
                a.longest_gap_from_ms as f64 / 1000.0
            ),
            format!(
                "  worst gap after       kill {}, link cut {}, one-way cut {}, isolation {}, \
                 pause {}, SIGTERM restart {}, replace {}",
                ms(self.worst_gaps_ms.kill),
                ms(self.worst_gaps_ms.link_cut),
                ms(self.worst_gaps_ms.one_way_cut),
                ms(self.worst_gaps_ms.isolation),
                ms(self.worst_gaps_ms.pause),
                ms(self.worst_gaps_ms.restart),
                ms(self.worst_gaps_ms.replace)
            ),
            format!(
                "  quiet period          {:.1}% available",
                self.quiet_availability.fraction * 100.0
            ),
            format!(
                "  recovery after heal   {} (bound {} ms)",
                ms(self.recovery_ms),
                self.recovery_bound_ms
            ),
            format!(
                "  latency ms            p50 {:.2}  p99 {:.2}  max {:.2}",
                self.latency_ms.p50, self.latency_ms.p99, self.latency_ms.max
            ),
            "checks".to_owned(),
        ];
        for check in &self.checks {
            lines.push(format!("  {}  {}", verdict(check.pass), check.rule));
        }
        if self.violation_count > 0 {
            lines.push(format!(
                "  {} violations (the first {} below)",
                self.violation_count,
                self.violation_count.min(10)
            ));
        }
        for violation in self.violations.iter().take(10) {
            lines.push(format!("  violation: {violation}"));
        }
        for line in lines {
            println_out(&line);
        }
    }

    /// Writes the report as JSON to `path` (its directory created).
    pub(crate) fn write(&self, path: &Path) -> Result<(), Error> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|err| Error::runtime("chaos report", err))?;
        }
        let json = serde_json::to_string_pretty(self)
            .map_err(|err| Error::runtime("chaos report", err))?;
        std::fs::write(path, json + "\n").map_err(|err| {
            Error::runtime(
                "chaos report",
                format!("cannot write {}: {err}", path.display()),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn availability_counts_buckets_and_the_longest_gap() {
        // 1 s window: completions in buckets 0, 1 and 9; gap 150 ms -> 950 ms.
        let a = availability(&[10_000, 150_000, 950_000, 2_000_000], 0, 1_000_000);
        assert_eq!((a.buckets, a.available_buckets), (10, 3));
        assert!((a.fraction - 0.3).abs() < 1e-9);
        assert!((a.longest_gap_ms - 800.0).abs() < 1e-9);
        assert_eq!(a.longest_gap_from_ms, 150);
        // Nothing at all: the whole window is the gap.
        let none = availability(&[], 0, 550_000);
        assert_eq!((none.buckets, none.available_buckets), (5, 0));
        assert!((none.longest_gap_ms - 550.0).abs() < 1e-9);
    }

    #[test]
    fn each_gap_goes_to_the_fault_it_follows() {
        let completions = [0, 100_000, 900_000, 1_000_000, 1_050_000, 2_000_000];
        let started = [
            (FaultKind::Kill, 50_000),
            (FaultKind::LinkCut, 950_000),
            (FaultKind::Kill, 1_500_000),
        ];
        let worst = worst_gaps(&completions, &started, 2_000_000);
        // Kill 1: 100 ms -> 900 ms; kill 2: 1.5 s -> 2.0 s; the cut: 1.05 s -> 1.5 s.
        assert_eq!(worst.kill, Some(800.0));
        assert_eq!(worst.link_cut, Some(450.0));
        assert_eq!(
            (
                worst.one_way_cut,
                worst.isolation,
                worst.pause,
                worst.restart,
                worst.replace
            ),
            (None, None, None, None, None)
        );
    }

    #[test]
    fn recovery_is_the_first_completion_after_the_heal() {
        assert_eq!(recovery_ms(&[100, 5_000, 3_000], 1_000), Some(2.0));
        assert_eq!(recovery_ms(&[100], 1_000), None);
    }
}
