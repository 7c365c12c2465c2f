//! The fault schedule of a chaos run, drawn up front from one seed so that
//! `--seed` replays it: which faults, when, for how long, and on which
//! nodes. Only "the leader" is resolved when the fault starts (whichever
//! node the client last saw leading), with a drawn node as the fallback.
//!
//! Faults come one at a time, each healed (or its node restarted) before
//! the next, so at most one node is ever down or cut off and a majority
//! always stays connected: the run must keep making progress. Kinds are
//! drawn in shuffled rounds of all six, so a run long enough for six
//! faults sees each kind at least once. A replacement (`--faults replace`)
//! comes once, last.

use std::time::Duration;

/// The kinds of fault, drawn in shuffled rounds (`--faults` picks some).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub(crate) enum Kind {
    Kill,
    LinkCut,
    OneWayCut,
    #[value(name = "isolation")]
    LeaderIsolation,
    Pause,
    /// SIGTERM a node, mostly the leader (a planned restart: it hands its
    /// leadership over before it exits), and start it again.
    Restart,
    /// Replace a node (the leader, or a drawn one) by a new member under
    /// load. Only when asked for (`--faults replace`); once per run, after
    /// every other fault (afterwards the nodes dial the recorded member
    /// addresses, not their fault-proxy routes, so later link faults would
    /// not cut what they name).
    Replace,
}

impl Kind {
    /// Every kind, in the order rounds list them before the shuffle.
    pub(crate) const ALL: [Self; 6] = [
        Self::Kill,
        Self::LinkCut,
        Self::OneWayCut,
        Self::LeaderIsolation,
        Self::Pause,
        Self::Restart,
    ];
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
    /// SIGSTOP a node (usually the leader) while clients keep sending to
    /// it, SIGCONT it when the fault ends. With `align`, a leader is
    /// stopped only once its timestamp window reaches past the pause (see
    /// [`ALIGN_MARGIN`]), which may take up to the step's `slack`.
    Pause { who: Who, align: bool },
    /// SIGTERM a node (a leader hands over first; it must exit 0), start
    /// it again when the fault ends.
    Terminate(Who),
    /// Start a new node in join mode and `member replace` the target by
    /// it; the target then leaves (exit 0). Not undone.
    Replace(Who),
}

/// One fault: it starts `at` (since the load started), or up to `slack`
/// later, and lasts `hold` from its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Step {
    pub(crate) at: Duration,
    pub(crate) slack: Duration,
    pub(crate) hold: Duration,
    pub(crate) fault: Fault,
}

/// The time a replacement is given: starting the new node, adding it, its
/// catch-up, and removing the old one take a few seconds; the next fault
/// (none: it comes last) or the quiet period starts after this.
pub(crate) const REPLACE_HOLD: Duration = Duration::from_secs(12);

/// Load before the first fault.
pub(crate) const WARMUP: Duration = Duration::from_secs(1);
/// Extra time after a restart before the next fault: the restarted node
/// reopens its storage and its peers reconnect (their backoff reaches 2 s),
/// and until then it is not yet part of the connected majority.
const SETTLE_AFTER_RESTART: Duration = Duration::from_millis(1500);
/// How long a pause lasts, in ms. Longer than a failover (0.6 to 1 s in
/// the chaos runs with `Timing::lan`: a 200 ms election timeout, the
/// election, then the new leader's lease wait), so a new leader usually
/// serves before the old one resumes: the case in which a resumed leader
/// could answer from its old timestamp window. Shorter than the window
/// (`tsoracle-server`'s 3 s) less [`ALIGN_MARGIN`], so an aligned pause
/// ends inside it, and than the pinned clients' per-attempt deadline, so
/// requests queued at the paused node are still awaited when it resumes.
pub(crate) const PAUSE_MS: std::ops::RangeInclusive<u64> = 1000..=2000;
/// An aligned pause of the leader starts only once the leader's window
/// reaches this far past the pause's end. `tsoracle-server` extends the
/// window only when the clock passes its end, so at a random moment it
/// reaches anywhere from 0 to 3 s ahead; a pause that outlasts it makes
/// the resumed node ask the driver for more, which refuses, and the path
/// that answers from the old window goes untested.
pub(crate) const ALIGN_MARGIN: Duration = Duration::from_millis(300);
/// How long an aligned pause may wait for that: the window's end is at
/// most the pause plus [`ALIGN_MARGIN`] away when it does not reach far
/// enough, it is extended once reached, and the poll takes a little.
fn align_slack(hold: Duration) -> Duration {
    hold + ALIGN_MARGIN + Duration::from_millis(300)
}

