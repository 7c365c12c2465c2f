//! The storage conformance suite: what every OmniPaxos [`Storage`] of this
//! workspace must do, as checks a host runs on its own storage.
//!
//! The toolkit runs it against `MemoryStorage` and `RocksdbStorage`, so the
//! two cannot drift apart; a piggyback host that brings its own storage runs
//! the same checks on it. Describe the storage with a [`StorageHarness`]
//! (how to open it, how to reopen it with its content, how to make an entry
//! and a snapshot from a number), then call [`run_all`] or one case
//! function per test ([`CASES`] names them all).
//!
//! Every case checks what it reads back, once more after a reopen where the
//! storage must keep its content: absolute indices across trims, reads of a
//! range that is not wholly stored being empty, refused writes (gaps, a
//! rewrite of compacted entries, a compacted index past the end) changing
//! nothing, and `write_atomically` applying its ops in order, all or
//! nothing. A failed check is a [`Failure`], never a panic.
//!
//! ```
//! use omnipaxos::storage::{Entry, NoSnapshot};
//! use tsoracle_paxos_harness::conformance::{self, StorageHarness};
//! use tsoracle_paxos_toolkit::storage::MemoryStorage;
//!
//! #[derive(Clone, Debug, PartialEq)]
//! struct Put(u64);
//!
//! #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
//! struct Sum(u64);
//!
//! impl omnipaxos::storage::Snapshot<Put> for Sum {
//!     fn create(entries: &[Put]) -> Self {
//!         Sum(entries.iter().map(|p| p.0).sum())
//!     }
//!     fn merge(&mut self, delta: Self) {
//!         self.0 += delta.0;
//!     }
//!     fn use_snapshots() -> bool {
//!         true
//!     }
//! }
//!
//! impl Entry for Put {
//!     type Snapshot = Sum;
//! }
//!
//! /// A host's storage; here the toolkit's, whose content survives a
//! /// "restart" as a clone.
//! struct Memory;
//!
//! impl StorageHarness for Memory {
//!     type Entry = Put;
//!     type Storage = MemoryStorage<Put>;
//!
//!     fn open(&mut self) -> Result<Self::Storage, conformance::BoxError> {
//!         Ok(MemoryStorage::new())
//!     }
//!     fn reopen(&mut self, storage: Self::Storage) -> Result<Self::Storage, conformance::BoxError> {
//!         Ok(storage)
//!     }
//!     fn entry(value: u64) -> Put {
//!         Put(value)
//!     }
//!     fn snapshot(value: u64) -> Sum {
//!         Sum(value)
//!     }
//! }
//!
//! let failures = conformance::run_all(|| Memory);
//! assert!(failures.is_ok(), "{failures:?}");
//! ```

use std::error::Error as StdError;
use std::fmt::Debug;

use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::storage::{Entry, StopSign, Storage, StorageOp};
use tsoracle_paxos_toolkit::ConfigBuilder;

/// The error a storage or a harness returns: OmniPaxos' storage error type.
pub type BoxError = Box<dyn StdError>;

/// How the suite opens one storage, reopens it, and makes its values.
///
/// Each case gets a fresh harness (see [`run_all`]), opens one storage with
/// [`open`](Self::open) and may reopen it any number of times.
pub trait StorageHarness {
    /// The storage's log entry. Entries made from distinct numbers must
    /// differ.
    type Entry: Entry<Snapshot: PartialEq + Debug> + PartialEq + Debug;
    /// The storage under test.
    type Storage: Storage<Self::Entry>;

    /// The storage, empty. Called once per case.
    ///
    /// # Errors
    ///
    /// Whatever keeps the storage from opening; the case fails with it.
    fn open(&mut self) -> Result<Self::Storage, BoxError>;

    /// Closes `storage` and opens the same content again, as a restart of
    /// the node would.
    ///
    /// # Errors
    ///
    /// Whatever keeps the storage from opening; the case fails with it.
    fn reopen(&mut self, storage: Self::Storage) -> Result<Self::Storage, BoxError>;

