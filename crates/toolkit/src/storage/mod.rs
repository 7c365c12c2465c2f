//! OmniPaxos [`Storage`](omnipaxos::storage::Storage) implementations.
//!
//! - [`MemoryStorage`]: in memory, for tests and simulation.
//! - [`RocksdbStorage`] (feature `rocksdb`): durable, one synced RocksDB
//!   `WriteBatch` per write, checksummed records, identity-checked and locked
//!   directory.
//!
//! Both share one definition of what every
//! [`StorageOp`](omnipaxos::storage::StorageOp) does (a write is validated as
//! a whole before any backend applies it), and one conformance suite
//! (`tests/it`) runs the same cases against both.
//!
//! # Semantics
//!
//! All indices are the absolute log indices OmniPaxos uses; they survive
//! trims and restarts.
//!
//! - The log holds the entries `[first, end)`; `get_log_len()` is
//!   `end - first` (OmniPaxos derives its accepted index as
//!   `get_log_len() + get_compacted_idx()`).
//! - `get_entries(from, to)` and `get_suffix(from)` return an empty vector
//!   unless every entry of the interval is stored.
//! - `Trim(idx)` removes the entries below `idx`. Past the end it empties the
//!   log and moves both bounds to `idx`, so a lagging follower that installs
//!   a snapshot (`Trim(i)`, `SetCompactedIdx(i)`, `SetSnapshot`,
//!   `AppendOnPrefix(i, ..)` in one write) continues at `i`.
//! - `AppendOnPrefix(from, entries)` keeps `[first, from)` and appends
//!   `entries`. Past the end with no entries it does nothing (OmniPaxos sends
//!   that when a follower's accepted index counts its stop-sign). Below
//!   `first` (rewriting trimmed entries) or past the end with entries (a gap)
//!   it is refused with [`Error::InvalidOperation`](crate::Error::InvalidOperation).
//! - After every write, `compacted_idx <= end`: a compaction covers only
//!   entries that were stored or trimmed. OmniPaxos always trims to an index
//!   in the same write that records it as compacted, so it never hits this;
//!   the rule lets an open detect damaged metadata.
//! - `write_atomically` applies its ops in order, all or nothing: a refused
//!   or failed write changes nothing.

pub mod codec;
#[cfg(feature = "rocksdb")]
mod dir;
mod identity;
mod memory;
#[cfg(feature = "rocksdb")]
mod rocksdb;
mod state;

#[cfg(feature = "rocksdb")]
pub use self::rocksdb::{RocksdbGroupCommit, RocksdbOptions, RocksdbStorage};
pub use identity::StorageIdentity;
pub use memory::MemoryStorage;
