//! Invariant 12 with real processes: the member ids a node is started with
//! must be the ones the cluster recorded. An edited `--peer` list is
//! refused, at start-up when the node's own data directory holds the
//! record, and once it learns the record from its peers otherwise; other
//! addresses for a peer alone are only reported (nodes may reach each
//! other through proxies).

use std::collections::BTreeMap;
use std::time::Duration;

use tsoracle_paxos_testkit::process::free_port;

use crate::common::{Layout, ServeChild, cli, founding_three, start_with_metrics, wait_metric};

const RECORDED: &str = "tsoracle_paxos_recorded_members";

/// `args` with member `id`'s `--peer` value replaced by `value`.
fn edit_peer(mut args: Vec<String>, id: u64, value: &str) -> Vec<String> {
    let prefix = format!("{id}=");
    let at = args
        .iter()
        .position(|arg| arg.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no --peer for node {id} in {args:?}"));
    args[at] = value.to_owned();
    args
}

/// The last line node `id` wrote to the log `name`, after it exited
/// (non-zero) within 60 s.
fn refusal(layout: &Layout, node: &mut ServeChild, name: &str) -> String {
    let status = node
        .wait_exit(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("{name} still runs after 60 s"));
    assert!(!status.success(), "{name} exited with {status}");
    let stderr = std::fs::read_to_string(layout.log(name)).unwrap();
    stderr.lines().last().unwrap_or_default().to_owned()
}

/// A node restarted with a peer's address edited and a fourth member added
/// is refused before it starts consensus, naming each difference; with the
/// address edit alone it runs, and says that the address differs.
#[test]
fn a_restart_with_an_edited_peer_list_is_refused_with_every_difference() {
    let layout = Layout::new();
    let cli = cli();
    let start =
        |id: u64, args: Vec<String>, life: u32| start_with_metrics(&cli, &layout, id, args, life);
    let mut nodes = founding_three(&cli, &layout);
    wait_metric(&layout, 3, RECORDED, 3.0);
    nodes.get_mut(&3).unwrap().terminate();

    let moved = format!("127.0.0.1:{}", free_port());
    let recorded_two = format!(
        "2=127.0.0.1:{},127.0.0.1:{}",
        layout.peer[&2], layout.client[&2]
    );
    let given_two = format!("2={moved},127.0.0.1:{}", layout.client[&2]);
    let fourth = format!("4=127.0.0.1:{},127.0.0.1:{}", free_port(), free_port());
    let mut edited = edit_peer(layout.rejoin_args(3), 2, &given_two);
    edited.extend(["--peer".to_owned(), fourth.clone()]);
    let mut node = start(3, edited, 2);
    let line = refusal(&layout, &mut node, "node-3-2");
    for needle in [
        "membership: node 3 was started with a member list that disagrees".to_owned(),
        format!("member {given_two} is given, {recorded_two} is recorded"),
        format!("member {fourth} is given but not recorded"),
        "Start node 3 with the recorded ids".to_owned(),
    ] {
        assert!(line.contains(&needle), "{needle:?} missing from: {line}");
    }

    // The address alone: node 3 runs (it reaches node 1), serves, and
    // warns about node 2's address.
    let moved_only = edit_peer(layout.rejoin_args(3), 2, &given_two);
    nodes.insert(3, start(3, moved_only, 3));
    wait_metric(&layout, 3, RECORDED, 3.0);
    cli.get_ts(&[layout.endpoint(3)], 1);
    let log = std::fs::read_to_string(layout.log("node-3-3")).unwrap();
    assert!(
        log.contains("member addresses differ from the recorded list"),
        "no warning about node 2's address in: {log}"
    );
    for node in nodes.values_mut() {
        node.terminate();
    }
}

/// A founding node whose member ids disagree with the ones its peers
/// recorded first (a stray `--peer` in one node's flags) stops once it
/// learns the record.
#[test]
fn a_founding_node_with_another_list_stops_when_it_learns_the_record() {
    let layout = Layout::new();
    let cli = cli();
    let start =
        |id: u64, args: Vec<String>, life: u32| start_with_metrics(&cli, &layout, id, args, life);
    let mut nodes: BTreeMap<u64, ServeChild> = (1..=2)
        .map(|id| (id, start(id, layout.args(id), 1)))
        .collect();
    cli.get_ts(&[layout.endpoint(1), layout.endpoint(2)], 1);
    wait_metric(&layout, 1, RECORDED, 3.0);

    let stray = format!("4=127.0.0.1:{},127.0.0.1:{}", free_port(), free_port());
    let mut args = layout.args(3);
    args.extend(["--peer".to_owned(), stray.clone()]);
    let mut third = start(3, args, 1);
    let line = refusal(&layout, &mut third, "node-3-1");
    for needle in [
        "node 3 was started with a member list that disagrees".to_owned(),
        format!("member {stray} is given but not recorded"),
    ] {
        assert!(line.contains(&needle), "{needle:?} missing from: {line}");
    }
    for node in nodes.values_mut() {
        node.terminate();
    }
}
