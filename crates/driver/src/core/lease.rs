//! The leader lease as the driver reads it: OmniPaxos observations in,
//! [`Role`] out.
//!
//! The lease itself is kept by the toolkit runner without writing the log
//! (`tsoracle_paxos_toolkit::lease`: lease rounds granted by a majority,
//! grantors that hold their promise). [`LeaseTracker`] only decides what
//! this node may claim from what the runner reported: the promise, the
//! leader, and until when the runner's lease of that promise runs.
//!
//! It is pure: it reads no clock (every method takes `now`, a reading of the
//! node's lease clock as a [`Duration`]), does no I/O and starts no task.
//! See [`crate::timing`] for the rule and the assumptions it rests on.

use std::time::Duration;

use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::util::NodeId;
use tsoracle_paxos_epoch::validate_node_id;

use crate::core::role::{Role, Term};
use crate::core::timing::Timing;
use crate::error::ConfigError;

/// What the driver read from OmniPaxos and the runner at one instant.
///
/// Map it from the toolkit runner's `RunnerStatus { promise, leader,
/// lease_until, .. }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// The ballot this node has promised (`OmniPaxos::get_promise`).
    pub promise: Ballot,
    /// `OmniPaxos::get_current_leader`: the pid of the promised ballot and
    /// whether *this node* is in the accept phase.
    pub leader: Option<(NodeId, bool)>,
    /// When this node's lease of `promise` ends (`RunnerStatus::lease_until`,
    /// on the lease clock); `None` without one.
    pub lease_until: Option<Duration>,
}

/// This node's view of the leadership, as OmniPaxos and the runner report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderView {
    /// The ballot this node has promised (`OmniPaxos::get_promise`).
    pub promise: Ballot,
    /// `OmniPaxos::get_current_leader`: the pid of the promised ballot and
    /// whether this node is in the accept phase (its prepare phase is over).
    pub leader: Option<(NodeId, bool)>,
    /// When this node's lease of `promise` ends, on the host's lease clock
    /// ([`PaxosHighWaterHost::clock`](crate::PaxosHighWaterHost::clock));
    /// `None` when a majority granted it no lease round.
    pub lease_until: Option<Duration>,
    /// A decided StopSign ended this configuration (`OmniPaxos::is_reconfigured`)
    /// and the host has applied everything before it. The driver then
    /// serves nothing: every call fails with a permanent error that says
    /// what happened and what to do.
    pub configuration_ended: bool,
}

impl From<LeaderView> for Observation {
    fn from(view: LeaderView) -> Self {
        Self {
            promise: view.promise,
            leader: view.leader,
            lease_until: view.lease_until,
        }
    }
}

/// This node's view of its leadership between two observations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No leader known, or this node leads but is still in the prepare phase.
    Unknown,
    /// Another node leads under the term.
    Follower(Term),
    /// This node is the accept-phase leader under the term.
    Leading(Leading),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Leading {
    term: Term,
    /// The lease is valid strictly before this instant.
    lease_until: Option<Duration>,
}

/// Decides, from what the runner reports and the time, whether this node may
/// serve as leader (invariant 5 in `docs/architecture.md`).
///
/// - [`observe`](Self::observe) after every read of the runner's status;
/// - [`role`](Self::role) before acting as leader, and at
///   [`next_wakeup`](Self::next_wakeup) to notice a role change in time.
///
/// A ballot change (even this node re-elected at a higher ballot) drops the
/// lease; a lease reported for another ballot than the promise never counts.
#[derive(Debug, Clone)]
pub struct LeaseTracker {
    me: NodeId,
    state: State,
    /// The ballot this node gave up ([`release`](Self::release)): it never
    /// leads under it again.
    released: Option<Ballot>,
}

