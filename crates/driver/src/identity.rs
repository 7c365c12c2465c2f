//! [`RegistryAdmission`]: the peer check of a host's inbox, backed by the
//! instances its applied state registered (the rule is
//! [`core::identity::admit`](crate::core::identity::admit)).

use omnipaxos::util::NodeId;
use tsoracle_paxos_toolkit::{Impostor, InstanceId, PeerAdmission};

use crate::applier::ApplierHandle;
use crate::core::identity;

/// Admits a peer unless this node's applied state registered another
/// instance for it. Set it on the runner's inbox
/// ([`Inbox::set_admission`](tsoracle_paxos_toolkit::Inbox::set_admission))
/// before the inbox reaches a transport.
#[derive(Debug, Clone)]
pub struct RegistryAdmission {
    applier: ApplierHandle,
}

impl RegistryAdmission {
    /// The admission of the node whose applied state `applier` reads.
    #[must_use]
    pub fn new(applier: ApplierHandle) -> Self {
        Self { applier }
    }
}

impl PeerAdmission for RegistryAdmission {
    fn admit(&self, node: NodeId, presented: Option<InstanceId>) -> Result<(), Impostor> {
        let verdict = identity::admit(node, presented, self.applier.registered_instance(node));
        #[cfg(feature = "mutations")]
        if verdict.is_err() && !crate::mutation::is_on(crate::mutation::Guard::IdentityCheck) {
            crate::mutation::count_bypass();
            return Ok(());
        }
        verdict
    }
}
