//! Test-only switches that each remove one safety guard of the runner, so a
//! simulation can show that its checks catch the bug the guard prevents.
//!
//! Compiled only with the `mutations` feature, which no shipped binary
//! enables. A switch is set per thread: a deterministic simulation runs a
//! whole cluster on one thread. The driver's own switches
//! (`tsoracle_driver_paxos::mutation`) set these for the guards that live
//! here.

use std::cell::Cell;

/// A runner guard a simulation may remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Guard {
    /// A node grants no ballot while a grant of another one still holds,
    /// nor anything for one hold after it starts
    /// ([`Grants::grant`](crate::lease::Grants::grant)).
    GrantHold,
    /// A `Promise` or `Accepted` leaves only after the sync of the round
    /// that wrote what it reports; only a leader's replication messages go
    /// before it (`send_order::take_early`).
    SyncBeforeAcknowledge,
}

thread_local! {
    static REMOVED: Cell<Option<Guard>> = const { Cell::new(None) };
}

/// Removes `guard` (or none) for code running on this thread from now on.
pub fn remove_on_this_thread(guard: Option<Guard>) {
    REMOVED.with(|removed| removed.set(guard));
}

/// Whether `guard` is in place on this thread.
pub(crate) fn is_on(guard: Guard) -> bool {
    REMOVED.with(|removed| removed.get() != Some(guard))
}
