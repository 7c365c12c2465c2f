//! Timing of the leader lease, and the assumptions it rests on.
//!
//! OmniPaxos has no lease: an isolated old leader keeps reporting itself
//! leader for ever. The driver therefore serves as leader only while it holds
//! a *lease* (invariant 5 in `docs/architecture.md`), granted by a majority
//! whose members hold their grants, so that two leaders can never serve at
//! the same real instant.
//!
//! # The rule
//!
//! The lease is the classic Paxos master lease, kept by the toolkit runner
//! without writing the log (`tsoracle_paxos_toolkit::lease`):
//!
//! - every `renew_every`, the accept-phase leader of ballot `b` sends a lease
//!   request round to every peer, noting its send time `s`;
//! - a node grants a round of `b` only while its promise is `b` and no grant
//!   of another ballot still holds; granting at its local time `g`, it holds
//!   `b` until `g + L × (1 + drift)` ([`Timing::grant_hold`]) and grants
//!   no other ballot before;
//! - once a majority (the leader included) granted a round, the leader holds
//!   the lease until `s + L × (1 − drift)` ([`Timing::leader_lease_validity`]);
//! - a node that (re)starts grants nothing for one hold: it forgot what it
//!   granted; one that accepted a StopSign grants nothing more.
//!
//! # Why that is safe
//!
//! The old leader's lease of a round sent at real time `S` ends before
//! `S + L` (its clock runs at least `1 − drift` fast). Each grantor of that
//! round granted after `S` and holds for at least `L` real time, so until
//! after `S + L`. A lease of another ballot needs grants from a majority,
//! which shares a node with the old round's majority; that node grants the
//! other ballot only after its hold ended, so after the old lease ended.
//! Nothing in this argument depends on network delays: a grant that arrives
//! late only shortens the lease it makes (it runs from `S`). A change of
//! configuration is covered by the rule for starts: a node that accepted
//! the StopSign grants nothing more in the old one, so the old lease ends
//! within one hold of the decision; every old member that stays starts its
//! instance of the new configuration after the decision and grants nothing
//! for one hold. A *new* member's instance may start earlier (it waits in
//! join mode), so the argument needs every majority of the new
//! configuration to hold an old member: true because a change adds or
//! removes one member at a time (`core::change::next_list`).
//!
//! The hold is on grants, not on promises: OmniPaxos elects and runs its
//! prepare phase as before while an old lease runs out (deciding entries
//! before its lease is safe; only serving needs it), and the followers that
//! stopped hearing from the old leader let their holds run out during the
//! election. A new leader therefore serves one round trip after its
//! election, not after a wait that follows it.
//!
//! # Assumptions
//!
//! - **Bounded clock-rate drift, not synchronized clocks.** Each node's
//!   monotonic clock runs at a rate within `1 ± drift` of real time. Clocks
//!   are never compared across nodes; only local durations are measured.
//! - **Monotonic clocks.** Every `now` given to the decision core comes from a
//!   monotonic clock (`std::time::Instant`, `CLOCK_MONOTONIC`), never from
//!   wall-clock time, which can jump. A clock that stops while the machine
//!   is suspended breaks the drift bound (Linux `CLOCK_MONOTONIC`, behind
//!   `std::time::Instant`, does not count system suspend): the old leader
//!   would trust its lease through the whole suspension. Run servers without
//!   system suspend, or feed a clock that counts it (`CLOCK_BOOTTIME`).
//!   Process pauses (scheduling, `SIGSTOP`) do not stop the clock and are
//!   covered: the lease is re-checked against the clock, not against elapsed
//!   work.
//! - **The lease is measured from the request's send time**, sampled in the
//!   round before the request leaves; a grant's hold from the round that
//!   handles the request, after it arrived.
//! - **One clock per node.** The runner and the driver read the same
//!   [`Clock`](crate::Clock) ([`PaxosHighWaterHost::clock`](crate::PaxosHighWaterHost::clock)).
//! - **A heartbeat round trip fits in one election timeout**
//!   (`tick × election_ticks`). OmniPaxos' ballot leader election sends one
//!   round of heartbeats per election timeout and counts the replies of the
//!   previous round; slower links cause spurious elections (and so pauses of
//!   a hold each), not unsafety.
//! - **Reaction time is outside this bound.** [`LeaseTracker::role`] answers
//!   for the instant it is asked. Whoever acts on the answer (the async
//!   driver emitting a leadership event, the server serving from its window)
//!   keeps acting until it hears otherwise; the driver must wake at
//!   [`LeaseTracker::next_wakeup`] and re-check the role before each write it
//!   admits, and the time between that check and the last timestamp served
//!   must be kept short. It is not covered by the drift margin.
//!
//! [`LeaseTracker::role`]: crate::LeaseTracker::role
//! [`LeaseTracker::next_wakeup`]: crate::LeaseTracker::next_wakeup
//!
//! # Liveness
//!
//! - `lease < election timeout`: peers elect a new leader only after missing
//!   at least one heartbeat round of the old one, by which time their holds
//!   (renewed before it went silent) have run out: a failover pauses serving
//!   for roughly the election (2.5 to 3 election timeouts with OmniPaxos
//!   0.2.4) and one round trip, not the election plus a wait.
//! - `renew_every < L × (1 − drift)`: a leader asks for a round every
//!   `renew_every` and keeps its lease. Choose `renew_every` at most half of
//!   the effective lease so that one lost round does not cost the lease. The
//!   rounds write nothing: an idle cluster writes nothing to disk.

