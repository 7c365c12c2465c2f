//! The replicated state machine of the tsoracle OmniPaxos driver: the command
//! every node agrees on, the pure state it folds into, and the pieces that tie
//! that state to OmniPaxos' log.
//!
//! - [`Command`] and its versioned log entry [`PaxosEntry`] (an
//!   [`omnipaxos::storage::Entry`]).
//! - [`ApplyState`]: high-water, dense counters, leases, the fencing epoch and
//!   the per-node proposal ledger, with the deterministic [`ApplyState::apply`].
//! - [`PaxosSnapshot`]: an exact OmniPaxos snapshot of that state.
//! - [`SnapshotPolicy`] and [`SnapshotTracker`]: when to compact.
//! - [`ApplyCursor`]: drains the decided log into the state without skipping
//!   or re-applying an entry.
//! - [`PaxosEnvelope`]: lets a piggyback host carry [`Command`]s inside its own
//!   OmniPaxos entry type.
//!
//! The crate does no I/O and has no runtime, clock or randomness: folding the
//! same commands from the same state always gives the same state.
//!
//! # Example
//!
//! ```
//! use omnipaxos::ballot_leader_election::Ballot;
//! use tsoracle_paxos_epoch::encode_epoch;
//! use tsoracle_paxos_state::{ApplyState, Command, Outcome, PaxosSnapshot, ProposalId};
//!
//! let epoch = encode_epoch(Ballot::with(1, 1, 0, 1))?;
//! let advance = Command::Advance { at_least: 100, epoch, proposal: ProposalId::new(1, 0, 1) };
//!
//! let mut state = ApplyState::new();
//! assert_eq!(state.apply(&advance), Outcome::HighWater(100));
//! // A replayed proposal changes nothing.
//! assert_eq!(state.apply(&advance), Outcome::Duplicate);
//!
//! // Snapshots survive a byte round trip.
//! let bytes = PaxosSnapshot::from_state(state.clone()).to_bytes()?;
//! assert_eq!(PaxosSnapshot::from_bytes(&bytes)?.into_state(), state);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod apply;
mod codec;
mod command;
mod cursor;
mod envelope;
mod error;
mod membership;
mod policy;
mod snapshot;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod test_log;

pub use apply::{
    ApplyState, ChangeRejection, DenseRejection, GenesisRejection, LeaseRejection, Outcome,
};
pub use command::{COMMAND_FORMAT_VERSION, Command, Lease, PaxosEntry, ProposalId};
pub use cursor::{Absorbed, Applied, ApplyCursor, HostItem};
pub use envelope::PaxosEnvelope;
pub use error::StateError;
pub use membership::{MemberRecord, Membership, MembershipError};
pub use policy::{DEFAULT_SNAPSHOT_INTERVAL, SnapshotContext, SnapshotPolicy, SnapshotTracker};
pub use snapshot::{PaxosSnapshot, SNAPSHOT_FORMAT_VERSION};
