//! Issue 16 with real processes: a leader stopped by SIGTERM hands its
//! leadership over before it exits, and `member move-leader` moves it on
//! request; a client keeps getting rising timestamps throughout, and the
//! restarted old leader does not take the lead back by itself. A leader
//! stopped while a follower is frozen (SIGSTOP) still exits 0 in time, and
//! nothing it handed out comes again once the follower continues.

use std::time::{Duration, Instant};

use crate::common::{Layout, cli, founding_three, signal};

fn member(layout: &Layout, command: &str, extra: &[&str]) -> std::process::Output {
    let mut args: Vec<String> = ["member", command, "--cluster-id", "it", "--wait-secs", "30"]
        .map(str::to_owned)
        .to_vec();
    for id in 1..=3 {
        args.extend([
            "--node".to_owned(),
            format!("{id}=127.0.0.1:{}", layout.peer[&id]),
        ]);
    }
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    cli().run(&args, Duration::from_secs(60))
}

/// The leader `member list` names, once it names one (60 s at most).
fn leader(layout: &Layout) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = member(layout, "list", &[]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let found = text.lines().find_map(|line| {
            let mut words = line.split_whitespace();
            let id = words.next()?.parse::<u64>().ok()?;
            (words.last() == Some("leader")).then_some(id)
        });
        if let Some(id) = found {
            return id;
        }
        assert!(Instant::now() < deadline, "no leader listed: {out:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn log_of(layout: &Layout, id: u64, life: u32) -> String {
    std::fs::read_to_string(layout.log(&format!("node-{id}-{life}"))).unwrap_or_default()
}

#[test]
fn a_leader_hands_over_on_sigterm_and_on_request() {
    let layout = Layout::new();
    let mut nodes = founding_three(&cli(), &layout);
    let first = cli().get_ts(&layout.endpoints(), 5);
    let old = leader(&layout);

    // SIGTERM of the leader: it hands over, then exits 0.
    nodes.remove(&old).unwrap().terminate();
    let said = log_of(&layout, old, 1);
    assert!(
        said.contains("leadership handed over before stopping"),
        "node {old} did not hand over:\n{said}"
    );
    let successor = leader(&layout);
    assert_ne!(successor, old);
    let during = cli().get_ts(&layout.endpoints(), 5);
    assert!(during[0] > *first.iter().max().unwrap());

    // The old leader comes back as a follower; then the operator moves the
    // lead to it.
    nodes.insert(
        old,
        cli().spawn(
            &layout.rejoin_args(old),
            &layout.log(&format!("node-{old}-2")),
        ),
    );
    let _ = cli().get_ts(&layout.endpoints(), 1);
    assert_eq!(leader(&layout), successor, "a restarted node took the lead");
    let out = member(&layout, "move-leader", &["--to", &old.to_string()]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "move-leader failed: {out:?}");
    assert!(text.contains(&format!("node {old} leads")), "{text}");
    assert_eq!(leader(&layout), old);
    let after = cli().get_ts(&layout.endpoints(), 5);
    assert!(after[0] > *during.iter().max().unwrap());

    // Moving it to a node that is not a member is refused.
    let out = member(&layout, "move-leader", &["--to", "9"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not another member"),
        "{out:?}"
    );
    for node in nodes.values_mut() {
        node.terminate();
    }
}

/// A planned stop of the leader while a follower is frozen (SIGSTOP): the
/// leader still exits 0 within its grace (a frozen follower grants nothing,
/// so the hand-over goes to the other one, which cannot form a majority on
/// its own once the leader is gone), and once the frozen follower continues
/// the cluster serves again above everything it handed out before: no
/// timestamp and no dense block comes twice.
#[test]
fn a_leader_stopped_while_a_follower_is_frozen_exits_cleanly_and_nothing_repeats() {
    let layout = Layout::new();
    let mut nodes = founding_three(&cli(), &layout);
    let before = cli().get_ts(&layout.endpoints(), 5);
    let block = cli().seq(&layout.endpoints(), "orders", 10);
    let old = leader(&layout);
    let frozen = (1..=3).find(|&id| id != old).unwrap();
    signal(&nodes[&frozen], "STOP");

    let stopping = Instant::now();
    // Asserts exit 0 (within 30 s).
    nodes.remove(&old).unwrap().terminate();
    let took = stopping.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "the leader took {took:?} to stop beside a frozen follower"
    );

    signal(&nodes[&frozen], "CONT");
    let after = cli().get_ts(&layout.endpoints(), 5);
    assert!(
        after[0] > *before.iter().max().unwrap(),
        "{after:?} after {before:?}"
    );
    let next = cli().seq(&layout.endpoints(), "orders", 10);
    assert!(
        next >= block + 10,
        "block {next} after block {block} (10 each)"
    );

    // The old leader comes back and the three serve on.
    nodes.insert(
        old,
        cli().spawn(
            &layout.rejoin_args(old),
            &layout.log(&format!("node-{old}-2")),
        ),
    );
    let last = cli().get_ts(&layout.endpoints(), 5);
    assert!(last[0] > *after.iter().max().unwrap());
    // The restarted node answers through its own port before it is stopped
    // again: a SIGTERM during its start-up (CI saw one right after its
    // storage opened) killed it by the signal instead of a clean exit.
    let _ = cli().get_ts(&[layout.endpoint(old)], 1);
    for node in nodes.values_mut() {
        node.terminate();
    }
}
