//! The metric series this crate records through the `metrics` facade (a
//! host installs the recorder, or none: then recording costs next to
//! nothing). The names carry the project's prefix so that one dashboard
//! reads every layer; `tsoracle-paxos-metrics` lists them with the rest.

/// Histogram: on the leader, from the round that appended proposals to the
/// round that saw them decided, in seconds.
pub const COMMIT_SECONDS: &str = "tsoracle_paxos_commit_seconds";

/// Histogram: one synced storage write (a round's WAL sync), in seconds.
pub const FSYNC_SECONDS: &str = "tsoracle_paxos_fsync_seconds";
