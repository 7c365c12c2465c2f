//! Draining OmniPaxos' decided log into the apply state.

use omnipaxos::storage::{Entry, StopSign};
use omnipaxos::util::LogEntry;

use crate::{ApplyState, Outcome, PaxosEnvelope, ProposalId, StateError};

/// One command applied by [`ApplyCursor::absorb`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// Absolute log index of the entry.
    pub idx: usize,
    /// The command's proposal id (to complete its waiter).
    pub proposal: ProposalId,
    /// What applying it did.
    pub outcome: Outcome,
}

/// What one [`ApplyCursor::absorb`] call did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Absorbed {
    /// The commands applied, in log order.
    pub applied: Vec<Applied>,
    /// The decided stop-sign met, if any: this configuration has ended.
    pub stopped: Option<StopSign>,
    /// `Some(trimmed_idx)` when the state was replaced by a snapshot.
    pub restored_to: Option<usize>,
}

/// An item of the log that is not one of our commands, shown to the host.
#[derive(Debug)]
pub enum HostItem<'a, E: Entry> {
    /// A decided entry without a [`Command`](crate::Command) (a host's own entry).
    Entry {
        /// Absolute log index.
        idx: usize,
        /// The entry.
        entry: &'a E,
    },
    /// A snapshot that replaced the state; the host restores its own part from it.
    Snapshot {
        /// Every index below this one is covered by the snapshot.
        trimmed_idx: usize,
        /// The host's snapshot.
        snapshot: &'a E::Snapshot,
    },
}

/// The absolute index of the next log entry to apply.
///
/// Feed it what `OmniPaxos::read_decided_suffix(cursor.next_idx())` returned.
/// It only moves over entries it was given, so a lagging read that returns
/// nothing leaves it where it is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyCursor {
    next_idx: usize,
}

impl ApplyCursor {
    /// A cursor whose next entry is `next_idx`.
    #[must_use]
    pub const fn new(next_idx: usize) -> Self {
        Self { next_idx }
    }

    /// The absolute index of the next entry to apply.
    #[must_use]
    pub const fn next_idx(&self) -> usize {
        self.next_idx
    }

    /// Raises the cursor to the compacted index at recovery. Only call it after
    /// restoring the state from the stored snapshot, which covers every index
    /// below `compacted_idx`.
    pub fn floor_at_compacted(&mut self, compacted_idx: usize) {
        self.next_idx = self.next_idx.max(compacted_idx);
    }

    /// Applies `entries`, read from the log starting at [`next_idx`](Self::next_idx).
    ///
    /// Same as [`absorb_with`](Self::absorb_with) with a host callback that ignores everything.
    ///
    /// # Errors
    ///
    /// [`StateError::StateLost`], see [`absorb_with`](Self::absorb_with).
    pub fn absorb<E: PaxosEnvelope>(
        &mut self,
        state: &mut ApplyState,
        entries: Vec<LogEntry<E>>,
    ) -> Result<Absorbed, StateError> {
        self.absorb_with(state, entries, |_| {})
    }

    /// Applies `entries`, read from the log starting at [`next_idx`](Self::next_idx),
    /// and shows the host every item that is not one of our commands.
    ///
    /// - `Decided` with a command: applied, reported in [`Absorbed::applied`].
    ///   Without one: passed to `on_host`. Either way the cursor moves by one.
    /// - `Undecided`, or a stop-sign not yet decided: stops; nothing after it is read.
    /// - `Snapshotted` past the cursor: the state becomes the snapshot's state,
    ///   `on_host` sees the snapshot, and the cursor jumps to its `trimmed_idx`.
    /// - A decided `StopSign`: reported in [`Absorbed::stopped`], counts one index.
    /// - Entries below the cursor (already applied) are skipped.
    ///
    /// # Errors
    ///
    /// [`StateError::StateLost`] when the log was trimmed without a snapshot
    /// past the cursor. This is fatal: the node must stop. Entries before the
    /// trim marker stay applied (state and cursor stay consistent).
    pub fn absorb_with<E, F>(
        &mut self,
        state: &mut ApplyState,
        entries: Vec<LogEntry<E>>,
        mut on_host: F,
    ) -> Result<Absorbed, StateError>
    where
        E: PaxosEnvelope,
        F: FnMut(HostItem<'_, E>),
    {
        let mut absorbed = Absorbed::default();
        // Absolute index of the entry being read; never ahead of `next_idx`.
        let mut pos = self.next_idx;
        for entry in entries {
            match entry {
                LogEntry::Decided(entry) => {
                    if pos == self.next_idx {
                        match entry.paxos_command() {
                            Some(command) => absorbed.applied.push(Applied {
                                idx: pos,
                                proposal: command.proposal(),
                                outcome: state.apply(command),
                            }),
                            None => on_host(HostItem::Entry {
                                idx: pos,
                                entry: &entry,
                            }),
                        }
                        self.next_idx = pos.saturating_add(1);
                    }
                    pos = pos.saturating_add(1);
                }
                LogEntry::Undecided(_) | LogEntry::StopSign(_, false) => break,
                LogEntry::Snapshotted(snapshotted) => {
                    let trimmed_idx = snapshotted.trimmed_idx;
                    if trimmed_idx > self.next_idx {
                        *state = E::paxos_snapshot(&snapshotted.snapshot).to_state();
                        on_host(HostItem::Snapshot {
                            trimmed_idx,
                            snapshot: &snapshotted.snapshot,
                        });
                        self.next_idx = trimmed_idx;
                        absorbed.restored_to = Some(trimmed_idx);
                    }
                    pos = trimmed_idx;
                }
                LogEntry::Trimmed(trimmed_idx) => {
                    if trimmed_idx > self.next_idx {
                        return Err(StateError::StateLost {
                            trimmed_idx,
                            next_idx: self.next_idx,
                        });
                    }
                    pos = trimmed_idx;
                }
                LogEntry::StopSign(stop_sign, true) => {
                    if pos == self.next_idx {
                        absorbed.stopped = Some(stop_sign);
                        self.next_idx = pos.saturating_add(1);
                    }
                    pos = pos.saturating_add(1);
                }
            }
        }
        Ok(absorbed)
    }
}

#[cfg(test)]
mod tests {
    use omnipaxos::ClusterConfig;
    use tsoracle_core::Epoch;

