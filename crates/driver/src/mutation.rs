//! Test-only switches that each remove one safety guard of the driver, so a
//! simulation can show that its checks catch the bug the guard prevents (a
//! check that cannot fail proves nothing).
//!
//! Compiled only with the `mutations` feature, which no shipped binary
//! enables. A switch is set per thread: a deterministic simulation runs a
//! whole cluster on one thread, so one run's mutation never leaks into a test
//! running beside it.

use std::cell::Cell;

/// A guard a simulation may remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Guard {
    /// A node that granted a lease round grants no other ballot until that
    /// grant ran out, and grants nothing for one hold after it starts
    /// (`tsoracle_paxos_toolkit::lease::Grants::grant`; the switch lives in
    /// the toolkit and is set from here).
    GrantHold,
    /// A `Promise` or `Accepted` leaves only after the sync of the round
    /// that wrote what it reports; only a leader's replication goes before
    /// it (the toolkit runner's send order; the switch lives in the
    /// toolkit and is set from here).
    SyncBeforeAcknowledge,
    /// A hand-over stops serving before the runner releases the lease
    /// (`PaxosDriver::hand_over`); without it the old leader serves until
    /// it sees the successor lead.
    StopBeforeRelease,
    /// A write whose epoch is not this node's leader epoch is refused with
    /// `Fenced` ([`fence::check_write`](crate::fence::check_write)).
    EpochFence,
    /// A read (`load_high_water`, `load_dense_seq`, `load_leases`) first
    /// applies a barrier entry of its own.
    ReadBarrier,
    /// A reply carrying data leaves only while this node still leads under
    /// the reply's epoch, checked after the reply was produced
    /// ([`gate::reply_admitted`](crate::gate::reply_admitted)).
    ReplyGate,
    /// A member whose data directory is not the one the cluster knows takes
    /// no part: a restart on empty storage is refused
    /// ([`StartMode::Rejoin`](crate::StartMode)), and peers refuse
    /// messages that present another instance than the registered one
    /// ([`RegistryAdmission`](crate::RegistryAdmission)).
    IdentityCheck,
    /// A configuration started by a membership change begins with the
    /// previous configuration's final state: its genesis carries the
    /// high-water, the dense counters and the leases over
    /// (`reconfigure.rs: begin_log`).
    CarryState,
    /// A StopSign reaches OmniPaxos only when it names the change the log
    /// agreed to ([`ChangeAdmission`](crate::ChangeAdmission)); a forged
    /// one from a peer link is dropped.
    StopSignAdmission,
}

impl Guard {
    /// Every guard.
    pub const ALL: [Guard; 9] = [
        Guard::GrantHold,
        Guard::SyncBeforeAcknowledge,
        Guard::StopBeforeRelease,
        Guard::EpochFence,
        Guard::ReadBarrier,
        Guard::ReplyGate,
        Guard::IdentityCheck,
        Guard::CarryState,
        Guard::StopSignAdmission,
    ];

    /// A short name (`grant-hold`, `sync-before-acknowledge`, `stop-before-release`, `epoch-fence`, `read-barrier`,
    /// `reply-gate`, `identity-check`, `carry-state`,
    /// `stop-sign-admission`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Guard::GrantHold => "grant-hold",
            Guard::SyncBeforeAcknowledge => "sync-before-acknowledge",
            Guard::StopBeforeRelease => "stop-before-release",
            Guard::EpochFence => "epoch-fence",
            Guard::ReadBarrier => "read-barrier",
            Guard::ReplyGate => "reply-gate",
            Guard::IdentityCheck => "identity-check",
            Guard::CarryState => "carry-state",
            Guard::StopSignAdmission => "stop-sign-admission",
        }
    }

    /// The guard called `name`.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Guard> {
        Guard::ALL.into_iter().find(|g| g.name() == name)
    }
}

thread_local! {
    static REMOVED: Cell<Option<Guard>> = const { Cell::new(None) };
    static BYPASSED: Cell<u64> = const { Cell::new(0) };
}

/// Removes `guard` (or none) for code running on this thread from now on,
/// and resets the [`bypassed`] count.
pub fn remove_on_this_thread(guard: Option<Guard>) {
    REMOVED.with(|removed| removed.set(guard));
    use tsoracle_paxos_toolkit::mutation::Guard as RunnerGuard;
    tsoracle_paxos_toolkit::mutation::remove_on_this_thread(match guard {
        Some(Guard::GrantHold) => Some(RunnerGuard::GrantHold),
        Some(Guard::SyncBeforeAcknowledge) => Some(RunnerGuard::SyncBeforeAcknowledge),
        _ => None,
    });
    BYPASSED.with(|count| count.set(0));
}

/// How often, on this thread, the removed guard let through something it
/// would have stopped (a write under a stale epoch, a new leader serving
/// before its wait ended, a read without its barrier).
#[must_use]
pub fn bypassed() -> u64 {
    BYPASSED.with(Cell::get)
}

/// Whether `guard` is in place on this thread.
pub(crate) fn is_on(guard: Guard) -> bool {
    REMOVED.with(|removed| removed.get() != Some(guard))
}

/// Counts one use of a removed guard.
pub(crate) fn count_bypass() {
    BYPASSED.with(|count| count.set(count.get().saturating_add(1)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guard_is_removed_only_on_the_thread_that_removed_it() {
        remove_on_this_thread(Some(Guard::EpochFence));
        assert!(!is_on(Guard::EpochFence));
        assert!(is_on(Guard::ReadBarrier));
        std::thread::spawn(|| assert!(is_on(Guard::EpochFence)))
            .join()
            .unwrap();
        remove_on_this_thread(None);
        assert!(is_on(Guard::EpochFence));
        for guard in Guard::ALL {
            assert_eq!(Guard::from_name(guard.name()), Some(guard));
        }
    }
}
