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

/// Starts node `id` with `args` and its metrics endpoint on, logging to
/// `node-<id>-<life>`.
pub(crate) fn start_with_metrics(
    cli: &CommandLine,
    layout: &Layout,
    id: u64,
    args: Vec<String>,
    life: u32,
) -> ServeChild {
    cli.spawn(
        &with_metrics(layout, args, id),
        &layout.log(&format!("node-{id}-{life}")),
    )
}

/// Three founding nodes with their metrics endpoints on, each serving once
/// a first timestamp was handed out.
pub(crate) fn founding_three(
    cli: &CommandLine,
    layout: &Layout,
) -> std::collections::BTreeMap<u64, ServeChild> {
    let nodes = (1..=3)
        .map(|id| (id, start_with_metrics(cli, layout, id, layout.args(id), 1)))
        .collect();
    cli.get_ts(&layout.endpoints(), 1);
    nodes
}
