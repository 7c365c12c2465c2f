//! When to compact the log with a snapshot.

use std::fmt;
use std::num::NonZeroU64;
use std::sync::Arc;

/// Default number of decided entries between two snapshots.
pub const DEFAULT_SNAPSHOT_INTERVAL: NonZeroU64 = match NonZeroU64::new(4096) {
    Some(n) => n,
    None => NonZeroU64::MIN,
};

/// What a [`SnapshotPolicy::Callback`] is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotContext {
    /// The current decided index.
    pub decided_idx: usize,
    /// The decided index at the last snapshot (or at start-up).
    pub last_snapshot_idx: usize,
    /// Entries decided since then (`decided_idx - last_snapshot_idx`).
    pub decided_since: usize,
}

/// When to take a snapshot.
#[derive(Clone)]
pub enum SnapshotPolicy {
    /// Never snapshot (the log grows without bound).
    Disabled,
    /// Snapshot once this many entries were decided since the last one.
    EveryDecided(NonZeroU64),
    /// Ask the host; called only when something was decided since the last snapshot.
    Callback(Arc<dyn Fn(SnapshotContext) -> bool + Send + Sync>),
}

impl Default for SnapshotPolicy {
    fn default() -> Self {
        Self::EveryDecided(DEFAULT_SNAPSHOT_INTERVAL)
    }
}

impl fmt::Debug for SnapshotPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Disabled => f.write_str("Disabled"),
            Self::EveryDecided(n) => f.debug_tuple("EveryDecided").field(n).finish(),
            Self::Callback(_) => f.write_str("Callback(..)"),
        }
    }
}

/// Tracks the decided index of the last snapshot and applies a [`SnapshotPolicy`].
///
/// Create it with the decided index recovered at start-up: counting from 0
/// would make a restarted node snapshot at once.
#[derive(Clone, Debug)]
pub struct SnapshotTracker {
    policy: SnapshotPolicy,
    last_snapshot_idx: usize,
}

impl SnapshotTracker {
    /// A tracker that counts from `recovered_decided_idx`.
    #[must_use]
    pub fn new(policy: SnapshotPolicy, recovered_decided_idx: usize) -> Self {
        Self {
            policy,
            last_snapshot_idx: recovered_decided_idx,
        }
    }

    /// Counts from `decided_idx` again (e.g. a new configuration whose log starts at 0).
    pub fn rebase(&mut self, decided_idx: usize) {
        self.last_snapshot_idx = decided_idx;
    }

    /// Whether the policy asks for a snapshot at `decided_idx`.
    #[must_use]
    pub fn should_snapshot(&self, decided_idx: usize) -> bool {
        let Some(decided_since) = decided_idx
            .checked_sub(self.last_snapshot_idx)
            .filter(|&n| n > 0)
        else {
            return false;
        };
        match &self.policy {
            SnapshotPolicy::Disabled => false,
            SnapshotPolicy::EveryDecided(every) => {
                u64::try_from(decided_since).unwrap_or(u64::MAX) >= every.get()
            }
            SnapshotPolicy::Callback(ask) => ask(SnapshotContext {
                decided_idx,
                last_snapshot_idx: self.last_snapshot_idx,
                decided_since,
            }),
        }
    }

    /// Records that a snapshot was taken at `decided_idx`.
    pub fn snapshotted(&mut self, decided_idx: usize) {
        self.last_snapshot_idx = decided_idx;
    }

    /// The decided index of the last snapshot (or of the last rebase).
    #[must_use]
    pub fn last_snapshot_idx(&self) -> usize {
        self.last_snapshot_idx
    }

    /// The policy.
    #[must_use]
    pub fn policy(&self) -> &SnapshotPolicy {
        &self.policy
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    fn every(n: u64) -> SnapshotPolicy {
        SnapshotPolicy::EveryDecided(NonZeroU64::new(n).unwrap())
    }

    #[test]
    fn every_decided_counts_from_the_recovered_index() {
        let mut t = SnapshotTracker::new(every(10), 1_000);
        // A restart at 1000 does not snapshot at once.
        assert!(!t.should_snapshot(1_000));
        assert!(!t.should_snapshot(1_009));
        assert!(t.should_snapshot(1_010));
        t.snapshotted(1_010);
        assert!(!t.should_snapshot(1_019));
        assert!(t.should_snapshot(1_020));
    }

    #[test]
    fn a_lower_decided_index_never_snapshots_until_rebased() {
        let mut t = SnapshotTracker::new(every(1), 50);
        assert!(!t.should_snapshot(3));
        t.rebase(0);
        assert!(t.should_snapshot(3));
    }

    #[test]
    fn disabled_never_snapshots() {
        let t = SnapshotTracker::new(SnapshotPolicy::Disabled, 0);
        assert!(!t.should_snapshot(usize::MAX));
    }

    #[test]
    fn callback_sees_the_context_and_only_when_something_was_decided() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let policy = SnapshotPolicy::Callback(Arc::new(move |ctx| {
            log.lock().unwrap().push(ctx);
            ctx.decided_since >= 2
        }));
        let t = SnapshotTracker::new(policy, 5);
        assert!(!t.should_snapshot(5));
        assert!(!t.should_snapshot(6));
        assert!(t.should_snapshot(7));
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                SnapshotContext {
                    decided_idx: 6,
                    last_snapshot_idx: 5,
                    decided_since: 1
                },
                SnapshotContext {
                    decided_idx: 7,
                    last_snapshot_idx: 5,
                    decided_since: 2
                },
            ]
        );
    }

    #[test]
    fn debug_hides_the_callback() {
        let policy = SnapshotPolicy::Callback(Arc::new(|_| true));
        assert_eq!(format!("{policy:?}"), "Callback(..)");
        assert_eq!(format!("{:?}", every(3)), "EveryDecided(3)");
        assert_eq!(
            format!("{:?}", SnapshotPolicy::default()),
            format!("EveryDecided({DEFAULT_SNAPSHOT_INTERVAL})")
        );
    }
}
