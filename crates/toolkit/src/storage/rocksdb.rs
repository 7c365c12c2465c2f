//! Durable OmniPaxos storage on RocksDB. The on-disk format is documented on
//! [`RocksdbStorage`].

use std::{
    fmt,
    marker::PhantomData,
    path::{Path, PathBuf},
    sync::{
        Arc, Weak,
        atomic::{AtomicBool, Ordering},
    },
};

use ::rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, DB, DBCompressionType, DBRecoveryMode, Direction,
    InfoLogger, IteratorMode, LogLevel, Options, ReadOptions, WriteBatch, WriteOptions,
};
use omnipaxos::{
    ballot_leader_election::Ballot,
    storage::{Entry, StopSign, Storage, StorageOp, StorageResult},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::{
    codec::{decode_record, encode_record},
    dir::{self, DB_DIR, DirLock, INIT_DIR, Inspection},
    identity::StorageIdentity,
    state::{LogEdit, Meta, Plan, plan},
};
use crate::{Durability, Error, InstanceId};

const META_CF: &str = "meta";
const LOG_CF: &str = "log";

const K_IDENTITY: &str = "identity";
const K_INSTANCE: &str = "instance";
const K_PROMISE: &str = "promise";
const K_ACCEPTED_ROUND: &str = "accepted_round";
const K_DECIDED_IDX: &str = "decided_idx";
const K_COMPACTED_IDX: &str = "compacted_idx";
const K_STOPSIGN: &str = "stopsign";
const K_SNAPSHOT: &str = "snapshot";
const K_LOG_RANGE: &str = "log_range";

/// Whether an open may create a storage in a missing or empty directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Create {
    IfFresh,
    Never,
}

/// The persisted form of the log bounds.
#[derive(Debug, Serialize, Deserialize)]
struct LogRange {
    first: u64,
    end: u64,
}

/// Tuning for [`RocksdbStorage`]. Start from [`RocksdbOptions::default`]
/// and change single fields.
///
/// Not tunable on purpose: every write is synced (or, inside a runner round,
/// synced by the round's group commit), records are never compressed (the
/// workspace builds RocksDB without codecs and log records are small), and
/// WAL recovery tolerates only a torn tail (an unacknowledged write, dropped)
/// while corruption anywhere else refuses to open.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RocksdbOptions {
    /// Bytes of one memtable per column family. Default 4 MiB: after a
    /// `kill -9` RocksDB replays the write-ahead log of every unflushed
    /// memtable before the node can start, so this bounds the replay
    /// (about 60 MiB/s here: 4 MiB is under 0.1 s).
    pub write_buffer_size: usize,
    /// Memtables per column family before writes stall. Default 2.
    pub max_write_buffer_number: i32,
    /// Total WAL bytes before RocksDB forces a flush, bounding disk use and
    /// the replay after a crash. Default 16 MiB.
    pub max_total_wal_size: u64,
    /// Open table files kept cached (`-1`: unlimited). Default 256.
    pub max_open_files: i32,
    /// Background flush and compaction threads. Default 2.
    pub max_background_jobs: i32,
    /// RocksDB info `LOG` files kept in the database directory. Default 4.
    pub keep_log_file_num: usize,
}

impl Default for RocksdbOptions {
    fn default() -> Self {
        RocksdbOptions {
            write_buffer_size: 4 << 20,
            max_write_buffer_number: 2,
            max_total_wal_size: 16 << 20,
            max_open_files: 256,
            max_background_jobs: 2,
            keep_log_file_num: 4,
        }
    }
}

impl RocksdbOptions {
    fn db_options(&self) -> Options {
        let mut o = Options::default();
        o.set_compression_type(DBCompressionType::None);
        o.set_write_buffer_size(self.write_buffer_size);
        o.set_max_write_buffer_number(self.max_write_buffer_number);
        o.set_max_total_wal_size(self.max_total_wal_size);
        // The meta column family takes a small write every round and never
        // fills its memtable, so on its own it would pin every WAL file
        // until `max_total_wal_size` (measured: a 50 MB WAL and 0.8 s of
        // replay on open after 1M entries). Flushing all column families
        // together releases the WAL whenever the log's memtable flushes.
        o.set_atomic_flush(true);
        o.set_max_open_files(self.max_open_files);
        o.set_max_background_jobs(self.max_background_jobs);
        o.set_keep_log_file_num(self.keep_log_file_num);
        // Only a torn *tail* may be dropped at recovery: it can hold only the
        // unsynced writes of a round that crashed before its group commit,
        // none of them acknowledged. Corruption anywhere else must stop the
        // node (point-in-time recovery would silently drop synced records).
        o.set_wal_recovery_mode(DBRecoveryMode::TolerateCorruptedTailRecords);
        o.set_paranoid_checks(true);
        o
    }
}

