//! The storage directory: its layout, the inspection done before anything is
//! written to it, and the lock that keeps a second opener out.
//!
//! Layout of a storage directory:
//!
//! ```text
//! <dir>/tsoracle-paxos.lock   empty; locked (flock) while a storage is open
//! <dir>/db/                   the RocksDB database (column families meta, log)
//! <dir>/db.init/              only while a fresh database is being built
//! ```
//!
//! A fresh database is built in `db.init` (identity and every metadata record
//! written and synced) and renamed to `db` only when complete, so a crash
//! during initialization leaves a directory that the next open simply
//! initializes again, never a half-made database that looks like ours.

use std::{
    fs::{self, File, OpenOptions, TryLockError},
    io,
    path::{Path, PathBuf},
};

use crate::Error;

pub(crate) const LOCK_FILE: &str = "tsoracle-paxos.lock";
pub(crate) const DB_DIR: &str = "db";
pub(crate) const INIT_DIR: &str = "db.init";

/// Entries that may sit in a directory we have not initialized yet.
/// `lost+found` is there when the directory is the root of a dedicated volume.
const ALLOWED_IN_FRESH_DIR: &[&str] = &[LOCK_FILE, INIT_DIR, "lost+found"];

/// What [`inspect`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Inspection {
    /// Missing, empty, or left by an interrupted initialization.
    Fresh,
    /// Holds `db/`; its identity still has to be checked.
    Existing,
}

pub(crate) fn io_error(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Classifies `dir` without modifying it.
pub(crate) fn inspect(dir: &Path) -> Result<Inspection, Error> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(not_ours(dir, "it is not a directory")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Inspection::Fresh),
        Err(e) => return Err(io_error(dir)(e)),
    }
    let db = dir.join(DB_DIR);
    match fs::metadata(&db) {
        Ok(m) if m.is_dir() => return Ok(Inspection::Existing),
        Ok(_) => return Err(not_ours(dir, "its `db` entry is not a directory")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(&db)(e)),
    }
    // No database yet: refuse anything we did not put there, so a mistyped
    // path (a home directory, another program's RocksDB) is never adopted.
    let mut foreign = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let name = entry.map_err(io_error(dir))?.file_name();
        if !ALLOWED_IN_FRESH_DIR.iter().any(|a| name == *a) {
            foreign.push(name.to_string_lossy().into_owned());
        }
    }
    if foreign.is_empty() {
        return Ok(Inspection::Fresh);
    }
    foreign.sort();
    let reason = if foreign.iter().any(|n| n == "CURRENT") {
        "it holds a RocksDB database that tsoracle-paxos did not create".to_owned()
    } else {
        format!(
            "it is not empty (found {}) and holds no tsoracle-paxos database; use a new or \
             empty directory",
            foreign.join(", ")
        )
    };
    Err(not_ours(dir, reason))
}

fn not_ours(dir: &Path, reason: impl Into<String>) -> Error {
    Error::NotStorageDirectory {
        path: dir.to_path_buf(),
        reason: reason.into(),
    }
}

/// An exclusive lock on a storage directory, released when dropped (and by
/// the kernel when the process dies, so a `kill -9` leaves no stale lock).
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

/// Takes the lock of `dir`, which must exist.
pub(crate) fn lock(dir: &Path) -> Result<DirLock, Error> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_error(&path))?;
    // flock-style: a second open file description is refused even within
    // this process, so two storages on one directory fail the same way as
    // two processes.
    match file.try_lock() {
        Ok(()) => Ok(DirLock { _file: file }),
        Err(TryLockError::WouldBlock) => Err(Error::Locked {
            path: dir.to_path_buf(),
        }),
        Err(TryLockError::Error(source)) => Err(Error::Io { path, source }),
    }
}

/// Makes the entries of `dir` (creations, renames) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

/// Creates `dir` (and its parents) and makes its entry durable.
pub(crate) fn create_dir(dir: &Path) -> Result<(), Error> {
    if fs::metadata(dir).is_ok() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Removes what an interrupted initialization left behind.
pub(crate) fn remove_stale_init(dir: &Path) -> Result<(), Error> {
    let init = dir.join(INIT_DIR);
    match fs::remove_dir_all(&init) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(&init)(e)),
    }
}

/// `dir/db` exists.
pub(crate) fn has_db(dir: &Path) -> Result<bool, Error> {
    let db: PathBuf = dir.join(DB_DIR);
    db.try_exists().map_err(io_error(&db))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspect_classifies_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("node");
        assert_eq!(inspect(&dir).unwrap(), Inspection::Fresh);
        fs::create_dir(&dir).unwrap();
        assert_eq!(inspect(&dir).unwrap(), Inspection::Fresh);
        fs::write(dir.join(LOCK_FILE), b"").unwrap();
        fs::create_dir(dir.join(INIT_DIR)).unwrap();
        assert_eq!(inspect(&dir).unwrap(), Inspection::Fresh);
        fs::write(dir.join("CURRENT"), b"MANIFEST-000001\n").unwrap();
        let err = inspect(&dir).unwrap_err();
        assert!(err.to_string().contains("RocksDB"), "{err}");
        fs::remove_file(dir.join("CURRENT")).unwrap();
        fs::write(dir.join("notes.txt"), b"x").unwrap();
        let err = inspect(&dir).unwrap_err();
        assert!(
            matches!(&err, Error::NotStorageDirectory { reason, .. } if reason.contains("notes.txt")),
            "{err}"
        );
        fs::create_dir(dir.join(DB_DIR)).unwrap();
        assert_eq!(inspect(&dir).unwrap(), Inspection::Existing);
        let file = tmp.path().join("file");
        fs::write(&file, b"x").unwrap();
        assert!(matches!(
            inspect(&file),
            Err(Error::NotStorageDirectory { .. })
        ));
    }

    #[test]
    fn lock_is_exclusive_within_one_process_and_released_on_drop() {
        let tmp = tempfile::tempdir().unwrap();
        let first = lock(tmp.path()).unwrap();
        assert!(matches!(lock(tmp.path()), Err(Error::Locked { .. })));
        drop(first);
        lock(tmp.path()).unwrap();
    }
}
