//! Invariant 11 with real processes: a member whose data directory was
//! lost is refused, so the majority it would form with a node that missed
//! the recent decisions never exists, and no dense block is handed out
//! twice.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tsoracle_paxos_testkit::process::{CommandLine, metrics};

use crate::common::{Layout, ServeChild, cli, founding_three, start_with_metrics, wait_metric};

/// The sequence as an operator meets it: blocks decided while node 1 was
/// down, then nodes 2 and 3 stop, node 2's data directory is lost (a failed
/// mount, a replaced disk, a mistake), and nodes 1 and 2 start again with
/// the configuration they always had.
#[test]
fn a_member_with_a_wiped_data_directory_is_refused_and_no_block_is_repeated() {
    let layout = Layout::new();
    let cli = cli();
    let start = |id: u64, args: Vec<String>, life: u32| {
        cli.spawn(&args, &layout.log(&format!("node-{id}-{life}")))
    };
    let mut nodes: BTreeMap<u64, ServeChild> = (1..=3)
        .map(|id| (id, start(id, layout.args(id), 1)))
        .collect();
    // The cluster formed with node 1 in it.
    cli.get_ts(&layout.endpoints(), 1);

    let end = decide_without_node_1_then_lose_node_2(&cli, &layout, &mut nodes);

    // Nodes 1 and 2 start as they always do (no bootstrap flag): node 2
    // refuses to run, writes nothing, and says what happened and what to do.
    nodes.insert(1, start(1, layout.rejoin_args(1), 2));
    let mut wiped = start(2, layout.rejoin_args(2), 2);
    let status = wiped
        .wait_exit(Duration::from_secs(60))
        .expect("node 2 started on an empty data directory");
    assert!(!status.success(), "node 2 exited with {status}");
    let stderr = std::fs::read_to_string(layout.log("node-2-2")).unwrap();
    let line = stderr.lines().last().unwrap_or_default();
    for needle in [
        "holds no state",
        "must not vote again",
        "replace this member",
        "--initial-cluster-state new",
    ] {
        assert!(line.contains(needle), "{needle:?} missing from: {line}");
    }
    assert!(
        !layout.data_dir(2).exists(),
        "the refused start created node 2's data directory"
    );

    // Node 1 alone is no majority: no block, least of all block 0 again.
    let alone = cli.run_within(
        &CommandLine::seq_args(&[layout.endpoint(1)], "k", 100),
        Duration::from_secs(10),
    );
    if let Ok(out) = &alone {
        assert!(
            !out.status.success(),
            "node 1 alone handed out a block: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    // Node 3 (its state intact) back: nodes 1 and 3 serve, above every
    // block handed out before.
    nodes.insert(3, start(3, layout.rejoin_args(3), 2));
    serve_above_every_block(&cli, &layout, &mut nodes, end);
}

/// The same loss, but the operator restarts node 2 with
/// `--initial-cluster-state new` (copied from the founding command): node 2
/// initializes a new directory, with a new instance id, and node 1 (which
/// registered node 2's first directory) refuses every message it sends;
/// node 2 stops with the reason node 1 gave, and no block is repeated.
#[test]
fn a_wiped_member_restarted_as_founding_is_refused_by_its_peers() {
    let layout = Layout::new();
    let cli = cli();
    let start =
        |id: u64, args: Vec<String>, life: u32| start_with_metrics(&cli, &layout, id, args, life);
    let mut nodes = founding_three(&cli, &layout);
    wait_metric(&layout, 1, "tsoracle_paxos_registered_members", 3.0);

    let end = decide_without_node_1_then_lose_node_2(&cli, &layout, &mut nodes);

    nodes.insert(1, start(1, layout.rejoin_args(1), 2));
    let mut wiped = start(2, layout.args(2), 2);
    // Clients keep asking the pair for blocks meanwhile.
    let pair = [layout.endpoint(1), layout.endpoint(2)];
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Ok(out) = cli.run_within(
            &CommandLine::seq_args(&pair, "k", 100),
            Duration::from_secs(3),
        ) {
            assert!(
                !out.status.success(),
                "nodes 1 and 2 handed out a block: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        if let Some(status) = wiped.wait_exit(Duration::from_millis(100)) {
            break status;
        }
        assert!(Instant::now() < deadline, "node 2 still runs after 60 s");
    };
    assert!(!status.success(), "node 2 exited with {status}");
    let stderr = std::fs::read_to_string(layout.log("node-2-2")).unwrap();
    let line = stderr.lines().last().unwrap_or_default();
    for needle in [
        "node 2 presents data directory instance",
        "wiped or replaced",
        "restore its data directory",
        "add it back as a new member",
    ] {
        assert!(line.contains(needle), "{needle:?} missing from: {line}");
    }
    // Sampled every 250 ms.
    let refused = || {
        metrics(layout.metrics[&1]).and_then(|page| {
            page.get("tsoracle_paxos_peer_impostor_refused_total")
                .copied()
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !refused().is_some_and(|n| n > 0.0) {
        assert!(Instant::now() < deadline, "node 1 refused {:?}", refused());
        std::thread::sleep(Duration::from_millis(100));
    }

    // Node 3 back: nodes 1 and 3 serve above every block handed out.
    nodes.insert(3, start(3, layout.rejoin_args(3), 2));
    serve_above_every_block(&cli, &layout, &mut nodes, end);
}

/// Node 1 down while nodes 2 and 3 hand out five blocks of 100 of `k`;
/// then nodes 2 and 3 stop and node 2's data directory is lost. Returns the
/// end of the last block handed out.
fn decide_without_node_1_then_lose_node_2(
    cli: &CommandLine,
    layout: &Layout,
    nodes: &mut BTreeMap<u64, ServeChild>,
) -> u64 {
    nodes.get_mut(&1).unwrap().terminate();
    let two_and_three = [layout.endpoint(2), layout.endpoint(3)];
    let blocks: Vec<u64> = (0..5).map(|_| cli.seq(&two_and_three, "k", 100)).collect();
    // A client retry may skip a block (its first try was decided but the
    // answer lost); the blocks never overlap.
    assert_eq!(blocks[0], 0, "{blocks:?}");
    assert!(
        blocks.windows(2).all(|pair| pair[1] >= pair[0] + 100),
        "overlapping blocks: {blocks:?}"
    );
    for id in [2, 3] {
        nodes.get_mut(&id).unwrap().terminate();
    }
    std::fs::remove_dir_all(layout.data_dir(2)).unwrap();
    blocks[4] + 100
}

/// With node 3 back (its state intact), nodes 1 and 3 hand out the next
/// block above every block handed out before; then both stop.
fn serve_above_every_block(
    cli: &CommandLine,
    layout: &Layout,
    nodes: &mut BTreeMap<u64, ServeChild>,
    handed_out_below: u64,
) {
    let one_and_three = [layout.endpoint(1), layout.endpoint(3)];
    let next = cli.seq(&one_and_three, "k", 100);
    assert!(
        next >= handed_out_below,
        "block {next} handed out again (blocks below {handed_out_below} were)"
    );
    for id in [1, 3] {
        nodes.get_mut(&id).unwrap().terminate();
    }
}
