//! Mutual TLS: a cluster over mTLS links, and identity checks both ways.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::Code;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tsoracle_paxos_tonic::{
    Error, PeerService, RefusalReason, TlsFiles, TlsMaterial, encode_frame, serve,
};

use crate::common::{
    Certs, Cluster, NODES, heartbeat, link_metadata, raw_link, receiving_runner, transport_config,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_decide_over_mutual_tls() {
    let certs = Certs::new();
    let cluster = Cluster::start(Some(&certs)).await;
    cluster.wait_leader(Duration::from_secs(10)).await;
    cluster.propose((0..500).collect(), 16).await;
    let expected: BTreeSet<u64> = (0..500).collect();
    cluster
        .wait_all_decided(&expected, Duration::from_secs(30))
        .await;
    for id in NODES {
        assert_eq!(cluster.node(id).service.stats().total_refusals(), 0);
    }
    cluster.shutdown().await;
}

async fn tls_channel(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    cert: &(String, String),
    server_name: &str,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .identity(Identity::from_pem(&cert.0, &cert.1))
        .domain_name(server_name);
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_node_is_refused() {
    let certs = Certs::new();
    let runner = receiving_runner(1);
    let inbox = runner.inbox();
    let config = transport_config(1);
    let service = PeerService::new(runner.inbox(), &config).unwrap();
    let stats = std::sync::Arc::clone(service.stats());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = serve(listener, service, &config, Some(&certs.material(1))).unwrap();
    let frame = encode_frame(&[heartbeat(3, 1)]).unwrap();

    // Node 2's certificate, claiming to be node 3: refused, counted.
    let node2 = certs.node_pem(&["node-2".into()]);
    let channel = tls_channel(addr, certs.ca_pem(), &node2, "node-1")
        .await
        .unwrap();
    let status = raw_link(channel, link_metadata(3, 1), vec![frame.clone()])
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(stats.refusals(RefusalReason::CertificateMismatch), 1);
    assert_eq!(inbox.stats().delivered(), 0);

    // Node 3's own certificate is accepted.
    let node3 = certs.node_pem(&["node-3".into()]);
    let channel = tls_channel(addr, certs.ca_pem(), &node3, "node-1")
        .await
        .unwrap();
    raw_link(channel, link_metadata(3, 1), vec![frame.clone()])
        .await
        .unwrap();
    assert_eq!(inbox.stats().delivered(), 1);

    // The client checks the server too: node 1's server is not node-2.
    let wrong_server = tls_channel(addr, certs.ca_pem(), &node3, "node-2").await;
    let refused = match wrong_server {
        Err(_) => true,
        Ok(channel) => raw_link(channel, link_metadata(3, 2), vec![frame.clone()])
            .await
            .is_err(),
    };
    assert!(refused, "a server with another node's name was trusted");

    // A certificate from another CA does not get through the handshake.
    let other_ca = Certs::new();
    let foreign = other_ca.node_pem(&["node-3".into()]);
    let foreign_link = match tls_channel(addr, certs.ca_pem(), &foreign, "node-1").await {
        Err(_) => None,
        Ok(channel) => Some(raw_link(channel, link_metadata(3, 1), vec![frame]).await),
    };
    assert!(
        !matches!(foreign_link, Some(Ok(_))),
        "a certificate from another CA was accepted"
    );
    assert_eq!(inbox.stats().delivered(), 1);

    server.shutdown().await.unwrap();
    runner.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_files_load_with_errors_naming_the_file() {
    let certs = Certs::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certs.node_pem(&["node-1".into()]);
    let files = TlsFiles {
        ca: dir.path().join("ca.pem"),
        cert: dir.path().join("node.pem"),
        key: dir.path().join("node.key"),
    };
    std::fs::write(&files.ca, certs.ca_pem()).unwrap();
    std::fs::write(&files.cert, &cert).unwrap();
    std::fs::write(&files.key, &key).unwrap();
    let material = TlsMaterial::load(&files).unwrap();
    assert!(material.names_node(1));
    assert!(!material.names_node(2));

    let missing = TlsFiles {
        key: dir.path().join("absent.key"),
        ..files.clone()
    };
    let err = TlsMaterial::load(&missing).unwrap_err();
    assert!(
        matches!(
            err,
            Error::TlsFile {
                what: "private key",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("absent.key"), "{err}");

    std::fs::write(dir.path().join("junk.pem"), "not a certificate").unwrap();
    let junk = TlsFiles {
        cert: dir.path().join("junk.pem"),
        ..files.clone()
    };
    let err = TlsMaterial::load(&junk).unwrap_err();
    assert!(
        matches!(
            err,
            Error::TlsPem {
                what: "certificate",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("junk.pem"), "{err}");

    // A server whose own certificate does not name it refuses to start.
    let runner = receiving_runner(2);
    let config = transport_config(2);
    let service = PeerService::new(runner.inbox(), &config).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = serve(listener, service, &config, Some(&material)).unwrap_err();
    assert!(matches!(err, Error::TlsIdentity { .. }), "{err}");
    runner.shutdown().await.unwrap();
}
