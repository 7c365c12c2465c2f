//! The simulation's own tests: one module per property it must have.

// Test helpers outside #[test] functions unwrap on purpose: a failed setup
// is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod liveness;
mod mutations;
mod replay;
mod seeds;
