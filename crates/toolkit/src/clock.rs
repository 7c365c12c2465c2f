//! [`Clock`]: where a node reads time for the leader lease.
//!
//! The lease is measured on this node's monotonic clock, by the runner (the
//! grants, [`crate::lease`]) and by whoever decides what the node may serve
//! (the driver): both must read the *same* clock. A real node uses
//! [`MonotonicClock`], whose instances all share one origin; a simulation
//! hands each node a clock of its own, running in virtual time at a chosen
//! rate, to check the lease under clock drift.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A monotonic clock: the time elapsed since a fixed origin of its own.
///
/// Readings must never decrease, and must advance at a rate within the
/// configured drift of real time (the lease's drift margin).
pub trait Clock: Send + Sync + 'static {
    /// The time since this clock's origin.
    fn now(&self) -> Duration;
}

/// The process's monotonic clock (`std::time::Instant`, `CLOCK_MONOTONIC` on
/// Linux), counted from one origin per process: every `MonotonicClock` reads
/// the same value, so a runner and a driver built apart still agree.
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    origin: Instant,
}

impl MonotonicClock {
    /// The process's clock.
    #[must_use]
    pub fn new() -> Self {
        static ORIGIN: OnceLock<Instant> = OnceLock::new();
        Self {
            origin: *ORIGIN.get_or_init(Instant::now),
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
    fn every_monotonic_clock_of_a_process_reads_the_same_time() {
        let clock = MonotonicClock::new();
        let first = clock.now();
        std::thread::sleep(Duration::from_millis(5));
        let other = MonotonicClock::new();
        let (a, b) = (clock.now(), other.now());
        assert!(a >= first + Duration::from_millis(5));
        // Read one after the other: `b` can only be later.
        assert!(
            b >= a && b - a < Duration::from_millis(100),
            "{a:?} vs {b:?}"
        );
    }
}
