//! The leader lease: OmniPaxos observations and decisions in, [`Role`] out.
//!
//! [`LeaseTracker`] is pure: it reads no clock (every method takes `now`, a
//! reading of this node's monotonic clock as a [`Duration`] since any fixed
//! origin), does no I/O and starts no task. The driver feeds it and asks it;
//! a simulation or a test can drive it directly. See [`crate::timing`] for the
//! rule and the assumptions it rests on.

use std::time::Duration;

use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::util::NodeId;
use tsoracle_paxos_epoch::validate_node_id;

use crate::core::role::{Role, Term};
use crate::core::timing::Timing;
use crate::error::ConfigError;

/// What the driver read from OmniPaxos at one instant.
///
/// Map it from `OmniPaxos::get_promise()` and `get_current_leader()`, or from
/// the toolkit runner's `RunnerStatus { promise, leader, .. }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// The ballot this node has promised (`OmniPaxos::get_promise`).
    pub promise: Ballot,
    /// `OmniPaxos::get_current_leader`: the pid of the promised ballot and
    /// whether *this node* is in the accept phase.
    pub leader: Option<(NodeId, bool)>,
}

/// This node's view of the leadership, as OmniPaxos reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderView {
    /// The ballot this node has promised (`OmniPaxos::get_promise`).
    pub promise: Ballot,
    /// `OmniPaxos::get_current_leader`: the pid of the promised ballot and
    /// whether this node is in the accept phase (its prepare phase is over).
    pub leader: Option<(NodeId, bool)>,
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
    /// When this node first observed itself accept-phase leader under
    /// `term`: the new-leader wait runs from here.
    since: Duration,
    /// The lease is valid strictly before this instant.
    lease_until: Option<Duration>,
    /// The latest proposal time under `term` (proposed or decided).
    last_proposed: Option<Duration>,
}

