//! The OmniPaxos-backed `ConsensusDriver` of tsoracle.
//!
//! Today this crate holds the driver's pure decision core: synchronous,
//! deterministic logic with no runtime, no I/O and no clock read inside (time
//! is an input), so the async driver, its tests and the deterministic
//! simulation all drive the same code. The async `PaxosDriver`, the
//! `PaxosHighWaterHost` trait and `StandaloneHost` will be built on it.
//!
//! - [`Timing`] — ticks, election timeout, lease and clock drift, with the
//!   assumptions the lease rests on ([`timing`]).
//! - [`LeaseTracker`] — OmniPaxos observations and decisions in, a [`Role`]
//!   out: this node reports [`Role::Leader`] only after a new-leader wait and
//!   while it holds a lease renewed by its own decided proposals (design
//!   invariant 5).
//! - [`LeaderEvents`] — roles in, `LeaderState` changes out, with epochs that
//!   never decrease (invariant 6).
//! - [`fence`] — the checks before a proposal (range, `NotLeader`, `Fenced`)
//!   and the mapping of apply outcomes to `ConsensusError`s (invariant 4).
//!
//! # Example
//!
//! A node is elected, waits, serves while its renewals are decided, and stops
//! when they stop.
//!
//! ```
//! use std::time::Duration;
//! use omnipaxos::ballot_leader_election::Ballot;
//! use tsoracle_driver_paxos::{LeaseTracker, Observation, Role, Timing};
//!
//! let ms = Duration::from_millis;
//! let timing = Timing {
//!     tick: ms(10),
//!     election_ticks: 10, // election timeout 100 ms
//!     lease: ms(80),
//!     drift: 0.01,        // lease trusted 79.2 ms, new-leader wait 80.8 ms
//!     renew_every: ms(30),
//! };
//! let mut tracker = LeaseTracker::new(1, &timing)?;
//!
//! // Node 1 is elected under ballot b at t = 0.
//! let b = Ballot::with(1, 1, 0, 1);
//! let elected = Observation { promise: b, leader: Some((1, true)) };
//! tracker.observe(ms(0), elected)?;
//! assert_eq!(tracker.role(ms(0)), Role::Unknown); // waiting, no lease yet
//!
//! // It renews every 30 ms: each barrier, proposed at `at`, is decided.
//! for at in [0, 30, 60] {
//!     assert!(tracker.wants_renewal(ms(at)));
//!     tracker.proposed(ms(at), b);
//!     tracker.observe(ms(at), elected)?;
//!     assert!(tracker.decided(ms(at), b));
//! }
//! assert_eq!(tracker.role(ms(80)), Role::Unknown); // still waiting
//! assert_eq!(tracker.next_wakeup(ms(80)), Some(Duration::from_micros(80_800)));
//!
//! let Role::Leader(term) = tracker.role(ms(81)) else { panic!("should lead") };
//! assert_eq!(term.ballot(), b);
//!
//! // No renewal after 60 ms: the lease ends at 60 + 79.2 ms.
//! assert!(tracker.role(Duration::from_micros(139_199)).is_leader());
//! assert_eq!(tracker.role(Duration::from_micros(139_200)), Role::Unknown);
//! # Ok::<(), tsoracle_driver_paxos::Error>(())
//! ```

mod applier;
mod driver;
mod error;
mod events;
pub mod fence;
mod host;
mod incarnation;
mod lease;
mod role;
mod standalone;
pub mod timing;

#[cfg(test)]
mod proptests;

pub use applier::{ApplierHandle, PaxosApplier, Waiter};
pub use driver::{DEFAULT_DENSE_KEY_CAP, DEFAULT_REQUEST_TIMEOUT, DriverConfig, PaxosDriver};
pub use error::Error;
pub use events::LeaderEvents;
pub use host::{Applied, HostError, LeaderView, PaxosHighWaterHost, PendingApply};
pub use incarnation::next_incarnation;
pub use lease::{LeaseTracker, Observation};
pub use role::{Role, Term};
pub use standalone::{Member, StandaloneHost, StandaloneHostBuilder};
pub use timing::{MAX_DRIFT, Timing};
