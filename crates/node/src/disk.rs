//! The data directory's free space. A node whose filesystem is full cannot
//! persist a window or a dense block, so it stops serving and exits while
//! the disk is still short of space, instead of when a write finally fails:
//! RocksDB first writes into space it preallocated (the WAL, the memtable),
//! and a node on a full disk kept answering for about 30 s before its first
//! failed write under a 32-client load.

use std::path::Path;

/// One reading of the filesystem against the configured floor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Space {
    /// At least the floor is free.
    Enough,
    /// Less than the floor is free: stop.
    Low {
        /// Bytes an unprivileged writer could still use.
        available: u64,
    },
}

/// The decision for one reading (pure, so tests drive it directly).
pub(crate) fn verdict(available: u64, min_free: u64) -> Space {
    if available < min_free {
        Space::Low { available }
    } else {
        Space::Enough
    }
}

/// Bytes available on the filesystem holding `dir` (or, before it exists,
/// its nearest existing ancestor), counted as an unprivileged writer sees
/// them (`f_bavail`): conservative on filesystems that keep blocks for root.
pub(crate) fn available_bytes(dir: &Path) -> std::io::Result<u64> {
    let existing = dir
        .ancestors()
        .find(|candidate| candidate.exists())
        .unwrap_or(dir);
    let stat = rustix::fs::statvfs(existing)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// The error a node stops with when `dir`'s filesystem is below `min_free`
/// (or cannot be read); `None` while there is room or the check is off.
pub(crate) fn shortage(dir: &Path, min_free: u64) -> Option<String> {
    if min_free == 0 {
        return None;
    }
    match available_bytes(dir) {
        Err(err) => Some(format!(
            "cannot read the free space of {}: {err}",
            dir.display()
        )),
        Ok(available) => match verdict(available, min_free) {
            Space::Enough => None,
            Space::Low { available } => Some(format!(
                "the filesystem of {} has {} MiB free, below min_free_disk_mib = {} \
                 (--min-free-disk-mib): free space, then restart the node",
                dir.display(),
                available / MIB,
                min_free / MIB
            )),
        },
    }
}

/// Bytes in a MiB, the unit of `min_free_disk_mib`.
pub(crate) const MIB: u64 = 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_the_floor_is_low_and_at_it_is_enough() {
        assert_eq!(verdict(0, 1), Space::Low { available: 0 });
        assert_eq!(verdict(MIB - 1, MIB), Space::Low { available: MIB - 1 });
        assert_eq!(verdict(MIB, MIB), Space::Enough);
        assert_eq!(verdict(0, 0), Space::Enough);
    }

    #[test]
    fn a_real_directory_reports_its_space_and_an_impossible_floor_is_short() {
        let dir = tempfile::tempdir().unwrap();
        assert!(available_bytes(dir.path()).unwrap() > 0);
        // A directory not created yet is measured on its parent.
        assert!(available_bytes(&dir.path().join("not/yet")).unwrap() > 0);
        assert_eq!(shortage(dir.path(), 0), None);
        assert_eq!(shortage(dir.path(), 1), None);
        let short = shortage(dir.path(), u64::MAX).unwrap();
        assert!(short.contains("below min_free_disk_mib"), "{short}");
    }
}
