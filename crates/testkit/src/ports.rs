//! Loopback ports that stay free until a node process binds them.
//!
//! A port found by binding port 0 and closing the socket can be taken
//! before the node binds it: by another test's bind to port 0, or as the
//! source port of any outgoing connection, since both draw from the
//! kernel's ephemeral range. A node that then fails to start, in a test
//! that reaches the other two, fails much later and far from the cause
//! (CI saw it as "serve exited with exit status: 1 after SIGTERM").
//!
//! The ports handed out here lie outside the ephemeral range, so no
//! outgoing connection takes them, and each is held by a file lock in a
//! shared directory for the life of this process, so no other process
//! using this module hands it out while this one runs. The kernel drops
//! the locks when the process ends, SIGKILL included.

use std::fs::{File, OpenOptions, TryLockError};
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::sync::Mutex;

/// The locks of the ports this process holds (released at exit).
static HELD: Mutex<Vec<File>> = Mutex::new(Vec::new());

/// The lowest port handed out: clear of the well-known and most registered
/// service ports.
const LOWEST: u16 = 10_000;

/// A 127.0.0.1 port that is free now, outside the ephemeral range, and
/// handed to no other caller of this function on this machine while this
/// process runs. Falls back to a port the kernel picks when no range
/// outside the ephemeral one is usable.
pub(crate) fn reserve() -> io::Result<u16> {
    let Some((low, high)) = outside_ephemeral() else {
        return kernel_pick();
    };
    let dir = std::env::temp_dir().join("tsoracle-paxos-test-ports");
    std::fs::create_dir_all(&dir)?;
    let span = u32::from(high - low) + 1;
    // A random start: concurrent test processes rarely probe the same port.
    let start = RandomState::new().hash_one(std::process::id()) % u64::from(span);
    for step in 0..span {
        let offset = (start + u64::from(step)) % u64::from(span);
        let Ok(port) = u16::try_from(u64::from(low) + offset) else {
            continue;
        };
        let Some(lock) = try_lock(lock_path(&dir, port))? else {
            continue;
        };
        // Another program may listen there; then leave the port alone.
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_err() {
            continue;
        }
        HELD.lock()
            .map_err(|_| io::Error::other("the port lock list is poisoned"))?
            .push(lock);
        return Ok(port);
    }
    kernel_pick()
}

fn lock_path(dir: &std::path::Path, port: u16) -> PathBuf {
    dir.join(format!("{port}.lock"))
}

/// The lock on `path`, or `None` when another holder has it (this
/// process included: a lock belongs to one open file).
fn try_lock(path: PathBuf) -> io::Result<Option<File>> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(err)) => Err(err),
    }
}

/// The ports below the kernel's ephemeral range (Linux), if there are
/// enough of them.
fn outside_ephemeral() -> Option<(u16, u16)> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let low: u16 = range.split_whitespace().next()?.parse().ok()?;
    let high = low.checked_sub(1)?;
    (high >= LOWEST.checked_add(1_000)?).then_some((LOWEST, high))
}

/// A port the kernel picks (bound, then released): racy, the fallback only.
fn kernel_pick() -> io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_ports_are_distinct_free_and_outside_the_ephemeral_range() {
        let ports: Vec<u16> = (0..20).map(|_| reserve().unwrap()).collect();
        let mut distinct = ports.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), ports.len(), "{ports:?}");
        for port in &ports {
            TcpListener::bind((Ipv4Addr::LOCALHOST, *port)).unwrap();
        }
        if let Some((low, high)) = outside_ephemeral() {
            assert!(ports.iter().all(|p| (low..=high).contains(p)), "{ports:?}");
        }
    }

    #[test]
    fn a_port_locked_by_another_holder_is_not_handed_out() {
        let port = reserve().unwrap();
        let dir = std::env::temp_dir().join("tsoracle-paxos-test-ports");
        // This process holds the lock: a second open of the file cannot take it.
        assert!(try_lock(lock_path(&dir, port)).unwrap().is_none());
    }
}
