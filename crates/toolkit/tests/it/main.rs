//! The toolkit's one integration-test binary: the storage conformance suite
//! run against every backend, the model check, the RocksDB durability cases,
//! the kill -9 crash test, and runner clusters over the in-memory network.

// Test helpers outside #[test] functions unwrap on purpose: a failed setup
// is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod conformance;
#[cfg(all(feature = "rocksdb", unix))]
mod crash;
#[cfg(feature = "rocksdb")]
mod durability;
mod model;
mod omnipaxos_cluster;
mod runner_cluster;
