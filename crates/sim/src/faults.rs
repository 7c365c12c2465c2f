//! The fault schedule: what goes wrong, when, and for how long.
//!
//! Faults are drawn from the run's seed: node crashes (and restarts after a
//! while), processes paused as by SIGSTOP (the leader's most often) while
//! clients keep sending to them, the current leader isolated from its peers
//! while clients still reach it, symmetric and one-way link cuts, and changes of the network's
//! loss, delay, jitter, reordering and duplication. At most a minority of
//! nodes is down at once. Every fault is undone after its duration, and all
//! are undone at the end of the faulty phase.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use omnipaxos::util::NodeId;
use tsoracle_paxos_harness::memnet::Faults;

/// Faults injected in one run, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Node crashes (each followed by a restart).
    pub crashes: u64,
    /// The leader cut off from its peers while clients still reach it.
    pub leader_isolations: u64,
    /// Links cut in both directions.
    pub cuts: u64,
    /// Links cut in one direction.
    pub one_way_cuts: u64,
    /// Changes of loss, delay, jitter, reordering and duplication.
    pub network_changes: u64,
    /// A node's outbound links slowed (a congested path), the leader's most
    /// often.
    pub slow_links: u64,
    /// The leader isolated, then, when it rejoins, the leader of the moment
    /// isolated in turn, so leadership flaps (and often comes back).
    pub flaps: u64,
    /// Every link out of the leader cut while it still hears its peers.
    pub mutes: u64,
    /// Gray failures: the leader's inbound links slow, then its outbound
    /// links fail.
    pub gray_failures: u64,
    /// Processes paused (SIGSTOP) and resumed, clients still sending to
    /// them.
    pub pauses: u64,
    /// Data directories lost (the `Amnesia` fault), at most one per run.
    pub wipes: u64,
    /// Membership changes asked for (a node added, removed or replaced).
    pub changes: u64,
    /// StopSigns forged on peer links (`ForwardStopSign`s that name no
    /// agreed change); the admission must drop every one.
    pub forged_stop_signs: u64,
    /// Of those, the ones carried out before the run ended.
    pub changes_done: u64,
    /// Planned hand-overs of the leader (`PaxosDriver::hand_over`, as
    /// `serve` does on SIGTERM), most followed by a restart of the old
    /// leader.
    pub hand_overs: u64,
    /// Failed syncs (the `TornSync` fault): on the leader after its entries
    /// left, or on a follower that alone completed its majority. Armed.
    pub torn_syncs: u64,
    /// Of the armed ones, those whose sync failed (the follower then
    /// restarted and the old leader was cut off).
    pub torn_syncs_fired: u64,
}

impl FaultCounts {
    /// Adds another run's counts.
    pub fn add(&mut self, other: &FaultCounts) {
        self.crashes += other.crashes;
        self.leader_isolations += other.leader_isolations;
        self.cuts += other.cuts;
        self.one_way_cuts += other.one_way_cuts;
        self.network_changes += other.network_changes;
        self.forged_stop_signs += other.forged_stop_signs;
        self.slow_links += other.slow_links;
        self.flaps += other.flaps;
        self.mutes += other.mutes;
        self.gray_failures += other.gray_failures;
        self.pauses += other.pauses;
        self.wipes += other.wipes;
        self.changes += other.changes;
        self.changes_done += other.changes_done;
        self.hand_overs += other.hand_overs;
        self.torn_syncs += other.torn_syncs;
        self.torn_syncs_fired += other.torn_syncs_fired;
    }
}

impl fmt::Display for FaultCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} crashes, {} pauses, {} leader isolations, {} flaps, {} leader mutes, {} gray \
             failures, {} cuts, {} one-way cuts, {} slowed nodes, {} network changes, {} wiped \
             data directories, {} membership changes ({} done), {} forged StopSigns, {} \
             leader hand-overs, {} failed syncs ({} fired)",
            self.crashes,
            self.pauses,
            self.leader_isolations,
            self.flaps,
            self.mutes,
            self.gray_failures,
            self.cuts,
            self.one_way_cuts,
            self.slow_links,
            self.network_changes,
            self.wipes,
            self.changes,
            self.changes_done,
            self.forged_stop_signs,
            self.hand_overs,
            self.torn_syncs,
            self.torn_syncs_fired
        )
    }
}