    use super::*;
    use crate::test_log::MemStorage;
    use crate::test_log::host::{HostEntry, HostSnapshot};
    use crate::{Command, PaxosEntry};

    fn advance(seq: u64) -> Command {
        Command::Advance {
            at_least: seq * 10,
            epoch: Epoch(1),
            proposal: ProposalId::new(1, 0, seq),
        }
    }

    fn entries(seqs: std::ops::Range<u64>) -> Vec<PaxosEntry> {
        seqs.map(|s| PaxosEntry(advance(s))).collect()
    }

    fn folded(seqs: std::ops::Range<u64>) -> ApplyState {
        let mut state = ApplyState::new();
        for s in seqs {
            state.apply(&advance(s));
        }
        state
    }

    fn stop_sign() -> StopSign {
        StopSign::with(
            ClusterConfig {
                configuration_id: 2,
                nodes: vec![1, 2, 3],
                flexible_quorum: None,
            },
            None,
        )
    }

    #[test]
    fn decided_entries_apply_at_absolute_indices() {
        let op = MemStorage::new(0, entries(1..6), 5).build();
        let mut state = ApplyState::new();
        let mut cursor = ApplyCursor::new(2);
        state.apply_all(&[advance(1), advance(2)]);
        let out = cursor
            .absorb(
                &mut state,
                op.read_decided_suffix(cursor.next_idx()).unwrap(),
            )
            .unwrap();
        let idxs: Vec<usize> = out.applied.iter().map(|a| a.idx).collect();
        assert_eq!(idxs, vec![2, 3, 4]);
        assert_eq!(out.applied[0].proposal, ProposalId::new(1, 0, 3));
        assert_eq!(out.applied[2].outcome, Outcome::HighWater(50));
        assert_eq!(cursor.next_idx(), 5);
        assert_eq!(state, folded(1..6));
    }

    #[test]
    fn a_lagging_read_leaves_the_cursor_in_place() {
        let op = MemStorage::new(0, entries(1..3), 2).build();
        let mut cursor = ApplyCursor::new(2);
        let mut state = folded(1..3);
        // Nothing decided past the cursor: OmniPaxos returns None.
        let read = op
            .read_decided_suffix(cursor.next_idx())
            .unwrap_or_default();
        assert!(read.is_empty());
        let out = cursor.absorb(&mut state, read).unwrap();
        assert_eq!(out, Absorbed::default());
        assert_eq!(cursor.next_idx(), 2);
        assert_eq!(state, folded(1..3));
    }

    #[test]
    fn undecided_entries_stop_the_drain() {
        let op = MemStorage::new(0, entries(1..5), 2).build();
        let mut cursor = ApplyCursor::new(0);
        let mut state = ApplyState::new();
        let read = op.read_entries(0..4).unwrap();
        assert!(matches!(read[2], LogEntry::Undecided(_)));
        let out = cursor.absorb(&mut state, read).unwrap();
        assert_eq!(out.applied.len(), 2);
        assert_eq!(cursor.next_idx(), 2);
        assert_eq!(state, folded(1..3));
    }

    #[test]
    fn a_snapshot_past_the_cursor_replaces_the_state() {
        // Entries 0..5 decided, then compacted up to 3 by a real OmniPaxos snapshot.
        let mut op = MemStorage::new(0, entries(1..6), 5).build();
        op.snapshot(Some(3), true).unwrap();
        let mut cursor = ApplyCursor::new(1);
        let mut state = folded(1..2);
        let read = op.read_decided_suffix(cursor.next_idx()).unwrap();
        assert!(matches!(&read[0], LogEntry::Snapshotted(s) if s.trimmed_idx == 3));
        let out = cursor.absorb(&mut state, read).unwrap();
        assert_eq!(out.restored_to, Some(3));
        assert_eq!(
            out.applied.iter().map(|a| a.idx).collect::<Vec<_>>(),
            vec![3, 4]
        );
        assert_eq!(cursor.next_idx(), 5);
        assert_eq!(state, folded(1..6));
    }

