//! The reply gate: no reply carrying data leaves a node that no longer leads
//! under the epoch the reply was produced in (invariant 5 in
//! `docs/architecture.md`: the re-check after production).
//!
//! `tsoracle-server` decides whether to serve from a flag that flips only
//! when its leadership-watch task runs. A process that was paused (SIGSTOP,
//! a debugger, the cgroup freezer, a long stall) resumes with requests
//! already read from its sockets, and nothing orders those requests after
//! the watch task: they are answered from the old in-memory window while a
//! newer leader may have served larger values meanwhile. The lease itself is
//! measured on the monotonic clock, which keeps running across such a pause,
//! so asking it *after* the reply was produced closes the gap: a reply that
//! passes was produced while the lease held, and a request it answers was
//! sent before that, so no value served by a newer leader can precede the
//! request (the new leader serves only after this lease ran out).
//!
//! [`reply_admitted`] is the pure rule; [`ReplyGate`] is what a server's
//! reply path asks (`PaxosDriver::reply_gate`), and the
//! `tsoracle-paxos-reply-gate` crate applies it to every gRPC reply of a
//! `tsoracle-server`.

use std::time::Duration;

use tsoracle_core::{Epoch, PeerEndpoint};

use crate::core::lease::LeaseTracker;
use crate::core::role::Role;

/// Why a reply may not leave: this node does not lead under its epoch now.
///
/// Carries what a not-leader answer tells a client: the leader this node
/// knows of, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotServing {
    /// The client endpoint of the leader this node follows, if it knows one.
    pub leader_endpoint: Option<PeerEndpoint>,
    /// That leader's epoch (or this node's own, when it leads under another
    /// epoch than the reply's).
    pub leader_epoch: Option<Epoch>,
}

/// Asked after a reply was produced, right before it is sent.
///
/// Implemented by the driver; `Send + Sync` so one gate serves every
/// connection task.
pub trait ReplyGate: Send + Sync + 'static {
    /// `Ok` when this node holds its lease under `epoch` at this moment
    /// (monotonic clock, drift margin applied); otherwise what to tell the
    /// client instead.
    ///
    /// # Errors
    ///
    /// [`NotServing`] when the reply must not leave.
    fn check(&self, epoch: Epoch) -> Result<(), NotServing>;
}

/// The rule: a reply produced under `epoch` may leave at `now` only if the
/// lease says this node leads under exactly that epoch at `now`.
///
/// The lease's own role is used, not the serving role with its stop margin:
/// the margin exists to cover the server's reaction to a step-down, and the
/// gate is that reaction, taken at the last moment.
#[must_use]
pub fn reply_admitted(lease: &LeaseTracker, now: Duration, epoch: Epoch) -> bool {
    let admitted = matches!(lease.role(now), Role::Leader(term) if term.epoch() == epoch);
    #[cfg(feature = "mutations")]
    if !admitted && !crate::mutation::is_on(crate::mutation::Guard::ReplyGate) {
        crate::mutation::count_bypass();
        return true;
    }
    admitted
}

#[cfg(test)]
mod tests {
    use omnipaxos::ballot_leader_election::Ballot;

    use super::*;
    use crate::core::lease::Observation;
    use crate::core::role::Term;
    use crate::core::timing::Timing;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn timing() -> Timing {
        Timing {
            tick: ms(10),
            election_ticks: 10,
            lease: ms(80),
            drift: 0.01,
            renew_every: ms(30),
        }
    }

    /// A tracker for node 1 leading under `ballot`, the runner's lease of
    /// it granted until `until` (`None`: no round granted yet).
    fn leading(ballot: Ballot, until: Option<Duration>) -> LeaseTracker {
        let mut lease = LeaseTracker::new(1, &timing()).unwrap();
        let view = Observation {
            promise: ballot,
            leader: Some((1, true)),
            lease_until: until,
        };
        lease.observe(view).unwrap();
        lease
    }

    #[test]
    fn a_reply_leaves_only_while_the_lease_holds_under_its_epoch() {
        let b = Ballot::with(1, 2, 0, 1);
        let epoch = Term::new(b).unwrap().epoch();
        let lease = leading(b, Some(Duration::from_micros(179_200)));
        assert!(reply_admitted(&lease, ms(150), epoch));
        assert!(reply_admitted(
            &lease,
            Duration::from_micros(179_199),
            epoch
        ));
        // A pause that outlived the lease: the reply is held back, however
        // long ago it was produced.
        assert!(!reply_admitted(
            &lease,
            Duration::from_micros(179_200),
            epoch
        ));
        assert!(!reply_admitted(&lease, ms(5_000), epoch));
    }

    #[test]
    fn a_reply_of_another_epoch_never_leaves() {
        // The same node re-elected at a higher ballot: a reply from the old
        // epoch's window may be below what another leader served between the
        // two terms.
        let old = Term::new(Ballot::with(1, 2, 0, 1)).unwrap().epoch();
        let lease = leading(Ballot::with(1, 5, 0, 1), Some(ms(180)));
        assert!(!reply_admitted(&lease, ms(150), old));
        assert!(!reply_admitted(&lease, ms(150), Epoch::ZERO));
    }

    #[test]
    fn no_reply_leaves_before_a_lease_was_granted_or_as_a_follower() {
        let b = Ballot::with(1, 2, 0, 1);
        let epoch = Term::new(b).unwrap().epoch();
        let lease = leading(b, None);
        // Elected, but no round granted yet.
        assert!(!reply_admitted(&lease, ms(50), epoch));

        let mut follower = LeaseTracker::new(1, &timing()).unwrap();
        let other = Ballot::with(1, 3, 0, 2);
        follower
            .observe(Observation {
                promise: other,
                leader: Some((2, false)),
                lease_until: Some(ms(500)),
            })
            .unwrap();
        let theirs = Term::new(other).unwrap().epoch();
        assert!(!reply_admitted(&follower, ms(50), theirs));
    }
}
