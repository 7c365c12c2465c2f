//! Membership change, decided: the next member list an operator's request
//! makes, the StopSign that ends a configuration for it, which StopSigns a
//! node admits, and what a node does once its configuration ended.
//!
//! A change runs in three steps (`docs/architecture.md`, "Membership
//! change"): the leader agrees on the next list in the current log
//! (`Command::PrepareChange`); a leader that applied that agreement proposes
//! the StopSign naming it, the only StopSign any inbox admits; once the
//! StopSign is decided, every member of the next list starts the next
//! configuration's instance, whose log begins with the previous one's final
//! state (`Command::Genesis`). Every function here is pure.

use std::fmt;

use omnipaxos::ClusterConfig;
use omnipaxos::storage::StopSign;
use omnipaxos::util::NodeId;
use tsoracle_paxos_state::{MemberRecord, Membership};
use tsoracle_paxos_toolkit::config::MAX_NODE_ID;

/// What an operator asks for. A replacement is an addition followed by a
/// removal, two changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeRequest {
    /// Add this member.
    Add(MemberRecord),
    /// Remove the member with this id.
    Remove(NodeId),
}

impl fmt::Display for ChangeRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Add(member) => write!(f, "add {member}"),
            Self::Remove(id) => write!(f, "remove node {id}"),
        }
    }
}

/// Why a request makes no next member list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    /// No member list is on record yet (a cluster in its first seconds).
    #[error("no member list is on record yet; retry once the cluster has a leader")]
    NoMemberList,
    /// Another change is agreed and not finished.
    #[error(
        "a change to {pending} is in progress; finish it (repeat that request) before asking \
         for another"
    )]
    InProgress {
        /// The change in progress.
        pending: Membership,
    },
    /// The id to add is already a member.
    #[error("node {0} is already a member")]
    AlreadyMember(NodeId),
    /// The id to remove is not a member.
    #[error("node {0} is not a member")]
    NotAMember(NodeId),
    /// The id is outside the ids a configuration may hold.
    #[error("node id {0} is outside 1..={MAX_NODE_ID}")]
    IdOutOfRange(NodeId),
    /// OmniPaxos needs two members at least.
    #[error("removing node {0} would leave a single member; OmniPaxos needs two at least")]
    TooFewMembers(NodeId),
}

/// The member list `request` makes from `current` (configuration id plus
/// one). With a change already agreed (`pending`), the same request again
/// yields that change, so repeating a request finishes it, and any other
/// request is refused.
///
/// # Errors
///
/// [`ChangeError`] naming what is wrong with the request.
pub fn plan(
    current: Option<&Membership>,
    pending: Option<&Membership>,
    request: &ChangeRequest,
) -> Result<Membership, ChangeError> {
    let current = current.ok_or(ChangeError::NoMemberList)?;
    let next = next_list(current, request);
    match (pending, next) {
        (Some(pending), Ok(next)) if *pending == next => Ok(next),
        (Some(pending), _) => Err(ChangeError::InProgress {
            pending: pending.clone(),
        }),
        (None, next) => next,
    }
}

fn next_list(current: &Membership, request: &ChangeRequest) -> Result<Membership, ChangeError> {
    let mut members = current.members().to_vec();
    match request {
        ChangeRequest::Add(member) => {
            if member.id == 0 || member.id > MAX_NODE_ID {
                return Err(ChangeError::IdOutOfRange(member.id));
            }
            if current.member(member.id).is_some() {
                return Err(ChangeError::AlreadyMember(member.id));
            }
            members.push(member.clone());
        }
        ChangeRequest::Remove(id) => {
            if current.member(*id).is_none() {
                return Err(ChangeError::NotAMember(*id));
            }
            if members.len() <= 2 {
                return Err(ChangeError::TooFewMembers(*id));
            }
            members.retain(|member| member.id != *id);
        }
    }
    let configuration = current.configuration().saturating_add(1);
    // Ids are distinct by the checks above, and the list is not empty.
    Membership::new(configuration, members).map_err(|_| ChangeError::NoMemberList)
}

/// The OmniPaxos configuration of `next`, as its StopSign names it.
#[must_use]
pub fn cluster_config(next: &Membership) -> ClusterConfig {
    ClusterConfig {
        configuration_id: next.configuration(),
        nodes: ids(next),
        flexible_quorum: None,
    }
}

