//! Generic OmniPaxos glue, with no tsoracle types in it.
//!
//! Anything that runs an [`omnipaxos`] instance needs the same plumbing
//! whatever its log entries are. This crate holds that plumbing, generic over
//! the entry type `T: omnipaxos::storage::Entry`:
//!
//! - [`storage::MemoryStorage`]: an in-memory `Storage` for tests and
//!   simulation;
//! - [`storage::RocksdbStorage`] (feature `rocksdb`, on by default): durable
//!   storage where every write is one synced RocksDB `WriteBatch`, every
//!   record is versioned and checksummed ([`storage::codec`]), and the data
//!   directory is locked and tied to one cluster and node;
//! - [`Error`], the crate's one error type.
//!
//! A host that brings its own storage turns default features off and never
//! compiles RocksDB. (The tick/IO runner and the `MessageSink` transport
//! trait will live here too.)
//!
//! # Example
//!
//! ```
//! use omnipaxos::storage::{Entry, NoSnapshot, Storage, StorageOp};
//! use tsoracle_paxos_toolkit::storage::MemoryStorage;
//!
//! #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
//! struct Put(u64);
//!
//! impl Entry for Put {
//!     type Snapshot = NoSnapshot;
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut storage = MemoryStorage::<Put>::new();
//! // One atomic write, as OmniPaxos issues them; indices are absolute.
//! storage.write_atomically(vec![
//!     StorageOp::AppendEntries(vec![Put(1), Put(2), Put(3)]),
//!     StorageOp::SetDecidedIndex(3),
//! ])?;
//! storage.write_atomically(vec![StorageOp::Trim(2), StorageOp::SetCompactedIdx(2)])?;
//! assert_eq!(storage.get_log_len()?, 1);
//! assert_eq!(storage.get_suffix(2)?, vec![Put(3)]);
//! // Entries that were trimmed are gone: the whole range must exist.
//! assert!(storage.get_entries(1, 3)?.is_empty());
//! # Ok(())
//! # }
//! ```
//!
//! With the `rocksdb` feature the same code runs on
//! `RocksdbStorage::open(dir, StorageIdentity::new("my-cluster", 1), RocksdbOptions::default())?`.

// The docs link to the RocksDB storage, which exists only with its feature;
// the default-feature doc build (CI) still denies broken links.
#![cfg_attr(not(feature = "rocksdb"), allow(rustdoc::broken_intra_doc_links))]

pub mod durability;
mod error;
pub mod runner;
pub mod sink;
pub mod storage;

pub use durability::{Durability, SyncedWrites};
pub use error::Error;
pub use runner::{DecidedHook, Runner, RunnerConfig, RunnerStatus};
pub use sink::{Inbox, InboxStats, MessageSink, Refusal};
