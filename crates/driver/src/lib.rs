//! The OmniPaxos-backed `ConsensusDriver` of tsoracle.
//!
//! - [`PaxosDriver`] implements every method of
//!   `tsoracle_consensus::ConsensusDriver` (2.2): leadership events,
//!   high-water, dense sequences and leases, over any
//!   [`PaxosHighWaterHost`].
//! - [`PaxosHighWaterHost`] is the one trait a host implements to lend the
//!   driver its OmniPaxos log: submit a command and await its applied
//!   outcome, read the applied state, watch this node's leadership view,
//!   name each node's client endpoint.
//! - [`StandaloneHost`] is that host for a service whose only replicated
//!   state is tsoracle's: its own OmniPaxos node on a toolkit runner, generic
//!   over storage and transport. [`PaxosApplier`] is its apply path, reusable
//!   by a piggyback host's own decided-entry hook.
//! - [`RunnerHost`] and [`RunnerBackedHost`]: the host methods that are the
//!   same for every host on a toolkit runner, written once; such a host
//!   names only its client endpoints. `StandaloneHost` is one.
//!
//! Under them is the pure decision core, module [`core`] (no runtime, no
//! I/O, no locks, no clock: time is an input), which the async driver, its
//! tests and a simulation all share:
//!
//! - [`Timing`] — ticks, election timeout, lease and clock drift, with the
//!   assumptions the lease rests on ([`timing`]).
//! - [`LeaseTracker`] — what the runner reports in, a [`Role`] out: this
//!   node reports [`Role::Leader`] only while the lease the runner's grant
//!   rounds keep for its promised ballot is valid (invariant 5; the
//!   numbered invariants are defined in `docs/architecture.md`).
//! - [`LeaderEvents`] — roles in, `LeaderState` changes out, with epochs that
//!   never decrease (invariant 6).
//! - [`fence`] — the checks before a proposal (range, `NotLeader`, `Fenced`)
//!   and the mapping of apply outcomes to `ConsensusError`s (invariant 4).
//! - [`gate`] — the check every reply carrying data passes *after* it was
//!   produced: this node still holds its lease under the reply's epoch
//!   ([`PaxosDriver::reply_gate`]; invariant 5, paused processes).
//! - [`core::Engine`] — all of the above for one node, as
//!   `step(now, event) -> actions` plus questions asked with `now`: which
//!   role to publish, when the single in-flight renewal is due, when to
//!   wake, whether a write is admitted and, once applied, acknowledged,
//!   whether a waiting write's term is lost, whether a reply may leave.
//!   [`PaxosDriver`] is the async shell that reads the clock and carries
//!   the engine's actions out.
//!
//! # Wiring a node
//!
//! Three nodes over the test harness' in-memory network (`tsoracle-paxos-harness`) with in-memory storage;
//! a real node uses `RocksdbStorage` and the tonic transport instead, and
//! hands each driver to a `tsoracle-server`.
//!
//! ```no_run
//! use std::sync::Arc;
//! use tsoracle_core::PeerEndpoint;
//! use tsoracle_driver_paxos::{
//!     DriverConfig, Member, PaxosDriver, StandaloneHost, StartMode, Timing,
//! };
//! use tsoracle_paxos_state::PaxosEntry;
//! use tsoracle_paxos_toolkit::storage::MemoryStorage;
//! use tsoracle_paxos_harness::memnet::{MemNetConfig, MemNetwork};
//! use tsoracle_paxos_toolkit::SyncedWrites;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let timing = Timing::lan();
//! let members: Vec<Member> = (1..=3)
//!     .map(|id| Ok(Member {
//!         id,
//!         peer_address: format!("127.0.0.1:{}", 6000 + id),
//!         client_endpoint: PeerEndpoint::try_from(format!("127.0.0.1:{}", 7000 + id))?,
//!     }))
//!     .collect::<Result<_, Box<dyn std::error::Error>>>()?;
//! let network = MemNetwork::<PaxosEntry>::new(MemNetConfig::default())?;
//! let mut drivers = Vec::new();
//! for id in 1..=3 {
//!     let host = StandaloneHost::builder()
//!         .node_id(id)
//!         .cluster_id("example")
//!         .members(members.clone())
//!         .incarnation(1) // persist it: see `next_incarnation`
//!         .timing(timing)
//!         .start_mode(StartMode::Initialize) // founding: the storage starts empty
//!         .start(MemoryStorage::<PaxosEntry>::new(), SyncedWrites, network.add_node(id))?;
//!     network.attach(host.inbox());
//!     drivers.push(PaxosDriver::start(Arc::new(host), DriverConfig::new(timing))?);
//! }
//! // Each driver goes to its node's server:
//! // tsoracle_server::Server::builder().consensus_driver(Arc::new(driver)).build()?
//! # Ok(())
//! # }
//! ```
//!
//! # The lease, driven by hand
//!
//! The runner keeps the lease (rounds granted by a majority, no log write);
//! the tracker decides what the node may claim from what the runner
//! reports. A node is elected, serves once a round was granted, and stops
//! when the granted rounds stop.
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
//!     drift: 0.01,        // a round is trusted 79.2 ms, grantors hold 80.8 ms
//!     renew_every: ms(30),
//! };
//! let mut tracker = LeaseTracker::new(1, &timing)?;
//!
//! // Node 1 is elected under ballot b; no round granted yet.
//! let b = Ballot::with(1, 1, 0, 1);
//! let elected = Observation { promise: b, leader: Some((1, true)), lease_until: None };
//! tracker.observe(elected)?;
//! assert_eq!(tracker.role(ms(0)), Role::Unknown);
//!
//! // A round sent at 60 ms is granted by a majority: valid until 139.2 ms.
//! let until = ms(60) + timing.leader_lease_validity();
//! tracker.observe(Observation { lease_until: Some(until), ..elected })?;
//! let Role::Leader(term) = tracker.role(ms(61)) else { panic!("should lead") };
//! assert_eq!(term.ballot(), b);
//! assert_eq!(tracker.next_wakeup(ms(61)), Some(until));
//!
//! // No round granted after that one: the lease ends at 139.2 ms.
//! assert!(tracker.role(Duration::from_micros(139_199)).is_leader());
//! assert_eq!(tracker.role(Duration::from_micros(139_200)), Role::Unknown);
//! # Ok::<(), tsoracle_driver_paxos::ConfigError>(())
//! ```

