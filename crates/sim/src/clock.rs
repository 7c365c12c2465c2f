//! Per-node clocks in virtual time, each running at its own rate.
//!
//! The lease assumes only that every node's monotonic clock runs within
//! `1 ± drift` of real time (see `tsoracle_driver_paxos::timing`). A
//! [`DriftingClock`] runs at a fixed rate drawn inside that band, against the
//! runtime's paused clock (virtual real time).

use std::time::Duration;

use tokio::time::Instant;
use tsoracle_driver_paxos::Clock;

/// A monotonic clock that reads `rate ×` the virtual time since its origin.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DriftingClock {
    origin: Instant,
    rate: f64,
}

impl DriftingClock {
    /// A clock starting now, running at `rate` (1.0 is exact).
    pub(crate) fn new(rate: f64) -> Self {
        Self {
            origin: Instant::now(),
            rate,
        }
    }
}

impl Clock for DriftingClock {
    fn now(&self) -> Duration {
        self.origin.elapsed().mul_f64(self.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_slow_clock_lags_virtual_time_by_its_rate() {
        let clock = DriftingClock::new(0.99);
        tokio::time::sleep(Duration::from_secs(100)).await;
        assert_eq!(clock.now(), Duration::from_secs(99));
    }
}
