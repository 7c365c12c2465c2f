//! The storage conformance suite: every case runs against every backend
//! (`memory::*` and `rocksdb::*`), so the backends cannot drift apart.

use omnipaxos::storage::{Storage, StorageOp};
use tsoracle_paxos_toolkit::Error;

use crate::common::{Harness, TestEntry, TestSnapshot, ballot, entries, stopsign, storage_error};

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[test]
                fn $case() {
                    super::$case(&mut crate::common::MemoryHarness);
                }
            )*
        }

        #[cfg(feature = "rocksdb")]
        mod rocksdb {
            $(
                #[test]
                fn $case() {
                    super::$case(&mut crate::common::RocksHarness::new());
                }
            )*
        }
    };
}

conformance!(
    append_and_read,
    out_of_range_reads_are_empty,
    append_on_prefix_truncates_and_replaces,
    append_on_prefix_refuses_gaps_and_trimmed_indices,
    trim_below_at_and_beyond_end,
    snapshot_install_on_a_lagging_follower,
    compacted_idx,
    snapshot_set_get_none,
    metadata_set_and_get,
    write_atomically_applies_in_order,
    refused_write_changes_nothing,
    reopen_preserves_everything,
    empty_writes_are_noops,
);

fn values<S: Storage<TestEntry>>(s: &S, from: usize, to: usize) -> Vec<u64> {
    s.get_entries(from, to)
        .unwrap()
        .into_iter()
        .map(|e| e.0)
        .collect()
}

fn suffix<S: Storage<TestEntry>>(s: &S, from: usize) -> Vec<u64> {
    s.get_suffix(from)
        .unwrap()
        .into_iter()
        .map(|e| e.0)
        .collect()
}

/// Runs `check` on `s`, then on `s` reopened; returns the reopened storage.
fn before_and_after_reopen<H: Harness>(h: &mut H, s: H::S, check: impl Fn(&H::S)) -> H::S {
    check(&s);
    let s = h.reopen(s);
    check(&s);
    s
}

fn assert_invalid(result: omnipaxos::storage::StorageResult<()>) {
    let err = result.unwrap_err();
    assert!(
        matches!(storage_error(&*err), Error::InvalidOperation { .. }),
        "{err}"
    );
}

fn append_and_read<H: Harness>(h: &mut H) {
    let mut s = h.open();
    assert_eq!(s.get_log_len().unwrap(), 0);
    s.append_entry(TestEntry(1)).unwrap();
    s.append_entries(entries([2, 3, 4])).unwrap();
    before_and_after_reopen(h, s, |s| {
        assert_eq!(s.get_log_len().unwrap(), 4);
        assert_eq!(values(s, 0, 4), [1, 2, 3, 4]);
        assert_eq!(values(s, 1, 3), [2, 3]);
        assert_eq!(values(s, 3, 4), [4]);
        assert_eq!(suffix(s, 0), [1, 2, 3, 4]);
        assert_eq!(suffix(s, 2), [3, 4]);
        assert_eq!(suffix(s, 4), Vec::<u64>::new());
    });
}

fn out_of_range_reads_are_empty<H: Harness>(h: &mut H) {
    let mut s = h.open();
    assert!(s.get_entries(0, 1).unwrap().is_empty());
    assert!(s.get_suffix(0).unwrap().is_empty());
    s.append_entries(entries([10, 11, 12])).unwrap();
    // The whole interval must exist, or nothing is returned.
    assert!(s.get_entries(0, 4).unwrap().is_empty());
    assert!(s.get_entries(2, 9).unwrap().is_empty());
    assert!(s.get_entries(3, 4).unwrap().is_empty());
    assert!(s.get_entries(2, 2).unwrap().is_empty());
    assert!(s.get_entries(3, 1).unwrap().is_empty());
    assert!(
        s.get_entries(usize::MAX - 1, usize::MAX)
            .unwrap()
            .is_empty()
    );
    assert!(s.get_suffix(3).unwrap().is_empty());
    assert!(s.get_suffix(usize::MAX).unwrap().is_empty());
    // After a trim, ranges that start below the first stored entry are empty.
    s.trim(2).unwrap();
    assert!(s.get_entries(1, 3).unwrap().is_empty());
    assert!(s.get_suffix(0).unwrap().is_empty());
    assert_eq!(values(&s, 2, 3), [12]);
}

