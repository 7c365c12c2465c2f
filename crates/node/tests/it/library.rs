//! The node library in one process: three `Node`s started on listeners
//! bound to port 0 serve the real client; `failure` stays pending while a
//! node is healthy and reports a stopped consensus thread; `shutdown` stops
//! every node. Listeners given to `start_on` are checked as bound.

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tsoracle_client::{Client, ClientBuilder};
use tsoracle_paxos::{InitialClusterState, Listeners, Node, NodeConfig, member};

async fn start_three(dir: &Path) -> Vec<Node> {
    let mut bound = Vec::new();
    let mut members = Vec::new();
    for id in 1..=3u64 {
        let client = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = TcpListener::bind("127.0.0.1:0").await.unwrap();
        members.push(
            member(
                id,
                &peer.local_addr().unwrap().to_string(),
                &client.local_addr().unwrap().to_string(),
            )
            .unwrap(),
        );
        bound.push((id, Listeners { client, peer }));
    }
    let mut nodes = Vec::new();
    for (id, listeners) in bound {
        let mut config = NodeConfig::new(
            id,
            "library",
            dir.join(format!("node-{id}")),
            listeners.client.local_addr().unwrap(),
            listeners.peer.local_addr().unwrap(),
            members.clone(),
        );
        config.initial_cluster_state = InitialClusterState::New;
        nodes.push(Node::start_on(config, listeners).await.unwrap());
    }
    nodes
}

/// A timestamp, retried while the cluster elects a leader (bounded).
async fn timestamp(client: &Client) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match client.get_ts().await {
            Ok(ts) => return ts.0,
            Err(err) => assert!(Instant::now() < deadline, "no timestamp: {err}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_started_by_the_library_serve_report_failure_and_shut_down() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_three(dir.path()).await;
    for (id, node) in (1u64..).zip(&nodes) {
        assert_eq!(node.incarnation(), 1, "node {id}");
        assert!(dir.path().join(format!("node-{id}/incarnation")).exists());
    }
    let endpoints: Vec<String> = nodes.iter().map(|n| n.client_addr().to_string()).collect();
    let client = ClientBuilder::endpoints(endpoints).build().await.unwrap();
    let first = timestamp(&client).await;
    let second = timestamp(&client).await;
    assert!(first < second, "{first} then {second}");
    assert!(nodes.iter().any(|n| n.status().borrow().leader.is_some()));

    // A healthy node has no failure to report (and the dropped future
    // loses nothing).
    let healthy = tokio::time::timeout(Duration::from_millis(300), nodes[0].failure()).await;
    assert!(healthy.is_err(), "a healthy node reported {healthy:?}");

    // A stopped consensus thread is one.
    nodes[2].host().shutdown().await.unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(10), nodes[2].failure())
        .await
        .expect("no failure reported for a stopped consensus thread")
        .to_string();
    assert!(reason.contains("consensus"), "{reason}");

    // Two nodes still serve, above what was served before.
    let third = timestamp(&client).await;
    assert!(third > second, "{third} after {second}");
    for node in nodes {
        node.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn a_reachable_plaintext_peer_listener_is_refused_whatever_the_config_says() {
    let dir = tempfile::tempdir().unwrap();
    let client = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer = TcpListener::bind("0.0.0.0:0").await.unwrap();
    let loopback = |port| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let members = vec![
        member(1, "127.0.0.1:1", "127.0.0.1:2").unwrap(),
        member(2, "127.0.0.1:3", "127.0.0.1:4").unwrap(),
    ];
    // The configuration claims loopback; the peer listener is not.
    let config = NodeConfig::new(
        1,
        "library",
        dir.path().join("node-1"),
        loopback(2),
        loopback(1),
        members,
    );
    let err = Node::start_on(config, Listeners { client, peer })
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a loopback address"), "{err}");
    assert!(
        !dir.path().join("node-1").exists(),
        "a refused start wrote the data directory"
    );
}
