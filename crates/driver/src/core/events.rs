//! Leadership events for the server: [`Role`]s in, [`LeaderState`]s out.
//!
//! [`LeaderEvents`] turns the roles the [`LeaseTracker`](crate::LeaseTracker)
//! decides into the items of `ConsensusDriver::leadership_events`, following
//! the trait's contract (invariant 6 in `docs/architecture.md`):
//!
//! - it emits only on a change of the whole state, payload included (a new
//!   ballot of the same leader is a new epoch, hence a new event);
//! - `Follower.leader_endpoint` is the leader's *client-facing* endpoint, from
//!   the map given at construction, and `leader_epoch` its ballot's epoch;
//! - the epochs it emits, `Leader` and `Follower` alike, never decrease.
//!
//! The async driver seeds its watch channel with [`LeaderEvents::current`]
//! (the synchronous first item) and publishes every `Some` of
//! [`LeaderEvents::next`].

use std::collections::BTreeMap;

use omnipaxos::util::NodeId;
use tsoracle_consensus::LeaderState;
use tsoracle_core::{Epoch, PeerEndpoint};

use crate::core::role::Role;

/// Debounces roles into [`LeaderState`] changes whose epochs never decrease.
///
/// **Regression rule.** A role whose epoch is below one already emitted is
/// reported as [`LeaderState::Unknown`], not as the older leader and not as a
/// repeat of the higher state: repeating the higher state would claim a
/// leadership (or point clients at a leader) this node no longer observes,
/// while `Unknown` is true and carries no epoch. OmniPaxos promises only
/// increase on a node, so this is a guard, not a path taken in normal runs.
#[derive(Debug, Clone)]
pub struct LeaderEvents {
    endpoints: BTreeMap<NodeId, PeerEndpoint>,
    last: LeaderState,
    highest: Option<Epoch>,
}

impl LeaderEvents {
    /// Starts at [`LeaderState::Unknown`]. `endpoints` maps each node id to
    /// its client-facing tsoracle endpoint (not its peer address).
    #[must_use]
    pub fn new(endpoints: BTreeMap<NodeId, PeerEndpoint>) -> Self {
        Self {
            endpoints,
            last: LeaderState::Unknown,
            highest: None,
        }
    }

    /// Adds (or updates) client endpoints, as a membership change brings
    /// new members; endpoints of members that left are kept (they lead
    /// nothing any more, and a late redirect to one is harmless).
    pub fn learn_endpoints(&mut self, endpoints: &BTreeMap<NodeId, PeerEndpoint>) {
        self.endpoints.extend(
            endpoints
                .iter()
                .map(|(node, endpoint)| (*node, endpoint.clone())),
        );
    }

    /// The last state emitted ([`LeaderState::Unknown`] before any): the
    /// synchronous first item of a new subscription.
    #[must_use]
    pub fn current(&self) -> &LeaderState {
        &self.last
    }

    /// The highest epoch emitted so far, if any.
    #[must_use]
    pub fn highest_epoch(&self) -> Option<Epoch> {
        self.highest
    }

    /// The state for `role`, or `None` when it equals the last one emitted.
    pub fn next(&mut self, role: &Role) -> Option<LeaderState> {
        let state = self.state_for(role);
        if state == self.last {
            return None;
        }
        if let Some(epoch) = role.leader_epoch()
            && state != LeaderState::Unknown
        {
            self.highest = self.highest.max(Some(epoch));
        }
        self.last = state.clone();
        Some(state)
    }

