//! The operator's view of one cluster: `/livez` and `/readyz` on the HTTP
//! port, the gRPC health service on the client port, `status` over the
//! admin service (table and JSON, failing with a member down), and the
//! metrics page's conventions.

use std::time::{Duration, Instant};

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use tsoracle_paxos_testkit::process::http_get;

use crate::common::{Layout, cli, founding_three, signal};

/// `GET path` on `port`: the status code and the body.
fn get(port: u16, path: &str) -> (u16, String) {
    http_get(port, path).unwrap_or_else(|| panic!("nothing answers GET {path} on port {port}"))
}

/// Waits (30 s at most) until `GET path` on `port` answers `code`; the body.
fn wait_for(port: u16, path: &str, code: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (got, body) = get(port, path);
        if got == code {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{path} on port {port} still answers {got} ({body}), not {code}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The gRPC health status of the client port of `port`.
fn grpc_health(port: u16) -> ServingStatus {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = HealthClient::new(channel);
        let reply = client
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        ServingStatus::try_from(reply.status).unwrap()
    })
}

/// Waits (10 s at most) until the client port of `port` reports `status`.
fn wait_health(port: u16, status: ServingStatus) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = grpc_health(port);
        if now == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "gRPC health still {now:?}, not {status:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn status(layout: &Layout, json: bool) -> std::process::Output {
    let mut args = vec![
        "status".to_owned(),
        "--cluster-id".to_owned(),
        "it".to_owned(),
    ];
    // One member is enough: the others come from its member list.
    args.extend([
        "--node".to_owned(),
        format!("1=127.0.0.1:{}", layout.peer[&1]),
    ]);
    if json {
        args.push("--json".to_owned());
    }
    cli().run(&args, Duration::from_secs(60))
}

/// Every node is live and ready once the cluster serves; the leader's
/// readiness (and its gRPC health) flips when it loses its lease because
/// both followers are frozen, while it stays live, and comes back when they
/// continue.
#[test]
fn readiness_follows_the_lease_and_liveness_the_consensus_thread() {
    let layout = Layout::new();
    let nodes = founding_three(&cli(), &layout);
    for id in 1..=3 {
        wait_for(layout.metrics[&id], "/livez", 200);
        wait_for(layout.metrics[&id], "/readyz", 200);
    }
    // Idle for longer than the stall limit (5 s): followers, which propose
    // nothing, are still live (their consensus thread still runs rounds).
    std::thread::sleep(Duration::from_secs(6));
    for id in 1..=3 {
        let (code, body) = get(layout.metrics[&id], "/livez");
        assert_eq!(code, 200, "node {id} idle: {body}");
    }
    let leader = (1..=3)
        .find(|id| get(layout.metrics[id], "/readyz").1.contains("leader"))
        .expect("no node's /readyz says it leads");
    let followers: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    for id in &followers {
        assert!(
            get(layout.metrics[id], "/readyz")
                .1
                .contains("follower of node"),
            "node {id}"
        );
    }
    // The health service follows readiness within a sampling period.
    wait_health(layout.client[&leader], ServingStatus::Serving);

    for id in &followers {
        signal(&nodes[id], "STOP");
    }
    let why = wait_for(layout.metrics[&leader], "/readyz", 503);
    assert!(why.contains("no leader"), "{why}");
    // Its consensus thread still runs: live, not ready.
    assert_eq!(get(layout.metrics[&leader], "/livez").0, 200);
    wait_health(layout.client[&leader], ServingStatus::NotServing);

    for id in &followers {
        signal(&nodes[id], "CONT");
    }
    cli().get_ts(&layout.endpoints(), 1);
    let ready = (1..=3).any(|id| get(layout.metrics[&id], "/readyz").0 == 200);
    assert!(ready, "no node ready after the followers continued");
    for mut node in nodes.into_values() {
        node.terminate();
    }
}

