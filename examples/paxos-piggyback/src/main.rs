//! A piggyback host: an application that already runs OmniPaxos for its own
//! key-value state carries the tsoracle commands in the same log.
//!
//! - One entry enum ([`AppEntry`]): the application's `Put`, and the
//!   oracle's command, through [`PaxosEnvelope`].
//! - One snapshot ([`AppSnapshot`]) covering both: the key-value map and the
//!   embedded [`PaxosSnapshot`].
//! - The host's own decided-entry hook ([`AppHook`]) runs a
//!   [`PaxosApplier`] for the oracle's commands and applies the `Put`s
//!   itself.
//! - [`KvHost`] is a `PaxosHighWaterHost` (it implements
//!   [`RunnerBackedHost`]: its client endpoints and its [`RunnerHost`]), so
//!   a [`PaxosDriver`] (and hence a `tsoracle-server`) runs on the
//!   application's log.
//!
//! No tonic and no RocksDB: the three nodes talk over the test harness'
//! in-memory network and keep their logs in memory. A node is cut off while
//! the others write and compact; when it comes back it catches up from a
//! snapshot that restores both states at once.
//!
//! Run with `cargo run -p paxos-piggyback` (`cargo xtask ci` runs it).

// An example reports to its terminal.
#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use tsoracle_consensus::ConsensusDriver;
use tsoracle_core::{PeerEndpoint, SeqKey};
use tsoracle_driver_paxos::{
    DriverConfig, PaxosApplier, PaxosDriver, Role, RunnerBackedHost, RunnerHost, Timing,
};
use tsoracle_paxos_harness::memnet::{MemNetConfig, MemNetwork};
use tsoracle_paxos_state::{
    Command, HostItem, PaxosEntry, PaxosEnvelope, PaxosSnapshot, SnapshotPolicy,
};
use tsoracle_paxos_toolkit::omnipaxos::storage::{Entry, Snapshot};
use tsoracle_paxos_toolkit::omnipaxos::util::{LogEntry, NodeId};
use tsoracle_paxos_toolkit::storage::MemoryStorage;
use tsoracle_paxos_toolkit::{
    ConfigBuilder, DecidedHook, MonotonicClock, Runner, RunnerConfig, RunnerLease, RunnerStatus,
    SyncedWrites,
};

/// The application's log entry: its own command, or the oracle's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum AppEntry {
    /// The application's key-value write.
    Put { key: String, value: String },
    /// A tsoracle command (versioned encoding kept by `PaxosEntry`).
    Oracle(PaxosEntry),
}

/// One snapshot for both states.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct AppSnapshot {
    kv: BTreeMap<String, String>,
    oracle: PaxosSnapshot,
}

impl Snapshot<AppEntry> for AppSnapshot {
    fn create(entries: &[AppEntry]) -> Self {
        let mut kv = BTreeMap::new();
        for entry in entries {
            if let AppEntry::Put { key, value } = entry {
                kv.insert(key.clone(), value.clone());
            }
        }
        Self {
            kv,
            oracle: PaxosSnapshot::create_from_envelopes(entries),
        }
    }

    fn merge(&mut self, delta: Self) {
        self.kv.extend(delta.kv);
        self.oracle.merge_delta(delta.oracle);
    }

    fn use_snapshots() -> bool {
        true
    }
}

impl Entry for AppEntry {
    type Snapshot = AppSnapshot;
}

impl PaxosEnvelope for AppEntry {
    fn paxos_command(&self) -> Option<&Command> {
        match self {
            Self::Oracle(entry) => Some(&entry.0),
            Self::Put { .. } => None,
        }
    }

    fn wrap_paxos_command(command: Command) -> Self {
        Self::Oracle(PaxosEntry(command))
    }

    fn paxos_snapshot(snapshot: &AppSnapshot) -> &PaxosSnapshot {
        &snapshot.oracle
    }
}

type Kv = Arc<RwLock<BTreeMap<String, String>>>;

/// The host's decided-entry hook: the oracle's commands go to the
/// `PaxosApplier`, everything else is the application's.
struct AppHook {
    applier: PaxosApplier,
    kv: Kv,
    restores: Arc<AtomicUsize>,
}

