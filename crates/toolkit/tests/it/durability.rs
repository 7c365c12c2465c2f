//! RocksDB-only cases: directory identity and lock, corruption detection,
//! interrupted initialization.

use std::fs;

use omnipaxos::storage::{Storage, StorageOp};
use tsoracle_paxos_toolkit::{
    Error,
    storage::{RocksdbOptions, RocksdbStorage, StorageIdentity},
};

use crate::common::{
    TestEntry, ballot, entries, flip_bit, identity, log_key, open_rocks, raw_db, storage_error,
    tree,
};

fn populated(dir: &std::path::Path) {
    let mut s = open_rocks(dir).unwrap();
    s.append_entries(entries(0..10)).unwrap();
    s.write_atomically(vec![
        StorageOp::SetPromise(ballot(2)),
        StorageOp::SetDecidedIndex(8),
        StorageOp::Trim(2),
        StorageOp::SetCompactedIdx(2),
    ])
    .unwrap();
}

#[test]
fn storage_is_send() {
    fn assert_send<S: Send>() {}
    assert_send::<RocksdbStorage<TestEntry>>();
}

#[test]
fn foreign_identity_is_refused_and_directory_left_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    populated(&dir);
    let before = tree(&dir);
    for wrong in [
        StorageIdentity::new("test-cluster", 2),
        StorageIdentity::new("other-cluster", 1),
    ] {
        let err = RocksdbStorage::<TestEntry>::open(&dir, wrong.clone(), RocksdbOptions::default())
            .unwrap_err();
        match &err {
            Error::ForeignDirectory {
                expected, found, ..
            } => {
                assert_eq!(expected, &wrong);
                assert_eq!(found, &identity());
            }
            other => panic!("expected ForeignDirectory, got {other}"),
        }
        assert!(err.to_string().contains("refusing"), "{err}");
    }
    assert_eq!(tree(&dir), before, "a refused open modified the directory");
    let s = open_rocks(&dir).unwrap();
    assert_eq!(s.get_log_len().unwrap(), 8);
}

/// A node that must find its storage (it is not bootstrapping) refuses a
/// missing, an empty, and a half-initialized directory without writing to
/// it, and opens a populated one.
#[test]
fn open_existing_refuses_a_directory_without_storage_and_leaves_it_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing");
    let empty = tmp.path().join("empty");
    fs::create_dir_all(&empty).unwrap();
    let half = tmp.path().join("half");
    fs::create_dir_all(half.join("db.init")).unwrap();
    fs::write(half.join("db.init").join("MANIFEST-000001"), b"half").unwrap();
    for dir in [&missing, &empty, &half] {
        let before = dir.exists().then(|| tree(dir));
        let err =
            RocksdbStorage::<TestEntry>::open_existing(dir, identity(), RocksdbOptions::default())
                .unwrap_err();
        assert!(
            matches!(&err, Error::NotInitialized { path } if path == dir),
            "{}: {err}",
            dir.display()
        );
        assert!(err.to_string().contains("holds no storage"), "{err}");
        let after = dir.exists().then(|| tree(dir));
        assert_eq!(after, before, "{}: a refused open wrote", dir.display());
    }
    assert!(!missing.exists());

    let dir = tmp.path().join("node");
    populated(&dir);
    let s = RocksdbStorage::<TestEntry>::open_existing(&dir, identity(), RocksdbOptions::default())
        .unwrap();
    assert_eq!(s.get_log_len().unwrap(), 8);
}

/// The instance id is drawn once, when the directory is initialized: it
/// survives reopening, and a wiped and reinitialized directory gets another.
#[test]
fn the_instance_id_is_kept_across_opens_and_a_new_directory_draws_another() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    let first = open_rocks(&dir).unwrap().instance();
    assert_eq!(open_rocks(&dir).unwrap().instance(), first);
    let existing =
        RocksdbStorage::<TestEntry>::open_existing(&dir, identity(), RocksdbOptions::default())
            .unwrap();
    assert_eq!(existing.instance(), first);
    drop(existing);
    fs::remove_dir_all(&dir).unwrap();
    assert_ne!(open_rocks(&dir).unwrap().instance(), first);
}

/// A directory initialized before instance ids existed (no `instance`
/// record) is given one at its next open, kept from then on.
#[test]
fn a_directory_without_an_instance_record_is_given_one_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    populated(&dir);
    {
        let db = raw_db(&dir);
        let meta = db.cf_handle("meta").unwrap();
        db.delete_cf(meta, "instance").unwrap();
    }
    let given = open_rocks(&dir).unwrap().instance();
    assert_eq!(open_rocks(&dir).unwrap().instance(), given);
    assert_eq!(open_rocks(&dir).unwrap().get_log_len().unwrap(), 8);
}

