//! The member list a host's storage already recorded, read before OmniPaxos
//! starts: a node given another list (a peer flag edited between restarts)
//! is refused before it sends a single message with the wrong quorum.
//!
//! The rule is [`core::membership`](crate::core::membership); after the
//! start, the applier applies the same rule to lists it learns from its
//! peers.

use omnipaxos::storage::Storage;
use omnipaxos::util::NodeId;
use tsoracle_paxos_state::{Command, Membership, PaxosEnvelope};

use crate::core::membership::{self, Recording};
use crate::error::{ConfigError, MembershipMismatch};

/// Decided entries read per storage call while looking for the list.
const SCAN_BATCH: usize = 1024;

/// The member list on record in `storage`: the stored snapshot's, else the
/// first `RecordMembership` among the decided entries after it.
///
/// The list is recorded right after a cluster forms, so the scan usually
/// stops within the first entries; only a log that never recorded one (a
/// cluster from before lists were recorded, snapshots off) is read whole.
///
/// # Errors
///
/// [`ConfigError::Host`] when the storage cannot be read.
pub(crate) fn recorded<E, B>(storage: &B) -> Result<Option<Membership>, ConfigError>
where
    E: PaxosEnvelope,
    B: Storage<E>,
{
    let unreadable = |err: Box<dyn std::error::Error>| {
        ConfigError::Host(format!("cannot read the storage: {err}"))
    };
    if let Some(snapshot) = storage.get_snapshot().map_err(unreadable)?
        && let Some(membership) = E::paxos_snapshot(&snapshot).membership()
    {
        return Ok(Some(membership.clone()));
    }
    let decided = storage.get_decided_idx().map_err(unreadable)?;
    let mut from = storage.get_compacted_idx().map_err(unreadable)?;
    while from < decided {
        let to = decided.min(from.saturating_add(SCAN_BATCH));
        let entries = storage.get_entries(from, to).map_err(unreadable)?;
        if entries.is_empty() {
            break;
        }
        let found = entries
            .iter()
            .find_map(|entry| match entry.paxos_command() {
                Some(Command::RecordMembership { membership, .. }) => Some(membership.clone()),
                _ => None,
            });
        if found.is_some() {
            return Ok(found);
        }
        from = to;
    }
    Ok(None)
}

/// Refuses to start node `node` with `given` when `storage` recorded a
/// list of another configuration or other member ids.
///
/// # Errors
///
/// [`ConfigError::Membership`] naming every difference;
/// [`ConfigError::Host`] when the storage cannot be read.
pub(crate) fn check_before_start<E, B>(
    node: NodeId,
    given: &Membership,
    storage: &B,
) -> Result<(), ConfigError>
where
    E: PaxosEnvelope,
    B: Storage<E>,
{
    let Some(recorded) = recorded(storage)? else {
        return Ok(());
    };
    match membership::recording(Some(given), Some(&recorded)) {
        Recording::Refused(differences) => Err(ConfigError::Membership(MembershipMismatch {
            node,
            recorded,
            differences,
        })),
        // Other addresses alone: the applier reports them once it applies
        // the record.
        Recording::Done(_) | Recording::Propose => Ok(()),
    }
}