impl DecidedHook<AppEntry> for AppHook {
    fn next_idx(&self) -> usize {
        self.applier.next_idx()
    }

    fn before_decided(&mut self, status: &RunnerStatus) {
        self.applier.observe_promise(status.promise);
    }

    fn on_decided(
        &mut self,
        entries: Vec<LogEntry<AppEntry>>,
    ) -> Result<Option<usize>, Box<dyn std::error::Error + Send + Sync>> {
        let mut kv = self.kv.write().unwrap_or_else(PoisonError::into_inner);
        let restores = &self.restores;
        let compact = self.applier.absorb(entries, |item| match item {
            HostItem::Entry {
                entry: AppEntry::Put { key, value },
                ..
            } => {
                kv.insert(key.clone(), value.clone());
            }
            HostItem::Entry { .. } => {}
            // The snapshot restores the application's part; the applier has
            // restored the oracle's.
            HostItem::Snapshot { snapshot, .. } => {
                kv.clone_from(&snapshot.kv);
                restores.fetch_add(1, Ordering::Relaxed);
            }
        })?;
        Ok(compact)
    }
}

/// The application node, which is also a `PaxosHighWaterHost` (through
/// `RunnerBackedHost`: it names its client endpoints, its `RunnerHost` does
/// the rest).
struct KvHost {
    core: RunnerHost<AppEntry>,
    kv: Kv,
    restores: Arc<AtomicUsize>,
}

impl KvHost {
    fn start(id: NodeId, members: &[NodeId], network: &MemNetwork<AppEntry>) -> Result<Self> {
        // A lost message is resent after two election timeouts (the default).
        let config = ConfigBuilder::new(members)
            .election_ticks(timing().election_ticks)
            .build(id)?;
        let omnipaxos = config.build(MemoryStorage::<AppEntry>::new())?;
        // Compact every 20 decided entries, so a lagging node needs a snapshot.
        let every = NonZeroU64::new(20).context("non-zero")?;
        let (applier, handle) = PaxosApplier::new(
            id,
            SnapshotPolicy::EveryDecided(every),
            omnipaxos.get_decided_idx(),
        );
        let kv = Kv::default();
        let restores = Arc::new(AtomicUsize::new(0));
        let hook = AppHook {
            applier,
            kv: Arc::clone(&kv),
            restores: Arc::clone(&restores),
        };
        let runner = Arc::new(Runner::spawn(
            omnipaxos,
            members,
            network.add_node(id),
            SyncedWrites,
            hook,
            RunnerConfig {
                tick: timing().tick,
                // The leader lease the driver reads: grant rounds on the
                // runner, timed on the process's clock (the host reports
                // it, `RunnerHost::clock`).
                lease: Some(RunnerLease {
                    timing: timing().lease_timing(),
                    clock: Arc::new(MonotonicClock::new()),
                }),
                ..RunnerConfig::default()
            },
        )?);
        network.attach(runner.inbox());
        Ok(Self {
            // In-memory logs start empty at every start, so incarnation 1 is
            // enough; a durable host persists and bumps it
            // (`next_incarnation`).
            core: RunnerHost::new(runner, handle, members.to_vec(), 1),
            kv,
            restores,
        })
    }

    /// The application's own write: appended to the shared log.
    async fn put(&self, key: &str, value: &str) -> Result<()> {
        let entry = AppEntry::Put {
            key: key.to_owned(),
            value: value.to_owned(),
        };
        self.core.runner().propose(entry).await?;
        Ok(())
    }

    fn kv(&self) -> BTreeMap<String, String> {
        self.kv
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    async fn shutdown(&self) -> Result<()> {
        self.core.shutdown().await?;
        Ok(())
    }
}

impl RunnerBackedHost for KvHost {
    type Entry = AppEntry;

    fn runner_host(&self) -> &RunnerHost<AppEntry> {
        &self.core
    }

