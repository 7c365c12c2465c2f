//! Generic OmniPaxos glue, with no tsoracle types in it.
//!
//! Anything that runs an [`omnipaxos`] instance needs the same plumbing
//! whatever its log entries are. This crate holds that plumbing, generic over
//! the entry type `T: omnipaxos::storage::Entry`:
//!
//! - [`Runner`]: one consensus thread per node that owns the `OmniPaxos`
//!   instance (OmniPaxos calls storage synchronously and panics on storage
//!   errors, so it never runs on the async workers). Each round it feeds the
//!   ready inputs to OmniPaxos, hands newly decided entries to a
//!   [`DecidedHook`], syncs the round's writes once through a [`Durability`]
//!   (group commit) and only then sends the round's messages. A panic
//!   becomes [`RunnerStatus::failed`] and [`Error::RunnerFailed`].
//! - [`lease`]: the leader lease the runner keeps without writing the log
//!   (the classic Paxos master lease: rounds granted by a majority, grants
//!   that hold), reported in [`RunnerStatus::lease_until`] on the node's
//!   [`Clock`], and handed over with [`Runner::hand_over`].
//! - [`MessageSink`] and [`Inbox`] ([`sink`]): the transport boundary.
//!   Sending never waits on the network; receiving refuses messages from
//!   unknown senders or for another node before OmniPaxos sees them.
//! - [`ConfigBuilder`] ([`config`]): the one place an `OmniPaxosConfig` is
//!   written out, checked (a typed error, never a panic), one per node.
//! - [`Durability`] ([`durability`]): one sync per round;
//!   [`SyncedWrites`] for storage whose writes are durable on their own.
//! - [`storage::MemoryStorage`]: an in-memory `Storage` for tests and
//!   simulation;
//! - [`storage::RocksdbStorage`] (feature `rocksdb`, on by default): durable
//!   storage where every write is one synced RocksDB `WriteBatch`, every
//!   record is versioned and checksummed ([`storage::codec`]), and the data
//!   directory is locked and tied to one cluster and node; its
//!   `group_commit()` handle is the runner's [`Durability`];
//! - [`Error`], the crate's one error type.
//!
//! A host that brings its own storage turns default features off and never
//! compiles RocksDB.
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
//!
//! # Wiring runners
//!
//! A node's sink exists before its runner, its inbox only after: take the
//! sink from the network, spawn the runner, then attach its inbox. The
//! network here is the in-memory one of the test harness
//! (`tsoracle-paxos-harness`, a dev-dependency); a real transport (gRPC)
//! takes its place.
//!
//! ```no_run
//! # use omnipaxos::storage::{Entry, NoSnapshot};
//! # #[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
//! # struct Put(u64);
//! # impl Entry for Put { type Snapshot = NoSnapshot; }
//! use omnipaxos::util::LogEntry;
//! use tsoracle_paxos_harness::memnet::{MemNetConfig, MemNetwork};
//! use tsoracle_paxos_toolkit::storage::MemoryStorage;
//! use tsoracle_paxos_toolkit::{ConfigBuilder, DecidedHook, Runner, RunnerConfig, SyncedWrites};
//!
//! /// Counts decided entries; a real hook folds them into a state machine.
//! struct Count(usize);
//!
//! impl DecidedHook<Put> for Count {
//!     fn next_idx(&self) -> usize {
//!         self.0
//!     }
//!     fn on_decided(
//!         &mut self,
//!         entries: Vec<LogEntry<Put>>,
//!     ) -> Result<Option<usize>, Box<dyn std::error::Error + Send + Sync>> {
//!         for entry in entries {
//!             self.0 = match entry {
//!                 LogEntry::Snapshotted(s) => s.trimmed_idx,
//!                 LogEntry::Trimmed(idx) => idx,
//!                 _ => self.0 + 1,
//!             };
//!         }
//!         Ok(None) // or Some(idx) to compact the log below idx
//!     }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let nodes = [1, 2, 3];
//! let network = MemNetwork::<Put>::new(MemNetConfig::default())?;
//! // Configuration 1, a 5-tick election timeout: the defaults.
//! let settings = ConfigBuilder::new(nodes).election_ticks(5);
//! let mut runners = Vec::new();
//! for pid in nodes {
//!     let omnipaxos = settings.build(pid)?.build(MemoryStorage::new())?;
//!     let sink = network.add_node(pid);
//!     let runner = Runner::spawn(omnipaxos, &nodes, sink, SyncedWrites, Count(0), RunnerConfig::default())?;
//!     network.attach(runner.inbox());
//!     runners.push(runner);
//! }
//! network.control().isolate(3); // faults and partitions at runtime
//! // ... wait for `runner.status()` to show a leader, then `propose` ...
//! for runner in runners {
//!     runner.shutdown().await?;
//! }
//! network.shutdown().await;
//! # Ok(())
//! # }
//! ```

// The docs link to the RocksDB storage, which exists only with its feature;
// the default-feature doc build (CI) still denies broken links.
#![cfg_attr(not(feature = "rocksdb"), allow(rustdoc::broken_intra_doc_links))]

pub mod clock;
pub mod config;
pub mod durability;
mod error;
pub mod instance;
pub mod lease;
pub mod links;
#[cfg(feature = "mutations")]
pub mod mutation;
pub mod runner;
mod send_order;
pub mod sink;
pub mod storage;
pub mod telemetry;

/// The OmniPaxos every crate of this workspace runs: 0.2.4 with four fixes
/// (delta-snapshot sync, a stale `PrepareReq`, and two on the StopSign's
/// path) and the lease messages as one more `Message` variant; package
/// `tsoracle-paxos-omnipaxos`, see `vendor/README.md`). A host
/// that builds its own `OmniPaxos` takes it from here, so it cannot end up
/// on the published crate and its bugs.
pub use omnipaxos;

pub use clock::{Clock, MonotonicClock};
pub use config::ConfigBuilder;
pub use durability::{Durability, SyncedWrites};
pub use error::Error;
pub use instance::{Impostor, InstanceId, PeerAdmission};
pub use links::{PeerLink, PeerLinks};
pub use runner::{DecidedHook, Placement, Runner, RunnerConfig, RunnerLease, RunnerStatus};
pub use sink::{
    Inbox, InboxStats, MessageSink, Refusal, StopSignAdmission, carries_stop_sign, stop_sign_of,
};
