//! Per-node clocks in virtual time, each running at its own rate.
//!
//! The lease assumes only that every node's monotonic clock runs within
//! `1 ± drift` of real time (see `tsoracle_driver_paxos::timing`). A
//! [`DriftingClock`] runs at a fixed rate drawn inside that band, against the
//! runtime's paused clock (virtual real time).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use tsoracle_driver_paxos::Clock;

/// A monotonic clock that reads `rate ×` the virtual time since its origin.
///
/// [`freeze`](Self::freeze) models a paused process: nothing on the node
/// reads a later time until [`thaw`](Self::thaw), and then the reading jumps
/// by the whole pause, as `CLOCK_MONOTONIC` does across SIGSTOP. Clones share
/// the freeze (the driver's clock and the server's are one clock).
#[derive(Debug, Clone)]
pub(crate) struct DriftingClock {
    origin: Instant,
    rate: f64,
    frozen_at: Arc<Mutex<Option<Duration>>>,
}

impl DriftingClock {
    /// A clock starting now, running at `rate` (1.0 is exact).
    pub(crate) fn new(rate: f64) -> Self {
        Self {
            origin: Instant::now(),
            rate,
            frozen_at: Arc::new(Mutex::new(None)),
        }
    }

    fn running(&self) -> Duration {
        self.origin.elapsed().mul_f64(self.rate)
    }

    /// Stops the readings where they are (the process is paused).
    pub(crate) fn freeze(&self) {
        let mut frozen = self
            .frozen_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if frozen.is_none() {
            *frozen = Some(self.running());
        }
    }

    /// Lets the readings catch up with the time that kept running.
    pub(crate) fn thaw(&self) {
        *self
            .frozen_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }
}

impl Clock for DriftingClock {
    fn now(&self) -> Duration {
        let frozen = *self
            .frozen_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        frozen.unwrap_or_else(|| self.running())
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

    #[tokio::test(start_paused = true)]
    async fn a_frozen_clock_stands_still_then_jumps_by_the_pause() {
        let clock = DriftingClock::new(1.0);
        tokio::time::sleep(Duration::from_secs(1)).await;
        clock.clone().freeze();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(clock.now(), Duration::from_secs(1));
        clock.thaw();
        assert_eq!(clock.now(), Duration::from_secs(6));
    }
}
