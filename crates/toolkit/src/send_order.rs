//! Which of a round's messages may leave before the round's sync.
//!
//! A `Promise`, an `Accepted` (of entries or of a StopSign) or a lease
//! `Grant` reports state that must survive a crash of its sender, so it
//! leaves only after the sync of the round that wrote it. A leader's
//! replication messages (`AcceptSync`, `AcceptDecide`, `Decide`,
//! `AcceptStopSign`) report nothing about the leader: a follower syncs what
//! they carry before it acknowledges it, so they may leave first and the
//! follower's sync runs beside the leader's (Raft thesis §10.2.1, as in
//! etcd-raft and raft-rs). The leader's own acceptance counts toward a
//! decision only once synced: a follower's `Accepted` of an entry arrives,
//! at the earliest, in the round after the one that appended it, and a
//! round starts only after the previous round's sync returned
//! (`docs/architecture.md`, invariant 7).
//!
//! Two exceptions keep everything behind the sync:
//! - a round that changed this node's promise: a new ballot must be durable
//!   before anything sent under it, or a leader that crashed before its sync
//!   could lead the same ballot again after a restart, with another log;
//! - any message behind a held one to the same peer: messages to a peer keep
//!   their order, so only a leading run of replication messages goes early.

use std::collections::BTreeSet;

use omnipaxos::messages::Message;
use omnipaxos::messages::sequence_paxos::{PaxosMessage, PaxosMsg};
use omnipaxos::storage::Entry;
use omnipaxos::util::NodeId;

/// Moves the messages of `outgoing` that may leave before the round's sync
/// into the returned list, in order; the rest stay in `outgoing`, in order.
/// `promise_changed`: this round changed the node's promise.
pub(crate) fn take_early<T: Entry>(
    promise_changed: bool,
    outgoing: &mut Vec<Message<T>>,
) -> Vec<Message<T>> {
    #[cfg(feature = "mutations")]
    if !crate::mutation::is_on(crate::mutation::Guard::SyncBeforeAcknowledge) {
        // Mutation: every message leaves before the sync that backs it.
        return std::mem::take(outgoing);
    }
    if promise_changed {
        return Vec::new();
    }
    let mut held_peers: BTreeSet<NodeId> = BTreeSet::new();
    let mut early = Vec::new();
    let mut late = Vec::with_capacity(outgoing.len());
    for message in outgoing.drain(..) {
        let peer = message.get_receiver();
        if is_replication(&message) && !held_peers.contains(&peer) {
            early.push(message);
        } else {
            held_peers.insert(peer);
            late.push(message);
        }
    }
    *outgoing = late;
    early
}

/// A leader's message that carries entries or decisions to a follower and
/// reports nothing about the leader's own durable state.
fn is_replication<T: Entry>(message: &Message<T>) -> bool {
    matches!(
        message,
        Message::SequencePaxos(PaxosMessage {
            msg: PaxosMsg::AcceptSync(_)
                | PaxosMsg::AcceptDecide(_)
                | PaxosMsg::Decide(_)
                | PaxosMsg::AcceptStopSign(_),
            ..
        })
    )
}

#[cfg(test)]
mod tests {
    use omnipaxos::ballot_leader_election::Ballot;
    use omnipaxos::messages::sequence_paxos::{Accepted, Decide, Prepare};
    use omnipaxos::storage::NoSnapshot;
    use omnipaxos::util::SequenceNumber;

    use super::*;

    #[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
    struct Put;

    impl Entry for Put {
        type Snapshot = NoSnapshot;
    }

    fn paxos(to: NodeId, msg: PaxosMsg<Put>) -> Message<Put> {
        Message::SequencePaxos(PaxosMessage { from: 1, to, msg })
    }

    fn decide(to: NodeId) -> Message<Put> {
        paxos(
            to,
            PaxosMsg::Decide(Decide {
                n: Ballot::default(),
                seq_num: SequenceNumber::default(),
                decided_idx: 3,
            }),
        )
    }

    fn accepted(to: NodeId) -> Message<Put> {
        paxos(
            to,
            PaxosMsg::Accepted(Accepted {
                n: Ballot::default(),
                accepted_idx: 3,
            }),
        )
    }

    fn prepare(to: NodeId) -> Message<Put> {
        paxos(
            to,
            PaxosMsg::Prepare(Prepare {
                n: Ballot::default(),
                decided_idx: 0,
                n_accepted: Ballot::default(),
                accepted_idx: 0,
            }),
        )
    }

    fn kinds(messages: &[Message<Put>]) -> Vec<(NodeId, &'static str)> {
        messages
            .iter()
            .map(|m| {
                let kind = match m {
                    Message::SequencePaxos(PaxosMessage { msg, .. }) => match msg {
                        PaxosMsg::Decide(_) => "decide",
                        PaxosMsg::Accepted(_) => "accepted",
                        PaxosMsg::Prepare(_) => "prepare",
                        _ => "other",
                    },
                    _ => "other",
                };
                (m.get_receiver(), kind)
            })
            .collect()
    }

    #[test]
    fn replication_leaves_early_and_acknowledgements_wait_for_the_sync() {
        let mut outgoing = vec![decide(2), accepted(3), decide(3), prepare(2), decide(2)];
        let early = take_early(false, &mut outgoing);
        assert_eq!(kinds(&early), [(2, "decide")]);
        // Peer 3's decide is behind its accepted, peer 2's second decide
        // behind its prepare: order per peer is kept.
        assert_eq!(
            kinds(&outgoing),
            [
                (3, "accepted"),
                (3, "decide"),
                (2, "prepare"),
                (2, "decide")
            ]
        );
    }

    #[test]
    fn nothing_leaves_early_in_a_round_that_changed_the_promise() {
        let mut outgoing = vec![decide(2), decide(3)];
        assert!(take_early(true, &mut outgoing).is_empty());
        assert_eq!(outgoing.len(), 2);
    }

    #[cfg(feature = "mutations")]
    #[test]
    fn without_the_guard_everything_leaves_early() {
        use crate::mutation::{Guard, remove_on_this_thread};
        remove_on_this_thread(Some(Guard::SyncBeforeAcknowledge));
        let mut outgoing = vec![accepted(2), prepare(3)];
        let early = take_early(false, &mut outgoing);
        remove_on_this_thread(None);
        assert_eq!(early.len(), 2);
        assert!(outgoing.is_empty());
    }
}
