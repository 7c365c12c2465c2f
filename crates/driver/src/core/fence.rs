//! Pre-proposal checks and outcome mapping: the write path's answers as
//! [`ConsensusError`]s (invariant 4 in `docs/architecture.md`).
//!
//! Before proposing anything the driver runs [`check_advance`] (high-water)
//! or [`check_write`] (dense, leases): a node that is not [`Role::Leader`]
//! answers [`ConsensusError::NotLeader`] with the epoch of the leader it knows
//! of, and a caller whose epoch is not this node's current leader epoch gets
//! [`ConsensusError::Fenced`] carrying that real current epoch (clients gate
//! their redirects on it). After the decision, the `*_outcome` functions map
//! the apply [`Outcome`] a waiter receives.

use tsoracle_consensus::{ConsensusError, reject_out_of_range_advance};
use tsoracle_core::Epoch;
use tsoracle_paxos_state::{DenseRejection, LeaseRejection, Outcome};

use crate::core::role::Role;
use crate::error::RuntimeError;

/// Admits a write fenced by `caller_epoch` when this node serves as leader
/// under exactly that epoch.
///
/// # Errors
///
/// - [`ConsensusError::NotLeader`] when `role` is not [`Role::Leader`];
///   `observed` is the follower's leader epoch, or `None` when no leader is
///   known (an election, or this node waiting for or having lost its lease);
/// - [`ConsensusError::Fenced`] `{ expected: caller_epoch, current }` when
///   this node leads under another epoch `current`.
pub fn check_write(role: &Role, caller_epoch: Epoch) -> Result<(), ConsensusError> {
    #[cfg(feature = "mutations")]
    if let Role::Leader(term) = role
        && !crate::mutation::is_on(crate::mutation::Guard::EpochFence)
    {
        if term.epoch() != caller_epoch {
            crate::mutation::count_bypass();
        }
        return Ok(());
    }
    match role {
        Role::Leader(term) if term.epoch() == caller_epoch => Ok(()),
        Role::Leader(term) => Err(ConsensusError::Fenced {
            expected: caller_epoch,
            current: term.epoch(),
        }),
        Role::Follower(_) | Role::Unknown => Err(ConsensusError::NotLeader {
            observed: role.leader_epoch(),
        }),
    }
}

/// [`check_write`] for a high-water advance, after the range check that must
/// run before anything is proposed: a committed value above the 46-bit cap
/// could never heal.
///
/// # Errors
///
/// [`ConsensusError::AdvanceOutOfRange`] first (whatever the role), then the
/// [`check_write`] errors.
pub fn check_advance(
    role: &Role,
    at_least: u64,
    caller_epoch: Epoch,
) -> Result<(), ConsensusError> {
    reject_out_of_range_advance(at_least)?;
    check_write(role, caller_epoch)
}

/// Maps the outcome of this node's own `Advance` to the stored high-water.
///
/// # Errors
///
/// [`ConsensusError::TransientDriver`] for [`Outcome::Duplicate`] (nothing
/// was applied; a retry is safe), [`ConsensusError::PermanentDriver`] for the
/// outcome of another command kind.
pub fn high_water_outcome(outcome: Outcome) -> Result<u64, ConsensusError> {
    match outcome {
        Outcome::HighWater(value) => Ok(value),
        other => Err(unexpected("an Advance", other)),
    }
}

/// Maps the outcome of this node's own `Barrier` to the high-water at that
/// point of the log (what a linearized `load_high_water` returns).
///
/// # Errors
///
/// As [`high_water_outcome`].
pub fn barrier_outcome(outcome: Outcome) -> Result<u64, ConsensusError> {
    match outcome {
        Outcome::Barrier { high_water } => Ok(high_water),
        other => Err(unexpected("a Barrier", other)),
    }
}