impl LeaseTracker {
    /// A tracker for node `me` that knows no leader yet.
    ///
    /// # Errors
    ///
    /// The [`Timing::validate`] errors, and [`ConfigError::Epoch`] when `me` is not
    /// a node id the epoch codec can encode (`1..=u32::MAX`).
    pub fn new(me: NodeId, timing: &Timing) -> Result<Self, ConfigError> {
        timing.validate()?;
        validate_node_id(me)?;
        Ok(Self {
            me,
            state: State::Unknown,
            released: None,
        })
    }

    /// This node's id.
    #[must_use]
    pub fn me(&self) -> NodeId {
        self.me
    }

    /// Records what the runner reported.
    ///
    /// - This node is accept-phase leader under `promise` (`leader ==
    ///   Some((me, true))`, `promise.pid == me`): leading, with the
    ///   reported lease (never shortened while the ballot is unchanged: the
    ///   runner's lease of one ballot only grows).
    /// - Another node leads (`leader == Some((pid, _))`, `pid ==
    ///   promise.pid`, `pid != me`): follower of that node's term. The phase
    ///   does not matter: the promise already names the leader.
    /// - Anything else (no leader, this node in its prepare phase, or a leader
    ///   pid that disagrees with the promise): no leader known.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Epoch`] when the promised ballot's pid cannot be encoded as an
    /// epoch (cannot happen when every node id was checked with
    /// `validate_node_id` at build time). The tracker then knows no leader:
    /// it fails closed.
    pub fn observe(&mut self, observation: Observation) -> Result<(), ConfigError> {
        match self.next_state(observation) {
            Ok(state) => {
                self.state = state;
                Ok(())
            }
            Err(err) => {
                self.state = State::Unknown;
                Err(err)
            }
        }
    }

    fn next_state(&self, observation: Observation) -> Result<State, ConfigError> {
        let Observation {
            promise,
            leader,
            lease_until,
        } = observation;
        let Some((pid, accepting)) = leader else {
            return Ok(State::Unknown);
        };
        if pid != promise.pid {
            return Ok(State::Unknown);
        }
        if pid != self.me {
            return Ok(State::Follower(Term::new(promise)?));
        }
        if !accepting || Some(promise) == self.released {
            return Ok(State::Unknown);
        }
        let held = match self.state {
            State::Leading(leading) if leading.term.ballot() == promise => leading.lease_until,
            _ => None,
        };
        Ok(State::Leading(Leading {
            term: Term::new(promise)?,
            lease_until: held.max(lease_until),
        }))
    }

    /// Gives up leading under the current ballot for good, before a
    /// hand-over tells the grantors to drop their holds: from now on
    /// [`role`](Self::role) is never `Leader` under it. Returns the ballot
    /// given up, `None` when this node does not lead.
    pub fn release(&mut self) -> Option<Ballot> {
        let State::Leading(leading) = self.state else {
            return None;
        };
        let ballot = leading.term.ballot();
        self.released = Some(ballot);
        self.state = State::Unknown;
        Some(ballot)
    }

    /// The ballot given up by [`release`](Self::release), if any.
    #[must_use]
    pub fn released(&self) -> Option<Ballot> {
        self.released
    }

    /// Takes a release of `ballot` back, when the host refused the
    /// hand-over with nothing released: this node may lead under it again
    /// (from the next observation on).
    pub fn unrelease(&mut self, ballot: Ballot) {
        if self.released == Some(ballot) {
            self.released = None;
        }
    }

    /// What this node may claim at `now`.
    ///
    /// [`Role::Leader`] only when this node is accept-phase leader under its
    /// current promise and its lease of that promise is valid (`now <
    /// lease_until`). [`Role::Follower`] when another node leads.
    /// [`Role::Unknown`] otherwise, including while this node leads without
    /// a lease (a new leader whose first round is not granted yet, or one
    /// whose lease lapsed).
    #[must_use]
    pub fn role(&self, now: Duration) -> Role {
        match self.state {
            State::Unknown => Role::Unknown,
            State::Follower(term) => Role::Follower(term),
            State::Leading(leading) => {
                if leading.lease_until.is_some_and(|until| now < until) {
                    Role::Leader(leading.term)
                } else {
                    Role::Unknown
                }
            }
        }
    }

