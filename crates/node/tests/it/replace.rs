//! Issue 15 with real processes: replacing a follower, then the leader, of
//! a three-node cluster under a continuous load of timestamps and dense
//! blocks, through `tsoracle-paxos member replace`. New members start with
//! empty directories in `join` mode; removed members exit 0 by themselves.
//! Every answer is checked: timestamps rise per client, no dense block is
//! handed out twice, and the load never stops for long.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tsoracle_client::ClientBuilder;
use tsoracle_paxos_testkit::process::free_port;

use crate::common::{Layout, ServeChild, cli, founding_three};

/// The longest the load may go without an answer: far above one failover
/// (about 0.5 s here), far below a stall.
const STALL: Duration = Duration::from_secs(10);

/// Bounds of the load loop.
const MAX_CALLS: u64 = 200_000;
const MAX_LOAD: Duration = Duration::from_secs(180);

#[derive(Default)]
struct Seen {
    timestamps: u64,
    blocks: Vec<(u64, u64)>,
    failures: u64,
    longest_gap: Duration,
}

/// One client calling until `stop`: timestamps and 4-long blocks of one
/// key, alternately; checks that timestamps rise.
async fn load(endpoints: Vec<String>, stop: Arc<AtomicBool>, seen: Arc<Mutex<Seen>>) {
    let client = loop {
        match ClientBuilder::endpoints(endpoints.clone()).build().await {
            Ok(client) => break client,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let started = Instant::now();
    let mut last_answer = Instant::now();
    let mut last_ts = 0u64;
    let mut calls = 0u64;
    while !stop.load(Ordering::SeqCst) && calls < MAX_CALLS && started.elapsed() < MAX_LOAD {
        calls += 1;
        let answered = if calls.is_multiple_of(2) {
            match tokio::time::timeout(Duration::from_secs(5), client.get_ts()).await {
                Ok(Ok(ts)) => {
                    assert!(ts.0 > last_ts, "timestamp {} after {last_ts}", ts.0);
                    last_ts = ts.0;
                    seen.lock().unwrap().timestamps += 1;
                    true
                }
                _ => false,
            }
        } else {
            match tokio::time::timeout(Duration::from_secs(5), client.get_seq("replace", 4)).await {
                Ok(Ok(block)) => {
                    seen.lock()
                        .unwrap()
                        .blocks
                        .push((block.start, block.count.into()));
                    true
                }
                _ => false,
            }
        };
        if answered {
            let mut seen = seen.lock().unwrap();
            seen.longest_gap = seen.longest_gap.max(last_answer.elapsed());
            last_answer = Instant::now();
        } else {
            seen.lock().unwrap().failures += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The leader `member list` reports, asked of `node`.
fn leader(layout: &Layout, asked: &[u64]) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = cli().run(&admin_args(layout, "list", asked), Duration::from_secs(20));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if let Some(line) = text.lines().find(|line| line.ends_with("leader")) {
            return line.split_whitespace().next().unwrap().parse().unwrap();
        }
        assert!(Instant::now() < deadline, "no leader listed: {text}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn admin_args(layout: &Layout, command: &str, asked: &[u64]) -> Vec<String> {
    let mut args = vec![
        "member".to_owned(),
        command.to_owned(),
        "--cluster-id".to_owned(),
        "it".to_owned(),
    ];
    for id in asked {
        args.push("--node".to_owned());
        args.push(format!("{id}=127.0.0.1:{}", layout.peer[id]));
    }
    args
}

/// Starts node `id` (added to `layout`) empty, in join mode, asking the
/// members of `layout`.
fn join(layout: &mut Layout, id: u64) -> ServeChild {
    layout.peer.insert(id, free_port());
    layout.client.insert(id, free_port());
    let mut args = layout.rejoin_args(id);
    args.extend(["--initial-cluster-state".to_owned(), "join".to_owned()]);
    cli().spawn(&args, &layout.log(&format!("node-{id}")))
}

/// `member replace --old old --id new`, asked of `asked`.
fn replace(layout: &Layout, asked: &[u64], old: u64, new: u64) {
    let mut args = admin_args(layout, "replace", asked);
    args.extend([
        "--old".to_owned(),
        old.to_string(),
        "--id".to_owned(),
        new.to_string(),
        "--peer-address".to_owned(),
        format!("127.0.0.1:{}", layout.peer[&new]),
        "--client-address".to_owned(),
        format!("127.0.0.1:{}", layout.client[&new]),
        "--wait-secs".to_owned(),
        "60".to_owned(),
    ]);
    let out = cli().run(&args, Duration::from_secs(150));
    assert!(
        out.status.success(),
        "replace {old} by {new}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("replaced node {old} by node {new}")),
        "{text}"
    );
}

#[test]
fn a_follower_then_the_leader_are_replaced_under_load() {
    let mut layout = Layout::new();
    let mut nodes: BTreeMap<u64, ServeChild> = founding_three(&cli(), &layout);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let endpoints = layout.endpoints();
    let clients: Vec<_> = (0..4)
        .map(|_| {
            runtime.spawn(load(
                endpoints.clone(),
                Arc::clone(&stop),
                Arc::clone(&seen),
            ))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));

    // A follower first.
    let first_leader = leader(&layout, &[1, 2, 3]);
    let follower = (1..=3).find(|&id| id != first_leader).unwrap();
    nodes.insert(4, join(&mut layout, 4));
    replace(&layout, &[first_leader], follower, 4);
    let removed = nodes.get_mut(&follower).unwrap();
    let status = removed
        .wait_exit(Duration::from_secs(30))
        .expect("the removed follower still runs after 30 s");
    assert!(
        status.success(),
        "the removed follower exited with {status}"
    );

    // Then whichever node leads now.
    let members: Vec<u64> = [1, 2, 3, 4]
        .into_iter()
        .filter(|&id| id != follower)
        .collect();
    let leader_now = leader(&layout, &members);
    nodes.insert(5, join(&mut layout, 5));
    let others: Vec<u64> = members
        .iter()
        .copied()
        .filter(|&id| id != leader_now)
        .collect();
    replace(&layout, &others, leader_now, 5);
    let removed = nodes.get_mut(&leader_now).unwrap();
    let status = removed
        .wait_exit(Duration::from_secs(30))
        .expect("the removed leader still runs after 30 s");
    assert!(status.success(), "the removed leader exited with {status}");
    std::thread::sleep(Duration::from_secs(1));

    stop.store(true, Ordering::SeqCst);
    for client in clients {
        runtime.block_on(client).unwrap();
    }
    let seen = seen.lock().unwrap();
    let mut blocks = seen.blocks.clone();
    blocks.sort_unstable();
    for pair in blocks.windows(2) {
        assert!(
            pair[0].0 + pair[0].1 <= pair[1].0,
            "dense blocks overlap: {:?} and {:?}",
            pair[0],
            pair[1]
        );
    }
    eprintln!(
        "replace under load: {} timestamps, {} blocks, {} failed calls, longest gap {:?}",
        seen.timestamps,
        blocks.len(),
        seen.failures,
        seen.longest_gap
    );
    assert!(
        seen.timestamps > 100 && blocks.len() > 100,
        "too little load"
    );
    assert!(
        seen.longest_gap < STALL,
        "the load stalled for {:?}",
        seen.longest_gap
    );

    // The cluster now is the survivor of the first three and nodes 4 and 5.
    let survivors: Vec<u64> = members
        .into_iter()
        .filter(|&id| id != leader_now)
        .chain([5])
        .collect();
    let out = cli().run(
        &admin_args(&layout, "list", &survivors),
        Duration::from_secs(20),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    // Two replacements are four changes: configuration 1 + 4.
    assert!(text.starts_with("configuration 5"), "{text}");
    for id in &survivors {
        assert!(
            text.lines()
                .any(|line| line.split_whitespace().next() == Some(&id.to_string())),
            "node {id} not listed: {text}"
        );
    }
    let endpoints: Vec<String> = survivors
        .iter()
        .map(|id| format!("127.0.0.1:{}", layout.client[id]))
        .collect();
    let after = cli().get_ts(&endpoints, 1);
    assert_eq!(after.len(), 1);

    // A founding survivor's metrics page drops the removed peers' series
    // (the gauges nobody sets any more leave it) and shows the new ones.
    let founder = survivors.iter().copied().find(|&id| id <= 3).unwrap();
    let page_peers = || -> BTreeSet<String> {
        tsoracle_paxos_testkit::process::metrics(layout.metrics[&founder])
            .unwrap_or_default()
            .keys()
            .filter_map(|key| key.split_once("{peer=\"").map(|(_, rest)| rest))
            .filter_map(|rest| rest.split_once('"').map(|(peer, _)| peer.to_owned()))
            .collect()
    };
    let expected: BTreeSet<String> = survivors
        .iter()
        .filter(|&&id| id != founder)
        .map(u64::to_string)
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while page_peers() != expected {
        assert!(
            Instant::now() < deadline,
            "node {founder}'s page names peers {:?}, not {expected:?}",
            page_peers()
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    // Restarts boot the recorded configuration: every survivor stopped
    // (SIGTERM) and started again with the flags it had (a founding node's
    // still name the founding list, the joiner's still say `join`), and
    // the cluster serves above everything handed out before.
    for id in &survivors {
        nodes.get_mut(id).unwrap().terminate();
    }
    for &id in &survivors {
        let mut args = layout.rejoin_args(id);
        if id > 3 {
            args.extend(["--initial-cluster-state".to_owned(), "join".to_owned()]);
        }
        nodes.insert(
            id,
            cli().spawn(&args, &layout.log(&format!("node-{id}-again"))),
        );
    }
    let restarted = cli().get_ts(&endpoints, 1);
    assert!(
        restarted[0] > after[0],
        "{} after {}",
        restarted[0],
        after[0]
    );
    let out = cli().run(
        &admin_args(&layout, "list", &survivors),
        Duration::from_secs(20),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("configuration 5"),
        "after the restarts: {text}"
    );
}

/// A node started in join mode that no change admitted waits, writes
/// nothing to its data directory, and stops cleanly on SIGTERM.
#[test]
fn a_joiner_not_admitted_waits_writes_nothing_and_stops_on_sigterm() {
    let mut layout = Layout::new();
    let mut nodes: BTreeMap<u64, ServeChild> = founding_three(&cli(), &layout);
    let mut joiner = join(&mut layout, 4);
    // Long enough for a few asks (one a second) and the first report.
    let deadline = Instant::now() + Duration::from_secs(30);
    let log = layout.log("node-4");
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("waiting for a membership change that adds this node")
    {
        assert!(
            Instant::now() < deadline,
            "no waiting report: {}",
            joiner.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let data = layout.data_dir(4);
    assert!(
        !data.exists() || std::fs::read_dir(&data).unwrap().next().is_none(),
        "a joiner wrote to its data directory before a change admitted it"
    );
    joiner.terminate();
    // The cluster is untouched: still configuration 1.
    let out = cli().run(&admin_args(&layout, "list", &[1]), Duration::from_secs(20));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("configuration 1"), "{text}");
    for node in nodes.values_mut() {
        node.terminate();
    }
}
