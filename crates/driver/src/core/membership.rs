//! Durable membership: the member list a node was started with against the
//! one the replicated state recorded (see `Command::RecordMembership`).
//!
//! The first list decided into the log stands. A node given other member
//! ids (a peer flag edited between restarts, a typo on one node of a new
//! cluster) must not take part: its quorums would be counted over other
//! members than its peers'. Addresses are another matter: how a node
//! reaches its peers may differ from node to node (a proxy, NAT, another
//! DNS name), so a member whose addresses differ from the recorded ones is
//! only reported. A node given a list while none is on record proposes it
//! (the given list is then the bootstrap seed).

use std::fmt;

use tsoracle_paxos_state::{MemberRecord, Membership};

/// One way a given member list differs from the recorded one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    /// The lists belong to different OmniPaxos configurations.
    Configuration {
        /// The recorded configuration id.
        recorded: u32,
        /// The given one.
        given: u32,
    },
    /// A recorded member that the given list lacks.
    Missing(MemberRecord),
    /// A given member that is not on record.
    Unknown(MemberRecord),
    /// A member on both lists with other addresses.
    Changed {
        /// As recorded.
        recorded: MemberRecord,
        /// As given.
        given: MemberRecord,
    },
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Configuration { recorded, given } => write!(
                f,
                "configuration {given} is given, configuration {recorded} is recorded"
            ),
            Self::Missing(member) => write!(f, "member {member} is recorded but not given"),
            Self::Unknown(member) => write!(f, "member {member} is given but not recorded"),
            Self::Changed { recorded, given } => {
                write!(f, "member {given} is given, {recorded} is recorded")
            }
        }
    }
}

impl Difference {
    /// Whether this difference changes who counts in a quorum (a
    /// configuration or member id), so that the node must not take part;
    /// other addresses for a member do not.
    #[must_use]
    pub fn refuses(&self) -> bool {
        !matches!(self, Self::Changed { .. })
    }
}

/// Every difference between `given` and `recorded`, configuration first,
/// then by member id. Empty when they agree.
#[must_use]
pub fn differences(given: &Membership, recorded: &Membership) -> Vec<Difference> {
    let mut found = Vec::new();
    if given.configuration() != recorded.configuration() {
        found.push(Difference::Configuration {
            recorded: recorded.configuration(),
            given: given.configuration(),
        });
    }
    for member in recorded.members() {
        match given.member(member.id) {
            None => found.push(Difference::Missing(member.clone())),
            Some(mine) if mine != member => found.push(Difference::Changed {
                recorded: member.clone(),
                given: mine.clone(),
            }),
            Some(_) => {}
        }
    }
    for member in given.members() {
        if recorded.member(member.id).is_none() {
            found.push(Difference::Unknown(member.clone()));
        }
    }
    found.sort_by_key(|difference| match difference {
        Difference::Configuration { .. } => 0,
        Difference::Missing(member) | Difference::Unknown(member) => member.id,
        Difference::Changed { recorded, .. } => recorded.id,
    });
    found
}

/// What this node must do about the member list it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recording {
    /// It was given no list (a host that keeps none), or the recorded list
    /// has the given configuration and ids: nothing to do but report the
    /// members whose addresses differ (empty when none do).
    Done(Vec<Difference>),
    /// No list is on record: propose the given one.
    Propose,
    /// The recorded list has another configuration or other ids: the node
    /// must not take part. Every difference, addresses included.
    Refused(Vec<Difference>),
}

/// This node's duty, given its list and the recorded one.
#[must_use]
pub fn recording(given: Option<&Membership>, recorded: Option<&Membership>) -> Recording {
    match (given, recorded) {
        (None, _) => Recording::Done(Vec::new()),
        (Some(_), None) => Recording::Propose,
        (Some(given), Some(recorded)) => {
            let found = differences(given, recorded);
            if found.iter().any(Difference::refuses) {
                Recording::Refused(found)
            } else {
                Recording::Done(found)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64) -> MemberRecord {
        MemberRecord {
            id,
            peer_address: format!("10.0.0.{id}:6001"),
            client_endpoint: format!("http://10.0.0.{id}:7001"),
        }
    }

    fn list(configuration: u32, members: &[MemberRecord]) -> Membership {
        Membership::new(configuration, members.to_vec()).unwrap()
    }

    #[test]
    fn equal_lists_have_no_difference() {
        let a = list(1, &[member(1), member(2), member(3)]);
        let b = list(1, &[member(3), member(2), member(1)]);
        assert_eq!(differences(&a, &b), []);
        assert_eq!(recording(Some(&a), Some(&b)), Recording::Done(vec![]));
    }

    #[test]
    fn every_difference_is_named_in_member_order() {
        let recorded = list(1, &[member(1), member(2), member(3)]);
        let mut moved = member(2);
        moved.peer_address = "10.0.0.9:6001".to_owned();
        let given = list(2, &[member(1), moved.clone(), member(4)]);
        assert_eq!(
            differences(&given, &recorded),
            [
                Difference::Configuration {
                    recorded: 1,
                    given: 2
                },
                Difference::Changed {
                    recorded: member(2),
                    given: moved
                },
                Difference::Missing(member(3)),
                Difference::Unknown(member(4)),
            ]
        );
    }

    #[test]
    fn a_node_proposes_its_list_only_while_none_is_recorded() {
        let mine = list(1, &[member(1), member(2)]);
        assert_eq!(recording(None, None), Recording::Done(vec![]));
        assert_eq!(recording(None, Some(&mine)), Recording::Done(vec![]));
        assert_eq!(recording(Some(&mine), None), Recording::Propose);
        let other = list(1, &[member(1), member(2), member(3)]);
        assert_eq!(
            recording(Some(&mine), Some(&other)),
            Recording::Refused(vec![Difference::Missing(member(3))])
        );
    }

    #[test]
    fn other_addresses_alone_are_reported_not_refused() {
        let recorded = list(1, &[member(1), member(2)]);
        let proxied = MemberRecord {
            peer_address: "127.0.0.1:16002".to_owned(),
            ..member(2)
        };
        let given = list(1, &[member(1), proxied.clone()]);
        let changed = Difference::Changed {
            recorded: member(2),
            given: proxied,
        };
        assert!(!changed.refuses());
        assert_eq!(
            recording(Some(&given), Some(&recorded)),
            Recording::Done(vec![changed.clone()])
        );
        // With an id difference too, the refusal names both.
        let mut bigger = given.members().to_vec();
        bigger.push(member(3));
        let bigger = list(1, &bigger);
        assert_eq!(
            recording(Some(&bigger), Some(&recorded)),
            Recording::Refused(vec![changed, Difference::Unknown(member(3))])
        );
    }

    #[test]
    fn differences_read_as_the_peer_flags_spell_members() {
        let changed = Difference::Changed {
            recorded: member(2),
            given: MemberRecord {
                peer_address: "10.0.0.9:6001".to_owned(),
                ..member(2)
            },
        };
        assert_eq!(
            changed.to_string(),
            "member 2=10.0.0.9:6001,http://10.0.0.2:7001 is given, \
             2=10.0.0.2:6001,http://10.0.0.2:7001 is recorded"
        );
    }
}