    /// The next instant after `now` at which [`role`](Self::role) changes
    /// without new input: the lease expiry. `None` when nothing can change
    /// without new input.
    #[must_use]
    pub fn next_wakeup(&self, now: Duration) -> Option<Duration> {
        match self.state {
            State::Leading(leading) => leading.lease_until.filter(|until| *until > now),
            State::Unknown | State::Follower(_) => None,
        }
    }

    /// When the current lease runs out (`None` without a lease), for status
    /// pages and metrics.
    #[must_use]
    pub fn lease_expiry(&self) -> Option<Duration> {
        match self.state {
            State::Leading(leading) => leading.lease_until,
            State::Unknown | State::Follower(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::timing::tests::sample;
    use tsoracle_paxos_epoch::encode_epoch;

    const ME: NodeId = 1;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn tracker() -> LeaseTracker {
        LeaseTracker::new(ME, &sample()).unwrap()
    }

    fn leading(promise: Ballot, lease_until: Option<u64>) -> Observation {
        Observation {
            promise,
            leader: Some((promise.pid, true)),
            lease_until: lease_until.map(ms),
        }
    }

    fn b(n: u32, pid: NodeId) -> Ballot {
        Ballot::with(1, n, 0, pid)
    }

    fn term(ballot: Ballot) -> Term {
        Term::new(ballot).unwrap()
    }

    #[test]
    fn a_new_leader_is_unknown_until_a_majority_granted_it_a_lease() {
        let mut t = tracker();
        let b1 = b(1, ME);
        t.observe(leading(b1, None)).unwrap();
        assert_eq!(t.role(ms(0)), Role::Unknown);
        t.observe(leading(b1, Some(80))).unwrap();
        assert_eq!(t.role(ms(0)), Role::Leader(term(b1)));
    }

    #[test]
    fn a_lease_without_renewal_expires() {
        let mut t = tracker();
        let b1 = b(1, ME);
        t.observe(leading(b1, Some(170))).unwrap();
        assert_eq!(t.lease_expiry(), Some(ms(170)));
        assert_eq!(t.role(ms(169)), Role::Leader(term(b1)));
        assert_eq!(t.role(ms(170)), Role::Unknown);
        assert_eq!(t.role(ms(500)), Role::Unknown);
        // Observing the same lease again does not revive it.
        t.observe(leading(b1, Some(170))).unwrap();
        assert_eq!(t.role(ms(500)), Role::Unknown);
    }

    #[test]
    fn a_report_never_shortens_the_lease_of_the_same_ballot() {
        let mut t = tracker();
        let b1 = b(1, ME);
        t.observe(leading(b1, Some(170))).unwrap();
        t.observe(leading(b1, Some(120))).unwrap();
        t.observe(leading(b1, None)).unwrap();
        assert_eq!(t.lease_expiry(), Some(ms(170)));
    }

    #[test]
    fn reelection_at_a_higher_ballot_drops_the_lease_and_raises_the_epoch() {
        let mut t = tracker();
        let (b1, b3) = (b(1, ME), b(3, ME));
        t.observe(leading(b1, Some(200))).unwrap();
        assert_eq!(t.role(ms(130)), Role::Leader(term(b1)));
        t.observe(leading(b3, None)).unwrap();
        assert_eq!(t.role(ms(130)), Role::Unknown);
        t.observe(leading(b3, Some(250))).unwrap();
        let reelected = t.role(ms(130));
        assert_eq!(reelected, Role::Leader(term(b3)));
        assert!(reelected.leader_epoch() > Some(encode_epoch(b1).unwrap()));
    }

    #[test]
    fn the_prepare_phase_is_not_leadership_and_drops_the_lease() {
        let mut t = tracker();
        let b1 = b(1, ME);
        let preparing = Observation {
            promise: b1,
            leader: Some((ME, false)),
            lease_until: Some(ms(500)),
        };
        t.observe(preparing).unwrap();
        assert_eq!(t.role(ms(0)), Role::Unknown);
        t.observe(leading(b1, Some(200))).unwrap();
        assert_eq!(t.role(ms(100)), Role::Leader(term(b1)));
        t.observe(Observation {
            lease_until: None,
            ..preparing
        })
        .unwrap();
        assert_eq!(t.role(ms(100)), Role::Unknown);
        assert_eq!(t.lease_expiry(), None);
    }

    #[test]
    fn follower_of_the_promised_leader_in_either_phase() {
        let mut t = tracker();
        let b2 = b(2, 2);
        for accepting in [false, true] {
            t.observe(Observation {
                promise: b2,
                leader: Some((2, accepting)),
                lease_until: None,
            })
            .unwrap();
            assert_eq!(t.role(ms(0)), Role::Follower(term(b2)));
            assert_eq!(
                t.role(ms(0)).leader_epoch(),
                Some(encode_epoch(b2).unwrap())
            );
            assert_eq!(t.next_wakeup(ms(0)), None);
        }
    }

    #[test]
    fn no_leader_or_an_inconsistent_status_is_unknown() {
        let mut t = tracker();
        t.observe(leading(b(1, ME), Some(500))).unwrap();
        for observation in [
            Observation {
                promise: Ballot::default(),
                leader: None,
                lease_until: Some(ms(500)),
            },
            Observation {
                promise: b(1, ME),
                leader: Some((2, true)),
                lease_until: Some(ms(500)),
            },
        ] {
            t.observe(observation).unwrap();
            assert_eq!(t.role(ms(100)), Role::Unknown);
            assert_eq!(t.lease_expiry(), None);
        }
    }

    #[test]
    fn an_unencodable_ballot_fails_closed() {
        let mut t = tracker();
        t.observe(leading(b(1, ME), Some(500))).unwrap();
        let pid = u64::from(u32::MAX) + 1;
        let err = t.observe(leading(b(2, pid), Some(500))).unwrap_err();
        assert!(matches!(err, ConfigError::Epoch(_)), "{err:?}");
        assert_eq!(t.role(ms(100)), Role::Unknown);
    }

    #[test]
    fn construction_checks_timing_and_node_id() {
        assert!(matches!(
            LeaseTracker::new(0, &sample()),
            Err(ConfigError::Epoch(_))
        ));
        let bad = Timing {
            renew_every: ms(100),
            ..sample()
        };
        assert!(LeaseTracker::new(ME, &bad).is_err());
    }

    #[test]
    fn a_released_ballot_is_never_led_again() {
        let mut t = tracker();
        let b1 = b(1, ME);
        assert_eq!(t.release(), None);
        t.observe(leading(b1, Some(500))).unwrap();
        assert_eq!(t.release(), Some(b1));
        assert_eq!(t.role(ms(0)), Role::Unknown);
        t.observe(leading(b1, Some(900))).unwrap();
        assert_eq!(t.role(ms(0)), Role::Unknown);
        // Taken back (the host released nothing): leads again.
        t.unrelease(b(7, ME));
        assert_eq!(t.released(), Some(b1));
        t.unrelease(b1);
        t.observe(leading(b1, Some(900))).unwrap();
        assert!(t.role(ms(0)).is_leader());
        // Elected again later, under a higher ballot: leads again.
        t.release();
        t.observe(leading(b(2, ME), Some(900))).unwrap();
        assert!(t.role(ms(0)).is_leader());
    }

    #[test]
    fn next_wakeup_names_the_expiry() {
        let mut t = tracker();
        let b1 = b(1, ME);
        assert_eq!(t.next_wakeup(ms(0)), None);
        t.observe(leading(b1, None)).unwrap();
        assert_eq!(t.next_wakeup(ms(0)), None);
        t.observe(leading(b1, Some(80))).unwrap();
        assert_eq!(t.next_wakeup(ms(0)), Some(ms(80)));
        assert_eq!(t.next_wakeup(ms(80)), None);
    }
}
