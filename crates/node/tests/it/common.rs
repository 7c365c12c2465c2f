//! The node's command line under test: the `tsoracle-paxos` binary. The
//! helpers (layout, processes killed on drop, client calls retried) are the
//! test kit's `process` module, shared with the test kit's own tests.

use std::time::{Duration, Instant};

use tsoracle_paxos_testkit::process::{CommandLine, metrics};
pub(crate) use tsoracle_paxos_testkit::process::{Layout, ServeChild, tree};

/// `tsoracle-paxos <subcommand> ...`.
pub(crate) fn cli() -> CommandLine {
    CommandLine::new(env!("CARGO_BIN_EXE_tsoracle-paxos"), &[])
}

/// Node `id`'s arguments with its metrics endpoint on.
pub(crate) fn with_metrics(layout: &Layout, mut args: Vec<String>, id: u64) -> Vec<String> {
    args.extend([
        "--metrics-listen".to_owned(),
        format!("127.0.0.1:{}", layout.metrics[&id]),
    ]);
    args
}

/// Waits (60 s at most) until node `id`'s metric `name` reads `value`.
pub(crate) fn wait_metric(layout: &Layout, id: u64, name: &str, value: f64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let read = metrics(layout.metrics[&id]).and_then(|page| page.get(name).copied());
        if read == Some(value) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {id}: {name} is {read:?} after 60 s, not {value}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
