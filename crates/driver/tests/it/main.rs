//! Driver integration tests: three nodes (StandaloneHost over RocksDB and
//! the in-memory peer network), one real `tsoracle-server` each on
//! 127.0.0.1, and the real `tsoracle-client`; a configuration a persisted
//! StopSign ended.

// Test helpers outside #[test] functions unwrap on purpose: a failed setup
// is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod cluster;
mod driver_contract;
mod hand_written_host;
mod membership_change;
mod server_client;
mod stop_sign;