/// A durable OmniPaxos [`Storage`] in a RocksDB database.
///
/// - Every write, `write_atomically` or a single-op method, is one
///   `WriteBatch` written with `sync = true`: when a method returns `Ok`, the
///   change survives a crash, and a crash never leaves part of a write.
/// - Metadata (promise, rounds, indices, stop-sign) is cached in memory and
///   updated only after the write succeeded; log entries, and the snapshot
///   (the size of the state: a cached copy would double a large state's
///   memory), are read from RocksDB and their checksums verified on every
///   read.
/// - The directory is locked for the storage's lifetime, and records the
///   cluster and node it belongs to (see [`RocksdbStorage::open`]).
///
/// Semantics are those of [`MemoryStorage`](crate::storage::MemoryStorage)
/// (see the [`storage`](crate::storage) module).
///
/// # On-disk format
///
/// ```text
/// <dir>/tsoracle-paxos.lock   empty; locked (flock) while a storage is open
/// <dir>/db/                   the RocksDB database
/// <dir>/db.init/              only while a fresh database is being built
/// ```
///
/// A fresh database is built in `db.init` and renamed to `db` once its
/// identity and every metadata record are synced, so a crash during
/// initialization never leaves a half-made database that looks like ours.
/// Every value is a framed record, `[version u8 = 1][postcard][crc32 LE]`
/// (see [`codec`](crate::storage::codec)):
///
/// | column family | key | value |
/// |---|---|---|
/// | `log` | absolute index, `u64` big-endian (keys sort by index) | the entry `T` |
/// | `meta` | `identity` | [`StorageIdentity`] |
/// | `meta` | `instance` | [`InstanceId`], random, drawn at initialization |
/// | `meta` | `promise`, `accepted_round` | `Option<Ballot>` |
/// | `meta` | `decided_idx`, `compacted_idx` | `u64` |
/// | `meta` | `stopsign` | `Option<StopSign>` |
/// | `meta` | `snapshot` | `Option<T::Snapshot>` |
/// | `meta` | `log_range` | `(first: u64, end: u64)`: the log holds `[first, end)` |
///
/// Every meta record is written when the database is created, so a missing
/// one is corruption, not a default (except `instance`: a directory created
/// before it existed is given one at its first open). Trims and truncations are RocksDB range
/// deletes in the same batch as the rest of the write.
pub struct RocksdbStorage<T: Entry> {
    // Field order matters: the database is closed before the lock is released.
    db: Arc<DB>,
    group_commit: Arc<GroupCommitState>,
    meta: Meta,
    identity: StorageIdentity,
    instance: InstanceId,
    path: PathBuf,
    write_options: WriteOptions,
    deferred_write_options: WriteOptions,
    _lock: DirLock,
    _entry: PhantomData<fn() -> T>,
}

impl<T: Entry> fmt::Debug for RocksdbStorage<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RocksdbStorage")
            .field("path", &self.path)
            .field("identity", &self.identity)
            .field("instance", &self.instance)
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

fn rocks(operation: &'static str) -> impl FnOnce(::rocksdb::Error) -> Error {
    move |source| Error::Rocksdb { operation, source }
}

fn log_key(idx: usize) -> [u8; 8] {
    // usize is at most 64 bits on every target RocksDB supports.
    (idx as u64).to_be_bytes()
}

fn decode_log_key(key: &[u8]) -> Result<usize, Error> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| Error::corrupt("log", format!("key of {} bytes, expected 8", key.len())))?;
    usize::try_from(u64::from_be_bytes(bytes))
        .map_err(|_| Error::corrupt("log", "key does not fit in usize"))
}

fn to_usize(what: &str, v: u64) -> Result<usize, Error> {
    usize::try_from(v).map_err(|_| Error::corrupt(what, format!("{v} does not fit in usize")))
}

fn cf<'a>(db: &'a DB, name: &str) -> Result<&'a ColumnFamily, Error> {
    db.cf_handle(name)
        .ok_or_else(|| Error::corrupt(format!("column family {name}"), "missing"))
}

fn sync_writes() -> WriteOptions {
    let mut w = WriteOptions::default();
    w.set_sync(true);
    w
}

