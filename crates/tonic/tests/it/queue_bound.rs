//! A dead peer costs bounded memory: its queue never grows past capacity and
//! the overflow is dropped and counted. The sink's tasks end on shutdown.

use std::time::Duration;

use tokio::net::TcpListener;
use tsoracle_paxos_tonic::{DropReason, TonicSink};
use tsoracle_paxos_toolkit::MessageSink;

use crate::common::{TestEntry, heartbeat, transport_config, wait_until};

/// Sends two-message batches to `to` for `period`, checking the bound after
/// every send; returns the number of messages sent.
async fn flood(sink: &TonicSink<TestEntry>, to: u64, period: Duration) -> u64 {
    let started = tokio::time::Instant::now();
    let mut sent = 0;
    while started.elapsed() < period {
        for _ in 0..10 {
            sink.send(to, vec![heartbeat(1, to), heartbeat(1, to)]);
            sent += 2;
            assert!(sink.queue_len(to).unwrap() <= sink.queue_capacity());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_peer_keeps_the_queue_bounded() {
    // A port nobody listens on: every connection is refused.
    let dead = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let mut config = transport_config(1);
    config.queue_capacity = 8;
    config.connect_timeout = Duration::from_millis(200);
    let sink = TonicSink::<TestEntry>::spawn(&config, [(2, dead.to_string())], None).unwrap();
    let sent = flood(&sink, 2, Duration::from_millis(500)).await;
    let stats = sink.stats();
    assert!(stats.drops(DropReason::QueueFull) > 0);
    assert!(stats.connect_failures() > 0);
    assert_eq!(stats.connects(), 0);
    assert_eq!(stats.frames_out(), 0);
    // No link ever opened: every message sent is still queued or was
    // counted as dropped.
    let queued = sink.queue_len(2).unwrap() as u64;
    assert_eq!(queued, config.queue_capacity as u64);
    assert_eq!(queued * 2 + stats.drops(DropReason::QueueFull), sent);
    // A batch for a node without a link is dropped and counted.
    sink.send(3, vec![heartbeat(1, 3)]);
    assert_eq!(stats.drops(DropReason::UnknownPeer), 1);

    tokio::time::timeout(Duration::from_secs(5), sink.shutdown())
        .await
        .expect("sink tasks did not stop");
    assert!(sink.is_finished());
    let closed = stats.drops(DropReason::Closed);
    assert_eq!(closed, queued * 2, "queued batches are counted at shutdown");
    sink.send(2, vec![heartbeat(1, 2)]);
    assert_eq!(stats.drops(DropReason::Closed), closed + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_hole_peer_keeps_the_queue_bounded_and_is_detected() {
    // Accepts TCP but never answers: the link opens, then stalls.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = transport_config(1);
    config.queue_capacity = 8;
    config.keepalive = Duration::from_millis(200);
    config.send_timeout = Duration::from_millis(500);
    let sink = TonicSink::<TestEntry>::spawn(
        &config,
        [(3, silent.local_addr().unwrap().to_string())],
        None,
    )
    .unwrap();
    flood(&sink, 3, Duration::from_millis(500)).await;
    let stats = std::sync::Arc::clone(sink.stats());
    assert!(stats.drops(DropReason::QueueFull) > 0);
    // The stalled link is noticed (keep-alive or send deadline) and retried.
    wait_until("the stalled link to fail", Duration::from_secs(5), || {
        stats.links_failed() > 0
    })
    .await;
    tokio::time::timeout(Duration::from_secs(5), sink.shutdown())
        .await
        .expect("sink tasks did not stop");
    assert!(sink.is_finished());
}