/// One fault to start now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Fault {
    Crash(NodeId),
    /// The leader hands its leadership over (as on SIGTERM), then, with
    /// `restart`, stops and starts again later (a rolling restart). With
    /// `slow_inbound`, the links into the leader are slowed by that much
    /// first (an asymmetric path): it then hears of its successor late, and
    /// only the order "stop serving, then release" keeps the two apart.
    HandOver {
        restart: bool,
        slow_inbound: Option<Duration>,
    },
    /// Pause a node's process (`None`: the leader's) for `length`, while
    /// clients pinned to it keep sending; its lease clock keeps running.
    Pause {
        node: Option<NodeId>,
        length: Duration,
        /// On resume, whether its waiting requests run before its
        /// consensus loop (nothing orders them in a real process).
        requests_first: bool,
    },
    IsolateLeader,
    /// Isolate the leader; when it rejoins, isolate the leader of then.
    Flap,
    /// Cut every link out of the leader; it still hears its peers.
    MuteLeader,
    /// A gray failure: the leader's inbound links slow down by `slow`, and
    /// `after` that its outbound links fail.
    GrayLeader {
        slow: Duration,
        after: Duration,
    },
    /// Slow every link out of (`inbound: false`) or into a node (`None`: the
    /// leader) by this.
    Slow {
        node: Option<NodeId>,
        inbound: bool,
        extra: Duration,
    },
    Cut(NodeId, NodeId),
    CutOneWay(NodeId, NodeId),
    Network(Faults),
    /// The sequence that loses decided data if a node with a wiped data
    /// directory may vote again: `lagging` is cut off while the others
    /// decide for `lag`; then `victim` crashes and loses its directory,
    /// the nodes that saw those decisions are cut off, `lagging` comes
    /// back, and `victim` restarts on empty storage, as a member that ran
    /// before (`refused_at_start`) or, by an operator's mistake, as a
    /// founding one (its peers must refuse its new instance).
    Amnesia {
        victim: NodeId,
        lagging: NodeId,
        lag: Duration,
        refused_at_start: bool,
    },
    /// A sync fails (EIO) on `victim`: 0 the leader, 1 or 2 the first or
    /// second follower. A follower victim alone completes the leader's
    /// majority: the leader is cut from the other follower, the victim gets
    /// entries, and the sync of the round that wrote them fails; its
    /// process stops and restarts, and the old leader is cut off, so the
    /// victim and the other follower must go on from what was synced (an
    /// `Accepted` sent before that sync would have let the leader decide
    /// entries no majority kept). A leader victim has sent its entries
    /// before its failed sync; it stops and restarts, and nothing
    /// acknowledged may be lost.
    TornSync {
        victim: u8,
    },
}

/// What undoes a fault, due at some time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Undo {
    Restart(NodeId),
    /// SIGCONT (see [`Fault::Pause`]).
    Resume {
        node: NodeId,
        requests_first: bool,
    },
    Rejoin(NodeId),
    /// Rejoin the node, then isolate whoever leads now.
    FlapOn(NodeId),
    /// Remove the extra delay of the node's links (both directions).
    Unslow(NodeId),
    /// Restore the links out of a muted node.
    Unmute(NodeId),
    /// Mute the node now (the second step of a gray failure).
    Mute(NodeId),
    Heal(NodeId, NodeId),
    HealOneWay(NodeId, NodeId),
    /// The second step of [`Fault::TornSync`], tried again until `until`:
    /// once the victim's sync failed, restart it; for a follower victim,
    /// heal `cut` (the leader, the other follower) and isolate the leader.
    TornSync {
        victim: NodeId,
        cut: Option<(NodeId, NodeId)>,
        until: Duration,
    },
    /// The second step of [`Fault::Amnesia`].
    Wipe {
        victim: NodeId,
        lagging: NodeId,
        refused_at_start: bool,
    },
}

/// Undo actions by due time (virtual time since the run began).
#[derive(Debug, Default)]
pub(crate) struct Agenda {
    due: BTreeMap<Duration, Vec<Undo>>,
}

impl Agenda {
    pub(crate) fn push(&mut self, at: Duration, undo: Undo) {
        self.due.entry(at).or_default().push(undo);
    }

    /// The earliest due time.
    pub(crate) fn next(&self) -> Option<Duration> {
        self.due.keys().next().copied()
    }

    /// Removes and returns everything due at or before `now`.
    pub(crate) fn take_due(&mut self, now: Duration) -> Vec<Undo> {
        let later = self.due.split_off(&(now + Duration::from_nanos(1)));
        let due = std::mem::replace(&mut self.due, later);
        due.into_values().flatten().collect()
    }

    /// Removes and returns everything.
    pub(crate) fn take_all(&mut self) -> Vec<Undo> {
        std::mem::take(&mut self.due)
            .into_values()
            .flatten()
            .collect()
    }
}