    /// The entry that stands for `value`.
    fn entry(value: u64) -> Self::Entry;

    /// A snapshot that stands for `value` (distinct values, distinct
    /// snapshots); the suite stores it and reads it back, nothing else.
    fn snapshot(value: u64) -> <Self::Entry as Entry>::Snapshot;

    /// Checks the error the storage returned for a write it had to refuse
    /// (a gap, a rewrite of compacted entries, a compacted index past the
    /// end). Any error passes unless the storage says more, e.g. that it is
    /// its own "invalid operation" kind.
    ///
    /// # Errors
    ///
    /// Why `error` is the wrong refusal.
    fn check_refusal(error: &(dyn StdError + 'static)) -> Result<(), String> {
        let _ = error;
        Ok(())
    }
}

/// One case that did not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The case, one of [`CASES`].
    pub case: &'static str,
    /// What was wrong: the check and the values, or the storage's error.
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "storage conformance case `{}`: {}",
            self.case, self.message
        )
    }
}

impl StdError for Failure {}

/// Fails the case with `message` unless `condition` holds.
macro_rules! ensure {
    ($condition:expr, $($message:tt)+) => {
        if !$condition {
            return Err(format!("line {}: {}", line!(), format!($($message)+)).into());
        }
    };
}

/// Fails the case unless both sides are equal, showing both.
macro_rules! ensure_eq {
    ($left:expr, $right:expr $(,)?) => {{
        let (left, right) = (&$left, &$right);
        ensure!(
            left == right,
            "`{}` is {:?}, expected {:?}",
            stringify!($left),
            left,
            right
        );
    }};
}