fn get_meta<V: DeserializeOwned>(db: &DB, key: &str) -> Result<V, Error> {
    let what = format!("meta/{key}");
    match db
        .get_pinned_cf(cf(db, META_CF)?, key)
        .map_err(rocks("read metadata"))?
    {
        Some(bytes) => decode_record(&what, &bytes),
        None => Err(Error::corrupt(what, "missing")),
    }
}

impl<T> RocksdbStorage<T>
where
    T: Entry + Serialize + DeserializeOwned,
{
    /// Opens the storage in `dir`, creating and initializing it when `dir` is
    /// missing or empty.
    ///
    /// Refuses, without writing anything to `dir`:
    /// - a directory of another cluster or node ([`Error::ForeignDirectory`]);
    /// - a non-empty directory that holds no storage of ours, or a database
    ///   without our records ([`Error::NotStorageDirectory`], [`Error::Corrupt`]);
    /// - corrupt metadata, or log bounds that do not match the stored
    ///   entries ([`Error::Corrupt`], naming the record).
    ///
    /// Fails with [`Error::Locked`] while another storage (in this or any
    /// process) has `dir` open.
    pub fn open(
        dir: impl AsRef<Path>,
        identity: StorageIdentity,
        options: RocksdbOptions,
    ) -> Result<Self, Error> {
        let db_options = options.db_options();
        Self::open_with(
            dir.as_ref(),
            identity,
            &options,
            db_options,
            Create::IfFresh,
        )
    }

    /// [`open`](Self::open) for a directory that must already hold this
    /// node's storage: a missing or empty `dir` (or one left by an
    /// interrupted initialization) is refused with [`Error::NotInitialized`],
    /// without writing anything.
    ///
    /// A node that has run before and finds its directory empty has lost
    /// its promises; it must not vote again under its old id. Only the
    /// explicit bootstrap of a new cluster (or a join as a new member) may
    /// create a storage, through [`open`](Self::open).
    pub fn open_existing(
        dir: impl AsRef<Path>,
        identity: StorageIdentity,
        options: RocksdbOptions,
    ) -> Result<Self, Error> {
        let db_options = options.db_options();
        Self::open_with(dir.as_ref(), identity, &options, db_options, Create::Never)
    }

    /// [`open`](Self::open) with the RocksDB options of the existing
    /// database given explicitly (tests enable statistics through it).
    fn open_with(
        dir: &Path,
        identity: StorageIdentity,
        options: &RocksdbOptions,
        mut db_options: Options,
        create: Create,
    ) -> Result<Self, Error> {
        match (dir::inspect(dir)?, create) {
            // Read-only first, so a directory we refuse is left untouched.
            (Inspection::Existing, _) => probe_identity(dir, &identity)?,
            (Inspection::Fresh, Create::IfFresh) => {}
            (Inspection::Fresh, Create::Never) => {
                return Err(Error::NotInitialized {
                    path: dir.to_path_buf(),
                });
            }
        }
        dir::create_dir(dir)?;
        let lock = dir::lock(dir)?;
        // Under the lock: another process may have initialized the directory
        // since `inspect`; the identity is checked again after the real open.
        if !dir::has_db(dir)? {
            match create {
                Create::IfFresh => initialize::<T>(dir, &identity, options)?,
                // Emptied between the inspection and the lock: refused all the same.
                Create::Never => {
                    return Err(Error::NotInitialized {
                        path: dir.to_path_buf(),
                    });
                }
            }
        }
        db_options.create_if_missing(false);
        let db =
            DB::open_cf_descriptors(&db_options, dir.join(DB_DIR), column_families(&db_options))
                .map_err(rocks("open"))?;
        let found: StorageIdentity = get_meta(&db, K_IDENTITY)?;
        if found != identity {
            return Err(Error::ForeignDirectory {
                path: dir.to_path_buf(),
                expected: identity,
                found,
            });
        }
        let instance = load_or_draw_instance(&db)?;
        let meta = load_meta::<T>(&db)?;
        let storage = RocksdbStorage {
            db: Arc::new(db),
            group_commit: Arc::default(),
            meta,
            identity,
            instance,
            path: dir.to_path_buf(),
            write_options: sync_writes(),
            deferred_write_options: WriteOptions::default(),
            _lock: lock,
            _entry: PhantomData,
        };
        storage.check_log_bounds()?;
        Ok(storage)
    }

    /// The handle a [`Runner`](crate::Runner) uses to sync each round's
    /// writes at once (see [`crate::durability`]). Outside a round, or without
    /// a runner, every write stays synced on its own.
    pub fn group_commit(&self) -> RocksdbGroupCommit {
        RocksdbGroupCommit {
            db: Arc::downgrade(&self.db),
            state: Arc::clone(&self.group_commit),
        }
    }

    /// The cluster and node this storage belongs to.
    pub fn identity(&self) -> &StorageIdentity {
        &self.identity
    }

    /// This directory's random instance id, drawn when it was initialized
    /// (see [`crate::instance`]).
    pub fn instance(&self) -> InstanceId {
        self.instance
    }

    /// The storage directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads every stored log entry, checking that the keys are exactly the
    /// stored range and that every record's checksum and payload are valid.
    /// Returns the number of entries. Meant for an operator `verify` command:
    /// it reads the whole log.
    pub fn verify_log(&self) -> Result<u64, Error> {
        let log = cf(&self.db, LOG_CF)?;
        let mut expected = self.meta.first;
        let mut count = 0u64;
        for item in self.db.iterator_cf(log, IteratorMode::Start) {
            let (key, value) = item.map_err(rocks("read log"))?;
            let idx = decode_log_key(&key)?;
            if idx != expected || idx >= self.meta.end {
                return Err(self.unexpected_key(idx, expected));
            }
            decode_record::<T>(format_args!("log entry {idx}"), &value)?;
            expected += 1;
            count += 1;
        }
        if expected != self.meta.end {
            return Err(missing_entry(expected));
        }
        Ok(count)
    }

    fn unexpected_key(&self, idx: usize, expected: usize) -> Error {
        if idx < self.meta.first || idx >= self.meta.end {
            Error::corrupt(
                format!("log entry {idx}"),
                format!(
                    "stored outside the log range [{}, {})",
                    self.meta.first, self.meta.end
                ),
            )
        } else {
            missing_entry(expected)
        }
    }

    /// The cheap part of the open-time check: the first and last stored
    /// entries are exactly the bounds of the log range and decode.
    fn check_log_bounds(&self) -> Result<(), Error> {
        let log = cf(&self.db, LOG_CF)?;
        let Meta { first, end, .. } = self.meta;
        let mut checks = [(IteratorMode::Start, first), (IteratorMode::End, end)];
        if first < end {
            checks[1].1 = end - 1;
        }
        for (mode, expected) in checks {
            let found = self.db.iterator_cf(log, mode).next();
            match found {
                None if first == end => {}
                None => return Err(missing_entry(expected)),
                Some(item) => {
                    let (key, value) = item.map_err(rocks("read log"))?;
                    let idx = decode_log_key(&key)?;
                    if first == end || idx != expected {
                        return Err(self.unexpected_key(idx, expected));
                    }
                    decode_record::<T>(format_args!("log entry {idx}"), &value)?;
                }
            }
        }
        Ok(())
    }

    /// Reads `[from, to)`, which the caller checked is inside the log range.
    fn read_range(&self, from: usize, to: usize) -> Result<Vec<T>, Error> {
        let log = cf(&self.db, LOG_CF)?;
        let mut read_options = ReadOptions::default();
        read_options.set_iterate_upper_bound(log_key(to));
        let start = log_key(from);
        let iter = self.db.iterator_cf_opt(
            log,
            read_options,
            IteratorMode::From(&start, Direction::Forward),
        );
        let mut out = Vec::with_capacity(to - from);
        let mut expected = from;
        for item in iter {
            let (key, value) = item.map_err(rocks("read log"))?;
            let idx = decode_log_key(&key)?;
            if idx != expected {
                return Err(missing_entry(expected));
            }
            out.push(decode_record(format_args!("log entry {idx}"), &value)?);
            expected += 1;
        }
        if expected != to {
            return Err(missing_entry(expected));
        }
        Ok(out)
    }

    /// Applies `ops` in order as one synced `WriteBatch`, all or nothing.
    fn commit(&mut self, ops: Vec<StorageOp<T>>) -> Result<(), Error> {
        let plan = plan(&self.meta, ops)?;
        if plan.is_noop() {
            return Ok(());
        }
        let batch = self.batch(&plan)?;
        let deferred = self.group_commit.deferred.load(Ordering::Acquire);
        let write_options = if deferred {
            // Inside a runner round: the round's commit syncs the WAL once
            // for every write, before any message of the round leaves.
            self.group_commit.dirty.store(true, Ordering::Release);
            &self.deferred_write_options
        } else {
            &self.write_options
        };
        // Only a synced write is an fsync to time (a deferred one is the
        // round's WAL sync, timed in `commit_round`).
        let started = (!deferred).then(std::time::Instant::now);
        self.db
            .write_opt(batch, write_options)
            .map_err(rocks("write"))?;
        if let Some(started) = started {
            record_fsync(started);
        }
        // Only now, with the batch durable, does the cache move.
        self.meta = plan.meta;
        Ok(())
    }

    fn batch(&self, plan: &Plan<T>) -> Result<WriteBatch, Error> {
        let log = cf(&self.db, LOG_CF)?;
        let meta_cf = cf(&self.db, META_CF)?;
        let mut batch = WriteBatch::default();
        for edit in &plan.edits {
            match edit {
                LogEdit::Trim {
                    old_first,
                    new_first,
                    old_end,
                } => {
                    let to = (*new_first).min(*old_end);
                    if *old_first < to {
                        batch.delete_range_cf(log, log_key(*old_first), log_key(to));
                    }
                }
                LogEdit::Truncate { from, old_end } => {
                    batch.delete_range_cf(log, log_key(*from), log_key(*old_end));
                }
                LogEdit::Append { idx, entry } => {
                    let value = encode_record(format_args!("log entry {idx}"), entry)?;
                    batch.put_cf(log, log_key(*idx), value);
                }
            }
        }
        let m = &plan.meta;
        let d = plan.dirty;
        let mut put = |key: &str, value: Vec<u8>| batch.put_cf(meta_cf, key, value);
        if d.promise {
            put(K_PROMISE, encode_record(K_PROMISE, &m.promise)?);
        }
        if d.accepted_round {
            put(
                K_ACCEPTED_ROUND,
                encode_record(K_ACCEPTED_ROUND, &m.accepted_round)?,
            );
        }
        if d.decided_idx {
            put(
                K_DECIDED_IDX,
                encode_record(K_DECIDED_IDX, &(m.decided_idx as u64))?,
            );
        }
        if d.compacted_idx {
            put(
                K_COMPACTED_IDX,
                encode_record(K_COMPACTED_IDX, &(m.compacted_idx as u64))?,
            );
        }
        if d.stopsign {
            put(K_STOPSIGN, encode_record(K_STOPSIGN, &m.stopsign)?);
        }
        if d.log_range {
            put(K_LOG_RANGE, encode_record(K_LOG_RANGE, &log_range(m))?);
        }
        if let Some(snapshot) = &plan.snapshot {
            put(K_SNAPSHOT, encode_record(K_SNAPSHOT, snapshot)?);
        }
        Ok(batch)
    }
}