/// Draws the schedule for a run of `nodes` nodes whose faults, of the
/// given `kinds` (all when empty), must all be over by `faults_end` (since
/// the load started).
pub(crate) fn plan(seed: u64, nodes: u64, kinds: &[Kind], faults_end: Duration) -> Vec<Step> {
    let mut kinds = if kinds.is_empty() {
        Kind::ALL.to_vec()
    } else {
        kinds.to_vec()
    };
    // The order given on the command line does not change the schedule.
    kinds.sort_unstable();
    kinds.dedup();
    let replace = kinds.contains(&Kind::Replace);
    kinds.retain(|&kind| kind != Kind::Replace);
    // The replacement comes last: the others end early enough for its
    // longest gap (after a kill) and its hold.
    let others_end = if replace {
        faults_end.saturating_sub(REPLACE_HOLD + Duration::from_secs(1) + SETTLE_AFTER_RESTART)
    } else {
        faults_end
    };
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut steps = Vec::new();
    let mut round: Vec<Kind> = Vec::new();
    let mut t = WARMUP;
    let mut after_kill = false;
    while !kinds.is_empty() {
        if round.is_empty() {
            round.clone_from(&kinds);
            rng.shuffle(&mut round);
        }
        let Some(kind) = round.pop() else { break };
        let mut gap = Duration::from_millis(rng.u64(300..=1000));
        if after_kill {
            gap += SETTLE_AFTER_RESTART;
        }
        let hold = Duration::from_millis(match kind {
            Kind::Pause => rng.u64(PAUSE_MS),
            _ => rng.u64(800..=2500),
        });
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
            // Mostly the leader (the case a lease must cover), mostly
            // aligned with its window; sometimes a drawn node, often a
            // follower, whose queued requests must be redirected, not
            // answered.
            Kind::Pause => {
                let who = if rng.u64(0..4) == 0 {
                    Who::Node(node)
                } else {
                    Who::Leader { fallback: node }
                };
                Fault::Pause {
                    who,
                    align: rng.u64(0..4) != 0,
                }
            }
            // Mostly the leader: a rolling restart's interesting step.
            Kind::Restart if rng.u64(0..4) != 0 => Fault::Terminate(Who::Leader { fallback: node }),
            Kind::Restart => Fault::Terminate(Who::Node(node)),
            // Taken out of the rounds above.
            Kind::Replace => continue,
        };
        let slack = match fault {
            Fault::Pause { align: true, .. } => align_slack(hold),
            _ => Duration::ZERO,
        };
        if t + gap + slack + hold > others_end {
            break;
        }
        steps.push(Step {
            at: t + gap,
            slack,
            hold,
            fault,
        });
        t += gap + slack + hold;
        after_kill = matches!(kind, Kind::Kill | Kind::Restart);
    }
    if replace {
        let mut gap = Duration::from_millis(rng.u64(300..=1000));
        if after_kill {
            gap += SETTLE_AFTER_RESTART;
        }
        let node = rng.u64(1..=nodes);
        let who = if rng.bool() {
            Who::Leader { fallback: node }
        } else {
            Who::Node(node)
        };
        if t + gap + REPLACE_HOLD <= faults_end {
            steps.push(Step {
                at: t + gap,
                slack: Duration::ZERO,
                hold: REPLACE_HOLD,
                fault: Fault::Replace(who),
            });
        }
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_its_schedule() {
        let end = Duration::from_secs(55);
        assert_eq!(plan(7, 3, &[], end), plan(7, 3, &[], end));
        assert_ne!(plan(7, 3, &[], end), plan(8, 3, &[], end));
    }

    #[test]
    fn faults_do_not_overlap_and_end_in_time() {
        for seed in 0..200 {
            let end = Duration::from_secs(30);
            let steps = plan(seed, 5, &[], end);
            let mut free_from = WARMUP;
            let node = |n: u64| (1..=5).contains(&n);
            for step in &steps {
                assert!(step.at > free_from, "seed {seed}: {step:?} overlaps");
                free_from = step.at + step.slack + step.hold;
                match step.fault {
                    Fault::LinkCut(a, b) | Fault::OneWayCut { from: a, to: b } => {
                        assert!(a != b && node(a) && node(b), "seed {seed}: {step:?}");
                    }
                    Fault::Kill(Who::Node(n) | Who::Leader { fallback: n })
                    | Fault::Terminate(Who::Node(n) | Who::Leader { fallback: n })
                    | Fault::Pause {
                        who: Who::Node(n) | Who::Leader { fallback: n },
                        ..
                    }
                    | Fault::LeaderIsolation { fallback: n } => assert!(node(n)),
                    Fault::Replace(_) => panic!("seed {seed}: a replacement unasked for"),
                }
                if let Fault::Pause { align, .. } = step.fault {
                    let ms = u64::try_from(step.hold.as_millis()).unwrap();
                    assert!(PAUSE_MS.contains(&ms), "seed {seed}: {step:?}");
                    // An aligned pause still ends inside a fresh window.
                    assert!(step.hold + ALIGN_MARGIN < Duration::from_secs(3));
                    assert_eq!(align, !step.slack.is_zero(), "seed {seed}: {step:?}");
                } else {
                    assert!(step.slack.is_zero(), "seed {seed}: {step:?}");
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
                steps.iter().any(|s| matches!(s.fault, Fault::Pause { .. })),
                steps.iter().any(|s| matches!(s.fault, Fault::Terminate(_))),
            ];
            assert_eq!(kinds, [true; 6], "seed {seed}");
        }
    }

    #[test]
    fn a_replacement_comes_once_and_last() {
        for seed in 0..50 {
            let end = Duration::from_secs(30);
            let steps = plan(seed, 3, &[Kind::Replace, Kind::Kill, Kind::Pause], end);
            let replaces = steps
                .iter()
                .filter(|s| matches!(s.fault, Fault::Replace(_)))
                .count();
            assert_eq!(replaces, 1, "seed {seed}: {steps:?}");
            let last = steps.last().unwrap();
            assert!(matches!(last.fault, Fault::Replace(_)), "seed {seed}");
            assert!(last.at + last.hold <= end, "seed {seed}");
            assert!(steps.len() > 2, "seed {seed}: the others still come first");
        }
        // Alone, and the default schedule has none.
        let alone = plan(1, 3, &[Kind::Replace], Duration::from_secs(20));
        assert_eq!(alone.len(), 1);
        assert!(
            plan(1, 3, &[], Duration::from_secs(30))
                .iter()
                .all(|s| !matches!(s.fault, Fault::Replace(_)))
        );
    }

    #[test]
    fn faults_picks_the_kinds() {
        let end = Duration::from_secs(30);
        let steps = plan(3, 3, &[Kind::Pause], end);
        assert!(steps.len() >= 5, "{steps:?}");
        assert!(steps.iter().all(|s| matches!(s.fault, Fault::Pause { .. })));
        // All kinds, in any order, is the default schedule.
        let mut all = Kind::ALL;
        all.reverse();
        assert_eq!(plan(3, 3, &all, end), plan(3, 3, &[], end));
    }
}