    fn client_endpoint_of(&self, node: NodeId) -> Option<PeerEndpoint> {
        PeerEndpoint::try_from(format!("127.0.0.1:{}", 7000 + node)).ok()
    }
}

fn timing() -> Timing {
    Timing::lan()
}

async fn leader(drivers: &BTreeMap<NodeId, PaxosDriver<KvHost>>) -> Result<NodeId> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for (&id, driver) in drivers {
            if let Role::Leader(_) = driver.role() {
                return Ok(id);
            }
        }
        if Instant::now() > deadline {
            bail!("no leader within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let members = [1, 2, 3];
    let network = MemNetwork::<AppEntry>::new(MemNetConfig::default())?;
    let mut drivers = BTreeMap::new();
    for id in members {
        let host = Arc::new(KvHost::start(id, &members, &network)?);
        drivers.insert(id, PaxosDriver::start(host, DriverConfig::new(timing()))?);
    }
    let lead = leader(&drivers).await?;
    let lagging = members
        .into_iter()
        .find(|&id| id != lead)
        .context("a follower")?;
    println!("node {lead} leads; cutting node {lagging} off");
    network.control().isolate(lagging);

    // The application and the oracle write to the same log, as a server
    // driving this driver would.
    let driver = &drivers[&lead];
    let Role::Leader(term) = driver.role() else {
        bail!("node {lead} lost its lease");
    };
    let key = SeqKey::try_new("invoices")?;
    let mut high_water = 0;
    for i in 1..=60u64 {
        driver
            .host()
            .put(&format!("user-{i}"), &format!("v{i}"))
            .await?;
        high_water = driver.persist_high_water(i * 1_000, term.epoch()).await?;
        driver.advance_dense(&key, 2, term.epoch()).await?;
    }
    let dense = driver.load_dense_seq(&key).await?;
    println!("60 puts, high-water {high_water}, dense counter {dense}; the log was compacted");

    network.control().rejoin(lagging);
    let behind = &drivers[&lagging];
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let caught_up = behind.host().kv() == driver.host().kv();
        if caught_up && behind.load_high_water().await.ok() == Some(high_water) {
            break;
        }
        if Instant::now() > deadline {
            bail!("node {lagging} did not catch up within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let restores = behind.host().restores.load(Ordering::Relaxed);
    let lagging_dense = behind.load_dense_seq(&key).await?;
    if lagging_dense != dense || behind.host().kv().len() != 60 {
        bail!("node {lagging} diverged: dense {lagging_dense} != {dense}");
    }
    println!(
        "node {lagging} caught up ({restores} snapshot restore(s)): 60 keys, high-water \
         {high_water}, dense counter {lagging_dense}, from one log and one snapshot"
    );
    for (_, driver) in drivers {
        driver.shutdown().await;
        driver.host().shutdown().await?;
    }
    network.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use tsoracle_core::Epoch;
    use tsoracle_paxos_harness::conformance::{self, BoxError, StorageHarness};
    use tsoracle_paxos_state::ProposalId;

    use super::*;

    /// The storage this host keeps its one log in, for the toolkit's
    /// storage conformance suite; a host with a storage of its own runs the
    /// suite the same way.
    struct AppStorage;

    impl StorageHarness for AppStorage {
        type Entry = AppEntry;
        type Storage = MemoryStorage<AppEntry>;

        fn open(&mut self) -> Result<Self::Storage, BoxError> {
            Ok(MemoryStorage::new())
        }

        fn reopen(&mut self, storage: Self::Storage) -> Result<Self::Storage, BoxError> {
            // In memory: the content survives a simulated restart.
            Ok(storage)
        }

        /// Both kinds of entry, so the log holds the application's and the
        /// oracle's.
        fn entry(value: u64) -> AppEntry {
            if value.is_multiple_of(2) {
                AppEntry::Put {
                    key: format!("key-{value}"),
                    value: value.to_string(),
                }
            } else {
                AppEntry::wrap_paxos_command(Command::Advance {
                    at_least: value,
                    epoch: Epoch(1),
                    proposal: ProposalId::new(1, 1, value),
                })
            }
        }

        fn snapshot(value: u64) -> AppSnapshot {
            AppSnapshot {
                kv: BTreeMap::from([(format!("key-{value}"), value.to_string())]),
                oracle: PaxosSnapshot::default(),
            }
        }
    }

    #[test]
    fn the_application_storage_passes_the_conformance_suite() {
        if let Err(failures) = conformance::run_all(|| AppStorage) {
            panic!("{failures:#?}");
        }
    }
}