use std::time::Duration;

use tsoracle_paxos_toolkit::lease::LeaseTiming;

use crate::error::ConfigError;

/// The largest accepted relative clock-rate error (20%).
pub const MAX_DRIFT: f64 = 0.2;

/// Parts-per-million scale used for exact, conservatively rounded arithmetic.
const PPM: u128 = 1_000_000;
const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Timing of the consensus ticks and of the leader lease.
///
/// Build one with every field set explicitly and check it with
/// [`validate`](Self::validate) (the [`LeaseTracker`](crate::LeaseTracker)
/// does so on construction). See the [module docs](self) for the
/// assumptions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    /// Period of `OmniPaxos::tick`.
    pub tick: Duration,
    /// OmniPaxos' `election_tick_timeout`: ticks per heartbeat round of the
    /// ballot leader election.
    pub election_ticks: u64,
    /// The lease `L`, before the drift margin.
    pub lease: Duration,
    /// Maximum relative clock-rate error of any node's monotonic clock
    /// against real time, e.g. `0.01` for 1%. In `[0, 0.2]`.
    pub drift: f64,
    /// How often the leader asks its peers for a lease round.
    pub renew_every: Duration,
}

impl Timing {
    /// A starting point for nodes on one LAN: 10 ms ticks, a 200 ms
    /// election timeout, a 150 ms lease with 1% drift, renewed every 40 ms.
    /// It tolerates a scheduling stall of about 100 ms without losing the
    /// lease; a leader `kill -9` costs about one election of unavailability
    /// (see `docs/benchmarks.md`). On machines with longer
    /// stalls (an overloaded VM, a disk whose sync can take 100 ms), double
    /// every duration: failovers take twice as long, spurious elections
    /// become rarer.
    #[must_use]
    pub const fn lan() -> Self {
        Self {
            tick: Duration::from_millis(10),
            election_ticks: 20,
            lease: Duration::from_millis(150),
            drift: 0.01,
            renew_every: Duration::from_millis(40),
        }
    }