fn append_on_prefix_truncates_and_replaces<H: Harness>(h: &mut H) {
    let mut s = h.open();
    s.append_entries(entries(10..15)).unwrap();
    s.append_on_prefix(2, entries([20, 21])).unwrap();
    assert_eq!(s.get_log_len().unwrap(), 4);
    assert_eq!(suffix(&s, 0), [10, 11, 20, 21]);
    // At the end it is a plain append.
    s.append_on_prefix(4, entries([30])).unwrap();
    assert_eq!(suffix(&s, 0), [10, 11, 20, 21, 30]);
    // With no entries it truncates.
    s.append_on_prefix(1, vec![]).unwrap();
    let s = h.reopen(s);
    assert_eq!(s.get_log_len().unwrap(), 1);
    assert_eq!(suffix(&s, 0), [10]);
    assert!(s.get_entries(1, 2).unwrap().is_empty());
}

fn append_on_prefix_refuses_gaps_and_trimmed_indices<H: Harness>(h: &mut H) {
    let mut s = h.open();
    s.append_entries(entries(0..4)).unwrap();
    // Past the end with no entries: nothing to do (OmniPaxos sends this when
    // a follower's accepted index counts its stop-sign).
    s.append_on_prefix(5, vec![]).unwrap();
    // Past the end with entries would leave a hole.
    assert_invalid(s.append_on_prefix(5, entries([9])));
    s.write_atomically(vec![StorageOp::Trim(2), StorageOp::SetCompactedIdx(2)])
        .unwrap();
    // Below the first stored entry would rewrite compacted entries.
    assert_invalid(s.append_on_prefix(1, entries([9, 9, 9])));
    let s = h.reopen(s);
    assert_eq!(suffix(&s, 2), [2, 3]);
    assert_eq!(s.get_log_len().unwrap(), 2);
}

fn trim_below_at_and_beyond_end<H: Harness>(h: &mut H) {
    let mut s = h.open();
    s.append_entries(entries(0..10)).unwrap();
    s.trim(0).unwrap();
    assert_eq!(s.get_log_len().unwrap(), 10);
    // Below the end: entries below 3 are gone, indices stay absolute.
    s.trim(3).unwrap();
    assert_eq!(s.get_log_len().unwrap(), 7);
    assert_eq!(values(&s, 3, 10), [3, 4, 5, 6, 7, 8, 9]);
    assert!(s.get_entries(2, 4).unwrap().is_empty());
    // Below the current start: nothing changes.
    s.trim(2).unwrap();
    assert_eq!(s.get_log_len().unwrap(), 7);
    let mut s = h.reopen(s);
    assert_eq!(suffix(&s, 3), [3, 4, 5, 6, 7, 8, 9]);
    // At the end: empty, and the next entry gets index 10.
    s.trim(10).unwrap();
    assert_eq!(s.get_log_len().unwrap(), 0);
    assert!(s.get_suffix(3).unwrap().is_empty());
    s.append_entry(TestEntry(100)).unwrap();
    assert_eq!(values(&s, 10, 11), [100]);
    // Beyond the end: empty, and the log now starts at 15.
    s.trim(15).unwrap();
    assert_eq!(s.get_log_len().unwrap(), 0);
    let mut s = h.reopen(s);
    assert_eq!(s.get_log_len().unwrap(), 0);
    s.append_on_prefix(15, entries([150, 151])).unwrap();
    assert_eq!(values(&s, 15, 17), [150, 151]);
    assert_eq!(s.get_log_len().unwrap(), 2);
    let s = h.reopen(s);
    assert_eq!(suffix(&s, 15), [150, 151]);
    assert!(s.get_entries(10, 17).unwrap().is_empty());
}

