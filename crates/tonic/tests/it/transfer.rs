//! A catch-up message far above the frame limit, cut by a broken
//! connection: sent again, it continues after what the receiver holds.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::messages::Message;
use omnipaxos::messages::sequence_paxos::{AcceptSync, PaxosMessage, PaxosMsg};
use omnipaxos::storage::{Entry, Snapshot, SnapshotType};
use omnipaxos::util::{LogEntry, LogSync, NodeId, SequenceNumber};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tsoracle_paxos_tonic::{
    DropReason, PeerService, ServerHandle, TonicSink, TransportStats, serve,
};
use tsoracle_paxos_toolkit::storage::MemoryStorage;
use tsoracle_paxos_toolkit::{DecidedHook, MessageSink, Runner, SyncedWrites};

use crate::common::{NODES, omnipaxos_config, runner_config, transport_config, wait_until};

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Key(String);

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Keys(Vec<String>);

impl Snapshot<Key> for Keys {
    fn create(entries: &[Key]) -> Self {
        Keys(entries.iter().map(|k| k.0.clone()).collect())
    }
    fn merge(&mut self, delta: Self) {
        self.0.extend(delta.0);
    }
    fn use_snapshots() -> bool {
        true
    }
}

impl Entry for Key {
    type Snapshot = Keys;
}

struct Ignore;

impl DecidedHook<Key> for Ignore {
    fn next_idx(&self) -> usize {
        0
    }
    fn on_decided(
        &mut self,
        _: Vec<LogEntry<Key>>,
    ) -> Result<Option<usize>, Box<dyn std::error::Error + Send + Sync>> {
        Ok(None)
    }
}

struct Nowhere;

impl MessageSink<Key> for Nowhere {
    fn send(&self, _: NodeId, _: Vec<Message<Key>>) {}
    fn take_reconnected(&self, _: &mut Vec<NodeId>) {}
}

/// An `AcceptSync` from 1 to 2 with a snapshot of `keys` keys; `session`
/// changes only its head, as a re-sync after a broken link does.
fn sync(keys: usize, session: u64) -> Message<Key> {
    sync_in_round(keys, session, 2)
}

/// [`sync`] in round `n`.
fn sync_in_round(keys: usize, session: u64, n: u32) -> Message<Key> {
    Message::SequencePaxos(PaxosMessage {
        from: 1,
        to: 2,
        msg: PaxosMsg::AcceptSync(AcceptSync {
            n: Ballot::with(1, n, 0, 1),
            seq_num: SequenceNumber {
                session,
                counter: 1,
            },
            decided_idx: 0,
            log_sync: LogSync {
                decided_snapshot: Some(SnapshotType::Complete(Keys(
                    (0..keys).map(|i| format!("key-{i:012}")).collect(),
                ))),
                suffix: Vec::new(),
                sync_idx: 0,
                stopsign: None,
            },
        }),
    })
}

/// A TCP proxy to `target`: breaks its first connection after `cut_after`
/// bytes towards the target, and passes at most `bytes_per_second` towards
/// it.
async fn proxy(
    target: std::net::SocketAddr,
    cut_after: Option<usize>,
    bytes_per_second: Option<usize>,
) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cut_done = Arc::new(AtomicBool::new(false));
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(target).await else {
                continue;
            };
            let cut = cut_after.filter(|_| !cut_done.swap(true, Ordering::SeqCst));
            tokio::spawn(relay(client, server, cut, bytes_per_second));
        }
    });
    addr
}

async fn relay(
    client: TcpStream,
    server: TcpStream,
    cut_after: Option<usize>,
    bytes_per_second: Option<usize>,
) {
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = server.into_split();
    let upstream = async {
        let mut passed = 0usize;
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match client_rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let n = match cut_after {
                Some(limit) if passed + n >= limit => limit - passed,
                _ => n,
            };
            if server_tx.write_all(&buf[..n]).await.is_err() {
                break;
            }
            if let Some(rate) = bytes_per_second {
                tokio::time::sleep(Duration::from_secs_f64(n as f64 / rate as f64)).await;
            }
            passed += n;
            if cut_after == Some(passed) {
                // The connection ends here, in the middle of a chunk.
                break;
            }
        }
        let _ = server_tx.shutdown().await;
    };
    let downstream = async {
        let _ = tokio::io::copy(&mut server_rx, &mut client_tx).await;
        let _ = client_tx.shutdown().await;
    };
    // The receiver ends the connection once it has read the cut stream.
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(upstream, downstream)
    })
    .await;
}

/// 64 KiB frames: a sync of 120,000 keys (about 2 MB) is 36 chunks.
const FRAME: usize = 64 * 1024;
const KEYS: usize = 120_000;

/// Node 2 receiving into a runner (which ignores the syncs: it never
/// promised their round), and node 1's sink towards it through a proxy.
struct Pair {
    runner: Runner<Key>,
    service: PeerService<Key>,
    server: ServerHandle,
    sink: TonicSink<Key>,
}

