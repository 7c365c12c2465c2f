//! The storage semantics every backend shares.
//!
//! [`plan`] turns a list of [`StorageOp`]s into the metadata after the write
//! and a list of primitive [`LogEdit`]s, validating the whole write before any
//! backend touches anything. Backends only translate edits (into a `VecDeque`
//! for memory, into one `WriteBatch` for RocksDB), so they cannot disagree on
//! what an operation means, and a refused write changes nothing in any of
//! them.
//!
//! The semantics themselves are documented on the `storage` module.

use omnipaxos::{
    ballot_leader_election::Ballot,
    storage::{Entry, StopSign, StorageOp},
};

use crate::Error;

/// Every piece of metadata except the snapshot, which is kept apart because
/// it can be large and is cloned only when it changes.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Meta {
    pub(crate) promise: Option<Ballot>,
    pub(crate) accepted_round: Option<Ballot>,
    pub(crate) decided_idx: usize,
    pub(crate) compacted_idx: usize,
    pub(crate) stopsign: Option<StopSign>,
    /// Absolute index of the first stored entry.
    pub(crate) first: usize,
    /// Absolute index one past the last stored entry.
    pub(crate) end: usize,
}

impl Meta {
    pub(crate) fn log_len(&self) -> usize {
        self.end.saturating_sub(self.first)
    }

    /// The structural invariants every write keeps and every open checks.
    /// Returns the name of the offending record and the reason.
    pub(crate) fn check(&self) -> Result<(), (&'static str, String)> {
        if self.first > self.end {
            return Err((
                "log_range",
                format!("first index {} is past end {}", self.first, self.end),
            ));
        }
        if self.compacted_idx > self.end {
            return Err((
                "compacted_idx",
                format!(
                    "compacted index {} is past the end of the log {}",
                    self.compacted_idx, self.end
                ),
            ));
        }
        Ok(())
    }

    /// The range `get_entries(from, to)` returns, or `None` when the log does
    /// not hold every entry of it (the trait then asks for an empty vector).
    pub(crate) fn entries_range(&self, from: usize, to: usize) -> Option<(usize, usize)> {
        (self.first <= from && from < to && to <= self.end).then_some((from, to))
    }

    /// The range `get_suffix(from)` returns, or `None` for an empty answer.
    pub(crate) fn suffix_range(&self, from: usize) -> Option<(usize, usize)> {
        self.entries_range(from, self.end)
    }
}

/// Which persisted metadata records a write changes.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Dirty {
    pub(crate) promise: bool,
    pub(crate) accepted_round: bool,
    pub(crate) decided_idx: bool,
    pub(crate) compacted_idx: bool,
    pub(crate) stopsign: bool,
    pub(crate) log_range: bool,
}

/// A primitive change to the stored log. Backends apply edits in order.
#[derive(Debug)]
pub(crate) enum LogEdit<T> {
    /// Remove the entries `[old_first, min(new_first, old_end))`; the log now
    /// starts at `new_first` (`new_first > old_first`).
    Trim {
        old_first: usize,
        new_first: usize,
        old_end: usize,
    },
    /// Remove the entries `[from, old_end)` (`from < old_end`).
    Truncate { from: usize, old_end: usize },
    /// Store `entry` at `idx`, which is the current end of the log.
    Append { idx: usize, entry: T },
}

/// A validated write: the metadata after it, and how to get there.
pub(crate) struct Plan<T: Entry> {
    pub(crate) meta: Meta,
    pub(crate) dirty: Dirty,
    /// `Some(new)` when the write sets the snapshot.
    pub(crate) snapshot: Option<Option<T::Snapshot>>,
    pub(crate) edits: Vec<LogEdit<T>>,
}

impl<T: Entry> Plan<T> {
    /// Whether the write changes nothing that is persisted.
    pub(crate) fn is_noop(&self) -> bool {
        let d = self.dirty;
        self.edits.is_empty()
            && self.snapshot.is_none()
            && !(d.promise
                || d.accepted_round
                || d.decided_idx
                || d.compacted_idx
                || d.stopsign
                || d.log_range)
    }
}

/// Applies `ops` in order to a copy of `current` and returns the result, or
/// the first reason the write must be refused.
pub(crate) fn plan<T: Entry>(current: &Meta, ops: Vec<StorageOp<T>>) -> Result<Plan<T>, Error> {
    let mut p = Plan {
        meta: current.clone(),
        dirty: Dirty::default(),
        snapshot: None,
        edits: Vec::new(),
    };
    for op in ops {
        match op {
            StorageOp::AppendEntry(entry) => append(&mut p, vec![entry])?,
            StorageOp::AppendEntries(entries) => append(&mut p, entries)?,
            StorageOp::AppendOnPrefix(from, entries) => append_on_prefix(&mut p, from, entries)?,
            StorageOp::Trim(idx) => trim(&mut p, idx),
            StorageOp::SetPromise(b) => {
                p.meta.promise = Some(b);
                p.dirty.promise = true;
            }
            StorageOp::SetAcceptedRound(b) => {
                p.meta.accepted_round = Some(b);
                p.dirty.accepted_round = true;
            }
            StorageOp::SetDecidedIndex(idx) => {
                p.meta.decided_idx = idx;
                p.dirty.decided_idx = true;
            }
            StorageOp::SetCompactedIdx(idx) => {
                p.meta.compacted_idx = idx;
                p.dirty.compacted_idx = true;
            }
            StorageOp::SetStopsign(ss) => {
                p.meta.stopsign = ss;
                p.dirty.stopsign = true;
            }
            StorageOp::SetSnapshot(s) => p.snapshot = Some(s),
        }
    }
    // Checked on the final state only: within one write OmniPaxos may record
    // a compacted index before the append that reaches it.
    p.meta
        .check()
        .map_err(|(what, reason)| Error::invalid(format!("{what}: {reason}")))?;
    Ok(p)
}

fn append<T: Entry>(p: &mut Plan<T>, entries: Vec<T>) -> Result<(), Error> {
    if entries.is_empty() {
        return Ok(());
    }
    let new_end = p
        .meta
        .end
        .checked_add(entries.len())
        .ok_or_else(|| Error::invalid("appending would overflow the log index"))?;
    for (idx, entry) in (p.meta.end..new_end).zip(entries) {
        p.edits.push(LogEdit::Append { idx, entry });
    }
    p.meta.end = new_end;
    p.dirty.log_range = true;
    Ok(())
}

fn append_on_prefix<T: Entry>(p: &mut Plan<T>, from: usize, entries: Vec<T>) -> Result<(), Error> {
    let Meta { first, end, .. } = p.meta;
    if from < first {
        return Err(Error::invalid(format!(
            "append_on_prefix at index {from} would rewrite trimmed entries (the log starts at {first})"
        )));
    }
    if from > end {
        if entries.is_empty() {
            return Ok(());
        }
        return Err(Error::invalid(format!(
            "append_on_prefix at index {from} would leave a gap after the end of the log {end}"
        )));
    }
    if from < end {
        p.edits.push(LogEdit::Truncate { from, old_end: end });
        p.meta.end = from;
        p.dirty.log_range = true;
    }
    append(p, entries)
}

fn trim<T: Entry>(p: &mut Plan<T>, idx: usize) {
    let Meta { first, end, .. } = p.meta;
    if idx <= first {
        return;
    }
    p.edits.push(LogEdit::Trim {
        old_first: first,
        new_first: idx,
        old_end: end,
    });
    p.meta.first = idx;
    p.meta.end = end.max(idx);
    p.dirty.log_range = true;
}