/// `status` names one leader and every member, as a table and as JSON, and
/// exits 0; with a member down it still prints what it can, names the
/// member unreachable and exits non-zero. The metrics page follows
/// Prometheus conventions.
#[test]
fn status_reports_every_member_and_fails_with_one_down() {
    let layout = Layout::new();
    let mut nodes = founding_three(&cli(), &layout);
    cli().get_ts(&layout.endpoints(), 5);
    let deadline = Instant::now() + Duration::from_secs(30);
    let report: serde_json::Value = loop {
        let out = status(&layout, true);
        let report: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        if out.status.success() {
            break report;
        }
        assert!(Instant::now() < deadline, "status never succeeded: {out:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let members = report["members"].as_array().unwrap();
    assert_eq!(members.len(), 3, "{report}");
    let roles: Vec<&str> = members
        .iter()
        .map(|m| m["status"]["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles.iter().filter(|r| **r == "leader").count(),
        1,
        "{roles:?}"
    );
    for member in members {
        let s = &member["status"];
        assert_eq!(s["live"], true, "{member}");
        assert!(s["decided"].as_u64().unwrap() > 0, "{member}");
        assert!(s["applied"].as_u64().unwrap() > 0, "{member}");
        assert_eq!(s["instance"].as_str().unwrap().len(), 32, "{member}");
        assert_eq!(s["peers"].as_array().unwrap().len(), 2, "{member}");
    }
    let table = String::from_utf8_lossy(&status(&layout, false).stdout).into_owned();
    assert_eq!(table.lines().count(), 4, "{table}");

    // Prometheus conventions: counters are counters, latencies histograms
    // with buckets, and the build is named.
    let (_, page) = get(layout.metrics[&1], "/metrics");
    for expected in [
        "# TYPE tsoracle_paxos_peer_messages_out_total counter",
        "# TYPE tsoracle_paxos_fsync_seconds histogram",
        "tsoracle_paxos_fsync_seconds_bucket{le=",
        "tsoracle_paxos_build_info{",
        "tsoracle_paxos_peer_up{peer=",
    ] {
        assert!(page.contains(expected), "no {expected:?} in:\n{page}");
    }
    let leader = members
        .iter()
        .find(|m| m["status"]["role"] == "leader")
        .unwrap()["id"]
        .as_u64()
        .unwrap();
    // Retried a little: a sample (250 ms) may not have run yet.
    let expected = [
        "# TYPE tsoracle_paxos_proposal_seconds histogram",
        "# TYPE tsoracle_paxos_commit_seconds histogram",
        "tsoracle_paxos_peer_round_trip_seconds{peer=",
        // tsoracle-server's own, with buckets too.
        "tsoracle_leader_transition_fence_latency_bucket{le=",
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, page) = get(layout.metrics[&leader], "/metrics");
        let missing: Vec<&str> = expected
            .iter()
            .copied()
            .filter(|line| !page.contains(line))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no {missing:?} on the leader:\n{page}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // A member down: status says so and fails.
    let down = (1..=3).find(|id| *id != 1).unwrap();
    nodes.remove(&down).unwrap().terminate();
    let out = status(&layout, true);
    assert!(
        !out.status.success(),
        "status succeeded with node {down} down"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems = report["problems"].to_string();
    assert!(
        problems.contains(&format!("node {down} is unreachable")),
        "{report}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not healthy"),
        "{out:?}"
    );
    for node in nodes.values_mut() {
        node.terminate();
    }
}

/// A node that is still starting (here: waiting to be admitted, its peers
/// down) answers `/livez` (its process runs) and not `/readyz`, and a
/// SIGHUP meanwhile (a supervisor's reload) does not end it; SIGTERM
/// stops it cleanly.
#[test]
fn a_node_still_starting_is_live_not_ready_and_survives_sighup() {
    let layout = Layout::new();
    let mut args = layout.rejoin_args(1);
    args.extend([
        "--initial-cluster-state".to_owned(),
        "join".to_owned(),
        "--metrics-listen".to_owned(),
        format!("127.0.0.1:{}", layout.metrics[&1]),
    ]);
    let mut node = cli().spawn(&args, &layout.log("joining"));
    let body = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if http_get(layout.metrics[&1], "/livez").is_some() {
                break wait_for(layout.metrics[&1], "/livez", 200);
            }
            assert!(Instant::now() < deadline, "the HTTP port never opened");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    assert!(body.contains("starting"), "{body}");
    let (code, body) = get(layout.metrics[&1], "/readyz");
    assert_eq!(code, 503, "{body}");
    signal(&node, "HUP");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        node.try_wait().unwrap().is_none(),
        "SIGHUP ended a starting node:\n{}",
        node.log_tail()
    );
    assert_eq!(get(layout.metrics[&1], "/livez").0, 200);
    node.terminate();
}

/// SIGTERM right after the storage opened, while the start still runs
/// (a supervisor stopping a node that just started): the node stops
/// cleanly every time, exit 0, instead of dying by the signal's default
/// action before its handler was installed. Repeated, since the window
/// was a few milliseconds wide.
#[test]
fn a_sigterm_during_the_start_stops_the_node_cleanly() {
    for attempt in 0..10 {
        let layout = Layout::new();
        let mut node = cli().spawn(&layout.args(1), &layout.log(&format!("node-1-{attempt}")));
        node.wait_for_log("storage opened", Duration::from_secs(30));
        // Fails the test on any exit but a clean one.
        node.terminate();
    }
}