/// Shared between a storage and its [`RocksdbGroupCommit`] handle.
#[derive(Debug, Default)]
struct GroupCommitState {
    /// Writes skip their own sync (a round is open).
    deferred: AtomicBool,
    /// A deferred write happened since the last sync.
    dirty: AtomicBool,
}

/// Group commit for [`RocksdbStorage`]: between `begin_round` and
/// `commit_round` writes go to the WAL without syncing, and `commit_round`
/// syncs the WAL once. Each write is still one atomic `WriteBatch`.
///
/// The handle holds the database weakly, so it never keeps a closed
/// storage's files open (the directory lock is released on close).
#[derive(Debug, Clone)]
pub struct RocksdbGroupCommit {
    db: Weak<DB>,
    state: Arc<GroupCommitState>,
}

impl Durability for RocksdbGroupCommit {
    fn begin_round(&self) {
        self.state.deferred.store(true, Ordering::Release);
    }

    fn commit_round(&self) -> Result<(), Error> {
        self.state.deferred.store(false, Ordering::Release);
        if !self.state.dirty.swap(false, Ordering::AcqRel) {
            // An idle round wrote nothing: no fsync per tick.
            return Ok(());
        }
        let db = self.db.upgrade().ok_or_else(|| Error::InvalidOperation {
            reason: "the storage was closed before its last writes were synced".to_owned(),
        })?;
        let started = std::time::Instant::now();
        db.flush_wal(true).map_err(rocks("sync the WAL"))?;
        record_fsync(started);
        Ok(())
    }
}

