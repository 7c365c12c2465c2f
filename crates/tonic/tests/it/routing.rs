//! One peer port, several OmniPaxos configurations: each link reaches the
//! runner of the configuration its metadata names, and no other.

use std::time::Duration;

use tokio::net::TcpListener;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};
use tsoracle_paxos_tonic::config::metadata;
use tsoracle_paxos_tonic::{PeerRouter, PeerService, RefusalReason, encode_frame, serve};

use crate::common::{heartbeat, link_metadata, raw_link, receiving_runner, transport_config};

fn in_configuration(configuration: u32) -> Vec<(&'static str, String)> {
    let mut md = link_metadata(2, 1);
    for entry in &mut md {
        if entry.0 == metadata::CONFIGURATION_ID {
            entry.1 = configuration.to_string();
        }
    }
    md
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_reach_the_runner_of_their_configuration_only() {
    let old = receiving_runner(1);
    let new = receiving_runner(1);
    let config = transport_config(1);
    let mut next = transport_config(1);
    next.configuration_id = 2;
    let first = PeerService::new(old.inbox(), &config).unwrap();
    let stats = std::sync::Arc::clone(first.stats());
    let router = PeerRouter::new(first);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = serve(listener, router.clone(), &config, None).unwrap();
    let channel: Channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .unwrap();
    let frame = || encode_frame(&[heartbeat(2, 1)]).unwrap();

    // Configuration 2 is not served yet: refused, counted, delivered nowhere.
    let refused = raw_link(channel.clone(), in_configuration(2), vec![frame()])
        .await
        .expect_err("configuration 2 is not served yet");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert_eq!(stats.refusals(RefusalReason::ForeignConfiguration), 1);

    router.add(PeerService::counting(new.inbox(), &next, std::sync::Arc::clone(&stats)).unwrap());
    assert_eq!(router.configurations(), vec![1, 2]);
    raw_link(channel.clone(), in_configuration(2), vec![frame(), frame()])
        .await
        .unwrap();
    raw_link(channel.clone(), in_configuration(1), vec![frame()])
        .await
        .unwrap();
    assert_eq!(
        new.inbox().stats().delivered(),
        2,
        "configuration 2's links"
    );
    assert_eq!(old.inbox().stats().delivered(), 1, "configuration 1's link");
    assert_eq!(stats.messages_in(), 3, "one set of counters for both");

    // The old configuration dropped: its links are refused from now on.
    router.remove(1);
    let refused = raw_link(channel.clone(), in_configuration(1), vec![frame()])
        .await
        .expect_err("configuration 1 is no longer served");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(refused.message().contains("[2]"), "{}", refused.message());
    assert_eq!(old.inbox().stats().delivered(), 1);

    server.shutdown().await.unwrap();
    old.shutdown().await.unwrap();
    new.shutdown().await.unwrap();
}
