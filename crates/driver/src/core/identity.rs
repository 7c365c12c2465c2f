//! Member identity: which data directory may speak, and act, for a node id.
//!
//! Pure rules over the registered instances of the applied state (see
//! `Command::Register`): a peer presenting another instance than the one on
//! record is refused, a node whose own instance is not the one on record
//! must stop, and a node not on record registers itself. A node id with no
//! record is admitted: a founding member before its registration is decided.

use omnipaxos::util::NodeId;
use tsoracle_paxos_toolkit::{Impostor, InstanceId};

/// Whether a peer presenting `presented` may speak as `node`, given the
/// instance the applied state holds for it.
///
/// # Errors
///
/// [`Impostor`] when `node` is registered with another instance (or the
/// peer presents none).
pub fn admit(
    node: NodeId,
    presented: Option<InstanceId>,
    registered: Option<u128>,
) -> Result<(), Impostor> {
    match registered.map(InstanceId) {
        Some(on_record) if presented != Some(on_record) => Err(Impostor {
            node,
            presented,
            registered: on_record,
        }),
        _ => Ok(()),
    }
}

/// What this node must do about its own registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// It presents no instance (a host without one), or it is on record:
    /// nothing to do.
    Done,
    /// It is not on record yet: propose its `Register`.
    Propose(InstanceId),
    /// Another instance is on record for this node id: this directory is
    /// not the one the cluster knows, so the node must not take part.
    Refused {
        /// This node's instance.
        mine: InstanceId,
        /// The one on record.
        registered: InstanceId,
    },
}

/// This node's registration, given its own instance and the one on record.
#[must_use]
pub fn registration(mine: Option<InstanceId>, registered: Option<u128>) -> Registration {
    match (mine, registered.map(InstanceId)) {
        (None, _) => Registration::Done,
        (Some(mine), None) => Registration::Propose(mine),
        (Some(mine), Some(registered)) if mine == registered => Registration::Done,
        (Some(mine), Some(registered)) => Registration::Refused { mine, registered },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: InstanceId = InstanceId(0xa);
    const B: InstanceId = InstanceId(0xb);

    #[test]
    fn a_peer_is_admitted_when_unregistered_or_presenting_the_registered_instance() {
        assert_eq!(admit(2, None, None), Ok(()));
        assert_eq!(admit(2, Some(B), None), Ok(()));
        assert_eq!(admit(2, Some(A), Some(0xa)), Ok(()));
    }

    #[test]
    fn a_peer_presenting_another_instance_or_none_is_an_impostor() {
        for presented in [Some(B), None] {
            assert_eq!(
                admit(2, presented, Some(0xa)),
                Err(Impostor {
                    node: 2,
                    presented,
                    registered: A
                })
            );
        }
    }

    #[test]
    fn a_node_registers_once_and_stops_when_another_instance_is_on_record() {
        assert_eq!(registration(None, Some(0xa)), Registration::Done);
        assert_eq!(registration(Some(A), None), Registration::Propose(A));
        assert_eq!(registration(Some(A), Some(0xa)), Registration::Done);
        assert_eq!(
            registration(Some(B), Some(0xa)),
            Registration::Refused {
                mine: B,
                registered: A
            }
        );
    }
}