/// One synced write's latency (a synced batch, or the round's WAL sync).
fn record_fsync(started: std::time::Instant) {
    metrics::histogram!(crate::telemetry::FSYNC_SECONDS).record(started.elapsed().as_secs_f64());
}

fn log_range(m: &Meta) -> LogRange {
    LogRange {
        first: m.first as u64,
        end: m.end as u64,
    }
}

fn missing_entry(idx: usize) -> Error {
    Error::corrupt(
        format!("log entry {idx}"),
        "missing, although the log range includes it",
    )
}

/// Checks the identity of an existing database through a read-only open,
/// which writes nothing to the directory (its info log is discarded).
fn probe_identity(dir: &Path, expected: &StorageIdentity) -> Result<(), Error> {
    let db_path = dir.join(DB_DIR);
    let mut options = Options::default();
    options.set_info_logger(InfoLogger::new_callback_logger(LogLevel::Fatal, |_, _| {}));
    let cfs = DB::list_cf(&options, &db_path).map_err(|e| Error::NotStorageDirectory {
        path: dir.to_path_buf(),
        reason: format!(
            "{} is not a readable RocksDB database: {e}",
            db_path.display()
        ),
    })?;
    if ![META_CF, LOG_CF].iter().all(|c| cfs.iter().any(|f| f == c)) {
        return Err(Error::NotStorageDirectory {
            path: dir.to_path_buf(),
            reason: format!(
                "{} is a RocksDB database without the `meta` and `log` column families",
                db_path.display()
            ),
        });
    }
    let db = DB::open_cf_for_read_only(&options, &db_path, [META_CF, LOG_CF], false)
        .map_err(rocks("open read-only"))?;
    let found: StorageIdentity = get_meta(&db, K_IDENTITY)?;
    if &found != expected {
        return Err(Error::ForeignDirectory {
            path: dir.to_path_buf(),
            expected: expected.clone(),
            found,
        });
    }
    Ok(())
}

