//! The `tsoracle-paxos` binary, run as child processes on 127.0.0.1, and
//! the node library in one process.

// Test helpers outside #[test] functions unwrap on purpose: a failed setup
// is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod admin_tls;
mod amnesia;
mod bad_config;
mod client_tls;
mod common;
mod export;
mod hand_over;
mod library;
mod membership;
mod replace;
mod restart;
mod settings;
mod status;
