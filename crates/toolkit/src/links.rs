//! What a node last heard from each peer: when, and the round-trip time of
//! its last lease grant. The runner writes it once per round; operators'
//! tools (metrics, `status`) read it. Times are on the runner's lease
//! clock, so a simulation's virtual time and a node's monotonic clock read
//! alike.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use omnipaxos::util::NodeId;

/// One peer as this node last saw it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerLink {
    /// When a message of this peer last reached the consensus loop, on the
    /// lease clock. `None`: never since this node started.
    pub last_heard: Option<Duration>,
    /// Send-to-grant time of the last lease round this peer granted (only
    /// a leader asks rounds, so only a leader measures it).
    pub round_trip: Option<Duration>,
    /// When this node last granted this peer a lease round: while that is
    /// under a lease ago, the peer's lease is live as far as this node
    /// knows.
    pub last_granted: Option<Duration>,
}

/// Every peer's [`PeerLink`], shared between the consensus loop and its
/// readers. One lock per round, never held across anything else.
#[derive(Debug, Default)]
pub struct PeerLinks {
    links: Mutex<BTreeMap<NodeId, PeerLink>>,
}

impl PeerLinks {
    /// Records that messages of `peers` arrived at `now`.
    pub(crate) fn heard(&self, peers: &[NodeId], now: Duration) {
        if peers.is_empty() {
            return;
        }
        let mut links = self.links.lock().unwrap_or_else(PoisonError::into_inner);
        for peer in peers {
            links.entry(*peer).or_default().last_heard = Some(now);
        }
    }

    /// Records a lease grant of `peer` that took `round_trip`.
    pub(crate) fn round_trip(&self, peer: NodeId, round_trip: Duration) {
        let mut links = self.links.lock().unwrap_or_else(PoisonError::into_inner);
        links.entry(peer).or_default().round_trip = Some(round_trip);
    }

    /// Records that this node granted `peer` a lease round at `now`.
    pub(crate) fn granted(&self, peer: NodeId, now: Duration) {
        let mut links = self.links.lock().unwrap_or_else(PoisonError::into_inner);
        links.entry(peer).or_default().last_granted = Some(now);
    }

    /// A copy of every peer heard of so far.
    #[must_use]
    pub fn snapshot(&self) -> BTreeMap<NodeId, PeerLink> {
        self.links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_keeps_its_last_hearing_and_round_trip() {
        let links = PeerLinks::default();
        links.heard(&[2, 3], Duration::from_millis(10));
        links.round_trip(2, Duration::from_millis(3));
        links.heard(&[2], Duration::from_millis(20));
        links.granted(2, Duration::from_millis(21));
        let seen = links.snapshot();
        assert_eq!(
            seen[&2],
            PeerLink {
                last_heard: Some(Duration::from_millis(20)),
                round_trip: Some(Duration::from_millis(3)),
                last_granted: Some(Duration::from_millis(21)),
            }
        );
        assert_eq!(seen[&3].last_heard, Some(Duration::from_millis(10)));
        assert_eq!(seen[&3].round_trip, None);
    }
}