/// Our column families, each with the tuned options: `DB::open_cf` would
/// give them RocksDB's defaults (64 MiB memtables, compression), leaving the
/// tuning to the unused `default` family only.
fn column_families(options: &Options) -> [ColumnFamilyDescriptor; 2] {
    [META_CF, LOG_CF].map(|name| ColumnFamilyDescriptor::new(name, options.clone()))
}

fn draw_instance() -> Result<InstanceId, Error> {
    InstanceId::random().map_err(|err| Error::NoRandomness(err.to_string()))
}

/// The directory's instance id. A directory initialized before instance ids
/// existed gets one now, synced before it is used: it has run under no other.
fn load_or_draw_instance(db: &DB) -> Result<InstanceId, Error> {
    let meta_cf = cf(db, META_CF)?;
    if db
        .get_pinned_cf(meta_cf, K_INSTANCE)
        .map_err(rocks("read metadata"))?
        .is_some()
    {
        return get_meta(db, K_INSTANCE);
    }
    let instance = draw_instance()?;
    let mut batch = WriteBatch::default();
    batch.put_cf(meta_cf, K_INSTANCE, encode_record(K_INSTANCE, &instance)?);
    db.write_opt(batch, &sync_writes())
        .map_err(rocks("record the instance id"))?;
    Ok(instance)
}

/// Builds a fresh database in `db.init` and renames it to `db` once every
/// record is durable, so a crash here leaves nothing that looks initialized.
fn initialize<T>(
    dir: &Path,
    identity: &StorageIdentity,
    options: &RocksdbOptions,
) -> Result<(), Error>
where
    T: Entry,
{
    dir::remove_stale_init(dir)?;
    let init = dir.join(INIT_DIR);
    {
        let mut db_options = options.db_options();
        db_options.create_if_missing(true);
        db_options.create_missing_column_families(true);
        let db = DB::open_cf_descriptors(&db_options, &init, column_families(&db_options))
            .map_err(rocks("create"))?;
        let meta_cf = cf(&db, META_CF)?;
        let mut batch = WriteBatch::default();
        let meta = Meta::default();
        batch.put_cf(meta_cf, K_IDENTITY, encode_record(K_IDENTITY, identity)?);
        batch.put_cf(
            meta_cf,
            K_INSTANCE,
            encode_record(K_INSTANCE, &draw_instance()?)?,
        );
        batch.put_cf(meta_cf, K_PROMISE, encode_record(K_PROMISE, &meta.promise)?);
        batch.put_cf(
            meta_cf,
            K_ACCEPTED_ROUND,
            encode_record(K_ACCEPTED_ROUND, &meta.accepted_round)?,
        );
        batch.put_cf(meta_cf, K_DECIDED_IDX, encode_record(K_DECIDED_IDX, &0u64)?);
        batch.put_cf(
            meta_cf,
            K_COMPACTED_IDX,
            encode_record(K_COMPACTED_IDX, &0u64)?,
        );
        batch.put_cf(
            meta_cf,
            K_STOPSIGN,
            encode_record(K_STOPSIGN, &meta.stopsign)?,
        );
        let no_snapshot: Option<T::Snapshot> = None;
        batch.put_cf(
            meta_cf,
            K_SNAPSHOT,
            encode_record(K_SNAPSHOT, &no_snapshot)?,
        );
        batch.put_cf(
            meta_cf,
            K_LOG_RANGE,
            encode_record(K_LOG_RANGE, &log_range(&meta))?,
        );
        db.write_opt(batch, &sync_writes())
            .map_err(rocks("initialize"))?;
    }
    dir::sync_dir(&init)?;
    let db = dir.join(DB_DIR);
    std::fs::rename(&init, &db).map_err(dir::io_error(&db))?;
    dir::sync_dir(dir)
}

