//! Disaster recovery: `export` from a running cluster, then a new cluster
//! started above it with `serve --restore-from` hands out no timestamp and
//! no dense block of the old one again.

use std::path::Path;
use std::time::Duration;

use crate::common::{Layout, ServeChild, cli};

/// Bits of a timestamp below its physical milliseconds.
const LOGICAL_BITS: u32 = 18;

fn start(layout: &Layout, extra: &[String]) -> Vec<ServeChild> {
    (1..=3)
        .map(|id| {
            let mut args = layout.args(id);
            args.extend_from_slice(extra);
            cli().spawn(&args, &layout.log(&format!("node-{id}")))
        })
        .collect()
}

/// `export` of the cluster `layout` runs, asking node `node`, into `file`.
fn export(layout: &Layout, file: &Path, node: u64, extra: &[&str]) -> std::process::Output {
    let mut args: Vec<String> = ["export", "--cluster-id", "it", "--out"]
        .map(str::to_owned)
        .to_vec();
    args.push(file.display().to_string());
    args.extend([
        "--node".to_owned(),
        format!("{node}=127.0.0.1:{}", layout.peer[&node]),
    ]);
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    cli().run(&args, Duration::from_secs(60))
}

#[test]
fn a_cluster_restored_from_an_export_repeats_no_timestamp_and_no_block() {
    let old = Layout::new();
    // The old cluster persists its timestamp window a minute ahead: its
    // high-water runs far above the clock, so a new cluster that did not
    // start above it would hand out timestamps below the old ones' bound.
    let mut nodes = start(&old, &["--window-ahead-ms".to_owned(), "60000".to_owned()]);
    let before = cli().get_ts(&old.endpoints(), 20);
    let mut blocks = Vec::new();
    for _ in 0..3 {
        blocks.push(cli().seq(&old.endpoints(), "orders", 10));
    }
    let other = cli().seq(&old.endpoints(), "invoices", 5);
    let file = old.root().join("export.json");
    let export = |extra: &[&str]| export(&old, &file, 2, extra);
    let out = export(&[]);
    assert!(out.status.success(), "export failed: {out:?}");
    // An existing file is kept unless told.
    let again = export(&[]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    let document: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(document["format"], "tsoracle-paxos-export");
    assert_eq!(document["version"], 1);
    assert_eq!(document["dense"]["orders"], 30, "{document}");
    assert_eq!(document["dense"]["invoices"], other + 5, "{document}");
    let high_water = document["high_water"].as_u64().unwrap();
    let old_max = *before.iter().max().unwrap();
    assert!(high_water >= old_max >> LOGICAL_BITS, "{document}");
    for node in &mut nodes {
        node.terminate();
    }

    // The new cluster: every founding node restores the export first.
    let new = Layout::new();
    let mut nodes = start(
        &new,
        &["--restore-from".to_owned(), file.display().to_string()],
    );
    let after = cli().get_ts(&new.endpoints(), 20);
    assert!(
        after.iter().all(|ts| ts >> LOGICAL_BITS > high_water),
        "a timestamp at or below the old cluster's high-water {high_water}: {:?}",
        after
            .iter()
            .map(|ts| ts >> LOGICAL_BITS)
            .collect::<Vec<_>>()
    );
    assert!(after[0] > old_max);
    let next = cli().seq(&new.endpoints(), "orders", 10);
    assert!(
        next >= 30,
        "orders block at {next} after the old cluster's 0..30"
    );
    let next = cli().seq(&new.endpoints(), "invoices", 5);
    assert!(
        next >= other + 5,
        "invoices block at {next} after {other}+5"
    );
    // A restart with the flag still set finds the export in its state and
    // serves again, adding nothing.
    nodes[0].terminate();
    let mut args = new.rejoin_args(1);
    args.extend(["--restore-from".to_owned(), file.display().to_string()]);
    nodes[0] = cli().spawn(&args, &new.log("node-1-again"));
    let _ = cli().get_ts(&[new.endpoint(1)], 1);
    let again = cli().seq(&new.endpoints(), "invoices", 5);
    assert_eq!(again, next + 5, "the restart raised the counter again");
    for node in &mut nodes {
        node.terminate();
    }
}

/// With its quorum lost, the cluster cannot export at a linearized point;
/// `export --local` takes the survivor's own state with margins, marked
/// not linearized, and a new cluster restored from it starts above
/// everything the old one handed out.
#[test]
fn a_survivor_of_a_lost_quorum_exports_its_own_state_with_margins() {
    let old = Layout::new();
    let mut nodes = start(&old, &[]);
    let before = cli().get_ts(&old.endpoints(), 10);
    let block = cli().seq(&old.endpoints(), "orders", 10);
    // Two of three gone for good.
    for mut node in nodes.drain(1..) {
        node.kill().unwrap();
        node.wait().unwrap();
    }
    let file = old.root().join("survivor.json");
    let export = |extra: &[&str]| export(&old, &file, 1, &[&["--wait-secs", "3"], extra].concat());
    let refused = export(&[]);
    assert!(
        !refused.status.success(),
        "a linearized export without a quorum"
    );
    let out = export(&["--local", "--add-ms", "60000", "--add-dense", "1000"]);
    assert!(out.status.success(), "local export failed: {out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("NOT linearized"));
    let document: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(document["linearized"], false, "{document}");
    assert_eq!(document["added_dense"], 1000, "{document}");
    let high_water = document["high_water"].as_u64().unwrap();
    nodes.remove(0).terminate();

    let new = Layout::new();
    let mut nodes = start(
        &new,
        &["--restore-from".to_owned(), file.display().to_string()],
    );
    let after = cli().get_ts(&new.endpoints(), 5);
    assert!(after.iter().all(|ts| ts >> LOGICAL_BITS > high_water));
    assert!(after[0] > *before.iter().max().unwrap());
    let next = cli().seq(&new.endpoints(), "orders", 10);
    assert!(
        next >= block + 10 + 1000,
        "orders at {next} after {block}+10"
    );
    for node in &mut nodes {
        node.terminate();
    }
}