#[test]
fn second_open_is_locked_until_the_first_is_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    let first = open_rocks(&dir).unwrap();
    let err = open_rocks(&dir).unwrap_err();
    assert!(
        matches!(&err, Error::Locked { path } if path == &dir),
        "{err}"
    );
    assert!(err.to_string().contains("in use"), "{err}");
    drop(first);
    open_rocks(&dir).unwrap();
}

#[test]
fn directories_that_are_not_ours_are_refused_untouched() {
    let tmp = tempfile::tempdir().unwrap();

    // A non-empty directory without a database.
    let notes = tmp.path().join("notes");
    fs::create_dir(&notes).unwrap();
    fs::write(notes.join("todo.txt"), b"x").unwrap();
    let before = tree(&notes);
    let err = open_rocks(&notes).unwrap_err();
    assert!(matches!(err, Error::NotStorageDirectory { .. }), "{err}");
    assert_eq!(tree(&notes), before);

    // A `db` entry that is not a database.
    let empty_db = tmp.path().join("empty-db");
    fs::create_dir_all(empty_db.join("db")).unwrap();
    let before = tree(&empty_db);
    let err = open_rocks(&empty_db).unwrap_err();
    assert!(matches!(err, Error::NotStorageDirectory { .. }), "{err}");
    assert_eq!(tree(&empty_db), before);

    // Another program's RocksDB, pointed at directly.
    let foreign = tmp.path().join("foreign");
    {
        let mut o = rocksdb::Options::default();
        o.create_if_missing(true);
        let db = rocksdb::DB::open(&o, &foreign).unwrap();
        db.put(b"k", b"v").unwrap();
    }
    let before = tree(&foreign);
    let err = open_rocks(&foreign).unwrap_err();
    assert!(
        matches!(&err, Error::NotStorageDirectory { reason, .. } if reason.contains("RocksDB")),
        "{err}"
    );
    assert_eq!(tree(&foreign), before);

    // A `db` that is a RocksDB without our column families.
    let no_cfs = tmp.path().join("no-cfs");
    {
        let mut o = rocksdb::Options::default();
        o.create_if_missing(true);
        rocksdb::DB::open(&o, no_cfs.join("db")).unwrap();
    }
    let before = tree(&no_cfs);
    let err = open_rocks(&no_cfs).unwrap_err();
    assert!(matches!(err, Error::NotStorageDirectory { .. }), "{err}");
    assert_eq!(tree(&no_cfs), before);

    // Our column families but no identity record.
    let no_identity = tmp.path().join("no-identity");
    {
        let mut o = rocksdb::Options::default();
        o.create_if_missing(true);
        o.create_missing_column_families(true);
        rocksdb::DB::open_cf(&o, no_identity.join("db"), ["meta", "log"]).unwrap();
    }
    let before = tree(&no_identity);
    let err = open_rocks(&no_identity).unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { what, .. } if what == "meta/identity"),
        "{err}"
    );
    assert_eq!(tree(&no_identity), before);
}

#[test]
fn interrupted_initialization_is_redone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    fs::create_dir_all(dir.join("db.init")).unwrap();
    fs::write(dir.join("db.init").join("MANIFEST-000001"), b"half").unwrap();
    fs::write(dir.join("tsoracle-paxos.lock"), b"").unwrap();
    let mut s = open_rocks(&dir).unwrap();
    s.append_entry(TestEntry(1)).unwrap();
    drop(s);
    assert!(!dir.join("db.init").exists());
    assert_eq!(open_rocks(&dir).unwrap().get_log_len().unwrap(), 1);
}

#[test]
fn corrupt_metadata_record_is_refused_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    populated(&dir);
    flip_bit(&raw_db(&dir), "meta", b"promise");
    let err = open_rocks(&dir).unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { what, reason } if what == "meta/promise" && reason.contains("checksum")),
        "{err}"
    );
}

#[test]
fn missing_metadata_record_is_refused_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    populated(&dir);
    {
        let db = raw_db(&dir);
        db.delete_cf(db.cf_handle("meta").unwrap(), b"decided_idx")
            .unwrap();
    }
    let err = open_rocks(&dir).unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { what, reason } if what == "meta/decided_idx" && reason == "missing"),
        "{err}"
    );
}

