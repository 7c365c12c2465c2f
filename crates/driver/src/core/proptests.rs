//! Property tests across modules: the leader lease between two nodes with
//! drifting clocks (invariant 5), and the precision of `next_wakeup`.
//!
//! # The two-node model (invariant 5)
//!
//! Node A is elected under ballot `b1` at real time `a_elected`; node B first
//! observes itself accept-phase leader under the higher ballot `b2` at real
//! time `t2 > a_elected`. Each node's monotonic clock reads
//! `offset + real × (1 + k)` with `|k| <= drift` (real time in whole
//! milliseconds, so the clock is exact integer nanoseconds and rounding cannot
//! hide or invent a violation).
//!
//! A proposes whenever its tracker wants a renewal, and also on chosen
//! milliseconds or every millisecond. Protocol assumption (see
//! `crate::timing` for why Paxos guarantees it): **only A's proposals made
//! before `t2` can be decided under `b1`**. Each of them is decided after an
//! arbitrary delay (possibly after `t2`, possibly never); later ones never
//! are. A keeps observing itself leader under `b1` until it learns of `b2`,
//! possibly never (a partitioned old leader that clients can still reach). B
//! renews the same way under `b2`.
//!
//! Property: at no sampled real instant at or after the first one at which B
//! reports `Leader` does A report `Leader`.

use std::time::Duration;

use omnipaxos::ballot_leader_election::Ballot;
use proptest::prelude::*;

use crate::core::lease::{LeaseTracker, Observation};
use crate::core::role::Role;
use crate::core::timing::Timing;

const PPM: i64 = 1_000_000;

#[derive(Debug, Clone, Copy)]
struct Clock {
    offset_ns: u64,
    /// Rate error in parts per million, `|rate_ppm| <= drift ppm`.
    rate_ppm: i64,
}

impl Clock {
    fn local(&self, real_ms: u64) -> Duration {
        // rate_ppm >= -200_000, so the factor is positive.
        let per_ms = u64::try_from(PPM + self.rate_ppm).unwrap();
        Duration::from_nanos(self.offset_ns + real_ms * per_ms)
    }
}

#[derive(Debug, Clone)]
struct Scenario {
    timing: Timing,
    a_clock: Clock,
    b_clock: Clock,
    a_elected: u64,
    t2: u64,
    /// Milliseconds after `t2` at which A learns of `b2`; `None`: never.
    a_learns_after: Option<u64>,
    a_chatty: bool,
    a_extra: Vec<u64>,
    /// Decision delays (ms) of A's proposals, used in turn; `None`: lost.
    a_delays: Vec<Option<u64>>,
    b_delays: Vec<Option<u64>>,
}

#[derive(Debug, Default, PartialEq)]
struct Run {
    a_led_until: Option<u64>,
    b_led_from: Option<u64>,
    /// First real instant at which A reported Leader at or after B's first.
    violation: Option<u64>,
}

struct Node {
    tracker: LeaseTracker,
    clock: Clock,
    /// (deliver at real ms, proposal local time)
    pending: Vec<(u64, Duration)>,
    delays: Vec<Option<u64>>,
    next_delay: usize,
}

impl Node {
    fn new(me: u64, scenario: &Scenario, clock: Clock, delays: Vec<Option<u64>>) -> Self {
        Self {
            tracker: LeaseTracker::new(me, &scenario.timing).unwrap(),
            clock,
            pending: Vec::new(),
            delays,
            next_delay: 0,
        }
    }

    fn observe(&mut self, t: u64, observation: Observation) {
        self.tracker
            .observe(self.clock.local(t), observation)
            .unwrap();
    }

    fn deliver(&mut self, t: u64, ballot: Ballot) {
        let (due, later): (Vec<_>, Vec<_>) = self.pending.iter().partition(|(at, _)| *at <= t);
        self.pending = later;
        for (_, proposed_at) in due {
            self.tracker.decided(proposed_at, ballot);
        }
    }

    /// Proposes at `t`; `decidable` says whether the protocol allows this
    /// proposal to be decided under `ballot`.
    fn propose(&mut self, t: u64, ballot: Ballot, decidable: bool) {
        let local = self.clock.local(t);
        self.tracker.proposed(local, ballot);
        let delay = self.delays[self.next_delay % self.delays.len()];
        self.next_delay += 1;
        if let (true, Some(delay)) = (decidable, delay) {
            self.pending.push((t + delay, local));
        }
    }
}

fn leading(promise: Ballot) -> Observation {
    Observation {
        promise,
        leader: Some((promise.pid, true)),
    }
}

