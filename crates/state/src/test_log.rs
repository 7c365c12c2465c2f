//! Test support: a preloaded in-memory OmniPaxos storage, so tests can read
//! real `LogEntry` values (OmniPaxos keeps `SnapshottedEntry`'s constructor
//! private, so a real instance is the only way to get one).

use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::storage::{Entry, StopSign, Storage, StorageOp, StorageResult};
use omnipaxos::{ClusterConfig, OmniPaxos, OmniPaxosConfig, ServerConfig};

/// The durable state of one node's log, as a plain value.
#[derive(Debug)]
pub(crate) struct MemStorage<T: Entry> {
    /// Entries from `compacted_idx` on.
    pub(crate) log: Vec<T>,
    pub(crate) decided_idx: usize,
    pub(crate) compacted_idx: usize,
    pub(crate) snapshot: Option<T::Snapshot>,
    pub(crate) stopsign: Option<StopSign>,
    promise: Option<Ballot>,
    accepted_round: Option<Ballot>,
}

impl<T: Entry> MemStorage<T> {
    pub(crate) fn new(compacted_idx: usize, log: Vec<T>, decided_idx: usize) -> Self {
        Self {
            log,
            decided_idx,
            compacted_idx,
            snapshot: None,
            stopsign: None,
            promise: None,
            accepted_round: None,
        }
    }

    /// Builds node 1 of a two-node configuration over this storage.
    pub(crate) fn build(self) -> OmniPaxos<T, Self> {
        let config = OmniPaxosConfig {
            cluster_config: ClusterConfig {
                configuration_id: 1,
                nodes: vec![1, 2],
                flexible_quorum: None,
            },
            server_config: ServerConfig {
                pid: 1,
                election_tick_timeout: 5,
                resend_message_tick_timeout: 10,
                buffer_size: 16,
                batch_size: 1,
                flush_batch_tick_timeout: 10,
                leader_priority: 0,
            },
        };
        config.build(self).expect("valid test configuration")
    }
}

impl<T: Entry> Storage<T> for MemStorage<T> {
    fn write_atomically(&mut self, ops: Vec<StorageOp<T>>) -> StorageResult<()> {
        for op in ops {
            match op {
                StorageOp::AppendEntry(e) => self.append_entry(e)?,
                StorageOp::AppendEntries(es) => self.append_entries(es)?,
                StorageOp::AppendOnPrefix(from, es) => self.append_on_prefix(from, es)?,
                StorageOp::SetPromise(b) => self.set_promise(b)?,
                StorageOp::SetDecidedIndex(i) => self.set_decided_idx(i)?,
                StorageOp::SetAcceptedRound(b) => self.set_accepted_round(b)?,
                StorageOp::SetCompactedIdx(i) => self.set_compacted_idx(i)?,
                StorageOp::Trim(i) => self.trim(i)?,
                StorageOp::SetStopsign(s) => self.set_stopsign(s)?,
                StorageOp::SetSnapshot(s) => self.set_snapshot(s)?,
            }
        }
        Ok(())
    }

    fn append_entry(&mut self, entry: T) -> StorageResult<()> {
        self.log.push(entry);
        Ok(())
    }

    fn append_entries(&mut self, entries: Vec<T>) -> StorageResult<()> {
        self.log.extend(entries);
        Ok(())
    }

    fn append_on_prefix(&mut self, from_idx: usize, entries: Vec<T>) -> StorageResult<()> {
        self.log.truncate(from_idx - self.compacted_idx);
        self.append_entries(entries)
    }

    fn set_promise(&mut self, n_prom: Ballot) -> StorageResult<()> {
        self.promise = Some(n_prom);
        Ok(())
    }

    fn set_decided_idx(&mut self, ld: usize) -> StorageResult<()> {
        self.decided_idx = ld;
        Ok(())
    }

    fn get_decided_idx(&self) -> StorageResult<usize> {
        Ok(self.decided_idx)
    }

