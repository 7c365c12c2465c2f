//! The fault schedule of a chaos run, drawn up front from one seed so that
//! `--seed` replays it: which faults, when, for how long, and on which
//! nodes. Only "the leader" is resolved when the fault starts (whichever
//! node the client last saw leading), with a drawn node as the fallback.
//!
//! Faults come one at a time, each healed (or its node restarted) before
//! the next, so at most one node is ever down or cut off and a majority
//! always stays connected: the run must keep making progress. Kinds are
//! drawn in shuffled rounds of all four, so a run long enough for four
//! faults sees each kind at least once.

use std::time::Duration;

/// The kinds of fault, drawn in shuffled rounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Kill,
    LinkCut,
    OneWayCut,
    LeaderIsolation,
}

/// Whom a node fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Who {
    /// The leader when the fault starts; `fallback` when none is known.
    Leader { fallback: u64 },
    /// A given node.
    Node(u64),
}

/// What a fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// SIGKILL a node, restart it when the fault ends.
    Kill(Who),
    /// Cut both directed links between two nodes.
    LinkCut(u64, u64),
    /// Stall one directed link: `from`'s messages to `to` are held back
    /// while `to`'s to `from` still flow.
    OneWayCut { from: u64, to: u64 },
    /// Cut every link into and out of the leader; clients still reach it.
    LeaderIsolation { fallback: u64 },
}

/// One fault: it starts `at` (since the load started) and lasts `hold`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Step {
    pub(crate) at: Duration,
    pub(crate) hold: Duration,
    pub(crate) fault: Fault,
}

/// Load before the first fault.
pub(crate) const WARMUP: Duration = Duration::from_secs(1);
/// Extra time after a restart before the next fault: the restarted node
/// reopens its storage and its peers reconnect (their backoff reaches 2 s),
/// and until then it is not yet part of the connected majority.
const SETTLE_AFTER_RESTART: Duration = Duration::from_millis(1500);

/// Draws the schedule for a run of `nodes` nodes whose faults must all be
/// over by `faults_end` (since the load started).
pub(crate) fn plan(seed: u64, nodes: u64, faults_end: Duration) -> Vec<Step> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut steps = Vec::new();
    let mut round: Vec<Kind> = Vec::new();
    let mut t = WARMUP;
    let mut after_kill = false;
    loop {
        if round.is_empty() {
            round = vec![
                Kind::Kill,
                Kind::LinkCut,
                Kind::OneWayCut,
                Kind::LeaderIsolation,
            ];
            rng.shuffle(&mut round);
        }
        let Some(kind) = round.pop() else { break };
        let mut gap = Duration::from_millis(rng.u64(300..=1000));
        if after_kill {
            gap += SETTLE_AFTER_RESTART;
        }
        let hold = Duration::from_millis(rng.u64(800..=2500));
        let node = rng.u64(1..=nodes);
        // A second node, distinct from the first.
        let other = (node + rng.u64(1..nodes) - 1) % nodes + 1;
        let fault = match kind {
            Kind::Kill if rng.bool() => Fault::Kill(Who::Leader { fallback: node }),
            Kind::Kill => Fault::Kill(Who::Node(node)),
            Kind::LinkCut => Fault::LinkCut(node, other),
            Kind::OneWayCut => Fault::OneWayCut {
                from: node,
                to: other,
            },
            Kind::LeaderIsolation => Fault::LeaderIsolation { fallback: node },
        };
        if t + gap + hold > faults_end {
            break;
        }
        steps.push(Step {
            at: t + gap,
            hold,
            fault,
        });
        t += gap + hold;
        after_kill = kind == Kind::Kill;
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_its_schedule() {
        let end = Duration::from_secs(55);
        assert_eq!(plan(7, 3, end), plan(7, 3, end));
        assert_ne!(plan(7, 3, end), plan(8, 3, end));
    }

    #[test]
    fn faults_do_not_overlap_and_end_in_time() {
        for seed in 0..200 {
            let end = Duration::from_secs(30);
            let steps = plan(seed, 5, end);
            let mut free_from = WARMUP;
            let node = |n: u64| (1..=5).contains(&n);
            for step in &steps {
                assert!(step.at > free_from, "seed {seed}: {step:?} overlaps");
                free_from = step.at + step.hold;
                match step.fault {
                    Fault::LinkCut(a, b) | Fault::OneWayCut { from: a, to: b } => {
                        assert!(a != b && node(a) && node(b), "seed {seed}: {step:?}");
                    }
                    Fault::Kill(Who::Node(n) | Who::Leader { fallback: n })
                    | Fault::LeaderIsolation { fallback: n } => assert!(node(n)),
                }
            }
            assert!(free_from <= end, "seed {seed}");
            // Every kind comes up in a 30 s run.
            let kinds = [
                steps.iter().any(|s| matches!(s.fault, Fault::Kill(_))),
                steps.iter().any(|s| matches!(s.fault, Fault::LinkCut(..))),
                steps
                    .iter()
                    .any(|s| matches!(s.fault, Fault::OneWayCut { .. })),
                steps
                    .iter()
                    .any(|s| matches!(s.fault, Fault::LeaderIsolation { .. })),
            ];
            assert_eq!(kinds, [true; 4], "seed {seed}");
        }
    }
}