fn simulate(s: &Scenario) -> Run {
    let b1 = Ballot::with(1, 1, 0, 1);
    let b2 = Ballot::with(1, 2, 0, 2);
    let mut a = Node::new(1, s, s.a_clock, s.a_delays.clone());
    let mut b = Node::new(2, s, s.b_clock, s.b_delays.clone());
    let a_learns = s.a_learns_after.map(|gap| s.t2 + gap);
    let horizon = s.t2 + 400;
    let mut run = Run::default();
    for t in 0..=horizon {
        // Node A: leader under b1 from a_elected until it learns of b2.
        let a_leads = t >= s.a_elected && a_learns.is_none_or(|learn| t < learn);
        let a_obs = if t < s.a_elected {
            Observation {
                promise: Ballot::default(),
                leader: None,
            }
        } else if a_leads {
            leading(b1)
        } else {
            leading(b2)
        };
        a.observe(t, a_obs);
        a.deliver(t, b1);
        let a_role = a.tracker.role(a.clock.local(t));

        // Node B: follower of b1, then leader under b2 from t2.
        let b_obs = if t >= s.t2 {
            leading(b2)
        } else if t >= s.a_elected {
            leading(b1)
        } else {
            Observation {
                promise: Ballot::default(),
                leader: None,
            }
        };
        b.observe(t, b_obs);
        b.deliver(t, b2);
        let b_role = b.tracker.role(b.clock.local(t));

        if b_role.is_leader() && run.b_led_from.is_none() {
            run.b_led_from = Some(t);
        }
        if a_role.is_leader() {
            run.a_led_until = Some(t);
            if run.b_led_from.is_some() && run.violation.is_none() {
                run.violation = Some(t);
            }
        }
        if let Role::Leader(term) = a_role {
            assert_eq!(term.ballot(), b1);
        }

        // Proposals at the end of the millisecond.
        if a_leads {
            let wants = a.tracker.wants_renewal(a.clock.local(t));
            if wants || s.a_chatty || s.a_extra.contains(&t) {
                a.propose(t, b1, t < s.t2);
            }
        }
        if t >= s.t2 && b.tracker.wants_renewal(b.clock.local(t)) {
            b.propose(t, b2, true);
        }
    }
    run
}

fn drift_strategy() -> impl Strategy<Value = i64> {
    prop_oneof![Just(0), Just(200_000), Just(10_000), 0..=200_000i64]
}

/// A rate in `[-drift, drift]`, often at either extreme.
fn rate(drift_ppm: i64) -> impl Strategy<Value = i64> {
    prop_oneof![Just(-drift_ppm), Just(drift_ppm), -drift_ppm..=drift_ppm]
}

fn delays(max: u64) -> impl Strategy<Value = Vec<Option<u64>>> {
    proptest::collection::vec(
        prop_oneof![
            3 => (0..=5u64).prop_map(Some),
            2 => (0..=max).prop_map(Some),
            1 => Just(None),
        ],
        1..16,
    )
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (drift_strategy(), 20u64..=95, any::<u64>()).prop_flat_map(|(drift_ppm, lease_ms, pick)| {
        let drift = drift_ppm as f64 / 1e6;
        let timing_probe = Timing {
            tick: Duration::from_millis(10),
            election_ticks: 10,
            lease: Duration::from_millis(lease_ms),
            drift,
            renew_every: Duration::from_millis(1),
        };
        let half = (timing_probe.leader_lease_validity().as_millis() as u64 / 2).max(1);
        let timing = Timing {
            renew_every: Duration::from_millis(1 + pick % half),
            ..timing_probe
        };
        (
            Just(timing),
            (0..1_000_000_000_000u64, rate(drift_ppm)),
            (0..1_000_000_000_000u64, rate(drift_ppm)),
            0u64..20,
            1u64..=300,
            proptest::option::of(0u64..300),
            any::<bool>(),
            proptest::collection::vec(0u64..800, 0..20),
            delays(200),
            delays(10),
        )
            .prop_map(
                |(
                    timing,
                    (a_off, a_rate),
                    (b_off, b_rate),
                    a_elected,
                    gap,
                    a_learns_after,
                    a_chatty,
                    a_extra,
                    a_delays,
                    b_delays,
                )| Scenario {
                    timing,
                    a_clock: Clock {
                        offset_ns: a_off,
                        rate_ppm: a_rate,
                    },
                    b_clock: Clock {
                        offset_ns: b_off,
                        rate_ppm: b_rate,
                    },
                    a_elected,
                    t2: a_elected + gap,
                    a_learns_after,
                    a_chatty,
                    a_extra,
                    a_delays,
                    b_delays,
                },
            )
    })
}

/// The tightest case: 20% drift, A's clock slow and B's fast, A proposes
/// every millisecond and every proposal before `t2` is decided at once.
fn worst_case() -> Scenario {
    Scenario {
        timing: Timing {
            tick: Duration::from_millis(10),
            election_ticks: 10,
            lease: Duration::from_millis(50),
            drift: 0.2,
            renew_every: Duration::from_millis(10),
        },
        a_clock: Clock {
            offset_ns: 12_345,
            rate_ppm: -200_000,
        },
        b_clock: Clock {
            offset_ns: 999_999_999,
            rate_ppm: 200_000,
        },
        a_elected: 0,
        t2: 100,
        a_learns_after: None,
        a_chatty: true,
        a_extra: Vec::new(),
        a_delays: vec![Some(0)],
        b_delays: vec![Some(0)],
    }
}

