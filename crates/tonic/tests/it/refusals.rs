//! Bad input at the inbound service, from a raw tonic client: each case is
//! refused with its status code, counted, and never reaches the runner.

use std::time::Duration;

use tokio::net::TcpListener;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};
use tsoracle_paxos_tonic::config::metadata;
use tsoracle_paxos_tonic::{PeerService, RefusalReason, encode_frame, serve};

use crate::common::{heartbeat, link_metadata, raw_link, receiving_runner, transport_config};

/// Name, link metadata, frames, expected status code and counter.
type Case = (
    &'static str,
    Vec<(&'static str, String)>,
    Vec<Vec<u8>>,
    Code,
    RefusalReason,
);

fn with(key: &'static str, value: &str) -> Vec<(&'static str, String)> {
    let mut md = link_metadata(2, 1);
    for entry in &mut md {
        if entry.0 == key {
            entry.1 = value.to_owned();
        }
    }
    md
}

fn without(key: &'static str) -> Vec<(&'static str, String)> {
    let mut md = link_metadata(2, 1);
    md.retain(|entry| entry.0 != key);
    md
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_links_and_frames_are_refused_counted_and_never_delivered() {
    let runner = receiving_runner(1);
    let inbox = runner.inbox();
    let mut config = transport_config(1);
    config.max_frame_bytes = 1024;
    let service = PeerService::new(runner.inbox(), &config).unwrap();
    let stats = std::sync::Arc::clone(service.stats());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = serve(listener, service, &config, None).unwrap();
    let channel: Channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .unwrap();

    let good_frame = encode_frame(&[heartbeat(2, 1)]).unwrap();
    let cases: Vec<Case> = vec![
        (
            "unknown node",
            with(metadata::SENDER, "9"),
            vec![good_frame.clone()],
            Code::PermissionDenied,
            RefusalReason::UnknownSender,
        ),
        (
            "sender is the receiver itself",
            with(metadata::SENDER, "1"),
            vec![good_frame.clone()],
            Code::PermissionDenied,
            RefusalReason::SenderIsSelf,
        ),
        (
            "addressed to another node",
            with(metadata::RECEIVER, "3"),
            vec![good_frame.clone()],
            Code::FailedPrecondition,
            RefusalReason::WrongReceiver,
        ),
        (
            "foreign cluster id",
            with(metadata::CLUSTER_ID, "other-cluster"),
            vec![good_frame.clone()],
            Code::PermissionDenied,
            RefusalReason::ForeignCluster,
        ),
        (
            "foreign configuration id",
            with(metadata::CONFIGURATION_ID, "2"),
            vec![good_frame.clone()],
            Code::FailedPrecondition,
            RefusalReason::ForeignConfiguration,
        ),
        (
            "bad protocol version",
            with(metadata::PROTOCOL, "1"),
            vec![good_frame.clone()],
            Code::FailedPrecondition,
            RefusalReason::UnsupportedProtocol,
        ),
        (
            "missing sender",
            without(metadata::SENDER),
            vec![good_frame.clone()],
            Code::InvalidArgument,
            RefusalReason::MissingMetadata,
        ),
        (
            "garbled sender",
            with(metadata::SENDER, "two"),
            vec![good_frame.clone()],
            Code::InvalidArgument,
            RefusalReason::GarbledMetadata,
        ),
        (
            "oversize frame",
            link_metadata(2, 1),
            vec![vec![1; 4096]],
            Code::OutOfRange,
            RefusalReason::OversizeFrame,
        ),
        (
            "garbage bytes",
            link_metadata(2, 1),
            vec![vec![0xff; 64]],
            Code::InvalidArgument,
            RefusalReason::GarbledFrame,
        ),
        (
            "right format byte, garbage batch",
            link_metadata(2, 1),
            vec![vec![
                1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 7,
            ]],
            Code::InvalidArgument,
            RefusalReason::GarbledFrame,
        ),
    ];
    for (name, md, frames, code, reason) in cases {
        let before = stats.refusals(reason);
        let status = raw_link(channel.clone(), md, frames).await.expect_err(name);
        assert_eq!(status.code(), code, "{name}: {status:?}");
        assert_eq!(stats.refusals(reason), before + 1, "{name} not counted");
        assert_eq!(inbox.stats().delivered(), 0, "{name} reached the runner");
    }
    assert_eq!(
        stats.links_accepted(),
        3,
        "only the frame cases open a link"
    );

    // A message naming another sender than its link is dropped, counted.
    let spoofed = encode_frame(&[heartbeat(3, 1)]).unwrap();
    let misrouted = encode_frame(&[heartbeat(2, 3)]).unwrap();
    raw_link(
        channel.clone(),
        link_metadata(2, 1),
        vec![spoofed, misrouted],
    )
    .await
    .unwrap();
    assert_eq!(stats.refusals(RefusalReason::SenderMismatch), 1);
    assert_eq!(stats.refusals(RefusalReason::ReceiverMismatch), 1);
    assert_eq!(inbox.stats().delivered(), 0);
    assert_eq!(
        inbox.stats().unknown_sender() + inbox.stats().wrong_receiver(),
        0
    );

    // Control: a well-formed link delivers.
    let closed = raw_link(channel.clone(), link_metadata(2, 1), vec![good_frame])
        .await
        .unwrap();
    assert_eq!(closed.frames, 1);
    assert_eq!(inbox.stats().delivered(), 1);
    assert_eq!(stats.messages_in(), 1);

    server.shutdown().await.unwrap();
    runner.shutdown().await.unwrap();
}
