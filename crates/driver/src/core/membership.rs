//! Durable membership: the member list a node was started with against the
//! one the replicated state recorded (see `Command::RecordMembership`).
//!
//! The first list decided into the log stands. A node given another list
//! (a peer flag edited between restarts, a typo on one node of a new
//! cluster) must not take part: with other member ids its quorums differ
//! from its peers', and with other addresses it talks to the wrong
//! machines. A node given a list while none is on record proposes it (the
//! given list is then the bootstrap seed).

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
    /// is the given one: nothing to do.
    Done,
    /// No list is on record: propose the given one.
    Propose,
    /// Another list is on record: the node must not take part.
    Refused(Vec<Difference>),
}

/// This node's duty, given its list and the recorded one.
#[must_use]
pub fn recording(given: Option<&Membership>, recorded: Option<&Membership>) -> Recording {
    match (given, recorded) {
        (None, _) => Recording::Done,
        (Some(_), None) => Recording::Propose,
        (Some(given), Some(recorded)) => {
            let found = differences(given, recorded);
            if found.is_empty() {
                Recording::Done
            } else {
                Recording::Refused(found)
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
        assert_eq!(recording(Some(&a), Some(&b)), Recording::Done);
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
        assert_eq!(recording(None, None), Recording::Done);
        assert_eq!(recording(None, Some(&mine)), Recording::Done);
        assert_eq!(recording(Some(&mine), None), Recording::Propose);
        let other = list(1, &[member(1), member(2), member(3)]);
        assert_eq!(
            recording(Some(&mine), Some(&other)),
            Recording::Refused(vec![Difference::Missing(member(3))])
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