    fn state_for(&self, role: &Role) -> LeaderState {
        if role.leader_epoch() < self.highest {
            return LeaderState::Unknown;
        }
        match role {
            Role::Leader(term) => LeaderState::Leader {
                epoch: term.epoch(),
            },
            Role::Follower(term) => LeaderState::Follower {
                leader_endpoint: self.endpoints.get(&term.leader()).cloned(),
                leader_epoch: Some(term.epoch()),
            },
            Role::Unknown => LeaderState::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::role::Term;
    use omnipaxos::ballot_leader_election::Ballot;
    use proptest::prelude::*;
    use tsoracle_paxos_epoch::encode_epoch;

    fn endpoints() -> BTreeMap<NodeId, PeerEndpoint> {
        [(1, "client-1:7001"), (2, "client-2:7002")]
            .into_iter()
            .map(|(id, e)| (id, PeerEndpoint::try_from(e).unwrap()))
            .collect()
    }

    fn term(n: u32, pid: NodeId) -> Term {
        Term::new(Ballot::with(1, n, 0, pid)).unwrap()
    }

    fn epoch(n: u32, pid: NodeId) -> Epoch {
        encode_epoch(Ballot::with(1, n, 0, pid)).unwrap()
    }

    #[test]
    fn starts_unknown_and_maps_each_role() {
        let mut events = LeaderEvents::new(endpoints());
        assert_eq!(events.current(), &LeaderState::Unknown);
        assert_eq!(events.next(&Role::Unknown), None);
        assert_eq!(
            events.next(&Role::Follower(term(1, 2))),
            Some(LeaderState::Follower {
                leader_endpoint: Some(PeerEndpoint::try_from("client-2:7002").unwrap()),
                leader_epoch: Some(epoch(1, 2)),
            })
        );
        assert_eq!(
            events.next(&Role::Leader(term(2, 1))),
            Some(LeaderState::Leader { epoch: epoch(2, 1) })
        );
        assert_eq!(
            events.current(),
            &LeaderState::Leader { epoch: epoch(2, 1) }
        );
        assert_eq!(events.next(&Role::Unknown), Some(LeaderState::Unknown));
        assert_eq!(events.highest_epoch(), Some(epoch(2, 1)));
    }

    #[test]
    fn follower_of_a_node_without_endpoint_still_carries_its_epoch() {
        let mut events = LeaderEvents::new(endpoints());
        assert_eq!(
            events.next(&Role::Follower(term(1, 3))),
            Some(LeaderState::Follower {
                leader_endpoint: None,
                leader_epoch: Some(epoch(1, 3)),
            })
        );
    }

    #[test]
    fn the_same_leader_at_a_new_ballot_is_a_new_event() {
        let mut events = LeaderEvents::new(endpoints());
        assert!(events.next(&Role::Leader(term(1, 1))).is_some());
        assert_eq!(events.next(&Role::Leader(term(1, 1))), None);
        assert_eq!(
            events.next(&Role::Leader(term(3, 1))),
            Some(LeaderState::Leader { epoch: epoch(3, 1) })
        );
        // Followers too: a new ballot of the same remote leader re-emits.
        assert!(events.next(&Role::Follower(term(4, 2))).is_some());
        assert_eq!(
            events.next(&Role::Follower(term(5, 2))),
            Some(LeaderState::Follower {
                leader_endpoint: Some(PeerEndpoint::try_from("client-2:7002").unwrap()),
                leader_epoch: Some(epoch(5, 2)),
            })
        );
    }

    #[test]
    fn an_older_epoch_is_reported_as_unknown() {
        let mut events = LeaderEvents::new(endpoints());
        assert!(events.next(&Role::Follower(term(5, 2))).is_some());
        assert_eq!(
            events.next(&Role::Leader(term(3, 1))),
            Some(LeaderState::Unknown)
        );
        assert_eq!(events.next(&Role::Follower(term(4, 2))), None);
        assert_eq!(events.highest_epoch(), Some(epoch(5, 2)));
        // The same epoch again is not a regression.
        assert!(events.next(&Role::Follower(term(5, 2))).is_some());
    }

    fn any_role() -> impl Strategy<Value = Role> {
        // Few ballots and pids so that repeats, equal epochs and regressions
        // are all common.
        (0u8..3, 1u32..4, 1u64..4).prop_map(|(kind, n, pid)| {
            let term = Term::new(Ballot::with(1, n, 0, pid)).unwrap();
            match kind {
                0 => Role::Leader(term),
                1 => Role::Follower(term),
                _ => Role::Unknown,
            }
        })
    }

    fn emitted_epoch(state: &LeaderState) -> Option<Epoch> {
        match state {
            LeaderState::Leader { epoch } => Some(*epoch),
            LeaderState::Follower { leader_epoch, .. } => *leader_epoch,
            LeaderState::Unknown => None,
        }
    }

    proptest! {
        /// Invariant 6: over any sequence of roles, emitted epochs never
        /// decrease, identical consecutive roles emit nothing, and every
        /// emission differs from the state before it.
        #[test]
        fn emitted_epochs_never_decrease(roles in proptest::collection::vec(any_role(), 0..60)) {
            let mut events = LeaderEvents::new(endpoints());
            let mut highest: Option<Epoch> = None;
            let mut previous_role: Option<Role> = None;
            for role in &roles {
                let before = events.current().clone();
                let emitted = events.next(role);
                if previous_role.as_ref() == Some(role) {
                    prop_assert_eq!(&emitted, &None);
                }
                if let Some(state) = &emitted {
                    prop_assert_ne!(state, &before);
                    if let Some(epoch) = emitted_epoch(state) {
                        prop_assert!(Some(epoch) >= highest, "{:?} after {:?}", epoch, highest);
                        highest = Some(epoch);
                    }
                    // What was emitted is exactly what the role says, or
                    // Unknown for a regression.
                    match (role, state) {
                        (Role::Leader(t), LeaderState::Leader { epoch }) => {
                            prop_assert_eq!(t.epoch(), *epoch);
                        }
                        (Role::Follower(t), LeaderState::Follower { leader_epoch, .. }) => {
                            prop_assert_eq!(Some(t.epoch()), *leader_epoch);
                        }
                        (_, LeaderState::Unknown) => {}
                        (role, state) => prop_assert!(false, "{:?} emitted {:?}", role, state),
                    }
                }
                prop_assert_eq!(events.highest_epoch(), highest);
                previous_role = Some(*role);
            }
        }
    }
}