#[test]
fn newer_record_version_is_refused_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    populated(&dir);
    {
        let db = raw_db(&dir);
        // A well-formed record of a future format version 2.
        let mut v2 = vec![2u8, 0];
        v2.extend_from_slice(&crc32fast::hash(&v2).to_le_bytes());
        db.put_cf(db.cf_handle("meta").unwrap(), b"stopsign", v2)
            .unwrap();
    }
    let err = open_rocks(&dir).unwrap_err();
    assert!(
        matches!(&err, Error::UnsupportedFormat { what, found: 2, supported: 1 } if what == "meta/stopsign"),
        "{err}"
    );
}

#[test]
fn inconsistent_log_range_is_refused_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    populated(&dir);
    {
        // A well-formed log_range that claims entries which do not exist.
        let db = raw_db(&dir);
        let mut rec = vec![1u8, 2, 12];
        rec.extend_from_slice(&crc32fast::hash(&rec).to_le_bytes());
        db.put_cf(db.cf_handle("meta").unwrap(), b"log_range", rec)
            .unwrap();
    }
    let err = open_rocks(&dir).unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { what, .. } if what == "log entry 11"),
        "{err}"
    );
}

#[test]
fn corrupt_log_entry_is_reported_on_read_and_by_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    populated(&dir);
    assert_eq!(open_rocks(&dir).unwrap().verify_log().unwrap(), 8);
    flip_bit(&raw_db(&dir), "log", &log_key(5));
    // The open-time check reads only the first and last entries.
    let s = open_rocks(&dir).unwrap();
    assert_eq!(s.get_entries(2, 5).unwrap().len(), 3);
    let err = s.get_entries(2, 10).unwrap_err();
    assert!(
        matches!(storage_error(&*err), Error::Corrupt { what, .. } if what == "log entry 5"),
        "{err}"
    );
    let err = s.get_suffix(4).unwrap_err();
    assert!(
        matches!(storage_error(&*err), Error::Corrupt { .. }),
        "{err}"
    );
    let err = s.verify_log().unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { what, reason } if what == "log entry 5" && reason.contains("checksum")),
        "{err}"
    );
}

#[test]
fn corrupt_first_or_last_log_entry_is_refused_at_open() {
    for idx in [2u64, 9] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("node");
        populated(&dir);
        flip_bit(&raw_db(&dir), "log", &log_key(idx));
        let err = open_rocks(&dir).unwrap_err();
        assert!(
            matches!(&err, Error::Corrupt { what, .. } if *what == format!("log entry {idx}")),
            "{err}"
        );
    }
}

#[test]
fn missing_and_stray_log_entries_are_detected() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    populated(&dir);
    {
        let db = raw_db(&dir);
        db.delete_cf(db.cf_handle("log").unwrap(), log_key(6))
            .unwrap();
    }
    let s = open_rocks(&dir).unwrap();
    let err = s.get_entries(2, 10).unwrap_err();
    assert!(
        matches!(storage_error(&*err), Error::Corrupt { what, reason } if what == "log entry 6" && reason.contains("missing")),
        "{err}"
    );
    assert!(matches!(s.verify_log(), Err(Error::Corrupt { .. })));
    drop(s);

    // An entry outside the stored range (below first, above end).
    for stray in [0u64, 10] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("node");
        populated(&dir);
        {
            let db = raw_db(&dir);
            let cf = db.cf_handle("log").unwrap();
            let value = db.get_cf(cf, log_key(5)).unwrap().unwrap();
            db.put_cf(cf, log_key(stray), value).unwrap();
        }
        let err = open_rocks(&dir).unwrap_err();
        assert!(
            matches!(&err, Error::Corrupt { reason, .. } if reason.contains("outside the log range")),
            "{err}"
        );
    }
}

#[test]
fn log_records_pin_the_on_disk_format() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    {
        let mut s = open_rocks(&dir).unwrap();
        s.append_entries(entries([42, 300])).unwrap();
        s.trim(1).unwrap();
    }
    let db = raw_db(&dir);
    let log = db.cf_handle("log").unwrap();
    // Entry 1 = TestEntry(300): version 1, postcard varint 300, crc32 LE.
    assert_eq!(
        db.get_cf(log, log_key(1)).unwrap().unwrap(),
        include_bytes!("../../testdata/record-u64-300.bin")
    );
    // Entry 0 was trimmed by a range delete.
    assert_eq!(db.get_cf(log, log_key(0)).unwrap(), None);
    let meta = db.cf_handle("meta").unwrap();
    let range = db.get_cf(meta, b"log_range").unwrap().unwrap();
    assert_eq!(&range[..3], &[1, 1, 2], "version 1, first 1, end 2");
}
