//! Group commit: one sync per runner round instead of one per write.
//!
//! OmniPaxos writes to its storage many times per round (one per append, per
//! accepted message, per decide). Syncing each write would cost one fsync per
//! caller. Instead the runner brackets a round with [`Durability::begin_round`]
//! and [`Durability::commit_round`]: storage writes inside the round may skip
//! their own sync, and `commit_round` makes all of them durable at once,
//! before the runner lets any message of that round leave the node.

use crate::error::Error;

/// Makes a round's storage writes durable with one sync.
pub trait Durability: Send + 'static {
    /// Called before the round's first write: writes may defer their sync.
    fn begin_round(&self);

    /// Makes every write since [`begin_round`](Self::begin_round) durable.
    /// Returns only once they are synced; on error the runner stops, since
    /// OmniPaxos may already believe the writes happened.
    fn commit_round(&self) -> Result<(), Error>;
}

/// For storage whose every write is already durable when it returns, such as
/// [`MemoryStorage`](crate::storage::MemoryStorage) (nothing to sync) or a
/// storage used without group commit.
#[derive(Debug, Default, Clone, Copy)]
pub struct SyncedWrites;

impl Durability for SyncedWrites {
    fn begin_round(&self) {}

    fn commit_round(&self) -> Result<(), Error> {
        Ok(())
    }
}
