//! `serve` nodes stopped by SIGTERM restart and continue above their old
//! timestamps.

use crate::common::{Layout, ServeChild, cli};

fn start_all(layout: &Layout, round: u32) -> Vec<ServeChild> {
    (1..=3)
        .map(|id| {
            let log = layout.root().join(format!("node-{id}-{round}.log"));
            cli().spawn(&layout.args(id), &log)
        })
        .collect()
}

#[test]
fn nodes_stopped_by_sigterm_restart_above_their_old_timestamps() {
    let layout = Layout::new();
    let mut nodes = start_all(&layout, 1);
    let before = cli().get_ts(&layout.endpoints(), 10);
    assert_eq!(before.len(), 10);
    assert!(before.windows(2).all(|w| w[0] < w[1]));
    for node in &mut nodes {
        node.terminate();
    }
    let mut nodes = start_all(&layout, 2);
    let after = cli().get_ts(&layout.endpoints(), 10);
    let max_before = *before.iter().max().unwrap();
    assert!(after[0] > max_before, "{} <= {max_before}", after[0]);
    for node in &mut nodes {
        node.terminate();
    }
}
