//! The cluster's member list as the replicated state records it.
//!
//! Each node starts from a member list it was given (flags, a file). The
//! first list decided into the log ([`Command::RecordMembership`]) stands:
//! every node compares its own list with it, so an edited peer list between
//! restarts is noticed instead of silently giving two nodes different
//! quorums.
//!
//! [`Command::RecordMembership`]: crate::Command::RecordMembership

use std::fmt;

use serde::{Deserialize, Serialize};

/// One member: its OmniPaxos id and where it is reached.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MemberRecord {
    /// OmniPaxos pid.
    pub id: u64,
    /// Where its peer transport listens (`host:port`).
    pub peer_address: String,
    /// Its client-facing tsoracle endpoint.
    pub client_endpoint: String,
}

impl fmt::Display for MemberRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}={},{}",
            self.id, self.peer_address, self.client_endpoint
        )
    }
}

/// A configuration's member list: members in id order, ids distinct.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Membership {
    configuration: u32,
    members: Vec<MemberRecord>,
}

/// Why a member list is not a [`Membership`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// No member at all.
    #[error("a member list needs at least one member")]
    Empty,
    /// Two members share an id.
    #[error("node id {0} appears twice in the member list")]
    DuplicateId(u64),
}

impl Membership {
    /// The member list of OmniPaxos configuration `configuration`, sorted by
    /// id.
    ///
    /// # Errors
    ///
    /// [`MembershipError`] for an empty list or a repeated id.
    pub fn new(
        configuration: u32,
        mut members: Vec<MemberRecord>,
    ) -> Result<Self, MembershipError> {
        members.sort();
        if members.is_empty() {
            return Err(MembershipError::Empty);
        }
        if let Some(pair) = members.windows(2).find(|pair| pair[0].id == pair[1].id) {
            return Err(MembershipError::DuplicateId(pair[0].id));
        }
        Ok(Self {
            configuration,
            members,
        })
    }

    /// The OmniPaxos configuration id this list belongs to.
    #[must_use]
    pub fn configuration(&self) -> u32 {
        self.configuration
    }

    /// The members, in id order.
    #[must_use]
    pub fn members(&self) -> &[MemberRecord] {
        &self.members
    }

    /// The member with id `id`.
    #[must_use]
    pub fn member(&self, id: u64) -> Option<&MemberRecord> {
        self.members.iter().find(|member| member.id == id)
    }
}

impl fmt::Display for Membership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "configuration {}: ", self.configuration)?;
        for (i, member) in self.members.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{member}")?;
        }
        Ok(())
    }
}

/// Decoding re-checks the invariants, so a corrupt record is an error, not
/// a list with two members of one id.
impl<'de> Deserialize<'de> for Membership {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            configuration: u32,
            members: Vec<MemberRecord>,
        }
        let raw = Raw::deserialize(deserializer)?;
        let membership =
            Self::new(raw.configuration, raw.members).map_err(serde::de::Error::custom)?;
        Ok(membership)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn member(id: u64) -> MemberRecord {
        MemberRecord {
            id,
            peer_address: format!("10.0.0.{id}:6001"),
            client_endpoint: format!("http://10.0.0.{id}:7001"),
        }
    }

    /// Three members, as the golden files encode them.
    pub(crate) fn three_members() -> Membership {
        Membership::new(1, vec![member(1), member(2), member(3)]).unwrap()
    }

    /// The three members plus member 4, as configuration 2.
    pub(crate) fn four_members() -> Membership {
        Membership::new(2, vec![member(1), member(2), member(3), member(4)]).unwrap()
    }

    #[test]
    fn members_are_kept_in_id_order() {
        let list = Membership::new(1, vec![member(3), member(1), member(2)]).unwrap();
        let ids: Vec<u64> = list.members().iter().map(|m| m.id).collect();
        assert_eq!(ids, [1, 2, 3]);
        assert_eq!(list.member(2), Some(&member(2)));
        assert_eq!(list.member(4), None);
        assert_eq!(list.configuration(), 1);
    }

    #[test]
    fn an_empty_list_or_a_repeated_id_is_refused() {
        assert_eq!(Membership::new(1, vec![]), Err(MembershipError::Empty));
        let mut twin = member(2);
        twin.peer_address = "10.0.0.9:6001".to_owned();
        assert_eq!(
            Membership::new(1, vec![member(1), member(2), twin]),
            Err(MembershipError::DuplicateId(2))
        );
    }

    #[test]
    fn a_decoded_list_is_checked_again() {
        let list = Membership::new(1, vec![member(1), member(2)]).unwrap();
        let bytes = postcard::to_allocvec(&list).unwrap();
        assert_eq!(postcard::from_bytes::<Membership>(&bytes).unwrap(), list);
        // The same bytes with member 2's id rewritten to 1.
        let forged = Membership {
            configuration: 1,
            members: vec![member(1), MemberRecord { id: 1, ..member(2) }],
        };
        let bytes = postcard::to_allocvec(&forged).unwrap();
        assert!(postcard::from_bytes::<Membership>(&bytes).is_err());
    }

    #[test]
    fn the_list_displays_as_the_peer_flags_spell_it() {
        let list = Membership::new(1, vec![member(2), member(1)]).unwrap();
        assert_eq!(
            list.to_string(),
            "configuration 1: 1=10.0.0.1:6001,http://10.0.0.1:7001 \
             2=10.0.0.2:6001,http://10.0.0.2:7001"
        );
    }
}
