//! In-memory storage with the same semantics as the RocksDB storage.

use std::collections::VecDeque;

use omnipaxos::{
    ballot_leader_election::Ballot,
    storage::{Entry, StopSign, Storage, StorageOp, StorageResult},
};

use super::state::{LogEdit, Meta, plan};
use crate::Error;

/// An OmniPaxos [`Storage`] that keeps everything in memory.
///
/// It shares its semantics with [`RocksdbStorage`](crate::storage::RocksdbStorage)
/// (absolute indices, trim past the end, all-or-nothing `write_atomically`),
/// and the conformance suite runs the same cases against both, so tests and
/// simulations that use it exercise the same behavior as a real node.
///
/// `Clone` copies the whole content: a simulation can "crash" a node and
/// restart it from a clone taken at any point.
#[derive(Clone, Debug)]
pub struct MemoryStorage<T: Entry> {
    meta: Meta,
    snapshot: Option<T::Snapshot>,
    /// The entries `[meta.first, meta.end)`.
    log: VecDeque<T>,
}

impl<T: Entry> Default for MemoryStorage<T> {
    fn default() -> Self {
        MemoryStorage {
            meta: Meta::default(),
            snapshot: None,
            log: VecDeque::new(),
        }
    }
}

impl<T: Entry> MemoryStorage<T> {
    /// An empty storage.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies `ops` in order, all or nothing.
    fn commit(&mut self, ops: Vec<StorageOp<T>>) -> Result<(), Error> {
        // `plan` validates the whole write first, so the edits below cannot
        // fail half-way: a refused write leaves the storage untouched.
        let plan = plan(&self.meta, ops)?;
        if plan.is_noop() {
            return Ok(());
        }
        let mut first = self.meta.first;
        for edit in plan.edits {
            match edit {
                LogEdit::Trim {
                    old_first,
                    new_first,
                    old_end,
                } => {
                    let removed = new_first.min(old_end).saturating_sub(old_first);
                    self.log.drain(..removed.min(self.log.len()));
                    first = new_first;
                }
                LogEdit::Truncate { from, old_end } => {
                    debug_assert_eq!(old_end, first + self.log.len());
                    self.log.truncate(from.saturating_sub(first));
                }
                LogEdit::Append { idx, entry } => {
                    debug_assert_eq!(idx, first + self.log.len());
                    self.log.push_back(entry);
                }
            }
        }
        debug_assert_eq!(first, plan.meta.first);
        debug_assert_eq!(first + self.log.len(), plan.meta.end);
        self.meta = plan.meta;
        if let Some(snapshot) = plan.snapshot {
            self.snapshot = snapshot;
        }
        Ok(())
    }

    fn read(&self, range: Option<(usize, usize)>) -> Vec<T> {
        match range {
            Some((from, to)) => {
                let first = self.meta.first;
                self.log.range(from - first..to - first).cloned().collect()
            }
            None => Vec::new(),
        }
    }
}

impl<T: Entry> Storage<T> for MemoryStorage<T> {
    fn write_atomically(&mut self, ops: Vec<StorageOp<T>>) -> StorageResult<()> {
        Ok(self.commit(ops)?)
    }

    fn append_entry(&mut self, entry: T) -> StorageResult<()> {
        Ok(self.commit(vec![StorageOp::AppendEntry(entry)])?)
    }

    fn append_entries(&mut self, entries: Vec<T>) -> StorageResult<()> {
        Ok(self.commit(vec![StorageOp::AppendEntries(entries)])?)
    }

    fn append_on_prefix(&mut self, from_idx: usize, entries: Vec<T>) -> StorageResult<()> {
        Ok(self.commit(vec![StorageOp::AppendOnPrefix(from_idx, entries)])?)
    }

    fn set_promise(&mut self, n_prom: Ballot) -> StorageResult<()> {
        Ok(self.commit(vec![StorageOp::SetPromise(n_prom)])?)
    }

    fn set_decided_idx(&mut self, ld: usize) -> StorageResult<()> {
        Ok(self.commit(vec![StorageOp::SetDecidedIndex(ld)])?)
    }

    fn get_decided_idx(&self) -> StorageResult<usize> {
        Ok(self.meta.decided_idx)
    }

    fn set_accepted_round(&mut self, na: Ballot) -> StorageResult<()> {
        Ok(self.commit(vec![StorageOp::SetAcceptedRound(na)])?)
    }

    fn get_accepted_round(&self) -> StorageResult<Option<Ballot>> {
        Ok(self.meta.accepted_round)
    }

    fn get_entries(&self, from: usize, to: usize) -> StorageResult<Vec<T>> {
        Ok(self.read(self.meta.entries_range(from, to)))
    }

    fn get_log_len(&self) -> StorageResult<usize> {
        Ok(self.meta.log_len())
    }

    fn get_suffix(&self, from: usize) -> StorageResult<Vec<T>> {
        Ok(self.read(self.meta.suffix_range(from)))
    }

    fn get_promise(&self) -> StorageResult<Option<Ballot>> {
        Ok(self.meta.promise)
    }

    fn set_stopsign(&mut self, s: Option<StopSign>) -> StorageResult<()> {
        Ok(self.commit(vec![StorageOp::SetStopsign(s)])?)
    }

    fn get_stopsign(&self) -> StorageResult<Option<StopSign>> {
        Ok(self.meta.stopsign.clone())
    }

    fn trim(&mut self, idx: usize) -> StorageResult<()> {
        Ok(self.commit(vec![StorageOp::Trim(idx)])?)
    }

    fn set_compacted_idx(&mut self, idx: usize) -> StorageResult<()> {
        Ok(self.commit(vec![StorageOp::SetCompactedIdx(idx)])?)
    }

    fn get_compacted_idx(&self) -> StorageResult<usize> {
        Ok(self.meta.compacted_idx)
    }

    fn set_snapshot(&mut self, snapshot: Option<T::Snapshot>) -> StorageResult<()> {
        Ok(self.commit(vec![StorageOp::SetSnapshot(snapshot)])?)
    }

    fn get_snapshot(&self) -> StorageResult<Option<T::Snapshot>> {
        Ok(self.snapshot.clone())
    }
}