    /// Checks the timing; see the [module docs](self).
    ///
    /// # Errors
    ///
    /// - [`ConfigError::ZeroDuration`] when `tick`, `lease` or `renew_every` is zero;
    /// - [`ConfigError::ZeroElectionTicks`] when `election_ticks` is zero;
    /// - [`ConfigError::DriftOutOfRange`] when `drift` is not in `[0, 0.2]` (NaN
    ///   included);
    /// - [`ConfigError::ElectionTimeoutOverflow`] when `tick × election_ticks` does
    ///   not fit a [`Duration`];
    /// - [`ConfigError::LeaseNotShorterThanElection`] when `lease >= tick ×
    ///   election_ticks`;
    /// - [`ConfigError::RenewNotShorterThanLease`] when `renew_every >=`
    ///   [`leader_lease_validity`](Self::leader_lease_validity).
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, value) in [
            ("tick", self.tick),
            ("lease", self.lease),
            ("renew_every", self.renew_every),
        ] {
            if value.is_zero() {
                return Err(ConfigError::ZeroDuration { field });
            }
        }
        if self.election_ticks == 0 {
            return Err(ConfigError::ZeroElectionTicks);
        }
        if !(0.0..=MAX_DRIFT).contains(&self.drift) {
            return Err(ConfigError::DriftOutOfRange { drift: self.drift });
        }
        let election_timeout = self.election_timeout()?;
        if self.lease >= election_timeout {
            return Err(ConfigError::LeaseNotShorterThanElection {
                lease: self.lease,
                election_timeout,
            });
        }
        let effective_lease = self.leader_lease_validity();
        if self.renew_every >= effective_lease {
            return Err(ConfigError::RenewNotShorterThanLease {
                renew_every: self.renew_every,
                effective_lease,
            });
        }
        Ok(())
    }

    /// `tick × election_ticks`: one heartbeat round of the ballot leader
    /// election.
    ///
    /// # Errors
    ///
    /// [`ConfigError::ElectionTimeoutOverflow`] when the product does not fit a
    /// [`Duration`].
    pub fn election_timeout(&self) -> Result<Duration, ConfigError> {
        self.tick
            .as_nanos()
            .checked_mul(u128::from(self.election_ticks))
            .and_then(duration_from_nanos)
            .ok_or(ConfigError::ElectionTimeoutOverflow)
    }

    /// `lease × (1 − drift)`, rounded down: how long, on its own clock, a
    /// leader may trust a lease round after sending its request.
    ///
    /// Meaningful for a [validated](Self::validate) timing; an invalid drift
    /// is treated as 100% (the lease is never trusted).
    #[must_use]
    pub fn leader_lease_validity(&self) -> Duration {
        scale(self.lease, PPM - self.drift_ppm(), Rounding::Down)
    }

    /// `lease × (1 + drift)`, rounded up: how long, on its own clock, a node
    /// that granted a lease round grants no other ballot (and a node that
    /// starts grants nothing).
    ///
    /// Meaningful for a [validated](Self::validate) timing; an invalid drift
    /// is treated as 100% (the hold is doubled).
    #[must_use]
    pub fn grant_hold(&self) -> Duration {
        scale(self.lease, PPM + self.drift_ppm(), Rounding::Up)
    }

    /// The durations the runner keeps the lease with.
    #[must_use]
    pub fn lease_timing(&self) -> LeaseTiming {
        LeaseTiming {
            validity: self.leader_lease_validity(),
            hold: self.grant_hold(),
            renew_every: self.renew_every,
        }
    }

    /// The drift in parts per million, rounded up (a larger drift is the
    /// conservative side of both margins).
    fn drift_ppm(&self) -> u128 {
        if (0.0..=MAX_DRIFT).contains(&self.drift) {
            // In [0, 200_000] after the range check: the cast is exact.
            (self.drift * 1e6).ceil() as u128
        } else {
            PPM
        }
    }
}

#[derive(Clone, Copy)]
enum Rounding {
    Down,
    Up,
}

/// `value × ppm / 1_000_000`, saturating at [`Duration::MAX`].
fn scale(value: Duration, ppm: u128, rounding: Rounding) -> Duration {
    // A Duration has fewer than 2^94 nanoseconds and ppm <= 2 × 10^6 < 2^21:
    // the product cannot overflow a u128.
    let product = value.as_nanos().saturating_mul(ppm);
    let nanos = match rounding {
        Rounding::Down => product / PPM,
        Rounding::Up => product.div_ceil(PPM),
    };
    duration_from_nanos(nanos).unwrap_or(Duration::MAX)
}