/// Decodes every metadata record (the snapshot too, to refuse a corrupt
/// one at open) and checks the invariants writes keep.
fn load_meta<T>(db: &DB) -> Result<Meta, Error>
where
    T: Entry,
{
    let range: LogRange = get_meta(db, K_LOG_RANGE)?;
    let meta = Meta {
        promise: get_meta(db, K_PROMISE)?,
        accepted_round: get_meta(db, K_ACCEPTED_ROUND)?,
        decided_idx: to_usize("meta/decided_idx", get_meta(db, K_DECIDED_IDX)?)?,
        compacted_idx: to_usize("meta/compacted_idx", get_meta(db, K_COMPACTED_IDX)?)?,
        stopsign: get_meta(db, K_STOPSIGN)?,
        first: to_usize("meta/log_range", range.first)?,
        end: to_usize("meta/log_range", range.end)?,
    };
    let _snapshot: Option<T::Snapshot> = get_meta(db, K_SNAPSHOT)?;
    meta.check()
        .map_err(|(what, reason)| Error::corrupt(format!("meta/{what}"), reason))?;
    Ok(meta)
}

impl<T> Storage<T> for RocksdbStorage<T>
where
    T: Entry + Serialize + DeserializeOwned,
{
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
        match self.meta.entries_range(from, to) {
            Some((from, to)) => Ok(self.read_range(from, to)?),
            None => Ok(Vec::new()),
        }
    }

    fn get_log_len(&self) -> StorageResult<usize> {
        Ok(self.meta.log_len())
    }

    fn get_suffix(&self, from: usize) -> StorageResult<Vec<T>> {
        match self.meta.suffix_range(from) {
            Some((from, to)) => Ok(self.read_range(from, to)?),
            None => Ok(Vec::new()),
        }
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
        // Read and decoded on every call rather than kept: a snapshot is
        // the size of the state, and the applier holds the state already.
        Ok(get_meta(&self.db, K_SNAPSHOT)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Pins the bytes of the metadata records whose layout comes from types
    // we do not own (omnipaxos' Ballot) or that the format table documents.

    #[test]
    fn golden_promise_record() {
        let fixture = include_bytes!("../../testdata/record-promise-some-ballot.bin");
        let promise = Some(Ballot::with(1, 2, 0, 3));
        assert_eq!(encode_record(K_PROMISE, &promise).unwrap(), fixture);
        assert_eq!(
            decode_record::<Option<Ballot>>(K_PROMISE, fixture).unwrap(),
            promise
        );
    }

    #[test]
    fn golden_log_range_record() {
        let fixture = include_bytes!("../../testdata/record-log-range.bin");
        let range = LogRange { first: 3, end: 128 };
        assert_eq!(encode_record(K_LOG_RANGE, &range).unwrap(), fixture);
        let back: LogRange = decode_record(K_LOG_RANGE, fixture).unwrap();
        assert_eq!((back.first, back.end), (3, 128));
    }

    #[derive(Clone, Debug, Serialize, Deserialize)]
    struct E(u64);

    impl Entry for E {
        type Snapshot = omnipaxos::storage::NoSnapshot;
    }

    /// kill -9 cannot tell a synced write from one left in the page cache,
    /// so this counts WAL syncs instead: every write, single-op or atomic,
    /// must sync the WAL before it returns.
    #[test]
    fn every_write_syncs_the_wal() {
        use ::rocksdb::statistics::Ticker;
        let tmp = tempfile::tempdir().unwrap();
        let options = RocksdbOptions::default();
        let mut db_options = options.db_options();
        db_options.enable_statistics();
        let mut s = RocksdbStorage::<E>::open_with(
            tmp.path(),
            StorageIdentity::new("c", 1),
            &options,
            db_options.clone(),
            Create::IfFresh,
        )
        .unwrap();
        let synced = || db_options.get_ticker_count(Ticker::WalFileSynced);
        let before = synced();
        s.append_entry(E(1)).unwrap();
        s.set_promise(Ballot::with(1, 1, 0, 1)).unwrap();
        s.set_decided_idx(1).unwrap();
        s.write_atomically(vec![StorageOp::AppendEntry(E(2)), StorageOp::Trim(1)])
            .unwrap();
        assert_eq!(synced() - before, 4, "one WAL sync per write");
    }

    /// Group commit: writes inside a round do not sync; the round's commit
    /// syncs once; writes outside a round still sync each.
    #[test]
    fn a_round_syncs_the_wal_once() {
        use ::rocksdb::statistics::Ticker;
        let tmp = tempfile::tempdir().unwrap();
        let options = RocksdbOptions::default();
        let mut db_options = options.db_options();
        db_options.enable_statistics();
        let mut s = RocksdbStorage::<E>::open_with(
            tmp.path(),
            StorageIdentity::new("c", 1),
            &options,
            db_options.clone(),
            Create::IfFresh,
        )
        .unwrap();
        let synced = || db_options.get_ticker_count(Ticker::WalFileSynced);
        let round = s.group_commit();
        let before = synced();
        round.begin_round();
        s.append_entry(E(1)).unwrap();
        s.set_promise(Ballot::with(1, 1, 0, 1)).unwrap();
        s.set_decided_idx(1).unwrap();
        assert_eq!(
            synced() - before,
            0,
            "writes inside a round defer their sync"
        );
        round.commit_round().unwrap();
        assert_eq!(synced() - before, 1, "the round's commit syncs once");
        round.begin_round();
        round.commit_round().unwrap();
        assert_eq!(synced() - before, 1, "an idle round does not sync");
        s.append_entry(E(2)).unwrap();
        assert_eq!(synced() - before, 2, "a write outside a round syncs itself");
        assert_eq!(s.get_entries(0, 2).unwrap().len(), 2);
    }

    #[derive(Clone, Debug, Serialize, Deserialize)]
    struct Blob(Vec<u8>);

    impl Entry for Blob {
        type Snapshot = omnipaxos::storage::NoSnapshot;
    }

    /// What a crash leaves for RocksDB to replay on open is the WAL of the
    /// unflushed memtables. The meta column family is written every round
    /// but never fills a memtable; unless all column families flush
    /// together it pins every WAL file up to `max_total_wal_size`, and a
    /// restart replays all of it.
    #[test]
    fn the_wal_left_to_replay_stays_near_one_memtable() {
        let tmp = tempfile::tempdir().unwrap();
        let options = RocksdbOptions::default();
        let mut s =
            RocksdbStorage::<Blob>::open(tmp.path(), StorageIdentity::new("c", 1), options.clone())
                .unwrap();
        let round = s.group_commit();
        // Runner-like rounds: a batch of entries and the decided index, one
        // sync each; in all, three quarters of the WAL cap, so that only
        // memtable flushes can release WAL files.
        let per_round = 64usize;
        let payload = vec![7u8; 1024];
        let rounds = (options.max_total_wal_size as usize * 3 / 4) / (per_round * payload.len());
        for round_no in 1..=rounds {
            round.begin_round();
            s.append_entries((0..per_round).map(|_| Blob(payload.clone())).collect())
                .unwrap();
            s.set_decided_idx(round_no * per_round).unwrap();
            round.commit_round().unwrap();
        }
        let db_dir = tmp.path().join(DB_DIR);
        let wal_bytes = || -> u64 {
            std::fs::read_dir(&db_dir)
                .unwrap()
                .map(|e| e.unwrap())
                .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
                .map(|e| e.metadata().unwrap().len())
                .sum()
        };
        let bound = 2 * options.write_buffer_size as u64;
        // Flushes run in the background: wait for them, bounded.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while wal_bytes() > bound && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(
            wal_bytes() <= bound,
            "{} WAL bytes left to replay after writing {} MiB (bound {bound})",
            wal_bytes(),
            (rounds * per_round * payload.len()) >> 20
        );
        assert_eq!(s.get_log_len().unwrap(), rounds * per_round);
    }

    #[test]
    fn log_keys_sort_by_index() {
        assert_eq!(log_key(1), [0, 0, 0, 0, 0, 0, 0, 1]);
        assert!(log_key(255) < log_key(256));
        assert_eq!(decode_log_key(&log_key(12345)).unwrap(), 12345);
        assert!(decode_log_key(&[1, 2, 3]).is_err());
    }
}
