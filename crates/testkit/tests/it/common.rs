//! The node's command line under test: the one built into the test kit
//! (`tsoracle-paxos-testkit node ...`). The helpers (layout, processes
//! killed on drop, client calls retried) are the test kit's `process`
//! module, shared with the node's tests.

use tsoracle_paxos_testkit::process::CommandLine;
pub(crate) use tsoracle_paxos_testkit::process::{Layout, ServeChild};

/// The test kit's binary: `demo`, `chaos`, `bench`, and `node ...`.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_tsoracle-paxos-testkit");

/// `tsoracle-paxos-testkit node <subcommand> ...`.
pub(crate) fn cli() -> CommandLine {
    CommandLine::new(BIN, &["node"])
}

/// `tsoracle-paxos-testkit <demo|chaos|bench> ...`.
pub(crate) fn kit() -> CommandLine {
    CommandLine::new(BIN, &[])
}
