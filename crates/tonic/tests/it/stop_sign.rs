//! A forged peer link cannot end the configuration (issue 12, item 5).
//!
//! Without mutual TLS anyone who reaches a peer port can claim to be a
//! member. A single frame holding an OmniPaxos `ForwardStopSign` used to make
//! the leader propose a StopSign; once decided and persisted, every later
//! proposal failed, across restarts. The inbox now drops (and counts) every
//! StopSign-carrying message, so the cluster keeps deciding.

use std::collections::BTreeSet;
use std::time::Duration;

use omnipaxos::messages::Message;
use omnipaxos::messages::sequence_paxos::{AcceptStopSign, Decide, PaxosMessage, PaxosMsg};
use omnipaxos::storage::StopSign;
use omnipaxos::util::{NodeId, SequenceNumber};
use tonic::transport::Endpoint;
use tsoracle_paxos_tonic::encode_frame;
use tsoracle_paxos_toolkit::ConfigBuilder;

use crate::common::{Cluster, NODES, TestEntry, link_metadata, raw_link};

/// The member a forged link claims to be, as in the report.
const CLAIMED: NodeId = 2;

fn stop_sign() -> StopSign {
    StopSign::with(
        ConfigBuilder::new(NODES)
            .configuration_id(2)
            .cluster_config()
            .unwrap(),
        None,
    )
}

/// Opens one raw link to `to`, claiming to be `from` (plaintext, no
/// certificate), sends `messages` as a single frame, and closes it.
///
/// The forged link supersedes the real member's link to `to`, whose sink
/// soon reconnects and supersedes the forged one in turn: an `Aborted`
/// answer is part of the game. Whether the frame was read is judged by the
/// inbox's counter afterwards.
async fn forge(cluster: &Cluster, from: NodeId, to: NodeId, messages: Vec<Message<TestEntry>>) {
    let channel = Endpoint::from_shared(format!("http://{}", cluster.node(to).addr))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .unwrap();
    let frame = encode_frame(&messages).unwrap();
    match raw_link(channel, link_metadata(from, to), vec![frame]).await {
        Ok(closed) => assert_eq!(closed.frames, 1),
        Err(status) if status.code() == tonic::Code::Aborted => {}
        Err(status) => {
            // A runner that decided a StopSign stops here: the test's hook
            // refuses it (its failure names the entry).
            let failed = cluster.node(to).runner.status().borrow().failed.clone();
            panic!("node {to} refused the forged link: {status:?}; runner failure: {failed:?}")
        }
    }
}

/// Decides `values` on every node, then checks that no runner failed and
/// none reports a StopSign.
async fn still_decides(cluster: &Cluster, values: std::ops::Range<u64>) {
    cluster.propose(values.clone().collect(), 16).await;
    let expected: BTreeSet<u64> = values.collect();
    cluster
        .wait_all_decided(&expected, Duration::from_secs(20))
        .await;
    for id in NODES {
        let status = cluster.node(id).runner.status().borrow().clone();
        assert_eq!(status.failed, None, "node {id} failed");
        assert_eq!(status.stop_sign, None, "node {id} decided a StopSign");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_forward_stop_sign_is_dropped_and_the_cluster_keeps_deciding() {
    let cluster = Cluster::start(None).await;
    cluster.wait_leader(Duration::from_secs(10)).await;
    still_decides(&cluster, 0..100).await;

    // Every other node gets the frame: a leader proposes the StopSign at
    // once, a follower forwards it to its leader.
    let targets: Vec<NodeId> = NODES.into_iter().filter(|&id| id != CLAIMED).collect();
    for &to in &targets {
        let forward = Message::SequencePaxos(PaxosMessage {
            from: CLAIMED,
            to,
            msg: PaxosMsg::ForwardStopSign(stop_sign()),
        });
        forge(&cluster, CLAIMED, to, vec![forward]).await;
    }
    // Long enough for an accepted StopSign to be decided (many rounds).
    tokio::time::sleep(Duration::from_millis(500)).await;
    still_decides(&cluster, 100..200).await;
    for &to in &targets {
        let stats = cluster.node(to).runner.inbox().stats().stop_sign();
        assert_eq!(stats, 1, "node {to}: StopSign not counted");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_accept_stop_signs_are_dropped_and_the_cluster_keeps_deciding() {
    // Sessions start at 1 and grow with each re-sync; the counter grows
    // by about two per decided entry. Both bounds leave a wide margin.
    const SESSIONS: u64 = 3;
    const COUNTERS: u64 = 1_000;
    let cluster = Cluster::start(None).await;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    still_decides(&cluster, 0..100).await;

    // Claiming to be the leader (node 2 in the issue; whichever leads
    // here), one frame per follower under the follower's promised ballot.
    // The accept sequence number is not known from outside, so the frame
    // sweeps it, alternating an AcceptStopSign with a Decide of everything
    // the follower accepted: whichever the follower expects next, it would
    // accept the StopSign and then decide it, and with both followers
    // stopped the leader has no quorum. Decides carry no StopSign and pass
    // the filter; alone they decide nothing new in an idle cluster.
    let followers: Vec<NodeId> = NODES.into_iter().filter(|&id| id != leader).collect();
    for &to in &followers {
        let n = cluster.node(to).runner.status().borrow().promise;
        assert_eq!(n.pid, leader);
        let messages = (1..=SESSIONS)
            .flat_map(|session| (1..=COUNTERS).map(move |counter| (session, counter)))
            .map(|(session, counter)| {
                let seq_num = SequenceNumber { session, counter };
                let msg = if counter % 2 == 1 {
                    PaxosMsg::AcceptStopSign(AcceptStopSign {
                        n,
                        seq_num,
                        ss: stop_sign(),
                    })
                } else {
                    PaxosMsg::Decide(Decide {
                        n,
                        seq_num,
                        decided_idx: usize::MAX,
                    })
                };
                Message::SequencePaxos(PaxosMessage {
                    from: leader,
                    to,
                    msg,
                })
            })
            .collect();
        forge(&cluster, leader, to, messages).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    still_decides(&cluster, 100..200).await;
    for &to in &followers {
        let stats = cluster.node(to).runner.inbox().stats().stop_sign();
        assert_eq!(stats, SESSIONS * COUNTERS / 2, "node {to}: not all counted");
    }
    cluster.shutdown().await;
}