/// Maps the outcome of this node's own `DenseAdvance`, proposed with
/// `expected` as its epoch, to the block starts.
///
/// # Errors
///
/// The [`dense_rejection`] mapping, and as [`high_water_outcome`].
pub fn dense_outcome(outcome: Outcome, expected: Epoch) -> Result<Vec<u64>, ConsensusError> {
    match outcome {
        Outcome::Dense(Ok(starts)) => Ok(starts),
        Outcome::Dense(Err(rejection)) => Err(dense_rejection(rejection, expected)),
        other => Err(unexpected("a DenseAdvance", other)),
    }
}

/// Maps the outcome of this node's own `ReplaceLeases`, proposed with
/// `expected` as its epoch.
///
/// # Errors
///
/// The [`lease_rejection`] mapping, and as [`high_water_outcome`].
pub fn lease_outcome(outcome: Outcome, expected: Epoch) -> Result<(), ConsensusError> {
    match outcome {
        Outcome::Leases(Ok(())) => Ok(()),
        Outcome::Leases(Err(rejection)) => Err(lease_rejection(rejection, expected)),
        other => Err(unexpected("a ReplaceLeases", other)),
    }
}

/// Maps a dense rejection of a command proposed with epoch `expected`:
/// `Fenced` keeps the real current epoch (the highest applied), the cap and
/// overflow map to their dedicated variants.
#[must_use]
pub fn dense_rejection(rejection: DenseRejection, expected: Epoch) -> ConsensusError {
    match rejection {
        DenseRejection::Fenced { current } => ConsensusError::Fenced { expected, current },
        DenseRejection::CardinalityExceeded { cap } => {
            ConsensusError::SeqKeyCardinalityExceeded { cap }
        }
        DenseRejection::Overflow { .. } => ConsensusError::SeqOverflow,
    }
}

/// Maps a lease-set rejection of a command proposed with epoch `expected`:
/// `Fenced` with the real current epoch.
#[must_use]
pub fn lease_rejection(rejection: LeaseRejection, expected: Epoch) -> ConsensusError {
    match rejection {
        LeaseRejection::Fenced { current } => ConsensusError::Fenced { expected, current },
    }
}