impl Pair {
    async fn start(cut_after: Option<usize>, bytes_per_second: Option<usize>) -> Self {
        let mut config2 = transport_config(2);
        config2.max_frame_bytes = FRAME;
        let omnipaxos = omnipaxos_config(2)
            .build(MemoryStorage::<Key>::new())
            .unwrap();
        let runner = Runner::spawn(
            omnipaxos,
            &NODES,
            Nowhere,
            SyncedWrites,
            Ignore,
            runner_config(),
        )
        .unwrap();
        let service = PeerService::new(runner.inbox(), &config2).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        let server = serve(listener, service.clone(), &config2, None).unwrap();
        let through = proxy(target, cut_after, bytes_per_second).await;
        let mut config1 = transport_config(1);
        config1.max_frame_bytes = FRAME;
        let sink = TonicSink::<Key>::spawn(&config1, [(2, through.to_string())], None).unwrap();
        Self {
            runner,
            service,
            server,
            sink,
        }
    }

    fn received(&self) -> Arc<TransportStats> {
        Arc::clone(self.service.stats())
    }

    fn sent(&self) -> Arc<TransportStats> {
        Arc::clone(self.sink.stats())
    }

    async fn stop(self) {
        self.sink.shutdown().await;
        self.server.shutdown().await.unwrap();
        self.runner.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_cut_by_a_broken_link_resumes_after_what_the_receiver_holds() {
    // The first connection breaks a third of the way through the body.
    let body = postcard::to_allocvec(&sync(KEYS, 1)).unwrap().len();
    let pair = Pair::start(Some(body / 3), None).await;
    let (out, stats) = (pair.sent(), pair.received());

    pair.sink.send(2, vec![sync(KEYS, 1)]);
    wait_until("the first link to break", Duration::from_secs(30), || {
        out.drops(DropReason::LinkLost) > 0
    })
    .await;
    assert_eq!(stats.transfers_in(), 0, "a cut transfer completed");

    // Sent again (as OmniPaxos re-syncs): another head, the same snapshot.
    pair.sink.send(2, vec![sync(KEYS, 2)]);
    wait_until(
        "the transfer to complete and its message to be delivered",
        Duration::from_secs(30),
        || stats.transfers_in() == 1 && stats.messages_in() == 1,
    )
    .await;
    // The receiver read some of the chunks before the cut (what HTTP/2
    // still buffered when the connection ended is lost with it).
    let skipped = out.transfer_bytes_skipped();
    assert!(
        skipped > 0 && skipped <= (body / 3) as u64,
        "skipped {skipped} of a {body}-byte body cut after {} bytes",
        body / 3
    );
    // Less than the body twice over went on the links.
    assert!(
        out.bytes_out() < (2 * body) as u64 - skipped / 2,
        "{} bytes out for a {body}-byte body",
        out.bytes_out()
    );
    assert_eq!(stats.transfers_failed_in(), 0);
    assert_eq!(stats.total_refusals(), 0);
    pair.stop().await;
}

/// Election messages overtake a transfer in progress: a heartbeat sent
/// after a large sync reaches the peer long before the sync's last chunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_overtake_a_transfer_in_progress() {
    use omnipaxos::messages::ballot_leader_election::{BLEMessage, HeartbeatMsg, HeartbeatRequest};
    // 2 MB at 1 MB/s: the sync takes about two seconds to pass.
    let pair = Pair::start(None, Some(1 << 20)).await;
    let stats = pair.received();

    pair.sink.send(2, vec![sync(KEYS, 1)]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let heartbeat = Message::BLE(BLEMessage {
        from: 1,
        to: 2,
        msg: HeartbeatMsg::Request(HeartbeatRequest { round: 1 }),
    });
    pair.sink.send(2, vec![heartbeat]);
    wait_until("a first message to arrive", Duration::from_secs(30), || {
        stats.messages_in() > 0
    })
    .await;
    assert_eq!(
        stats.transfers_in(),
        0,
        "the heartbeat waited behind the whole transfer"
    );
    wait_until("the transfer to complete", Duration::from_secs(30), || {
        stats.transfers_in() == 1 && stats.messages_in() == 2
    })
    .await;
    pair.stop().await;
}

/// A follower resends its `Promise` while a large sync is on its way, and
/// OmniPaxos answers each with a new sync (a copy of the state): those of
/// the round in progress are dropped, and of later rounds only the newest
/// waits, so a slow catch-up costs two copies at most.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_large_sync_replaces_the_one_waiting_behind_a_transfer() {
    // About 2 MB per sync at 4 MB/s.
    let pair = Pair::start(None, Some(4 << 20)).await;
    let (out, stats) = (pair.sent(), pair.received());

    pair.sink.send(2, vec![sync(KEYS, 1)]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Two more of the round in progress, then two of a later round.
    for session in 2..=3 {
        pair.sink.send(2, vec![sync(KEYS, session)]);
    }
    for session in 4..=5 {
        pair.sink.send(2, vec![sync_in_round(KEYS, session, 3)]);
    }
    wait_until("two syncs to arrive", Duration::from_secs(30), || {
        stats.transfers_in() == 2 && stats.messages_in() == 2
    })
    .await;
    assert_eq!(out.drops(DropReason::Superseded), 3);
    assert_eq!(out.total_drops(), 3);
    // The second transfer followed a complete one on the same link: it
    // did not try to resume (the first one's chunks were still on their
    // way when it started).
    assert_eq!(out.transfer_bytes_skipped(), 0);
    assert_eq!(stats.transfers_failed_in(), 0);
    pair.stop().await;
}
