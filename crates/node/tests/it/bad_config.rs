//! Each bad configuration gives its one-line error, a non-zero exit, and
//! leaves the data directory unchanged.

use std::net::TcpListener;
use std::time::Duration;

use crate::common::{Layout, cli, tree};

/// Runs `serve` with `args`, expects a failure whose stderr contains
/// `needle` on one line, and checks that node 1's data directory is
/// unchanged (only its incarnation file when `live`: a running node is
/// writing the rest).
fn refused(layout: &Layout, args: &[String], needle: &str) {
    refused_with(layout, args, needle, false);
}

fn refused_with(layout: &Layout, args: &[String], needle: &str, live: bool) {
    let snapshot = || {
        let mut t = tree(&layout.data_dir(1));
        if live {
            t.retain(|path, _| path.ends_with("incarnation"));
        }
        t
    };
    let before = snapshot();
    assert!(!before.is_empty(), "node 1 has no data directory yet");
    let out = cli().run(args, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "{needle}: should have failed; stderr: {stderr}"
    );
    let line = stderr
        .lines()
        .find(|l| l.contains("tsoracle-paxos: error:"))
        .unwrap_or_else(|| panic!("{needle}: no error line in {stderr}"));
    assert!(line.contains(needle), "{needle}: {line}");
    assert_eq!(snapshot(), before, "{needle}: the data directory changed");
}

fn with(mut args: Vec<String>, flag: &str, value: &str) -> Vec<String> {
    let i = args.iter().position(|a| a == flag).unwrap();
    args[i + 1] = value.to_owned();
    args
}

#[test]
fn every_bad_configuration_is_refused_clearly_and_changes_nothing() {
    let layout = Layout::new();
    // A node that has run once, so its directory holds real state.
    let mut node = cli().spawn(&layout.args(1), &layout.root().join("n1.log"));
    let mut others: Vec<_> = (2..=3)
        .map(|id| cli().spawn(&layout.args(id), &layout.root().join(format!("n{id}.log"))))
        .collect();
    cli().get_ts(&layout.endpoints(), 1);

    // Locked: node 1 is running on this directory (other ports).
    let locked = with(
        with(layout.args(1), "--client-listen", "127.0.0.1:0"),
        "--peer-listen",
        "127.0.0.1:0",
    );
    refused_with(&layout, &locked, "in use", true);
    node.terminate();
    for other in &mut others {
        other.terminate();
    }

    // Port in use.
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    refused(
        &layout,
        &with(layout.args(1), "--client-listen", &addr),
        "already in use",
    );
    drop(busy);

    // Another node's or another cluster's directory.
    refused(
        &layout,
        &with(
            layout.args(2),
            "--data-dir",
            &layout.data_dir(1).display().to_string(),
        ),
        "data directory",
    );
    refused(
        &layout,
        &with(layout.args(1), "--cluster-id", "other"),
        "data directory",
    );

    // Malformed peer list, own id missing.
    let mut malformed = layout.args(1);
    let last = malformed.len() - 1;
    malformed[last] = "3=no-port".to_owned();
    refused(&layout, &malformed, "malformed --peer");
    refused(
        &layout,
        &with(layout.args(1), "--node-id", "4"),
        "not in the peer list",
    );

    // A peer port other machines can reach, without mutual TLS and without
    // the explicit opt-out (invariant 13).
    refused(
        &layout,
        &with(layout.args(1), "--peer-listen", "0.0.0.0:0"),
        "--insecure-peer-plaintext",
    );

    // Unreadable TLS files.
    let mut tls = layout.args(1);
    for flag in ["--tls-ca", "--tls-cert", "--tls-key"] {
        tls.push(flag.to_owned());
        tls.push("/nonexistent/file.pem".to_owned());
    }
    refused(&layout, &tls, "TLS");
}