    #[test]
    fn entries_below_the_cursor_are_skipped() {
        let mut op = MemStorage::new(0, entries(1..6), 5).build();
        op.snapshot(Some(3), true).unwrap();
        let mut cursor = ApplyCursor::new(4);
        let mut state = folded(1..5);
        // A read from before the cursor: the snapshot and index 3 are old news.
        let out = cursor
            .absorb(&mut state, op.read_decided_suffix(0).unwrap())
            .unwrap();
        assert_eq!(out.restored_to, None);
        assert_eq!(
            out.applied.iter().map(|a| a.idx).collect::<Vec<_>>(),
            vec![4]
        );
        assert_eq!(cursor.next_idx(), 5);
        assert_eq!(state, folded(1..6));
    }

    #[test]
    fn a_trim_past_the_cursor_without_snapshot_is_state_lost() {
        // Trimmed up to 3 with no snapshot (`trim` is leader-only, so preload it).
        let op = MemStorage::new(3, entries(4..6), 5).build();
        let mut cursor = ApplyCursor::new(1);
        let mut state = folded(1..2);
        let read = op.read_decided_suffix(1).unwrap();
        assert!(matches!(read[0], LogEntry::Trimmed(3)));
        let err = cursor.absorb(&mut state, read).unwrap_err();
        assert!(matches!(
            err,
            StateError::StateLost {
                trimmed_idx: 3,
                next_idx: 1
            }
        ));
        assert!(err.to_string().contains("without a snapshot"));
        assert_eq!(cursor.next_idx(), 1);
        assert_eq!(state, folded(1..2));
        // A cursor already at the trim point is fine.
        let mut cursor = ApplyCursor::new(3);
        let mut state = folded(1..4);
        let out = cursor
            .absorb(&mut state, op.read_decided_suffix(0).unwrap())
            .unwrap();
        assert_eq!(out.applied.len(), 2);
        assert_eq!(cursor.next_idx(), 5);
    }

    #[test]
    fn a_decided_stop_sign_is_reported_and_counts_one_index() {
        let mut storage = MemStorage::new(0, entries(1..3), 3);
        storage.stopsign = Some(stop_sign());
        let op = storage.build();
        let mut cursor = ApplyCursor::new(0);
        let mut state = ApplyState::new();
        let out = cursor
            .absorb(&mut state, op.read_decided_suffix(0).unwrap())
            .unwrap();
        assert_eq!(out.applied.len(), 2);
        assert_eq!(out.stopped, Some(stop_sign()));
        assert_eq!(cursor.next_idx(), 3);
    }

    #[test]
    fn an_undecided_stop_sign_stops_the_drain() {
        let mut storage = MemStorage::new(0, entries(1..3), 2);
        storage.stopsign = Some(stop_sign());
        let op = storage.build();
        let mut cursor = ApplyCursor::new(0);
        let mut state = ApplyState::new();
        let read = op.read_entries(0..3).unwrap();
        assert!(matches!(read[2], LogEntry::StopSign(_, false)));
        let out = cursor.absorb(&mut state, read).unwrap();
        assert_eq!(out.stopped, None);
        assert_eq!(cursor.next_idx(), 2);
    }

    #[test]
    fn floor_at_compacted_only_raises() {
        let mut cursor = ApplyCursor::new(5);
        cursor.floor_at_compacted(3);
        assert_eq!(cursor.next_idx(), 5);
        cursor.floor_at_compacted(9);
        assert_eq!(cursor.next_idx(), 9);
    }

    #[test]
    fn a_host_sees_its_own_entries_and_snapshots() {
        let log = vec![
            HostEntry::Put(7),
            HostEntry::Paxos(advance(1)),
            HostEntry::Put(5),
            HostEntry::Paxos(advance(2)),
            HostEntry::Put(1),
        ];
        let mut op = MemStorage::new(0, log, 5).build();
        op.snapshot(Some(2), true).unwrap();
        op.snapshot(Some(4), true).unwrap();
        let mut cursor = ApplyCursor::new(0);
        let mut state = ApplyState::new();
        let mut seen = Vec::new();
        let out = cursor
            .absorb_with(
                &mut state,
                op.read_decided_suffix(0).unwrap(),
                |item| match item {
                    HostItem::Entry { idx, entry } => seen.push(format!("{idx}:{entry:?}")),
                    HostItem::Snapshot {
                        trimmed_idx,
                        snapshot,
                    } => seen.push(format!("snap{trimmed_idx}:{}", snapshot.puts)),
                },
            )
            .unwrap();
        assert_eq!(seen, vec!["snap4:12".to_owned(), "4:Put(1)".to_owned()]);
        assert!(out.applied.is_empty());
        assert_eq!(out.restored_to, Some(4));
        assert_eq!(cursor.next_idx(), 5);
        assert_eq!(state, folded(1..3));
        let wrapped = <HostEntry as PaxosEnvelope>::wrap_paxos_command(advance(3));
        assert_eq!(wrapped, HostEntry::Paxos(advance(3)));
        let _ = HostSnapshot::default();
    }
}
