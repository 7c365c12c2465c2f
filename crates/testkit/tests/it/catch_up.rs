//! A follower that missed a state larger than one peer frame catches up
//! from the leader's snapshot, sent as a spooled transfer in chunks, with
//! real processes, RocksDB and tonic links.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tsoracle_paxos_metrics::{CHUNKED_OUT, COMPACTED, DECIDED, HIGH_WATER, TRANSFERS_IN};
use tsoracle_paxos_testkit::process::metrics;

use crate::common::{Layout, ServeChild, cli, kit};

/// 64 KiB frames and a snapshot every 256 decided entries: 20,000 keys
/// make a snapshot of about 200 KB, so the catch-up is a transfer of a few
/// chunks, and the log is compacted past the stopped follower.
fn args(layout: &Layout, mut args: Vec<String>, id: u64) -> Vec<String> {
    args.extend(
        [
            "--peer-frame-kib",
            "64",
            "--snapshot-every",
            "256",
            "--metrics-listen",
            &format!("127.0.0.1:{}", layout.metrics[&id]),
        ]
        .map(str::to_owned),
    );
    args
}

fn read(layout: &Layout, id: u64, name: &str) -> Option<f64> {
    metrics(layout.metrics[&id]).and_then(|page| page.get(name).copied())
}

#[test]
fn a_follower_behind_a_state_larger_than_a_frame_catches_up_from_a_transfer() {
    let layout = Layout::new();
    let start = |id: u64, base: Vec<String>, life: u32| -> ServeChild {
        cli().spawn(
            &args(&layout, base, id),
            &layout.log(&format!("node-{id}-{life}")),
        )
    };
    let mut nodes: BTreeMap<u64, ServeChild> = (1..=3)
        .map(|id| (id, start(id, layout.args(id), 1)))
        .collect();
    cli().get_ts(&layout.endpoints(), 1);

    // Node 3 stops; nodes 1 and 2 write 20,000 keys, then bump existing
    // ones until the log is compacted well past where node 3 stopped.
    nodes.get_mut(&3).unwrap().terminate();
    let one_and_two = [layout.endpoint(1), layout.endpoint(2)];
    let fill = |keys: u64, calls: u64| {
        let mut fill: Vec<String> = ["bench", "--op", "fill-keys", "--clients", "4"]
            .map(str::to_owned)
            .to_vec();
        fill.extend([
            "--keys".to_owned(),
            keys.to_string(),
            "--max-ops".to_owned(),
            calls.to_string(),
            "--duration".to_owned(),
            "120".to_owned(),
        ]);
        for endpoint in &one_and_two {
            fill.extend(["--endpoint".to_owned(), endpoint.clone()]);
        }
        let out = kit().run(&fill, Duration::from_secs(180));
        assert!(
            out.status.success(),
            "fill failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    fill(20_000, 1200);
    // A snapshot follows at least 256 decided entries after the last one,
    // concurrent calls may share an entry, and the gauges are sampled
    // every 250 ms: so the calls above do not always compact past 1000.
    // Bump one key (the smallest entries) until they do, a bounded number
    // of times.
    let max = |name: &str| {
        [1, 2]
            .iter()
            .filter_map(|&id| read(&layout, id, name))
            .fold(0.0, f64::max)
    };
    let mut bumps = 0;
    let compacted = loop {
        let settle = Instant::now() + Duration::from_secs(1);
        while max(COMPACTED) <= 1000.0 && Instant::now() < settle {
            std::thread::sleep(Duration::from_millis(50));
        }
        let compacted = max(COMPACTED);
        if compacted > 1000.0 || bumps == 8 {
            break compacted;
        }
        fill(1, 200);
        bumps += 1;
    };
    assert!(
        compacted > 1000.0,
        "the log was compacted only to {compacted} (decided {}) after {bumps} rounds of bumps",
        max(DECIDED)
    );
    let before = cli().seq(&one_and_two, "k0000007", 1);
    let leader_decided = max(DECIDED);
    let chunked_before: f64 = [1, 2]
        .iter()
        .filter_map(|&id| read(&layout, id, CHUNKED_OUT))
        .sum();

    // Node 3 comes back and reaches the decided index of the leader.
    nodes.insert(3, start(3, layout.rejoin_args(3), 2));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let decided = read(&layout, 3, DECIDED);
        if decided.is_some_and(|d| d >= leader_decided) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 3 decided {decided:?} of {leader_decided} after 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let transfers = read(&layout, 3, TRANSFERS_IN).unwrap_or(0.0);
    assert!(transfers >= 1.0, "node 3 received {transfers} transfers");
    // The gauges are sampled every 250 ms: the leader's count may lag.
    let chunked = || -> f64 {
        [1, 2]
            .iter()
            .filter_map(|&id| read(&layout, id, CHUNKED_OUT))
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while chunked() <= chunked_before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        chunked() > chunked_before,
        "no message went as a transfer ({chunked_before} before, {} after)",
        chunked()
    );
    // The follower's state is the leader's: the high-water it installed is
    // the one nodes 1 and 2 hold (nothing advanced it since the fill).
    let high_water = |id| read(&layout, id, HIGH_WATER).unwrap_or(-1.0);
    assert!(
        high_water(3) >= high_water(1).min(high_water(2)) && high_water(3) > 0.0,
        "high-water {} on node 3, {} and {} on nodes 1 and 2",
        high_water(3),
        high_water(1),
        high_water(2)
    );

    // Nodes 2 and 3 serve on their own: node 3 takes part in every
    // decision from here on, above the blocks handed out before.
    nodes.get_mut(&1).unwrap().terminate();
    let two_and_three = [layout.endpoint(2), layout.endpoint(3)];
    let after = cli().seq(&two_and_three, "k0000007", 1);
    assert!(after > before, "k0000007 went from {before} to {after}");
    for id in [2, 3] {
        nodes.get_mut(&id).unwrap().terminate();
    }
}
