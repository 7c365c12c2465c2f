//! Storage that forgets what was not synced when its node crashes.
//!
//! OmniPaxos writes to a [`SimStorage`] (the node's volatile view); the
//! runner's group commit ([`SimDurability::commit_round`]) makes everything
//! written so far durable, as one synced RocksDB batch does. A crash keeps
//! only the durable copy ([`Disk::durable`]): a restarted node recovers from
//! exactly what was synced.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::storage::{StopSign, Storage, StorageOp, StorageResult};
use tsoracle_paxos_state::{PaxosEntry, PaxosSnapshot};
use tsoracle_paxos_toolkit::storage::MemoryStorage;
use tsoracle_paxos_toolkit::{Durability, Error as ToolkitError};

type Log = MemoryStorage<PaxosEntry>;

/// One node's disk for one incarnation: what OmniPaxos sees, and what
/// survives a crash.
#[derive(Debug, Default)]
struct Platters {
    volatile: Log,
    durable: Log,
    dirty: bool,
    /// The log itself changed since the last sync (not only an index).
    appended: bool,
    torn: Torn,
}

/// A sync that fails, as an fsync returning EIO does.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Torn {
    #[default]
    Off,
    /// The next sync of a round that changed the log fails.
    Armed,
    /// It failed: nothing of that round became durable, and no later sync
    /// succeeds (the runner stopped at the first).
    Fired,
}

/// A handle on one incarnation's disk.
#[derive(Debug, Clone, Default)]
pub(crate) struct Disk {
    platters: Arc<Mutex<Platters>>,
}

