//! The toolkit's one integration-test binary: the storage conformance suite
//! run against every backend, the model check, the RocksDB durability cases,
//! the kill -9 crash test, runner clusters over the in-memory network, and
//! the runner's leader lease.

// Test helpers outside #[test] functions unwrap on purpose: a failed setup
// is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod conformance;
#[cfg(all(feature = "rocksdb", unix))]
mod crash;
#[cfg(feature = "rocksdb")]
mod durability;
mod lease;
mod model;
mod omnipaxos_cluster;
mod runner_cluster;