/// Decides, from OmniPaxos observations, decisions and the time, whether this
/// node may serve as leader (invariant 5 in `docs/architecture.md`).
///
/// - [`observe`](Self::observe) after every read of OmniPaxos' status;
/// - [`proposed`](Self::proposed) when this node hands an entry to OmniPaxos,
///   and [`decided`](Self::decided) when one of its entries is decided;
/// - [`role`](Self::role) before acting as leader, and at
///   [`next_wakeup`](Self::next_wakeup) to notice a role change in time;
/// - while [`wants_renewal`](Self::wants_renewal), propose a no-op barrier.
///
/// A ballot change (even this node re-elected at a higher ballot) restarts the
/// new-leader wait and drops the lease; a decision of an entry proposed under
/// another ballot never extends the lease.
#[derive(Debug, Clone)]
pub struct LeaseTracker {
    me: NodeId,
    validity: Duration,
    wait: Duration,
    renew_every: Duration,
    state: State,
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
            validity: timing.leader_lease_validity(),
            wait: timing.new_leader_wait(),
            renew_every: timing.renew_every,
            state: State::Unknown,
        })
    }

    /// This node's id.
    #[must_use]
    pub fn me(&self) -> NodeId {
        self.me
    }

    /// Records what OmniPaxos reported at `now`.
    ///
    /// Sample `now` when the status is read (after the round that produced
    /// it), never earlier: the new-leader wait runs from the first observation
    /// of this node as accept-phase leader under the promised ballot.
    ///
    /// - This node is accept-phase leader under `promise` (`leader ==
    ///   Some((me, true))`, `promise.pid == me`): it keeps its wait and lease
    ///   if the ballot is unchanged, and starts a new term otherwise.
    /// - Another node leads (`leader == Some((pid, _))`, `pid ==
    ///   promise.pid`, `pid != me`): follower of that node's term. The phase
    ///   does not matter: the promise already names the leader.
    /// - Anything else (no leader, this node in its prepare phase, or a leader
    ///   pid that disagrees with the promise): no leader known. A later
    ///   accept-phase observation then starts a new wait, even for the same
    ///   ballot.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Epoch`] when the promised ballot's pid cannot be encoded as an
    /// epoch (cannot happen when every node id was checked with
    /// `validate_node_id` at build time). The tracker then knows no leader:
    /// it fails closed.
    pub fn observe(&mut self, now: Duration, observation: Observation) -> Result<(), ConfigError> {
        match self.next_state(now, observation) {
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

    fn next_state(&self, now: Duration, observation: Observation) -> Result<State, ConfigError> {
        let Observation { promise, leader } = observation;
        let Some((pid, accepting)) = leader else {
            return Ok(State::Unknown);
        };
        if pid != promise.pid {
            return Ok(State::Unknown);
        }
        if pid != self.me {
            return Ok(State::Follower(Term::new(promise)?));
        }
        if !accepting {
            return Ok(State::Unknown);
        }
        match self.state {
            State::Leading(leading) if leading.term.ballot() == promise => {
                Ok(State::Leading(leading))
            }
            _ => Ok(State::Leading(Leading {
                term: Term::new(promise)?,
                since: now,
                lease_until: None,
                last_proposed: None,
            })),
        }
    }

    /// Records that this node handed an entry to OmniPaxos at `proposed_at`
    /// while its promise was `ballot_at_proposal`. It only times the next
    /// renewal ([`wants_renewal`](Self::wants_renewal)); the lease waits for
    /// the decision.
    pub fn proposed(&mut self, proposed_at: Duration, ballot_at_proposal: Ballot) {
        if let State::Leading(leading) = &mut self.state
            && leading.term.ballot() == ballot_at_proposal
        {
            leading.last_proposed = leading.last_proposed.max(Some(proposed_at));
        }
    }

    /// Records that an entry this node proposed at `proposed_at` under
    /// `ballot_at_proposal` was decided, and says whether that renewed the
    /// lease.
    ///
    /// It renews the lease to `proposed_at + leader_lease_validity` (never
    /// shortening it) only if this node still leads, in the accept phase,
    /// under that same ballot. Call [`observe`](Self::observe) with a status
    /// read *at or after* the decision first: a status from before the round
    /// that decided the entry could still show a ballot this node has since
    /// lost, and a decision made by a newer leader must not renew.
    ///
    /// `proposed_at` must be sampled *before* the entry was handed to
    /// OmniPaxos: an early sample shortens the lease, a late one breaks it.
    pub fn decided(&mut self, proposed_at: Duration, ballot_at_proposal: Ballot) -> bool {
        let State::Leading(leading) = &mut self.state else {
            return false;
        };
        if leading.term.ballot() != ballot_at_proposal {
            return false;
        }
        leading.last_proposed = leading.last_proposed.max(Some(proposed_at));
        let Some(until) = proposed_at.checked_add(self.validity) else {
            return false;
        };
        leading.lease_until = leading.lease_until.max(Some(until));
        true
    }

    /// What this node may claim at `now`.
    ///
    /// [`Role::Leader`] only when this node is accept-phase leader under its
    /// current promise, the new-leader wait since it first observed that has
    /// passed (`now >= since + new_leader_wait`), and its lease is valid
    /// (`now < lease_until`). [`Role::Follower`] when another node leads.
    /// [`Role::Unknown`] otherwise, including while this node leads but waits
    /// or has let its lease lapse.
    #[must_use]
    pub fn role(&self, now: Duration) -> Role {
        match self.state {
            State::Unknown => Role::Unknown,
            State::Follower(term) => Role::Follower(term),
            State::Leading(leading) => {
                if self.serves(&leading, now) {
                    Role::Leader(leading.term)
                } else {
                    Role::Unknown
                }
            }
        }
    }

    fn serves(&self, leading: &Leading, now: Duration) -> bool {
        let waited = leading
            .since
            .checked_add(self.wait)
            .is_some_and(|wait_end| now >= wait_end);
        let leased = leading.lease_until.is_some_and(|until| now < until);
        #[cfg(feature = "mutations")]
        if !waited && leased && !crate::mutation::is_on(crate::mutation::Guard::NewLeaderWait) {
            crate::mutation::count_bypass();
            return true;
        }
        waited && leased
    }

    /// Whether this node leads (accept phase, current ballot) and its last
    /// renewing proposal under this ballot is `renew_every` old or older (or
    /// it has none): the driver should propose a no-op barrier. True during
    /// the new-leader wait too, since the lease must be in place when the
    /// wait ends.
    #[must_use]
    pub fn wants_renewal(&self, now: Duration) -> bool {
        let State::Leading(leading) = self.state else {
            return false;
        };
        match leading.last_proposed {
            None => true,
            Some(last) => last
                .checked_add(self.renew_every)
                .is_some_and(|due| now >= due),
        }
    }

    /// The next instant after `now` at which [`role`](Self::role) or
    /// [`wants_renewal`](Self::wants_renewal) can change without new input:
    /// the end of the new-leader wait, the lease expiry, or the renewal due
    /// time. `None` when neither can change without new input.
    #[must_use]
    pub fn next_wakeup(&self, now: Duration) -> Option<Duration> {
        let State::Leading(leading) = self.state else {
            return None;
        };
        let mut candidates = [None; 3];
        // Leader exactly on [wait_end, lease_until): both ends are changes
        // only when that interval is not empty.
        if let (Some(wait_end), Some(until)) =
            (leading.since.checked_add(self.wait), leading.lease_until)
            && wait_end < until
        {
            candidates[0] = Some(wait_end);
            candidates[1] = Some(until);
        }
        candidates[2] = leading
            .last_proposed
            .and_then(|last| last.checked_add(self.renew_every));
        candidates.into_iter().flatten().filter(|t| *t > now).min()
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

    fn us(v: u64) -> Duration {
        Duration::from_micros(v)
    }

    fn tracker() -> LeaseTracker {
        LeaseTracker::new(ME, &sample()).unwrap()
    }

    fn leading(promise: Ballot) -> Observation {
        Observation {
            promise,
            leader: Some((promise.pid, true)),
        }
    }

    fn b(n: u32, pid: NodeId) -> Ballot {
        Ballot::with(1, n, 0, pid)
    }

    fn term(ballot: Ballot) -> Term {
        Term::new(ballot).unwrap()
    }

    /// Leads under `ballot` from `start`, proposing every 30 ms from `start`
    /// up to and including `last`, each decided at once.
    fn lead(t: &mut LeaseTracker, ballot: Ballot, start: u64, last: u64) {
        let mut at = start;
        while at <= last {
            t.observe(ms(at), leading(ballot)).unwrap();
            t.proposed(ms(at), ballot);
            assert!(t.decided(ms(at), ballot));
            at += 30;
        }
    }

    // sample(): wait = 80.8 ms, lease validity = 79.2 ms, renew every 30 ms.

    #[test]
    fn new_leader_is_unknown_until_the_wait_has_passed() {
        let mut t = tracker();
        let b1 = b(1, ME);
        lead(&mut t, b1, 0, 60);
        assert_eq!(t.role(ms(0)), Role::Unknown);
        assert_eq!(t.role(ms(60)), Role::Unknown);
        assert_eq!(t.role(us(80_799)), Role::Unknown);
        assert_eq!(t.role(us(80_800)), Role::Leader(term(b1)));
    }

    #[test]
    fn a_lease_without_renewal_expires() {
        let mut t = tracker();
        let b1 = b(1, ME);
        lead(&mut t, b1, 0, 90);
        // Last renewal proposed at 90 ms: valid until 169.2 ms.
        assert_eq!(t.lease_expiry(), Some(us(169_200)));
        assert_eq!(t.role(us(169_199)), Role::Leader(term(b1)));
        assert_eq!(t.role(us(169_200)), Role::Unknown);
        assert_eq!(t.role(ms(500)), Role::Unknown);
        // Observing the same ballot again does not revive it.
        t.observe(ms(500), leading(b1)).unwrap();
        assert_eq!(t.role(ms(500)), Role::Unknown);
    }

    #[test]
    fn the_lease_runs_from_the_proposal_not_the_decision() {
        let mut t = tracker();
        let b1 = b(1, ME);
        t.observe(ms(0), leading(b1)).unwrap();
        // Proposed at 0, decided only at 100: valid until 79.2 ms, already
        // over when the wait ends at 80.8 ms.
        t.observe(ms(100), leading(b1)).unwrap();
        assert!(t.decided(ms(0), b1));
        assert_eq!(t.lease_expiry(), Some(us(79_200)));
        assert_eq!(t.role(ms(100)), Role::Unknown);
    }

    #[test]
    fn a_decision_never_shortens_the_lease() {
        let mut t = tracker();
        let b1 = b(1, ME);
        lead(&mut t, b1, 0, 90);
        assert!(t.decided(ms(10), b1));
        assert_eq!(t.lease_expiry(), Some(us(169_200)));
    }

    #[test]
    fn a_renewal_from_an_older_ballot_is_ignored() {
        let mut t = tracker();
        let (b1, b3) = (b(1, ME), b(3, ME));
        t.observe(ms(0), leading(b1)).unwrap();
        // Re-elected at b3 before the b1 entry proposed at 0 was decided.
        t.observe(ms(5), leading(b3)).unwrap();
        assert!(!t.decided(ms(0), b1));
        assert_eq!(t.lease_expiry(), None);
        assert_eq!(t.role(ms(100)), Role::Unknown);
        // A b1 entry proposed later is still not a b3 renewal.
        assert!(!t.decided(ms(90), b1));
        assert_eq!(t.role(ms(100)), Role::Unknown);
    }

    #[test]
    fn a_decision_after_losing_the_ballot_is_ignored() {
        let mut t = tracker();
        let b1 = b(1, ME);
        lead(&mut t, b1, 0, 90);
        // Another node took over: the late b1 decision must not renew.
        t.observe(ms(100), leading(b(2, 2))).unwrap();
        assert!(!t.decided(ms(95), b1));
        assert_eq!(t.lease_expiry(), None);
    }

    #[test]
    fn reelection_at_a_higher_ballot_restarts_the_wait_with_a_higher_epoch() {
        let mut t = tracker();
        let (b1, b3) = (b(1, ME), b(3, ME));
        lead(&mut t, b1, 0, 120);
        assert_eq!(t.role(ms(130)), Role::Leader(term(b1)));
        // Same node, higher ballot, at 130 ms: the lease is dropped and the
        // wait restarts, even though renewals continue at once.
        lead(&mut t, b3, 130, 250);
        assert_eq!(t.role(ms(130)), Role::Unknown);
        assert_eq!(t.role(us(210_799)), Role::Unknown);
        let reelected = t.role(us(210_800));
        assert_eq!(reelected, Role::Leader(term(b3)));
        assert!(reelected.leader_epoch() > Some(encode_epoch(b1).unwrap()));
    }

    #[test]
    fn the_prepare_phase_is_not_leadership_and_restarts_the_wait() {
        let mut t = tracker();
        let b1 = b(1, ME);
        let preparing = Observation {
            promise: b1,
            leader: Some((ME, false)),
        };
        t.observe(ms(0), preparing).unwrap();
        assert!(!t.decided(ms(0), b1));
        assert!(!t.wants_renewal(ms(0)));
        assert_eq!(t.role(ms(200)), Role::Unknown);
        // Leading under b1 from 100 ms, then a prepare-phase blip at 250 ms:
        // back in the accept phase the wait starts over.
        lead(&mut t, b1, 100, 220);
        assert_eq!(t.role(ms(230)), Role::Leader(term(b1)));
        t.observe(ms(250), preparing).unwrap();
        assert_eq!(t.role(ms(250)), Role::Unknown);
        lead(&mut t, b1, 260, 320);
        assert_eq!(t.role(ms(320)), Role::Unknown);
    }

    #[test]
    fn follower_of_the_promised_leader_in_either_phase() {
        let mut t = tracker();
        let b2 = b(2, 2);
        for accepting in [false, true] {
            t.observe(
                ms(0),
                Observation {
                    promise: b2,
                    leader: Some((2, accepting)),
                },
            )
            .unwrap();
            assert_eq!(t.role(ms(0)), Role::Follower(term(b2)));
            assert_eq!(
                t.role(ms(0)).leader_epoch(),
                Some(encode_epoch(b2).unwrap())
            );
            assert!(!t.wants_renewal(ms(0)));
            assert_eq!(t.next_wakeup(ms(0)), None);
        }
    }

    #[test]
    fn no_leader_or_an_inconsistent_status_is_unknown() {
        let mut t = tracker();
        lead(&mut t, b(1, ME), 0, 90);
        for observation in [
            Observation {
                promise: Ballot::default(),
                leader: None,
            },
            Observation {
                promise: b(1, ME),
                leader: Some((2, true)),
            },
        ] {
            t.observe(ms(100), observation).unwrap();
            assert_eq!(t.role(ms(100)), Role::Unknown);
            assert_eq!(t.lease_expiry(), None);
        }
    }

    #[test]
    fn an_unencodable_ballot_fails_closed() {
        let mut t = tracker();
        lead(&mut t, b(1, ME), 0, 90);
        let pid = u64::from(u32::MAX) + 1;
        let err = t.observe(ms(100), leading(b(2, pid))).unwrap_err();
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
            lease: ms(100),
            ..sample()
        };
        assert!(matches!(
            LeaseTracker::new(ME, &bad),
            Err(ConfigError::LeaseNotShorterThanElection { .. })
        ));
    }

    #[test]
    fn wants_renewal_every_renew_period_while_leading() {
        let mut t = tracker();
        let b1 = b(1, ME);
        assert!(!t.wants_renewal(ms(0)));
        t.observe(ms(0), leading(b1)).unwrap();
        assert!(
            t.wants_renewal(ms(0)),
            "a new leader renews during its wait"
        );
        t.proposed(ms(0), b1);
        assert!(!t.wants_renewal(ms(29)));
        assert!(t.wants_renewal(ms(30)));
        // A proposal under another ballot does not count.
        t.proposed(ms(30), b(0, ME));
        assert!(t.wants_renewal(ms(30)));
        // A decision counts as a proposal at its proposal time.
        assert!(t.decided(ms(40), b1));
        assert!(!t.wants_renewal(ms(69)));
        assert!(t.wants_renewal(ms(70)));
    }

    #[test]
    fn next_wakeup_names_the_wait_end_the_expiry_and_the_renewal() {
        let mut t = tracker();
        let b1 = b(1, ME);
        assert_eq!(t.next_wakeup(ms(0)), None);
        t.observe(ms(0), leading(b1)).unwrap();
        // No proposal yet: nothing changes without input.
        assert_eq!(t.next_wakeup(ms(0)), None);
        t.proposed(ms(0), b1);
        assert_eq!(t.next_wakeup(ms(0)), Some(ms(30)));
        assert!(t.decided(ms(0), b1));
        // Lease until 79.2 ms, before the wait ends: no role change coming.
        assert_eq!(t.next_wakeup(ms(30)), None);
        t.proposed(ms(30), b1);
        assert!(t.decided(ms(30), b1));
        // Lease until 109.2, wait until 80.8, renewal due at 60.
        assert_eq!(t.next_wakeup(ms(30)), Some(ms(60)));
        assert_eq!(t.next_wakeup(ms(60)), Some(us(80_800)));
        assert_eq!(t.next_wakeup(us(80_800)), Some(us(109_200)));
        assert_eq!(t.next_wakeup(us(109_200)), None);
    }
}
