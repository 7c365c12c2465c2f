//! The node's command line under test: the `tsoracle-paxos` binary. The
//! helpers (layout, processes killed on drop, client calls retried) are the
//! test kit's `process` module, shared with the test kit's own tests.

use tsoracle_paxos_testkit::process::CommandLine;
pub(crate) use tsoracle_paxos_testkit::process::{Layout, ServeChild, tree};

/// `tsoracle-paxos <subcommand> ...`.
pub(crate) fn cli() -> CommandLine {
    CommandLine::new(env!("CARGO_BIN_EXE_tsoracle-paxos"), &[])
}
