//! [`DriverConfig`]: the driver's timing, stop margin, deadline and key cap.

use std::time::Duration;

use crate::core::timing::Timing;
use crate::error::ConfigError;

/// Default bound on one driver call (`TransientDriver` after it).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Default cap on the number of distinct dense keys.
pub const DEFAULT_DENSE_KEY_CAP: u64 = 1_000_000;

/// Configuration of a [`PaxosDriver`](crate::PaxosDriver).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DriverConfig {
    /// Ticks, election timeout, lease, drift and renewal period.
    pub timing: Timing,
    /// The driver stops reporting `Leader` this long before its lease runs
    /// out. tsoracle-server keeps serving from its window until it has
    /// processed the leadership change, so this must cover the server's
    /// reaction time (a scheduling delay of its leader-watch task).
    pub stop_margin: Duration,
    /// Bound on each driver call; a call that cannot finish in time (quorum
    /// lost, leader changing) returns `TransientDriver`.
    pub request_timeout: Duration,
    /// Most distinct dense keys (`SeqKeyCardinalityExceeded` beyond it).
    pub dense_key_cap: u64,
}

impl DriverConfig {
    /// A configuration with `timing`, a stop margin of two ticks, and the
    /// default timeout and key cap.
    #[must_use]
    pub fn new(timing: Timing) -> Self {
        Self {
            timing,
            stop_margin: timing.tick.saturating_mul(2),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            dense_key_cap: DEFAULT_DENSE_KEY_CAP,
        }
    }

    /// Checks the configuration.
    ///
    /// # Errors
    ///
    /// The [`Timing::validate`] errors; [`ConfigError::StopMarginTooLong`]
    /// when `renew_every + stop_margin` does not fit in the effective lease
    /// (a leader would stop serving between two renewals);
    /// [`ConfigError::ZeroDuration`] for a zero `request_timeout`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.timing.validate()?;
        if self.request_timeout.is_zero() {
            return Err(ConfigError::ZeroDuration {
                field: "request_timeout",
            });
        }
        let effective_lease = self.timing.leader_lease_validity();
        if self.timing.renew_every.saturating_add(self.stop_margin) >= effective_lease {
            return Err(ConfigError::StopMarginTooLong {
                stop_margin: self.stop_margin,
                renew_every: self.timing.renew_every,
                effective_lease,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::driver::tests::timing;

    #[test]
    fn a_margin_that_leaves_no_serving_time_is_refused() {
        let mut config = DriverConfig::new(timing());
        assert!(config.validate().is_ok());
        config.stop_margin = Duration::from_millis(30); // 10 + 30 >= 39.6
        assert!(matches!(
            config.validate(),
            Err(ConfigError::StopMarginTooLong { .. })
        ));
        config.stop_margin = Duration::from_millis(5);
        config.request_timeout = Duration::ZERO;
        assert!(matches!(
            config.validate(),
            Err(ConfigError::ZeroDuration { .. })
        ));
    }
}