fn unexpected(expected: &'static str, outcome: Outcome) -> ConsensusError {
    match outcome {
        Outcome::Duplicate => RuntimeError::DuplicateProposal.into(),
        other => RuntimeError::UnexpectedOutcome {
            expected,
            got: format!("{other:?}"),
        }
        .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::role::Term;
    use omnipaxos::ballot_leader_election::Ballot;
    use tsoracle_core::{PHYSICAL_MS_MAX, SeqKey};

    fn term(n: u32, pid: u64) -> Term {
        Term::new(Ballot::with(1, n, 0, pid)).unwrap()
    }

    #[test]
    fn the_leader_admits_its_own_epoch() {
        let t = term(3, 1);
        assert!(check_write(&Role::Leader(t), t.epoch()).is_ok());
        assert!(check_advance(&Role::Leader(t), PHYSICAL_MS_MAX, t.epoch()).is_ok());
    }

    #[test]
    fn a_leader_fences_another_epoch_with_its_real_epoch() {
        let t = term(3, 1);
        for caller in [term(2, 1).epoch(), term(4, 1).epoch(), Epoch::ZERO] {
            match check_write(&Role::Leader(t), caller) {
                Err(ConsensusError::Fenced { expected, current }) => {
                    assert_eq!(expected, caller);
                    assert_eq!(current, t.epoch());
                }
                other => panic!("expected Fenced, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_follower_is_not_leader_and_names_its_leader_epoch() {
        let leader = term(3, 2);
        match check_write(&Role::Follower(leader), leader.epoch()) {
            Err(ConsensusError::NotLeader { observed }) => {
                assert_eq!(observed, Some(leader.epoch()));
            }
            other => panic!("expected NotLeader, got {other:?}"),
        }
        match check_write(&Role::Unknown, leader.epoch()) {
            Err(ConsensusError::NotLeader { observed }) => assert_eq!(observed, None),
            other => panic!("expected NotLeader, got {other:?}"),
        }
    }

    #[test]
    fn the_range_check_runs_before_the_fence() {
        let t = term(3, 1);
        for role in [Role::Leader(t), Role::Follower(term(3, 2)), Role::Unknown] {
            match check_advance(&role, PHYSICAL_MS_MAX + 1, t.epoch()) {
                Err(ConsensusError::AdvanceOutOfRange(v)) => assert_eq!(v, PHYSICAL_MS_MAX + 1),
                other => panic!("expected AdvanceOutOfRange, got {other:?}"),
            }
        }
        assert!(matches!(
            check_advance(&Role::Unknown, 5, t.epoch()),
            Err(ConsensusError::NotLeader { observed: None })
        ));
    }

    /// `result` is `Fenced` naming the caller's `expected` epoch and the
    /// `current` one.
    fn assert_fenced<T: std::fmt::Debug>(
        result: Result<T, ConsensusError>,
        expected: Epoch,
        current: Epoch,
    ) {
        match result {
            Err(ConsensusError::Fenced {
                expected: e,
                current: c,
            }) => {
                assert_eq!(e, expected);
                assert_eq!(c, current);
            }
            other => panic!("expected Fenced, got {other:?}"),
        }
    }

    #[test]
    fn dense_rejections_map_to_their_variants() {
        let expected = term(2, 1).epoch();
        let current = term(5, 2).epoch();
        assert_fenced(
            dense_outcome(
                Outcome::Dense(Err(DenseRejection::Fenced { current })),
                expected,
            ),
            expected,
            current,
        );
        assert!(matches!(
            dense_outcome(
                Outcome::Dense(Err(DenseRejection::CardinalityExceeded { cap: 9 })),
                expected
            ),
            Err(ConsensusError::SeqKeyCardinalityExceeded { cap: 9 })
        ));
        let key = SeqKey::try_new("k").unwrap();
        assert!(matches!(
            dense_outcome(
                Outcome::Dense(Err(DenseRejection::Overflow { key })),
                expected
            ),
            Err(ConsensusError::SeqOverflow)
        ));
        assert_eq!(
            dense_outcome(Outcome::Dense(Ok(vec![3, 7])), expected).unwrap(),
            vec![3, 7]
        );
    }

    #[test]
    fn lease_rejection_is_fenced_with_the_real_epoch() {
        let expected = term(2, 1).epoch();
        let current = term(5, 2).epoch();
        assert_fenced(
            lease_outcome(
                Outcome::Leases(Err(LeaseRejection::Fenced { current })),
                expected,
            ),
            expected,
            current,
        );
        assert!(lease_outcome(Outcome::Leases(Ok(())), expected).is_ok());
    }

    #[test]
    fn high_water_and_barrier_outcomes() {
        assert_eq!(high_water_outcome(Outcome::HighWater(42)).unwrap(), 42);
        assert_eq!(
            barrier_outcome(Outcome::Barrier { high_water: 17 }).unwrap(),
            17
        );
    }

    #[test]
    fn a_duplicate_is_transient_and_a_wrong_kind_is_permanent() {
        let e = Epoch(1);
        let duplicates = [
            high_water_outcome(Outcome::Duplicate).map(|_| ()),
            barrier_outcome(Outcome::Duplicate).map(|_| ()),
            dense_outcome(Outcome::Duplicate, e).map(|_| ()),
            lease_outcome(Outcome::Duplicate, e),
        ];
        for result in duplicates {
            match result {
                Err(ConsensusError::TransientDriver(err)) => {
                    assert!(err.to_string().contains("duplicate"), "{err}");
                }
                other => panic!("expected TransientDriver, got {other:?}"),
            }
        }
        let wrong_kind = [
            high_water_outcome(Outcome::Barrier { high_water: 1 }).map(|_| ()),
            barrier_outcome(Outcome::HighWater(1)).map(|_| ()),
            dense_outcome(Outcome::Leases(Ok(())), e).map(|_| ()),
            lease_outcome(Outcome::Dense(Ok(vec![])), e),
        ];
        for result in wrong_kind {
            match result {
                Err(ConsensusError::PermanentDriver(err)) => {
                    assert!(err.to_string().contains("expected the outcome"), "{err}");
                }
                other => panic!("expected PermanentDriver, got {other:?}"),
            }
        }
    }
}
