//! [`Clock`]: where the driver reads time for the leader lease.
//!
//! The lease is measured on this node's monotonic clock (see
//! [`crate::timing`]). A real node uses [`MonotonicClock`]; a simulation
//! hands each node a clock of its own, running in virtual time at a chosen
//! rate, to check the lease under clock drift.

use std::time::{Duration, Instant};

/// A monotonic clock: the time elapsed since a fixed origin of its own.
///
/// Readings must never decrease, and must advance at a rate within the
/// configured drift of real time ([`Timing::drift`](crate::Timing::drift)).
pub trait Clock: Send + Sync + 'static {
    /// The time since this clock's origin.
    fn now(&self) -> Duration;
}

/// The process's monotonic clock (`std::time::Instant`, `CLOCK_MONOTONIC` on
/// Linux), counted from the moment this value was created.
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    origin: Instant,
}

impl MonotonicClock {
    /// A clock whose origin is now.
    #[must_use]
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_monotonic_clock_starts_near_zero_and_never_goes_back() {
        let clock = MonotonicClock::new();
        let first = clock.now();
        assert!(first < Duration::from_secs(1));
        let second = clock.now();
        assert!(second >= first);
    }
}
