//! The tonic transport's one integration-test binary, on 127.0.0.1 only:
//! three-node clusters over plain and mutual-TLS links, refusals of bad
//! input from a raw client, forged StopSigns that must not end the
//! configuration, links routed by configuration on one port, queue bounds
//! towards dead peers, a large transfer
//! cut by a broken connection that resumes, and property tests of the
//! frame decoder.

// Test helpers outside #[test] functions unwrap on purpose: a failed setup
// is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod accept;
mod cluster;
mod common;
mod frames;
mod mtls;
mod queue_bound;
mod refusals;
mod routing;
mod stop_sign;
mod transfer;