impl Disk {
    /// A disk holding `durable`, as a restarted node finds it.
    pub(crate) fn from_durable(durable: Log) -> Self {
        Self {
            platters: Arc::new(Mutex::new(Platters {
                volatile: durable.clone(),
                durable,
                dirty: false,
                appended: false,
                torn: Torn::Off,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Platters> {
        self.platters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What survives a crash now.
    pub(crate) fn durable(&self) -> Log {
        self.lock().durable.clone()
    }

    /// The storage OmniPaxos writes to.
    pub(crate) fn storage(&self) -> SimStorage {
        SimStorage { disk: self.clone() }
    }

    /// The group commit of this disk.
    pub(crate) fn durability(&self) -> SimDurability {
        SimDurability { disk: self.clone() }
    }

    /// Makes the next sync of a round that changed the log fail (`on`), or
    /// calls that off if it has not failed yet. Whether it is armed now
    /// (never once it fired: that runner has stopped already).
    pub(crate) fn arm_torn_sync(&self, on: bool) -> bool {
        let mut platters = self.lock();
        if platters.torn != Torn::Fired {
            platters.torn = if on { Torn::Armed } else { Torn::Off };
        }
        platters.torn == Torn::Armed
    }

    /// Whether an armed sync failed.
    pub(crate) fn torn_sync_fired(&self) -> bool {
        self.lock().torn == Torn::Fired
    }
}

/// The OmniPaxos storage of a simulated node.
#[derive(Debug)]
pub(crate) struct SimStorage {
    disk: Disk,
}

/// Makes a round's writes durable (see the module docs).
#[derive(Debug)]
pub(crate) struct SimDurability {
    disk: Disk,
}

impl Durability for SimDurability {
    fn begin_round(&self) {}

    fn commit_round(&self) -> Result<(), ToolkitError> {
        let mut platters = self.disk.lock();
        if platters.torn == Torn::Fired || (platters.torn == Torn::Armed && platters.appended) {
            platters.torn = Torn::Fired;
            return Err(ToolkitError::Io {
                path: "sim-disk".into(),
                source: std::io::Error::other("simulated failed sync (EIO)"),
            });
        }
        if platters.dirty {
            platters.durable = platters.volatile.clone();
            platters.dirty = false;
            platters.appended = false;
        }
        Ok(())
    }
}

impl SimStorage {
    fn read<R>(&self, f: impl FnOnce(&Log) -> R) -> R {
        f(&self.disk.lock().volatile)
    }

    fn write<R>(&mut self, f: impl FnOnce(&mut Log) -> R) -> R {
        let mut platters = self.disk.lock();
        platters.dirty = true;
        f(&mut platters.volatile)
    }

    /// A write that changes the log's entries.
    fn append<R>(&mut self, f: impl FnOnce(&mut Log) -> R) -> R {
        self.disk.lock().appended = true;
        self.write(f)
    }
}

impl Storage<PaxosEntry> for SimStorage {
    fn write_atomically(&mut self, ops: Vec<StorageOp<PaxosEntry>>) -> StorageResult<()> {
        self.append(|log| log.write_atomically(ops))
    }

    fn append_entry(&mut self, entry: PaxosEntry) -> StorageResult<()> {
        self.append(|log| log.append_entry(entry))
    }

    fn append_entries(&mut self, entries: Vec<PaxosEntry>) -> StorageResult<()> {
        self.append(|log| log.append_entries(entries))
    }

    fn append_on_prefix(&mut self, from_idx: usize, entries: Vec<PaxosEntry>) -> StorageResult<()> {
        self.append(|log| log.append_on_prefix(from_idx, entries))
    }

    fn set_promise(&mut self, n_prom: Ballot) -> StorageResult<()> {
        self.write(|log| log.set_promise(n_prom))
    }

    fn set_decided_idx(&mut self, ld: usize) -> StorageResult<()> {
        self.write(|log| log.set_decided_idx(ld))
    }

    fn get_decided_idx(&self) -> StorageResult<usize> {
        self.read(Storage::get_decided_idx)
    }

    fn set_accepted_round(&mut self, na: Ballot) -> StorageResult<()> {
        self.write(|log| log.set_accepted_round(na))
    }

    fn get_accepted_round(&self) -> StorageResult<Option<Ballot>> {
        self.read(Storage::get_accepted_round)
    }

    fn get_entries(&self, from: usize, to: usize) -> StorageResult<Vec<PaxosEntry>> {
        self.read(|log| log.get_entries(from, to))
    }

    fn get_log_len(&self) -> StorageResult<usize> {
        self.read(Storage::get_log_len)
    }

    fn get_suffix(&self, from: usize) -> StorageResult<Vec<PaxosEntry>> {
        self.read(|log| log.get_suffix(from))
    }

    fn get_promise(&self) -> StorageResult<Option<Ballot>> {
        self.read(Storage::get_promise)
    }

    fn set_stopsign(&mut self, s: Option<StopSign>) -> StorageResult<()> {
        self.write(|log| log.set_stopsign(s))
    }

    fn get_stopsign(&self) -> StorageResult<Option<StopSign>> {
        self.read(Storage::get_stopsign)
    }

    fn trim(&mut self, idx: usize) -> StorageResult<()> {
        self.write(|log| log.trim(idx))
    }

    fn set_compacted_idx(&mut self, idx: usize) -> StorageResult<()> {
        self.write(|log| log.set_compacted_idx(idx))
    }

    fn get_compacted_idx(&self) -> StorageResult<usize> {
        self.read(Storage::get_compacted_idx)
    }

    fn set_snapshot(&mut self, snapshot: Option<PaxosSnapshot>) -> StorageResult<()> {
        self.write(|log| log.set_snapshot(snapshot))
    }

    fn get_snapshot(&self) -> StorageResult<Option<PaxosSnapshot>> {
        self.read(Storage::get_snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_armed_sync_fails_only_for_a_round_that_changed_the_log_and_keeps_nothing_of_it() {
        let disk = Disk::default();
        let mut storage = disk.storage();
        assert!(disk.arm_torn_sync(true));
        storage.set_decided_idx(0).unwrap();
        disk.durability().commit_round().unwrap();
        assert!(!disk.torn_sync_fired());
        let entry = PaxosEntry(tsoracle_paxos_state::Command::Barrier {
            epoch: tsoracle_core::Epoch(1),
            proposal: tsoracle_paxos_state::ProposalId::new(1, 1, 0),
        });
        storage.append_entry(entry).unwrap();
        assert!(disk.durability().commit_round().is_err());
        assert!(disk.torn_sync_fired());
        assert_eq!(disk.durable().get_log_len().unwrap(), 0);
        // Once fired it stays so; no later sync succeeds.
        assert!(
            !disk.arm_torn_sync(true),
            "a fired sync cannot be armed again"
        );
        assert!(disk.durability().commit_round().is_err());
    }

    #[test]
    fn only_committed_writes_survive_a_crash() {
        let disk = Disk::default();
        let mut storage = disk.storage();
        storage.set_decided_idx(0).unwrap();
        storage.set_promise(Ballot::with(1, 1, 0, 1)).unwrap();
        disk.durability().commit_round().unwrap();
        storage.set_promise(Ballot::with(1, 2, 0, 1)).unwrap();
        let after_crash = Disk::from_durable(disk.durable()).storage();
        assert_eq!(
            after_crash.get_promise().unwrap(),
            Some(Ballot::with(1, 1, 0, 1))
        );
        assert_eq!(
            storage.get_promise().unwrap(),
            Some(Ballot::with(1, 2, 0, 1))
        );
    }
}