#[test]
fn worst_case_is_tight_but_safe() {
    let run = simulate(&worst_case());
    // A's last decided proposal is at 99 ms; its lease lasts exactly 50 ms of
    // real time at the slow rate: it leads up to 148 ms. B, elected at 100,
    // waits exactly 50 ms of real time at the fast rate: it leads from 150.
    assert_eq!(run.a_led_until, Some(148));
    assert_eq!(run.b_led_from, Some(150));
    assert_eq!(run.violation, None);
}

#[test]
fn an_isolated_old_leader_stops_on_its_own() {
    // A never learns of b2 and keeps proposing; nothing after t2 is decided.
    let scenario = Scenario {
        a_delays: vec![Some(3)],
        ..worst_case()
    };
    let run = simulate(&scenario);
    assert!(run.a_led_until.is_some_and(|t| t < 150), "{run:?}");
    assert_eq!(run.violation, None);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Invariant 5: an old leader never reports Leader at or after the first
    /// instant a new leader (higher ballot) does, whatever the clock drift
    /// within bounds, the decision delays, and whether the old leader ever
    /// learns of the new ballot.
    #[test]
    fn old_and_new_leader_never_overlap(s in scenario()) {
        let run = simulate(&s);
        prop_assert_eq!(run.violation, None, "{:?}", run);
    }
}

// ---- next_wakeup is exact ----

#[derive(Debug, Clone)]
enum Op {
    /// Observe this node (1) leading under round `n`, or in its prepare phase.
    Lead {
        n: u32,
        accepting: bool,
    },
    /// Observe node 2 leading under round `n`.
    Follow {
        n: u32,
    },
    Proposed {
        n: u32,
    },
    /// Decided, proposed `ago` ms before now.
    Decided {
        n: u32,
        ago: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (1u32..4, prop::bool::weighted(0.9)).prop_map(|(n, accepting)| Op::Lead { n, accepting }),
        1 => (1u32..4).prop_map(|n| Op::Follow { n }),
        1 => (1u32..4).prop_map(|n| Op::Proposed { n }),
        3 => (1u32..4, 0u64..100).prop_map(|(n, ago)| Op::Decided { n, ago }),
    ]
}

proptest! {
    /// `role` and `wants_renewal` are constant on `[now, next_wakeup)` and one
    /// of them changes at `next_wakeup`; without a wakeup neither changes.
    #[test]
    fn next_wakeup_is_exact(
        ops in proptest::collection::vec((0u64..40, op()), 1..40),
        probes in proptest::collection::vec(0u64..1_000_000, 1..8),
    ) {
        let timing = crate::core::timing::tests::sample();
        let mut tracker = LeaseTracker::new(1, &timing).unwrap();
        let mut now = Duration::from_millis(1_000);
        for (dt, op) in ops {
            now += Duration::from_millis(dt);
            match op {
                Op::Lead { n, accepting } => tracker
                    .observe(now, Observation {
                        promise: Ballot::with(1, n, 0, 1),
                        leader: Some((1, accepting)),
                    })
                    .unwrap(),
                Op::Follow { n } => tracker
                    .observe(now, leading(Ballot::with(1, n, 0, 2)))
                    .unwrap(),
                Op::Proposed { n } => tracker.proposed(now, Ballot::with(1, n, 0, 1)),
                Op::Decided { n, ago } => {
                    let at = now.saturating_sub(Duration::from_millis(ago));
                    tracker.decided(at, Ballot::with(1, n, 0, 1));
                }
            }
        }
        let role = tracker.role(now);
        let wants = tracker.wants_renewal(now);
        let wakeup = tracker.next_wakeup(now);
        let span = match wakeup {
            Some(w) => {
                prop_assert!(w > now);
                prop_assert!(
                    tracker.role(w) != role || tracker.wants_renewal(w) != wants,
                    "nothing changes at the wakeup {:?} (now {:?})", w, now
                );
                w - now
            }
            None => Duration::from_secs(3_600),
        };
        let last = span - Duration::from_nanos(1);
        let mut points: Vec<Duration> = probes
            .iter()
            .map(|p| span.mul_f64(*p as f64 / 1e6).min(last))
            .collect();
        points.push(Duration::ZERO);
        points.push(last);
        for offset in points {
            let t = now + offset;
            prop_assert_eq!(tracker.role(t), role, "at {:?} (now {:?}, wakeup {:?})", t, now, wakeup);
            prop_assert_eq!(tracker.wants_renewal(t), wants, "at {:?}", t);
        }
    }
}