mod applier;
pub mod core;
mod driver;
mod error;
mod host;
mod identity;
mod incarnation;
mod membership;
#[cfg(feature = "mutations")]
pub mod mutation;
mod reconfigure;
mod runner_glue;
mod runner_host;
mod standalone;

pub use applier::{ApplierHandle, PaxosApplier, Waiter};
pub use tsoracle_paxos_toolkit::clock::{Clock, MonotonicClock};
// The pure modules keep their old paths (`tsoracle_driver_paxos::timing`, ...).
pub use crate::core::change::{ChangeError, ChangeRequest};
pub use crate::core::events::LeaderEvents;
pub use crate::core::gate::{NotServing, ReplyGate};
pub use crate::core::lease::{LeaderView, LeaseTracker, Observation};
pub use crate::core::role::{Role, Term};
pub use crate::core::timing::{MAX_DRIFT, Timing};
pub use crate::core::{fence, gate, timing};
pub use driver::{
    ChangeFailure, DEFAULT_DENSE_KEY_CAP, DEFAULT_REQUEST_TIMEOUT, DriverConfig, HandOverError,
    PaxosDriver,
};
pub use error::{ConfigError, MembershipMismatch, RuntimeError};
pub use host::{
    Applied, HostError, PaxosHighWaterHost, PendingApply, PendingHandOver, ProposerSlot,
};
pub use identity::RegistryAdmission;
pub use incarnation::next_incarnation;
pub use reconfigure::{ChangeAdmission, NextConfiguration};
pub use runner_glue::{leadership_from_runner, submit_to_runner};
pub use runner_host::{RunnerBackedHost, RunnerHost};
pub use standalone::{Member, StandaloneHost, StandaloneHostBuilder, StartMode};
