//! What this node may claim about leadership at an instant.

use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::util::NodeId;
use tsoracle_core::Epoch;
use tsoracle_paxos_epoch::{encode_epoch, validate_node_id};

use crate::error::ConfigError;

/// A leader's ballot together with its epoch.
///
/// Built only through [`Term::new`], which refuses ballots the epoch codec
/// cannot encode, so a `Term` always carries the exact epoch of its ballot and
/// nothing downstream (leadership events, fencing) has a fallible step left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Term {
    ballot: Ballot,
    epoch: Epoch,
}

impl Term {
    /// The term of the leader that owns `ballot` (its `pid`).
    ///
    /// # Errors
    ///
    /// [`ConfigError::Epoch`] when `ballot.pid` is 0 (no leader) or above
    /// `u32::MAX` (not encodable).
    pub fn new(ballot: Ballot) -> Result<Self, ConfigError> {
        validate_node_id(ballot.pid)?;
        let epoch = encode_epoch(ballot)?;
        Ok(Self { ballot, epoch })
    }

    /// The ballot.
    #[must_use]
    pub fn ballot(&self) -> Ballot {
        self.ballot
    }

    /// `encode_epoch(ballot)`.
    #[must_use]
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The node that leads under this ballot (`ballot.pid`).
    #[must_use]
    pub fn leader(&self) -> NodeId {
        self.ballot.pid
    }
}

/// What this node may claim about leadership at an instant, as decided by
/// [`LeaseTracker::role`](crate::LeaseTracker::role).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// This node leads under the term and holds a valid lease (a majority
    /// granted it a round): it may serve.
    Leader(Term),
    /// Another node (`term.leader()`) leads under the term, as far as this
    /// node knows.
    Follower(Term),
    /// No leader this node may name: an election is in progress, or this node
    /// leads but is still waiting or its lease has lapsed.
    Unknown,
}

impl Role {
    /// The epoch of the leader this role names: `Some` for `Leader` and
    /// `Follower`, `None` for `Unknown`.
    #[must_use]
    pub fn leader_epoch(&self) -> Option<Epoch> {
        match self {
            Self::Leader(term) | Self::Follower(term) => Some(term.epoch()),
            Self::Unknown => None,
        }
    }

    /// Whether this node may serve as leader.
    #[must_use]
    pub fn is_leader(&self) -> bool {
        matches!(self, Self::Leader(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tsoracle_paxos_epoch::EpochError;

    #[test]
    fn term_carries_the_exact_epoch() {
        let ballot = Ballot::with(1, 7, 0, 3);
        let term = Term::new(ballot).unwrap();
        assert_eq!(term.ballot(), ballot);
        assert_eq!(term.epoch(), encode_epoch(ballot).unwrap());
        assert_eq!(term.leader(), 3);
    }

    #[test]
    fn term_refuses_unencodable_ballots() {
        assert_eq!(
            Term::new(Ballot::default()),
            Err(ConfigError::Epoch(EpochError::ZeroNodeId))
        );
        let pid = u64::from(u32::MAX) + 1;
        assert_eq!(
            Term::new(Ballot::with(1, 1, 0, pid)),
            Err(ConfigError::Epoch(EpochError::PidOutOfRange { pid }))
        );
    }

    #[test]
    fn leader_epoch_names_the_leader() {
        let term = Term::new(Ballot::with(1, 2, 0, 2)).unwrap();
        assert_eq!(Role::Leader(term).leader_epoch(), Some(term.epoch()));
        assert_eq!(Role::Follower(term).leader_epoch(), Some(term.epoch()));
        assert_eq!(Role::Unknown.leader_epoch(), None);
        assert!(Role::Leader(term).is_leader());
        assert!(!Role::Follower(term).is_leader());
    }
}
