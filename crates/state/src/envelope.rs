//! The trait that lets a piggyback host carry our commands in its own log.

use omnipaxos::storage::Entry;

use crate::{Command, PaxosEntry, PaxosSnapshot};

/// An OmniPaxos entry type that can carry a [`Command`] next to a host's own
/// commands, with a snapshot type that embeds a [`PaxosSnapshot`].
///
/// A piggyback host (a service already running OmniPaxos for its own state)
/// implements this for its entry enum, builds its composite snapshot's
/// `create` with [`PaxosSnapshot::create_from_envelopes`] and its `merge` with
/// [`PaxosSnapshot::merge_delta`]. [`PaxosEntry`] implements it for a
/// standalone node.
pub trait PaxosEnvelope: Entry {
    /// The command this entry carries, or `None` for a host-only entry.
    fn paxos_command(&self) -> Option<&Command>;

    /// Wraps a command into an entry to append to the log.
    fn wrap_paxos_command(command: Command) -> Self;

    /// The part of the host's snapshot that holds the state of this crate.
    fn paxos_snapshot(snapshot: &Self::Snapshot) -> &PaxosSnapshot;
}

impl PaxosEnvelope for PaxosEntry {
    fn paxos_command(&self) -> Option<&Command> {
        Some(&self.0)
    }

    fn wrap_paxos_command(command: Command) -> Self {
        Self(command)
    }

    fn paxos_snapshot(snapshot: &PaxosSnapshot) -> &PaxosSnapshot {
        snapshot
    }
}
