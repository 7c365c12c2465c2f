//! What the tests of tsoracle-paxos, its simulation and a host's own tests
//! reuse, kept out of every shipped package (the layering check refuses this
//! crate, and `fastrand`, in their normal dependencies):
//!
//! - [`memnet`]: an in-memory network with fault injection (loss,
//!   duplication, delay, reordering, partitions) between toolkit runners of
//!   one process; each node's [`MemSink`] is its
//!   [`MessageSink`](tsoracle_paxos_toolkit::MessageSink).
//! - [`conformance`]: the storage conformance suite, what every OmniPaxos
//!   `Storage` here must do, as checks a host runs on its own storage
//!   through a [`StorageHarness`](conformance::StorageHarness).
//!
//! A crate that only tests with it takes it as a dev-dependency.
//!
//! # Example
//!
//! Two nodes' sinks on one network; a partition cuts their link at run time.
//!
//! ```
//! use omnipaxos::storage::{Entry, NoSnapshot};
//! use tsoracle_paxos_harness::memnet::{Faults, MemNetConfig, MemNetwork};
//!
//! #[derive(Clone, Debug)]
//! struct Put(u64);
//!
//! impl Entry for Put {
//!     type Snapshot = NoSnapshot;
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tsoracle_paxos_toolkit::Error> {
//! let network = MemNetwork::<Put>::new(MemNetConfig::default())?;
//! let _sink_1 = network.add_node(1); // hand each sink to a runner,
//! let _sink_2 = network.add_node(2); // then `network.attach(runner.inbox())`
//! let control = network.control();
//! control.set_faults(Faults { drop: 0.1, ..Faults::default() })?;
//! control.isolate(2);
//! assert!(control.is_cut(1, 2));
//! control.heal_all();
//! assert_eq!(network.shutdown().await, 2, "one task per directed link");
//! # Ok(())
//! # }
//! ```

pub mod conformance;
pub mod memnet;

pub use memnet::{Faults, LinkStats, MemNetConfig, MemNetwork, MemSink, NetControl};