    fn set_accepted_round(&mut self, na: Ballot) -> StorageResult<()> {
        self.accepted_round = Some(na);
        Ok(())
    }

    fn get_accepted_round(&self) -> StorageResult<Option<Ballot>> {
        Ok(self.accepted_round)
    }

    fn get_entries(&self, from: usize, to: usize) -> StorageResult<Vec<T>> {
        let (from, to) = (from - self.compacted_idx, to - self.compacted_idx);
        Ok(self
            .log
            .get(from..to)
            .map(<[T]>::to_vec)
            .unwrap_or_default())
    }

    fn get_log_len(&self) -> StorageResult<usize> {
        Ok(self.log.len())
    }

    fn get_suffix(&self, from: usize) -> StorageResult<Vec<T>> {
        let from = from - self.compacted_idx;
        Ok(self.log.get(from..).map(<[T]>::to_vec).unwrap_or_default())
    }

    fn get_promise(&self) -> StorageResult<Option<Ballot>> {
        Ok(self.promise)
    }

    fn set_stopsign(&mut self, s: Option<StopSign>) -> StorageResult<()> {
        self.stopsign = s;
        Ok(())
    }

    fn get_stopsign(&self) -> StorageResult<Option<StopSign>> {
        Ok(self.stopsign.clone())
    }

    fn trim(&mut self, idx: usize) -> StorageResult<()> {
        self.log.drain(..idx - self.compacted_idx);
        Ok(())
    }

    fn set_compacted_idx(&mut self, idx: usize) -> StorageResult<()> {
        self.compacted_idx = idx;
        Ok(())
    }

    fn get_compacted_idx(&self) -> StorageResult<usize> {
        Ok(self.compacted_idx)
    }

    fn set_snapshot(&mut self, snapshot: Option<T::Snapshot>) -> StorageResult<()> {
        self.snapshot = snapshot;
        Ok(())
    }

    fn get_snapshot(&self) -> StorageResult<Option<T::Snapshot>> {
        Ok(self.snapshot.clone())
    }
}

pub(crate) mod host {
    //! A piggyback host: its own entries (`Put`) next to our commands, and a
    //! composite snapshot that embeds ours.

    use omnipaxos::storage::{Entry, Snapshot};
    use serde::{Deserialize, Serialize};

    use crate::{Command, PaxosEnvelope, PaxosSnapshot};

    #[derive(Clone, Debug, PartialEq)]
    pub(crate) enum HostEntry {
        Paxos(Command),
        Put(u64),
    }

    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
    pub(crate) struct HostSnapshot {
        pub(crate) paxos: PaxosSnapshot,
        pub(crate) puts: u64,
    }

    impl Snapshot<HostEntry> for HostSnapshot {
        fn create(entries: &[HostEntry]) -> Self {
            Self {
                paxos: PaxosSnapshot::create_from_envelopes(entries),
                puts: entries
                    .iter()
                    .filter_map(|e| match e {
                        HostEntry::Put(v) => Some(*v),
                        HostEntry::Paxos(_) => None,
                    })
                    .sum(),
            }
        }

        fn merge(&mut self, delta: Self) {
            self.paxos.merge_delta(delta.paxos);
            self.puts += delta.puts;
        }

        fn use_snapshots() -> bool {
            true
        }
    }

    impl Entry for HostEntry {
        type Snapshot = HostSnapshot;
    }

    impl PaxosEnvelope for HostEntry {
        fn paxos_command(&self) -> Option<&Command> {
            match self {
                Self::Paxos(command) => Some(command),
                Self::Put(_) => None,
            }
        }

        fn wrap_paxos_command(command: Command) -> Self {
            Self::Paxos(command)
        }

        fn paxos_snapshot(snapshot: &HostSnapshot) -> &PaxosSnapshot {
            &snapshot.paxos
        }
    }
}
