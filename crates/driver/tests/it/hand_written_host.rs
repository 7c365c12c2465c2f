//! A host outside this crate that implements `PaxosHighWaterHost` by hand,
//! beside the blanket implementation for `RunnerBackedHost`: the trait stays
//! open to hosts that do not run on a toolkit runner.

use std::sync::Arc;

use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::util::NodeId;
use tokio::sync::watch;
use tsoracle_core::{Epoch, PeerEndpoint};
use tsoracle_driver_paxos::{
    HostError, LeaderView, PaxosHighWaterHost, PendingApply, ProposerSlot,
};
use tsoracle_paxos_state::{ApplyState, Command, ProposalId};

/// Answers every question itself; never leads.
struct HandWritten {
    proposer: ProposerSlot,
    view: watch::Sender<LeaderView>,
}

impl PaxosHighWaterHost for HandWritten {
    fn node_id(&self) -> NodeId {
        2
    }
    fn claim_proposer(&self) -> Option<u64> {
        self.proposer.claim()
    }
    fn members(&self) -> Vec<NodeId> {
        vec![1, 2, 3]
    }
    fn client_endpoint(&self, node: NodeId) -> Option<PeerEndpoint> {
        PeerEndpoint::try_from(format!("127.0.0.1:{}", 7000 + node)).ok()
    }
    fn leadership(&self) -> watch::Receiver<LeaderView> {
        self.view.subscribe()
    }
    fn submit(&self, _command: Command) -> Result<PendingApply, HostError> {
        Err(HostError::Unavailable("a follower".to_owned()))
    }
    fn read_state(&self, read: &mut dyn FnMut(&ApplyState)) {
        read(&ApplyState::new());
    }
}

#[test]
fn a_hand_written_host_is_still_a_host() {
    let host = HandWritten {
        proposer: ProposerSlot::new(4),
        view: watch::channel(LeaderView {
            promise: Ballot::default(),
            leader: None,
            lease_until: None,
            configuration_ended: false,
        })
        .0,
    };
    let host: Arc<dyn PaxosHighWaterHost> = Arc::new(host);
    assert_eq!(host.node_id(), 2);
    assert_eq!(host.claim_proposer(), Some(4));
    assert_eq!(host.claim_proposer(), None);
    assert_eq!(host.members(), [1, 2, 3]);
    assert_eq!(
        host.client_endpoint(3),
        PeerEndpoint::try_from("127.0.0.1:7003".to_owned()).ok()
    );
    let barrier = Command::Barrier {
        epoch: Epoch(1),
        proposal: ProposalId::new(2, 4, 0),
    };
    assert!(host.submit(barrier).is_err());
}