/// Whether `stop_sign` names exactly `next`: its configuration id and node
/// set, no flexible quorum, no metadata.
#[must_use]
pub fn names(next: &Membership, stop_sign: &StopSign) -> bool {
    let config = &stop_sign.next_config;
    let mut nodes = config.nodes.clone();
    nodes.sort_unstable();
    config.configuration_id == next.configuration()
        && nodes == ids(next)
        && config.flexible_quorum.is_none()
        && stop_sign.metadata.is_none()
}

/// Whether a node admits `stop_sign`: it must name a change agreed in the
/// node's applied state, or by an agreement among the entries that precede
/// it in a log (this node's unapplied entries, or those it travels with),
/// so a node that has not applied them yet still recognizes the change.
/// `agreed` lists every such list found.
#[must_use]
pub fn admits<'a>(agreed: impl IntoIterator<Item = &'a Membership>, stop_sign: &StopSign) -> bool {
    agreed.into_iter().any(|next| names(next, stop_sign))
}

/// What a node does once its configuration ended with `stop_sign`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterStop {
    /// Start the next configuration's instance with this member list.
    Continue(Membership),
    /// This node is not in the next configuration: it leaves the cluster.
    Removed(Membership),
    /// The StopSign names no change agreed in the final state (decided
    /// before admission existed, or a foreign data directory): nothing is
    /// known of the next configuration's members' addresses.
    Unexplained,
}

/// The decision once the configuration ended: `pending` is the change the
/// final state agreed.
#[must_use]
pub fn after_stop(me: NodeId, pending: Option<&Membership>, stop_sign: &StopSign) -> AfterStop {
    match pending {
        Some(next) if names(next, stop_sign) => {
            if next.member(me).is_some() {
                AfterStop::Continue(next.clone())
            } else {
                AfterStop::Removed(next.clone())
            }
        }
        _ => AfterStop::Unexplained,
    }
}

/// The decision of a node that missed the end of its configuration and
/// learns from its peers that they run `newer`: join it as a member, or
/// leave.
#[must_use]
pub fn after_missing(me: NodeId, newer: &Membership) -> AfterStop {
    if newer.member(me).is_some() {
        AfterStop::Continue(newer.clone())
    } else {
        AfterStop::Removed(newer.clone())
    }
}

/// Whether node `me` takes the lead of the `next` configuration as soon as
/// it started its instance, instead of waiting out an election timeout
/// there: the hand-over of a change. The node that led the `ended`
/// configuration (`led_by`, as this node last saw it) does when it stays;
/// when it leaves (or no leader was seen), the lowest id of `next` that was
/// a member of `ended` (it holds the final state) does. Views may differ
/// (a stale leader): two nodes may then both try, and Paxos picks one; no
/// one trying only costs the election timeout.
#[must_use]
pub fn takes_over(
    me: NodeId,
    led_by: Option<NodeId>,
    ended: &Membership,
    next: &Membership,
) -> bool {
    if let Some(leader) = led_by
        && next.member(leader).is_some()
    {
        return me == leader;
    }
    next.members()
        .iter()
        .map(|member| member.id)
        .filter(|&id| ended.member(id).is_some() && Some(id) != led_by)
        .min()
        == Some(me)
}