/// The write a follower that missed compacted entries receives (OmniPaxos'
/// `sync_log` with a complete snapshot), all in one `write_atomically`.
fn snapshot_install_on_a_lagging_follower<H: Harness>(h: &mut H) {
    let mut s = h.open();
    s.append_entries(entries([1, 2, 3])).unwrap();
    s.set_decided_idx(2).unwrap();
    let snap = TestSnapshot { sum: 210, max: 20 };
    s.write_atomically(vec![
        StorageOp::SetAcceptedRound(ballot(4)),
        StorageOp::SetDecidedIndex(21),
        StorageOp::Trim(20),
        StorageOp::SetCompactedIdx(20),
        StorageOp::SetSnapshot(Some(snap.clone())),
        StorageOp::AppendOnPrefix(20, entries([21, 22])),
    ])
    .unwrap();
    let s = h.reopen(s);
    // OmniPaxos derives its accepted index as log_len + compacted_idx.
    assert_eq!(
        s.get_log_len().unwrap() + s.get_compacted_idx().unwrap(),
        22
    );
    assert_eq!(suffix(&s, 20), [21, 22]);
    assert_eq!(s.get_snapshot().unwrap(), Some(snap));
    assert_eq!(s.get_decided_idx().unwrap(), 21);
    assert_eq!(s.get_accepted_round().unwrap(), Some(ballot(4)));
}

fn compacted_idx<H: Harness>(h: &mut H) {
    let mut s = h.open();
    assert_eq!(s.get_compacted_idx().unwrap(), 0);
    s.set_compacted_idx(0).unwrap();
    s.append_entries(entries(0..5)).unwrap();
    s.set_compacted_idx(3).unwrap();
    assert_eq!(s.get_compacted_idx().unwrap(), 3);
    // A compaction past the end of the log covers entries that never existed.
    assert_invalid(s.set_compacted_idx(6));
    s.set_compacted_idx(5).unwrap();
    let s = h.reopen(s);
    assert_eq!(s.get_compacted_idx().unwrap(), 5);
    // The compacted index is metadata: it does not remove entries.
    assert_eq!(s.get_log_len().unwrap(), 5);
}

fn snapshot_set_get_none<H: Harness>(h: &mut H) {
    let mut s = h.open();
    assert_eq!(s.get_snapshot().unwrap(), None);
    let snap = TestSnapshot { sum: 6, max: 3 };
    s.set_snapshot(Some(snap.clone())).unwrap();
    assert_eq!(s.get_snapshot().unwrap(), Some(snap.clone()));
    let mut s = h.reopen(s);
    assert_eq!(s.get_snapshot().unwrap(), Some(snap));
    s.set_snapshot(None).unwrap();
    let s = h.reopen(s);
    assert_eq!(s.get_snapshot().unwrap(), None);
}

fn metadata_set_and_get<H: Harness>(h: &mut H) {
    let mut s = h.open();
    assert_eq!(s.get_promise().unwrap(), None);
    assert_eq!(s.get_accepted_round().unwrap(), None);
    assert_eq!(s.get_decided_idx().unwrap(), 0);
    assert_eq!(s.get_stopsign().unwrap(), None);
    s.set_promise(ballot(3)).unwrap();
    s.set_accepted_round(ballot(2)).unwrap();
    s.set_decided_idx(7).unwrap();
    s.set_stopsign(Some(stopsign(2))).unwrap();
    let mut s = before_and_after_reopen(h, s, |s| {
        assert_eq!(s.get_promise().unwrap(), Some(ballot(3)));
        assert_eq!(s.get_accepted_round().unwrap(), Some(ballot(2)));
        assert_eq!(s.get_decided_idx().unwrap(), 7);
        assert_eq!(s.get_stopsign().unwrap(), Some(stopsign(2)));
    });
    s.set_stopsign(None).unwrap();
    let s = h.reopen(s);
    assert_eq!(s.get_stopsign().unwrap(), None);
}