/// A duration of `nanos` nanoseconds, or `None` when it does not fit.
fn duration_from_nanos(nanos: u128) -> Option<Duration> {
    let secs = u64::try_from(nanos / NANOS_PER_SEC).ok()?;
    // Below 10^9: fits a u32.
    let subsec = u32::try_from(nanos % NANOS_PER_SEC).ok()?;
    Some(Duration::new(secs, subsec))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn the_lan_timing_is_valid() {
        assert_eq!(Timing::lan().validate(), Ok(()));
    }

    /// A valid timing used across the crate's tests: 10 ms ticks, a 100 ms
    /// election timeout, an 80 ms lease, 1% drift, a round every 30 ms.
    pub(crate) fn sample() -> Timing {
        Timing {
            tick: Duration::from_millis(10),
            election_ticks: 10,
            lease: Duration::from_millis(80),
            drift: 0.01,
            renew_every: Duration::from_millis(30),
        }
    }

    #[test]
    fn sample_is_valid_and_derives_both_margins() {
        let t = sample();
        assert_eq!(t.validate(), Ok(()));
        assert_eq!(t.election_timeout(), Ok(Duration::from_millis(100)));
        assert_eq!(t.leader_lease_validity(), Duration::from_micros(79_200));
        assert_eq!(t.grant_hold(), Duration::from_micros(80_800));
    }

    #[test]
    fn refuses_a_lease_not_shorter_than_the_election_timeout() {
        for lease in [Duration::from_millis(100), Duration::from_millis(150)] {
            let t = Timing { lease, ..sample() };
            let err = t.validate().unwrap_err();
            assert_eq!(
                err,
                ConfigError::LeaseNotShorterThanElection {
                    lease,
                    election_timeout: Duration::from_millis(100)
                }
            );
            let msg = err.to_string();
            assert!(msg.contains("strictly shorter"), "{msg}");
            assert!(msg.contains("deposed leader"), "{msg}");
        }
        let just_below = Timing {
            lease: Duration::from_millis(100) - Duration::from_nanos(1),
            renew_every: Duration::from_millis(30),
            ..sample()
        };
        assert_eq!(just_below.validate(), Ok(()));
    }

    #[test]
    fn refuses_zero_values() {
        let zero = Duration::ZERO;
        assert_eq!(
            Timing {
                tick: zero,
                ..sample()
            }
            .validate(),
            Err(ConfigError::ZeroDuration { field: "tick" })
        );
        assert_eq!(
            Timing {
                lease: zero,
                ..sample()
            }
            .validate(),
            Err(ConfigError::ZeroDuration { field: "lease" })
        );
        assert_eq!(
            Timing {
                renew_every: zero,
                ..sample()
            }
            .validate(),
            Err(ConfigError::ZeroDuration {
                field: "renew_every"
            })
        );
        assert_eq!(
            Timing {
                election_ticks: 0,
                ..sample()
            }
            .validate(),
            Err(ConfigError::ZeroElectionTicks)
        );
    }

    #[test]
    fn refuses_drift_outside_its_range() {
        for drift in [-0.01, 0.200_001, 1.0, f64::NAN, f64::INFINITY] {
            let err = Timing { drift, ..sample() }.validate().unwrap_err();
            assert!(
                matches!(err, ConfigError::DriftOutOfRange { .. }),
                "{drift}: {err:?}"
            );
        }
        for drift in [0.0, 0.2] {
            let t = Timing {
                drift,
                renew_every: Duration::from_millis(10),
                ..sample()
            };
            assert_eq!(t.validate(), Ok(()), "{drift}");
        }
    }

    #[test]
    fn refuses_renewal_not_shorter_than_the_effective_lease() {
        // lease 80 ms at 1% drift: the effective lease is 79.2 ms.
        let t = Timing {
            renew_every: Duration::from_micros(79_200),
            ..sample()
        };
        assert_eq!(
            t.validate(),
            Err(ConfigError::RenewNotShorterThanLease {
                renew_every: Duration::from_micros(79_200),
                effective_lease: Duration::from_micros(79_200),
            })
        );
        let t = Timing {
            renew_every: Duration::from_micros(79_199),
            ..sample()
        };
        assert_eq!(t.validate(), Ok(()));
    }

    #[test]
    fn refuses_an_overflowing_election_timeout() {
        let t = Timing {
            tick: Duration::MAX,
            election_ticks: 2,
            ..sample()
        };
        assert_eq!(t.validate(), Err(ConfigError::ElectionTimeoutOverflow));
    }

    #[test]
    fn margins_round_conservatively() {
        // 1 ns lease at 1%: validity rounds down to 0, the wait up to 2 ns.
        let t = Timing {
            lease: Duration::from_nanos(1),
            ..sample()
        };
        assert_eq!(t.leader_lease_validity(), Duration::ZERO);
        assert_eq!(t.grant_hold(), Duration::from_nanos(2));
        // A drift that is not a whole number of ppm rounds up.
        let t = Timing {
            lease: Duration::from_secs(1),
            drift: 0.000_000_1,
            ..sample()
        };
        assert_eq!(t.leader_lease_validity(), Duration::from_micros(999_999));
        assert_eq!(t.grant_hold(), Duration::from_micros(1_000_001));
    }

    #[test]
    fn invalid_drift_is_treated_as_total() {
        let t = Timing {
            drift: f64::NAN,
            ..sample()
        };
        assert_eq!(t.leader_lease_validity(), Duration::ZERO);
        assert_eq!(t.grant_hold(), Duration::from_millis(160));
    }

    #[test]
    fn huge_leases_saturate_instead_of_wrapping() {
        let t = Timing {
            lease: Duration::MAX,
            ..sample()
        };
        assert_eq!(t.grant_hold(), Duration::MAX);
        assert!(t.leader_lease_validity() < Duration::MAX);
    }
}