fn ids(list: &Membership) -> Vec<NodeId> {
    list.members().iter().map(|member| member.id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: NodeId) -> MemberRecord {
        MemberRecord {
            id,
            peer_address: format!("10.0.0.{id}:6001"),
            client_endpoint: format!("http://10.0.0.{id}:7001"),
        }
    }

    fn list(configuration: u32, ids: &[NodeId]) -> Membership {
        Membership::new(configuration, ids.iter().map(|&id| member(id)).collect()).unwrap()
    }

    #[test]
    fn a_request_makes_the_next_configurations_list() {
        let three = list(1, &[1, 2, 3]);
        let add = ChangeRequest::Add(member(4));
        assert_eq!(plan(Some(&three), None, &add), Ok(list(2, &[1, 2, 3, 4])));
        assert_eq!(
            plan(Some(&three), None, &ChangeRequest::Remove(2)),
            Ok(list(2, &[1, 3]))
        );
        for (request, error) in [
            (ChangeRequest::Add(member(2)), ChangeError::AlreadyMember(2)),
            (ChangeRequest::Add(member(0)), ChangeError::IdOutOfRange(0)),
            (
                ChangeRequest::Add(member(MAX_NODE_ID + 1)),
                ChangeError::IdOutOfRange(MAX_NODE_ID + 1),
            ),
            (ChangeRequest::Remove(9), ChangeError::NotAMember(9)),
        ] {
            assert_eq!(plan(Some(&three), None, &request), Err(error), "{request}");
        }
        assert_eq!(
            plan(Some(&list(4, &[1, 3])), None, &ChangeRequest::Remove(3)),
            Err(ChangeError::TooFewMembers(3))
        );
        assert_eq!(plan(None, None, &add), Err(ChangeError::NoMemberList));
    }

    #[test]
    fn a_repeated_request_finishes_the_change_in_progress_and_another_is_refused() {
        let three = list(1, &[1, 2, 3]);
        let pending = list(2, &[1, 2, 3, 4]);
        let add = ChangeRequest::Add(member(4));
        assert_eq!(
            plan(Some(&three), Some(&pending), &add),
            Ok(pending.clone())
        );
        assert_eq!(
            plan(Some(&three), Some(&pending), &ChangeRequest::Remove(2)),
            Err(ChangeError::InProgress {
                pending: pending.clone()
            })
        );
    }

    #[test]
    fn the_old_leader_takes_over_when_it_stays_else_the_lowest_old_member() {
        let ended = list(1, &[1, 2, 3]);
        // Node 2 led and stays: only it takes over.
        let added = list(2, &[1, 2, 3, 4]);
        assert_eq!(
            [1, 2, 3, 4].map(|me| takes_over(me, Some(2), &ended, &added)),
            [false, true, false, false]
        );
        // Node 1 led and is removed: node 2, the lowest that stays.
        let removed = list(2, &[2, 3]);
        assert_eq!(
            [1, 2, 3].map(|me| takes_over(me, Some(1), &ended, &removed)),
            [false, true, false]
        );
        // No leader seen: the lowest old member (node 4 joins: it holds no
        // final state).
        let replaced = list(2, &[2, 3, 4]);
        assert_eq!(
            [2, 3, 4].map(|me| takes_over(me, None, &ended, &replaced)),
            [true, false, false]
        );
        // A leader seen that is not even in the ended list (stale): the
        // same rule.
        assert!(takes_over(2, Some(9), &ended, &replaced));
    }

    #[test]
    fn only_the_stop_sign_naming_the_agreed_list_is_admitted() {
        let next = list(2, &[1, 2, 3, 4]);
        let agreed = StopSign::with(cluster_config(&next), None);
        assert!(names(&next, &agreed));
        assert!(admits([&next], &agreed));
        let other_list = list(2, &[1, 2]);
        assert!(admits([&other_list, &next], &agreed));
        assert!(!admits([&other_list], &agreed));
        assert!(!admits([], &agreed));
        let mut reordered = agreed.clone();
        reordered.next_config.nodes.reverse();
        assert!(admits([&next], &reordered));
        let mut others = Vec::new();
        let mut other_id = agreed.clone();
        other_id.next_config.configuration_id = 3;
        others.push(other_id);
        let mut other_nodes = agreed.clone();
        other_nodes.next_config.nodes = vec![1, 2, 3, 5];
        others.push(other_nodes);
        let mut flexible = agreed.clone();
        flexible.next_config.flexible_quorum = Some(omnipaxos::util::FlexibleQuorum {
            read_quorum_size: 3,
            write_quorum_size: 2,
        });
        others.push(flexible);
        others.push(StopSign::with(cluster_config(&next), Some(vec![1])));
        for stop_sign in others {
            assert!(!admits([&next, &next], &stop_sign), "{stop_sign:?}");
        }
    }

    #[test]
    fn after_the_stop_sign_members_continue_and_the_others_leave() {
        let next = list(2, &[1, 3]);
        let stop_sign = StopSign::with(cluster_config(&next), None);
        assert_eq!(
            after_stop(1, Some(&next), &stop_sign),
            AfterStop::Continue(next.clone())
        );
        assert_eq!(
            after_stop(2, Some(&next), &stop_sign),
            AfterStop::Removed(next.clone())
        );
        assert_eq!(after_stop(1, None, &stop_sign), AfterStop::Unexplained);
        // A node that missed it learns the list from its peers.
        assert_eq!(after_missing(3, &next), AfterStop::Continue(next.clone()));
        assert_eq!(after_missing(2, &next), AfterStop::Removed(next.clone()));
        let other = list(2, &[1, 2]);
        assert_eq!(
            after_stop(1, Some(&other), &stop_sign),
            AfterStop::Unexplained
        );
    }
}