fn write_atomically_applies_in_order<H: Harness>(h: &mut H) {
    let mut s = h.open();
    s.write_atomically(vec![
        StorageOp::AppendEntries(entries([1, 2, 3])),
        StorageOp::AppendOnPrefix(1, entries([9])),
        StorageOp::AppendEntry(TestEntry(10)),
        StorageOp::SetPromise(ballot(1)),
        StorageOp::SetPromise(ballot(2)),
        StorageOp::SetSnapshot(Some(TestSnapshot { sum: 1, max: 1 })),
        StorageOp::SetSnapshot(None),
        StorageOp::SetStopsign(Some(stopsign(2))),
        StorageOp::SetStopsign(None),
        StorageOp::SetDecidedIndex(1),
        StorageOp::SetDecidedIndex(2),
        StorageOp::Trim(1),
        StorageOp::SetCompactedIdx(1),
    ])
    .unwrap();
    before_and_after_reopen(h, s, |s| {
        assert_eq!(suffix(s, 1), [9, 10]);
        assert_eq!(s.get_log_len().unwrap(), 2);
        assert_eq!(s.get_promise().unwrap(), Some(ballot(2)));
        assert_eq!(s.get_snapshot().unwrap(), None);
        assert_eq!(s.get_stopsign().unwrap(), None);
        assert_eq!(s.get_decided_idx().unwrap(), 2);
        assert_eq!(s.get_compacted_idx().unwrap(), 1);
    });
}

fn refused_write_changes_nothing<H: Harness>(h: &mut H) {
    let mut s = h.open();
    s.write_atomically(vec![
        StorageOp::AppendEntries(entries([1, 2])),
        StorageOp::SetPromise(ballot(1)),
    ])
    .unwrap();
    // Valid ops first, then one that must be refused: nothing may stick.
    assert_invalid(s.write_atomically(vec![
        StorageOp::AppendEntries(entries([3, 4])),
        StorageOp::SetPromise(ballot(9)),
        StorageOp::SetSnapshot(Some(TestSnapshot { sum: 9, max: 9 })),
        StorageOp::SetStopsign(Some(stopsign(3))),
        StorageOp::Trim(1),
        StorageOp::AppendOnPrefix(100, entries([5])),
    ]));
    before_and_after_reopen(h, s, |s| {
        assert_eq!(suffix(s, 0), [1, 2]);
        assert_eq!(s.get_promise().unwrap(), Some(ballot(1)));
        assert_eq!(s.get_snapshot().unwrap(), None);
        assert_eq!(s.get_stopsign().unwrap(), None);
    });
}

fn reopen_preserves_everything<H: Harness>(h: &mut H) {
    let mut s = h.open();
    let snap = TestSnapshot { sum: 10, max: 4 };
    s.append_entries(entries(0..8)).unwrap();
    s.write_atomically(vec![
        StorageOp::SetPromise(ballot(5)),
        StorageOp::SetAcceptedRound(ballot(5)),
        StorageOp::SetDecidedIndex(6),
        StorageOp::Trim(5),
        StorageOp::SetCompactedIdx(5),
        StorageOp::SetSnapshot(Some(snap.clone())),
        StorageOp::SetStopsign(Some(stopsign(2))),
    ])
    .unwrap();
    let s = h.reopen(s);
    let s = h.reopen(s);
    assert_eq!(s.get_promise().unwrap(), Some(ballot(5)));
    assert_eq!(s.get_accepted_round().unwrap(), Some(ballot(5)));
    assert_eq!(s.get_decided_idx().unwrap(), 6);
    assert_eq!(s.get_compacted_idx().unwrap(), 5);
    assert_eq!(s.get_snapshot().unwrap(), Some(snap));
    assert_eq!(s.get_stopsign().unwrap(), Some(stopsign(2)));
    assert_eq!(s.get_log_len().unwrap(), 3);
    assert_eq!(suffix(&s, 5), [5, 6, 7]);
}

fn empty_writes_are_noops<H: Harness>(h: &mut H) {
    let mut s = h.open();
    s.write_atomically(vec![]).unwrap();
    s.append_entries(vec![]).unwrap();
    s.append_entries(entries([1])).unwrap();
    s.write_atomically(vec![StorageOp::Trim(0), StorageOp::AppendEntries(vec![])])
        .unwrap();
    let s = h.reopen(s);
    assert_eq!(suffix(&s, 0), [1]);
}