/// Draws the next fault for a cluster of `nodes` nodes.
///
/// `lease` is the leader's effective lease: a gray failure slows links to a
/// fraction of it, the range in which a deposed leader may still hold its
/// lease when its followers give up on it (the new-leader wait's reason to
/// be).
pub(crate) fn draw(
    rng: &mut fastrand::Rng,
    nodes: u64,
    election: Duration,
    lease: Duration,
) -> Fault {
    let node = |rng: &mut fastrand::Rng| rng.u64(1..=nodes);
    let pair = |rng: &mut fastrand::Rng| {
        let a = rng.u64(1..=nodes);
        let mut b = rng.u64(1..nodes);
        if b >= a {
            b += 1;
        }
        (a, b)
    };
    match rng.u8(0..20) {
        0..=2 => Fault::Crash(node(rng)),
        3..=4 => Fault::IsolateLeader,
        5..=6 => Fault::Flap,
        7..=8 => {
            // From a fifth of an election timeout to more than one: slow
            // enough, at times, that heartbeats miss their round while the
            // leader still holds a lease.
            let extra = election.mul_f64(0.2 + rng.f64() * 0.9);
            let node = if rng.u8(0..3) == 0 {
                Some(node(rng))
            } else {
                None
            };
            Fault::Slow {
                node,
                inbound: rng.bool(),
                extra,
            }
        }
        9 => {
            if rng.bool() {
                Fault::MuteLeader
            } else {
                Fault::GrayLeader {
                    slow: lease.mul_f64(0.3 + rng.f64() * 0.6),
                    after: election.mul_f64(1.0 + rng.f64() * 4.0),
                }
            }
        }
        10 => {
            let (a, b) = pair(rng);
            Fault::Cut(a, b)
        }
        11 => {
            let (a, b) = pair(rng);
            Fault::CutOneWay(a, b)
        }
        12..=14 => Fault::Network(network(rng, election)),
        19 => Fault::TornSync {
            victim: rng.u8(0..3),
        },
        18 => Fault::HandOver {
            restart: rng.u8(0..4) != 0,
            slow_inbound: rng.bool().then(|| lease.mul_f64(0.3 + rng.f64() * 0.9)),
        },
        17 => {
            let (victim, lagging) = pair(rng);
            Fault::Amnesia {
                victim,
                lagging,
                lag: election.mul_f64(3.0 + rng.f64() * 6.0),
                refused_at_start: rng.bool(),
            }
        }
        _ => {
            // From shorter than an election (the lease may outlive it) to
            // long enough for a new leader to be elected and serve.
            let node = if rng.u8(0..4) == 0 {
                Some(node(rng))
            } else {
                None
            };
            Fault::Pause {
                node,
                length: election.mul_f64(0.5 + rng.f64() * 8.0),
                requests_first: rng.bool(),
            }
        }
    }
}

/// Random network faults that keep a heartbeat round trip inside one
/// election timeout (OmniPaxos' assumption; slower links make elections
/// flap, which is a liveness matter).
fn network(rng: &mut fastrand::Rng, election: Duration) -> Faults {
    if rng.u8(0..4) == 0 {
        return Faults::default();
    }
    // Loss and reordering stay rare: the real transport is a stream per
    // link, which loses or reorders only when a connection breaks, and each
    // gap costs OmniPaxos a resend timeout or a re-sync.
    Faults {
        drop: rng.f64() * 0.01,
        duplicate: rng.f64() * 0.05,
        delay: election.mul_f64(rng.f64() * 0.05),
        jitter: election.mul_f64(rng.f64() * 0.2),
        reorder: rng.f64() * 0.02,
        reorder_window: rng.usize(1..=4),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agenda_hands_out_what_is_due_in_time_order() {
        let mut agenda = Agenda::default();
        let ms = Duration::from_millis;
        agenda.push(ms(30), Undo::Restart(1));
        agenda.push(ms(10), Undo::Rejoin(2));
        agenda.push(ms(10), Undo::Heal(1, 2));
        assert_eq!(agenda.next(), Some(ms(10)));
        assert_eq!(
            agenda.take_due(ms(20)),
            vec![Undo::Rejoin(2), Undo::Heal(1, 2)]
        );
        assert_eq!(agenda.take_due(ms(20)), vec![]);
        assert_eq!(agenda.take_all(), vec![Undo::Restart(1)]);
    }

    #[test]
    fn drawn_faults_name_real_nodes_and_distinct_pairs() {
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..1_000 {
            let ms = Duration::from_millis;
            match draw(&mut rng, 3, ms(100), ms(80)) {
                Fault::Crash(n) => assert!((1..=3).contains(&n)),
                Fault::Cut(a, b)
                | Fault::CutOneWay(a, b)
                | Fault::Amnesia {
                    victim: a,
                    lagging: b,
                    ..
                } => {
                    assert!(a != b && (1..=3).contains(&a) && (1..=3).contains(&b));
                }
                Fault::Slow { node: Some(n), .. } | Fault::Pause { node: Some(n), .. } => {
                    assert!((1..=3).contains(&n));
                }
                Fault::IsolateLeader
                | Fault::HandOver { .. }
                | Fault::TornSync { .. }
                | Fault::Flap
                | Fault::MuteLeader
                | Fault::GrayLeader { .. }
                | Fault::Slow { node: None, .. }
                | Fault::Pause { node: None, .. }
                | Fault::Network(_) => {}
            }
        }
    }
}
