//! The `tsoracle-paxos-testkit` binary, run as child processes on
//! 127.0.0.1: `demo`, `chaos` and `bench`, and nodes run by its copy of the
//! node's command line (`tsoracle-paxos-testkit node serve ...`).

// Test helpers outside #[test] functions unwrap on purpose: a failed setup
// is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod bench;
mod catch_up;
mod chaos;
mod common;
mod demo;
mod full_disk;