/// The public case functions, [`CASES`] and [`run_all`], from one list.
macro_rules! cases {
    ($($(#[doc = $doc:literal])* $case:ident),* $(,)?) => {
        /// Every case of the suite, by name, in the order [`run_all`] runs
        /// them.
        pub const CASES: &[&str] = &[$(stringify!($case)),*];

        $(
            $(#[doc = $doc])*
            ///
            /// # Errors
            ///
            /// The [`Failure`] when the storage does not conform.
            pub fn $case<H: StorageHarness>(harness: &mut H) -> Result<(), Failure> {
                checks::$case(harness).map_err(|err| Failure {
                    case: stringify!($case),
                    message: err.to_string(),
                })
            }
        )*

        /// Runs every case, each on a fresh harness from `new_harness`.
        ///
        /// # Errors
        ///
        /// Every case that failed, in [`CASES`] order.
        pub fn run_all<H: StorageHarness>(
            mut new_harness: impl FnMut() -> H,
        ) -> Result<(), Vec<Failure>> {
            let mut failures = Vec::new();
            $(
                if let Err(failure) = $case(&mut new_harness()) {
                    failures.push(failure);
                }
            )*
            if failures.is_empty() { Ok(()) } else { Err(failures) }
        }
    };
}

cases!(
    /// Appended entries read back by range and by suffix.
    append_and_read,
    /// A range that is not wholly stored reads empty, also after a trim.
    out_of_range_reads_are_empty,
    /// `append_on_prefix` truncates at the index and appends.
    append_on_prefix_truncates_and_replaces,
    /// `append_on_prefix` refuses a gap and a rewrite of compacted entries.
    append_on_prefix_refuses_gaps_and_trimmed_indices,
    /// Trims below the start, inside the log, at and beyond its end; indices
    /// stay absolute.
    trim_below_at_and_beyond_end,
    /// The one write that installs a snapshot on a lagging follower.
    snapshot_install_on_a_lagging_follower,
    /// The compacted index: metadata only, never past the end of the log.
    compacted_idx,
    /// A snapshot is stored, read back and removed.
    snapshot_set_get_none,
    /// Promise, accepted round, decided index and StopSign.
    metadata_set_and_get,
    /// `write_atomically` applies its ops in order.
    write_atomically_applies_in_order,
    /// A refused `write_atomically` changes nothing.
    refused_write_changes_nothing,
    /// Everything survives reopening.
    reopen_preserves_everything,
    /// Empty writes change nothing.
    empty_writes_are_noops,
);

/// The cases' bodies: they return the first check that failed.
mod checks {
    use super::*;

    type Check = Result<(), BoxError>;

    fn entries<H: StorageHarness>(values: impl IntoIterator<Item = u64>) -> Vec<H::Entry> {
        values.into_iter().map(H::entry).collect()
    }

    fn ballot(n: u32) -> Ballot {
        Ballot::with(1, n, 0, 2)
    }

    fn stopsign(config_id: u32) -> Result<StopSign, BoxError> {
        let next = ConfigBuilder::new([1, 2, 3])
            .configuration_id(config_id)
            .cluster_config()?;
        Ok(StopSign::with(next, Some(vec![7, 7])))
    }

    /// Runs `check` on `s`, then on `s` reopened; returns the reopened
    /// storage.
    fn before_and_after_reopen<H: StorageHarness>(
        h: &mut H,
        s: H::Storage,
        check: impl Fn(&H::Storage) -> Check,
    ) -> Result<H::Storage, BoxError> {
        check(&s)?;
        let s = h.reopen(s)?;
        check(&s)?;
        Ok(s)
    }

    /// The write must have been refused, with an error the harness accepts.
    fn refused<H: StorageHarness>(result: omnipaxos::storage::StorageResult<()>) -> Check {
        match result {
            Ok(()) => Err("a write that must be refused succeeded".into()),
            Err(err) => H::check_refusal(&*err).map_err(|why| -> BoxError {
                format!("the refusal is wrong ({why}): {err}").into()
            }),
        }
    }

    pub(super) fn append_and_read<H: StorageHarness>(h: &mut H) -> Check {
        let mut s = h.open()?;
        ensure_eq!(s.get_log_len()?, 0);
        s.append_entry(H::entry(1))?;
        s.append_entries(entries::<H>([2, 3, 4]))?;
        before_and_after_reopen(h, s, |s| {
            ensure_eq!(s.get_log_len()?, 4);
            ensure_eq!(s.get_entries(0, 4)?, entries::<H>([1, 2, 3, 4]));
            ensure_eq!(s.get_entries(1, 3)?, entries::<H>([2, 3]));
            ensure_eq!(s.get_entries(3, 4)?, entries::<H>([4]));
            ensure_eq!(s.get_suffix(0)?, entries::<H>([1, 2, 3, 4]));
            ensure_eq!(s.get_suffix(2)?, entries::<H>([3, 4]));
            ensure_eq!(s.get_suffix(4)?, Vec::<H::Entry>::new());
            Ok(())
        })?;
        Ok(())
    }

    pub(super) fn out_of_range_reads_are_empty<H: StorageHarness>(h: &mut H) -> Check {
        let mut s = h.open()?;
        ensure!(s.get_entries(0, 1)?.is_empty(), "entries of an empty log");
        ensure!(s.get_suffix(0)?.is_empty(), "suffix of an empty log");
        s.append_entries(entries::<H>([10, 11, 12]))?;
        // The whole interval must exist, or nothing is returned.
        for (from, to) in [
            (0, 4),
            (2, 9),
            (3, 4),
            (2, 2),
            (3, 1),
            (usize::MAX - 1, usize::MAX),
        ] {
            ensure!(
                s.get_entries(from, to)?.is_empty(),
                "get_entries({from}, {to}) of a 3-entry log is not empty"
            );
        }
        ensure!(s.get_suffix(3)?.is_empty(), "get_suffix(3) of 3 entries");
        ensure!(s.get_suffix(usize::MAX)?.is_empty(), "get_suffix(MAX)");
        // After a trim, ranges that start below the first stored entry are
        // empty.
        s.trim(2)?;
        ensure!(s.get_entries(1, 3)?.is_empty(), "a range below the trim");
        ensure!(s.get_suffix(0)?.is_empty(), "a suffix below the trim");
        ensure_eq!(s.get_entries(2, 3)?, entries::<H>([12]));
        Ok(())
    }

    pub(super) fn append_on_prefix_truncates_and_replaces<H: StorageHarness>(h: &mut H) -> Check {
        let mut s = h.open()?;
        s.append_entries(entries::<H>(10..15))?;
        s.append_on_prefix(2, entries::<H>([20, 21]))?;
        ensure_eq!(s.get_log_len()?, 4);
        ensure_eq!(s.get_suffix(0)?, entries::<H>([10, 11, 20, 21]));
        // At the end it is a plain append.
        s.append_on_prefix(4, entries::<H>([30]))?;
        ensure_eq!(s.get_suffix(0)?, entries::<H>([10, 11, 20, 21, 30]));
        // With no entries it truncates.
        s.append_on_prefix(1, vec![])?;
        let s = h.reopen(s)?;
        ensure_eq!(s.get_log_len()?, 1);
        ensure_eq!(s.get_suffix(0)?, entries::<H>([10]));
        ensure!(s.get_entries(1, 2)?.is_empty(), "a truncated entry is read");
        Ok(())
    }

    pub(super) fn append_on_prefix_refuses_gaps_and_trimmed_indices<H: StorageHarness>(
        h: &mut H,
    ) -> Check {
        let mut s = h.open()?;
        s.append_entries(entries::<H>(0..4))?;
        // Past the end with no entries: nothing to do (OmniPaxos sends this
        // when a follower's accepted index counts its stop-sign).
        s.append_on_prefix(5, vec![])?;
        // Past the end with entries would leave a hole.
        refused::<H>(s.append_on_prefix(5, entries::<H>([9])))?;
        s.write_atomically(vec![StorageOp::Trim(2), StorageOp::SetCompactedIdx(2)])?;
        // Below the first stored entry would rewrite compacted entries.
        refused::<H>(s.append_on_prefix(1, entries::<H>([9, 9, 9])))?;
        let s = h.reopen(s)?;
        ensure_eq!(s.get_suffix(2)?, entries::<H>([2, 3]));
        ensure_eq!(s.get_log_len()?, 2);
        Ok(())
    }

    pub(super) fn trim_below_at_and_beyond_end<H: StorageHarness>(h: &mut H) -> Check {
        let mut s = h.open()?;
        s.append_entries(entries::<H>(0..10))?;
        s.trim(0)?;
        ensure_eq!(s.get_log_len()?, 10);
        // Below the end: entries below 3 are gone, indices stay absolute.
        s.trim(3)?;
        ensure_eq!(s.get_log_len()?, 7);
        ensure_eq!(s.get_entries(3, 10)?, entries::<H>(3..10));
        ensure!(s.get_entries(2, 4)?.is_empty(), "a trimmed entry is read");
        // Below the current start: nothing changes.
        s.trim(2)?;
        ensure_eq!(s.get_log_len()?, 7);
        let mut s = h.reopen(s)?;
        ensure_eq!(s.get_suffix(3)?, entries::<H>(3..10));
        // At the end: empty, and the next entry gets index 10.
        s.trim(10)?;
        ensure_eq!(s.get_log_len()?, 0);
        ensure!(s.get_suffix(3)?.is_empty(), "a trimmed suffix is read");
        s.append_entry(H::entry(100))?;
        ensure_eq!(s.get_entries(10, 11)?, entries::<H>([100]));
        // Beyond the end: empty, and the log now starts at 15.
        s.trim(15)?;
        ensure_eq!(s.get_log_len()?, 0);
        let mut s = h.reopen(s)?;
        ensure_eq!(s.get_log_len()?, 0);
        s.append_on_prefix(15, entries::<H>([150, 151]))?;
        ensure_eq!(s.get_entries(15, 17)?, entries::<H>([150, 151]));
        ensure_eq!(s.get_log_len()?, 2);
        let s = h.reopen(s)?;
        ensure_eq!(s.get_suffix(15)?, entries::<H>([150, 151]));
        ensure!(s.get_entries(10, 17)?.is_empty(), "a range below the log");
        Ok(())
    }

    /// The write a follower that missed compacted entries receives
    /// (OmniPaxos' `sync_log` with a complete snapshot), all in one
    /// `write_atomically`.
    pub(super) fn snapshot_install_on_a_lagging_follower<H: StorageHarness>(h: &mut H) -> Check {
        let mut s = h.open()?;
        s.append_entries(entries::<H>([1, 2, 3]))?;
        s.set_decided_idx(2)?;
        s.write_atomically(vec![
            StorageOp::SetAcceptedRound(ballot(4)),
            StorageOp::SetDecidedIndex(21),
            StorageOp::Trim(20),
            StorageOp::SetCompactedIdx(20),
            StorageOp::SetSnapshot(Some(H::snapshot(210))),
            StorageOp::AppendOnPrefix(20, entries::<H>([21, 22])),
        ])?;
        let s = h.reopen(s)?;
        // OmniPaxos derives its accepted index as log_len + compacted_idx.
        ensure_eq!(s.get_log_len()? + s.get_compacted_idx()?, 22);
        ensure_eq!(s.get_suffix(20)?, entries::<H>([21, 22]));
        ensure_eq!(s.get_snapshot()?, Some(H::snapshot(210)));
        ensure_eq!(s.get_decided_idx()?, 21);
        ensure_eq!(s.get_accepted_round()?, Some(ballot(4)));
        Ok(())
    }

    pub(super) fn compacted_idx<H: StorageHarness>(h: &mut H) -> Check {
        let mut s = h.open()?;
        ensure_eq!(s.get_compacted_idx()?, 0);
        s.set_compacted_idx(0)?;
        s.append_entries(entries::<H>(0..5))?;
        s.set_compacted_idx(3)?;
        ensure_eq!(s.get_compacted_idx()?, 3);
        // A compaction past the end of the log covers entries that never
        // existed.
        refused::<H>(s.set_compacted_idx(6))?;
        s.set_compacted_idx(5)?;
        let s = h.reopen(s)?;
        ensure_eq!(s.get_compacted_idx()?, 5);
        // The compacted index is metadata: it does not remove entries.
        ensure_eq!(s.get_log_len()?, 5);
        Ok(())
    }

    pub(super) fn snapshot_set_get_none<H: StorageHarness>(h: &mut H) -> Check {
        let mut s = h.open()?;
        ensure_eq!(s.get_snapshot()?, None);
        s.set_snapshot(Some(H::snapshot(6)))?;
        ensure_eq!(s.get_snapshot()?, Some(H::snapshot(6)));
        let mut s = h.reopen(s)?;
        ensure_eq!(s.get_snapshot()?, Some(H::snapshot(6)));
        s.set_snapshot(None)?;
        let s = h.reopen(s)?;
        ensure_eq!(s.get_snapshot()?, None);
        Ok(())
    }

    pub(super) fn metadata_set_and_get<H: StorageHarness>(h: &mut H) -> Check {
        let mut s = h.open()?;
        ensure_eq!(s.get_promise()?, None);
        ensure_eq!(s.get_accepted_round()?, None);
        ensure_eq!(s.get_decided_idx()?, 0);
        ensure_eq!(s.get_stopsign()?, None);
        s.set_promise(ballot(3))?;
        s.set_accepted_round(ballot(2))?;
        s.set_decided_idx(7)?;
        s.set_stopsign(Some(stopsign(2)?))?;
        let mut s = before_and_after_reopen(h, s, |s| {
            ensure_eq!(s.get_promise()?, Some(ballot(3)));
            ensure_eq!(s.get_accepted_round()?, Some(ballot(2)));
            ensure_eq!(s.get_decided_idx()?, 7);
            ensure_eq!(s.get_stopsign()?, Some(stopsign(2)?));
            Ok(())
        })?;
        s.set_stopsign(None)?;
        let s = h.reopen(s)?;
        ensure_eq!(s.get_stopsign()?, None);
        Ok(())
    }

    pub(super) fn write_atomically_applies_in_order<H: StorageHarness>(h: &mut H) -> Check {
        let mut s = h.open()?;
        s.write_atomically(vec![
            StorageOp::AppendEntries(entries::<H>([1, 2, 3])),
            StorageOp::AppendOnPrefix(1, entries::<H>([9])),
            StorageOp::AppendEntry(H::entry(10)),
            StorageOp::SetPromise(ballot(1)),
            StorageOp::SetPromise(ballot(2)),
            StorageOp::SetSnapshot(Some(H::snapshot(1))),
            StorageOp::SetSnapshot(None),
            StorageOp::SetStopsign(Some(stopsign(2)?)),
            StorageOp::SetStopsign(None),
            StorageOp::SetDecidedIndex(1),
            StorageOp::SetDecidedIndex(2),
            StorageOp::Trim(1),
            StorageOp::SetCompactedIdx(1),
        ])?;
        before_and_after_reopen(h, s, |s| {
            ensure_eq!(s.get_suffix(1)?, entries::<H>([9, 10]));
            ensure_eq!(s.get_log_len()?, 2);
            ensure_eq!(s.get_promise()?, Some(ballot(2)));
            ensure_eq!(s.get_snapshot()?, None);
            ensure_eq!(s.get_stopsign()?, None);
            ensure_eq!(s.get_decided_idx()?, 2);
            ensure_eq!(s.get_compacted_idx()?, 1);
            Ok(())
        })?;
        Ok(())
    }

    pub(super) fn refused_write_changes_nothing<H: StorageHarness>(h: &mut H) -> Check {
        let mut s = h.open()?;
        s.write_atomically(vec![
            StorageOp::AppendEntries(entries::<H>([1, 2])),
            StorageOp::SetPromise(ballot(1)),
        ])?;
        // Valid ops first, then one that must be refused: nothing may stick.
        refused::<H>(s.write_atomically(vec![
            StorageOp::AppendEntries(entries::<H>([3, 4])),
            StorageOp::SetPromise(ballot(9)),
            StorageOp::SetSnapshot(Some(H::snapshot(9))),
            StorageOp::SetStopsign(Some(stopsign(3)?)),
            StorageOp::Trim(1),
            StorageOp::AppendOnPrefix(100, entries::<H>([5])),
        ]))?;
        before_and_after_reopen(h, s, |s| {
            ensure_eq!(s.get_suffix(0)?, entries::<H>([1, 2]));
            ensure_eq!(s.get_promise()?, Some(ballot(1)));
            ensure_eq!(s.get_snapshot()?, None);
            ensure_eq!(s.get_stopsign()?, None);
            Ok(())
        })?;
        Ok(())
    }

    pub(super) fn reopen_preserves_everything<H: StorageHarness>(h: &mut H) -> Check {
        let mut s = h.open()?;
        s.append_entries(entries::<H>(0..8))?;
        s.write_atomically(vec![
            StorageOp::SetPromise(ballot(5)),
            StorageOp::SetAcceptedRound(ballot(5)),
            StorageOp::SetDecidedIndex(6),
            StorageOp::Trim(5),
            StorageOp::SetCompactedIdx(5),
            StorageOp::SetSnapshot(Some(H::snapshot(10))),
            StorageOp::SetStopsign(Some(stopsign(2)?)),
        ])?;
        let s = h.reopen(s)?;
        let s = h.reopen(s)?;
        ensure_eq!(s.get_promise()?, Some(ballot(5)));
        ensure_eq!(s.get_accepted_round()?, Some(ballot(5)));
        ensure_eq!(s.get_decided_idx()?, 6);
        ensure_eq!(s.get_compacted_idx()?, 5);
        ensure_eq!(s.get_snapshot()?, Some(H::snapshot(10)));
        ensure_eq!(s.get_stopsign()?, Some(stopsign(2)?));
        ensure_eq!(s.get_log_len()?, 3);
        ensure_eq!(s.get_suffix(5)?, entries::<H>([5, 6, 7]));
        Ok(())
    }

    pub(super) fn empty_writes_are_noops<H: StorageHarness>(h: &mut H) -> Check {
        let mut s = h.open()?;
        s.write_atomically(vec![])?;
        s.append_entries(vec![])?;
        s.append_entries(entries::<H>([1]))?;
        s.write_atomically(vec![StorageOp::Trim(0), StorageOp::AppendEntries(vec![])])?;
        let s = h.reopen(s)?;
        ensure_eq!(s.get_suffix(0)?, entries::<H>([1]));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use omnipaxos::storage::{Snapshot, StorageResult};
    use tsoracle_paxos_toolkit::storage::MemoryStorage;

    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    struct Num(u64);

    #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Sum(u64);

    impl Snapshot<Num> for Sum {
        fn create(entries: &[Num]) -> Self {
            Sum(entries.iter().map(|n| n.0).sum())
        }

        fn merge(&mut self, delta: Self) {
            self.0 += delta.0;
        }

        fn use_snapshots() -> bool {
            true
        }
    }

    impl Entry for Num {
        type Snapshot = Sum;
    }

    /// One deliberate flaw of [`Broken`].
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Flaw {
        None,
        /// Stores no StopSign.
        ForgetsTheStopSign,
        /// Applies a `write_atomically` op by op and keeps what it applied
        /// before the op it refused.
        NotAtomic,
        /// Comes back empty from a reopen, as a storage that never synced.
        LosesItsContentOnReopen,
    }

    /// The toolkit's `MemoryStorage` with one flaw.
    #[derive(Clone)]
    struct Broken {
        inner: MemoryStorage<Num>,
        flaw: Flaw,
    }

    impl Storage<Num> for Broken {
        fn write_atomically(&mut self, mut ops: Vec<StorageOp<Num>>) -> StorageResult<()> {
            match self.flaw {
                Flaw::NotAtomic => {
                    for op in ops {
                        self.inner.write_atomically(vec![op])?;
                    }
                    Ok(())
                }
                Flaw::ForgetsTheStopSign => {
                    ops.retain(|op| !matches!(op, StorageOp::SetStopsign(_)));
                    self.inner.write_atomically(ops)
                }
                Flaw::None | Flaw::LosesItsContentOnReopen => self.inner.write_atomically(ops),
            }
        }
        fn append_entry(&mut self, entry: Num) -> StorageResult<()> {
            self.inner.append_entry(entry)
        }
        fn append_entries(&mut self, entries: Vec<Num>) -> StorageResult<()> {
            self.inner.append_entries(entries)
        }
        fn append_on_prefix(&mut self, from_idx: usize, entries: Vec<Num>) -> StorageResult<()> {
            self.inner.append_on_prefix(from_idx, entries)
        }
        fn set_promise(&mut self, n_prom: Ballot) -> StorageResult<()> {
            self.inner.set_promise(n_prom)
        }
        fn set_decided_idx(&mut self, ld: usize) -> StorageResult<()> {
            self.inner.set_decided_idx(ld)
        }
        fn get_decided_idx(&self) -> StorageResult<usize> {
            self.inner.get_decided_idx()
        }
        fn set_accepted_round(&mut self, na: Ballot) -> StorageResult<()> {
            self.inner.set_accepted_round(na)
        }
        fn get_accepted_round(&self) -> StorageResult<Option<Ballot>> {
            self.inner.get_accepted_round()
        }
        fn get_entries(&self, from: usize, to: usize) -> StorageResult<Vec<Num>> {
            self.inner.get_entries(from, to)
        }
        fn get_log_len(&self) -> StorageResult<usize> {
            self.inner.get_log_len()
        }
        fn get_suffix(&self, from: usize) -> StorageResult<Vec<Num>> {
            self.inner.get_suffix(from)
        }
        fn get_promise(&self) -> StorageResult<Option<Ballot>> {
            self.inner.get_promise()
        }
        fn set_stopsign(&mut self, s: Option<StopSign>) -> StorageResult<()> {
            if self.flaw == Flaw::ForgetsTheStopSign {
                return Ok(());
            }
            self.inner.set_stopsign(s)
        }
        fn get_stopsign(&self) -> StorageResult<Option<StopSign>> {
            self.inner.get_stopsign()
        }
        fn trim(&mut self, idx: usize) -> StorageResult<()> {
            self.inner.trim(idx)
        }
        fn set_compacted_idx(&mut self, idx: usize) -> StorageResult<()> {
            self.inner.set_compacted_idx(idx)
        }
        fn get_compacted_idx(&self) -> StorageResult<usize> {
            self.inner.get_compacted_idx()
        }
        fn set_snapshot(&mut self, snapshot: Option<Sum>) -> StorageResult<()> {
            self.inner.set_snapshot(snapshot)
        }
        fn get_snapshot(&self) -> StorageResult<Option<Sum>> {
            self.inner.get_snapshot()
        }
    }

    struct BrokenHarness(Flaw);

    impl StorageHarness for BrokenHarness {
        type Entry = Num;
        type Storage = Broken;

        fn open(&mut self) -> Result<Broken, BoxError> {
            Ok(Broken {
                inner: MemoryStorage::new(),
                flaw: self.0,
            })
        }

        fn reopen(&mut self, storage: Broken) -> Result<Broken, BoxError> {
            if self.0 == Flaw::LosesItsContentOnReopen {
                return self.open();
            }
            Ok(storage)
        }

        fn entry(value: u64) -> Num {
            Num(value)
        }

        fn snapshot(value: u64) -> Sum {
            Sum(value)
        }
    }

    fn failed_cases(flaw: Flaw) -> Vec<&'static str> {
        match run_all(|| BrokenHarness(flaw)) {
            Ok(()) => Vec::new(),
            Err(failures) => failures.iter().map(|f| f.case).collect(),
        }
    }

    #[test]
    fn a_conforming_storage_passes_every_case() {
        assert_eq!(failed_cases(Flaw::None), Vec::<&str>::new());
    }

    #[test]
    fn each_flaw_is_caught_by_the_cases_it_breaks() {
        assert_eq!(
            failed_cases(Flaw::ForgetsTheStopSign),
            ["metadata_set_and_get", "reopen_preserves_everything"]
        );
        assert_eq!(
            failed_cases(Flaw::NotAtomic),
            ["refused_write_changes_nothing"]
        );
        let lost = failed_cases(Flaw::LosesItsContentOnReopen);
        assert_eq!(
            lost,
            CASES
                .iter()
                .copied()
                .filter(|case| *case != "out_of_range_reads_are_empty")
                .collect::<Vec<_>>(),
            "every case but the one that never reopens"
        );
    }

    #[test]
    fn a_failure_names_its_case_the_check_and_the_values() {
        let err = metadata_set_and_get(&mut BrokenHarness(Flaw::ForgetsTheStopSign)).unwrap_err();
        assert_eq!(err.case, "metadata_set_and_get");
        let text = err.to_string();
        assert!(
            text.contains("metadata_set_and_get")
                && text.contains("get_stopsign")
                && text.contains("None"),
            "{text}"
        );
    }

    #[test]
    fn a_refusal_the_harness_does_not_accept_fails_the_case() {
        struct Picky;
        impl StorageHarness for Picky {
            type Entry = Num;
            type Storage = MemoryStorage<Num>;
            fn open(&mut self) -> Result<Self::Storage, BoxError> {
                Ok(MemoryStorage::new())
            }
            fn reopen(&mut self, storage: Self::Storage) -> Result<Self::Storage, BoxError> {
                Ok(storage)
            }
            fn entry(value: u64) -> Num {
                Num(value)
            }
            fn snapshot(value: u64) -> Sum {
                Sum(value)
            }
            fn check_refusal(_: &(dyn StdError + 'static)) -> Result<(), String> {
                Err("not the expected kind".to_owned())
            }
        }
        let err = compacted_idx(&mut Picky).unwrap_err();
        assert!(err.message.contains("not the expected kind"), "{err}");
    }
}
