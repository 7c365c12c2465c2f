//! The test entry type and the harnesses that open each storage backend.

use omnipaxos::{
    ClusterConfig,
    ballot_leader_election::Ballot,
    storage::{Entry, Snapshot, StopSign},
};
use serde::{Deserialize, Serialize};
use tsoracle_paxos_harness::conformance::{BoxError, StorageHarness};
use tsoracle_paxos_toolkit::{Error, storage::MemoryStorage};

/// A log entry carrying one number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TestEntry(pub(crate) u64);

/// Keeps the sum and the max of the entries it covers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TestSnapshot {
    pub(crate) sum: u64,
    pub(crate) max: u64,
}

impl Snapshot<TestEntry> for TestSnapshot {
    fn create(entries: &[TestEntry]) -> Self {
        TestSnapshot {
            sum: entries.iter().map(|e| e.0).sum(),
            max: entries.iter().map(|e| e.0).max().unwrap_or(0),
        }
    }

    fn merge(&mut self, delta: Self) {
        self.sum += delta.sum;
        self.max = self.max.max(delta.max);
    }

    fn use_snapshots() -> bool {
        true
    }
}

impl Entry for TestEntry {
    type Snapshot = TestSnapshot;
}

pub(crate) fn entries(values: impl IntoIterator<Item = u64>) -> Vec<TestEntry> {
    values.into_iter().map(TestEntry).collect()
}

pub(crate) fn ballot(n: u32) -> Ballot {
    Ballot::with(1, n, 0, 2)
}

pub(crate) fn stopsign(config_id: u32) -> StopSign {
    StopSign::with(
        ClusterConfig {
            configuration_id: config_id,
            nodes: vec![1, 2, 3],
            flexible_quorum: None,
        },
        Some(vec![7, 7]),
    )
}

/// The crate error behind a storage error, for asserting its variant.
#[cfg(feature = "rocksdb")]
pub(crate) fn storage_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> &'a Error {
    err.downcast_ref::<Error>()
        .unwrap_or_else(|| panic!("not a toolkit error: {err}"))
}

/// The toolkit's storages refuse a write with [`Error::InvalidOperation`],
/// nothing else (the suite's default accepts any error).
fn invalid_operation(err: &(dyn std::error::Error + 'static)) -> Result<(), String> {
    match err.downcast_ref::<Error>() {
        Some(Error::InvalidOperation { .. }) => Ok(()),
        Some(other) => Err(format!("not InvalidOperation: {other:?}")),
        None => Err("not a toolkit error".to_owned()),
    }
}

/// Opens the memory backend for the conformance suite, and "restarts" it
/// keeping its content.
pub(crate) struct MemoryHarness;

impl StorageHarness for MemoryHarness {
    type Entry = TestEntry;
    type Storage = MemoryStorage<TestEntry>;

    fn open(&mut self) -> Result<Self::Storage, BoxError> {
        Ok(MemoryStorage::new())
    }

    fn reopen(&mut self, storage: Self::Storage) -> Result<Self::Storage, BoxError> {
        // A restart of a simulated node: its content survives, nothing else.
        Ok(storage.clone())
    }

    fn entry(value: u64) -> TestEntry {
        TestEntry(value)
    }

    fn snapshot(value: u64) -> TestSnapshot {
        TestSnapshot {
            sum: value,
            max: value / 10,
        }
    }

    fn check_refusal(err: &(dyn std::error::Error + 'static)) -> Result<(), String> {
        invalid_operation(err)
    }
}

#[cfg(feature = "rocksdb")]
pub(crate) use rocks::*;

#[cfg(feature = "rocksdb")]
mod rocks {
    use std::{
        collections::BTreeMap,
        fs,
        path::{Path, PathBuf},
    };

    use tempfile::TempDir;
    use tsoracle_paxos_toolkit::storage::{RocksdbOptions, RocksdbStorage, StorageIdentity};

    use super::*;

    pub(crate) fn identity() -> StorageIdentity {
        StorageIdentity::new("test-cluster", 1)
    }

    pub(crate) fn open_rocks(dir: &Path) -> Result<RocksdbStorage<TestEntry>, Error> {
        RocksdbStorage::open(dir, identity(), RocksdbOptions::default())
    }

    pub(crate) struct RocksHarness {
        tmp: TempDir,
    }

    impl RocksHarness {
        pub(crate) fn new() -> Self {
            RocksHarness {
                tmp: tempfile::tempdir().unwrap(),
            }
        }

        pub(crate) fn path(&self) -> PathBuf {
            self.tmp.path().join("node")
        }
    }

    impl StorageHarness for RocksHarness {
        type Entry = TestEntry;
        type Storage = RocksdbStorage<TestEntry>;

        fn open(&mut self) -> Result<Self::Storage, BoxError> {
            Ok(open_rocks(&self.path())?)
        }

        fn reopen(&mut self, storage: Self::Storage) -> Result<Self::Storage, BoxError> {
            drop(storage);
            Ok(open_rocks(&self.path())?)
        }

        fn entry(value: u64) -> TestEntry {
            MemoryHarness::entry(value)
        }

        fn snapshot(value: u64) -> TestSnapshot {
            MemoryHarness::snapshot(value)
        }

        fn check_refusal(err: &(dyn std::error::Error + 'static)) -> Result<(), String> {
            invalid_operation(err)
        }
    }

    /// Every file under `dir` with its content, to prove an open left a
    /// directory untouched.
    pub(crate) fn tree(dir: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
        let mut out = BTreeMap::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            out.insert(d.clone(), None);
            for entry in fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    out.insert(path.clone(), Some(fs::read(&path).unwrap()));
                }
            }
        }
        out
    }

    /// A plain RocksDB handle on a storage's database, bypassing the
    /// storage, to damage records the way a disk or a tool would. The
    /// column-family names pin the on-disk format.
    pub(crate) fn raw_db(dir: &Path) -> rocksdb::DB {
        rocksdb::DB::open_cf(
            &rocksdb::Options::default(),
            dir.join("db"),
            ["meta", "log"],
        )
        .unwrap()
    }

    pub(crate) fn log_key(idx: u64) -> [u8; 8] {
        idx.to_be_bytes()
    }

    /// Flips one bit in the middle of a stored value.
    pub(crate) fn flip_bit(db: &rocksdb::DB, cf: &str, key: &[u8]) {
        let cf = db.cf_handle(cf).unwrap();
        let mut value = db.get_cf(cf, key).unwrap().unwrap();
        let mid = value.len() / 2;
        value[mid] ^= 0x10;
        db.put_cf(cf, key, value).unwrap();
    }
}
