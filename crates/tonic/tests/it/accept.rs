//! The TLS accept loop's bounds, with real sockets: idle connections from
//! one address take only that address's handshake slots, others still get
//! through; every slot is bounded in all; slots come back when the idle
//! sockets go.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_stream::StreamExt;
use tsoracle_paxos_tonic::accept::{HandshakeLimits, tls_incoming_with};

use crate::common::Certs;

fn address(last: u8) -> IpAddr {
    [127, 0, 0, last].into()
}

async fn connect_from(from: IpAddr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    socket.connect(to).await.unwrap()
}

/// A mutual-TLS client of the test CA.
fn connector(certs: &Certs) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(certs.ca_pem().as_bytes()).unwrap())
        .unwrap();
    let (cert, key) = certs.node_pem(&["node-2".to_owned()]);
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(
        vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
        PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
    )
    .unwrap();
    TlsConnector::from(Arc::new(config))
}

/// A whole handshake from `from`: whether it finished (within 5 s).
async fn handshake(tls: &TlsConnector, from: IpAddr, to: SocketAddr) -> bool {
    let stream = connect_from(from, to).await;
    let name = ServerName::try_from("node-1").unwrap();
    matches!(
        tokio::time::timeout(Duration::from_secs(5), tls.connect(name, stream)).await,
        Ok(Ok(_))
    )
}

// Linux routes all of 127.0.0.0/8 to the loopback interface; other
// systems have only 127.0.0.1.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_of_one_address_take_only_its_handshake_slots() {
    let certs = Certs::new();
    let server = certs.material(1);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let to = listener.local_addr().unwrap();
    let limits = HandshakeLimits {
        total: 4,
        per_address: 2,
        timeout: Duration::from_secs(60),
    };
    let (mut incoming, task) =
        tls_incoming_with(listener, Arc::new(move || server.server_config()), limits);
    let tls = connector(&certs);

    // 127.0.0.1 opens its share of sockets and never speaks: its next
    // connection is closed, but 127.0.0.2 still completes a handshake, and
    // the server is handed that connection.
    let mut idle_one = vec![
        connect_from(address(1), to).await,
        connect_from(address(1), to).await,
    ];
    assert!(
        !handshake(&tls, address(1), to).await,
        "an address beyond its share of handshakes was served"
    );
    assert!(
        handshake(&tls, address(2), to).await,
        "another address was refused while one address idled"
    );
    let accepted = tokio::time::timeout(Duration::from_secs(5), incoming.next()).await;
    assert!(matches!(accepted, Ok(Some(Ok(_)))), "{accepted:?}");

    // Two more idle sockets from 127.0.0.3 fill the four slots in all.
    let _idle_three = [
        connect_from(address(3), to).await,
        connect_from(address(3), to).await,
    ];
    assert!(
        !handshake(&tls, address(4), to).await,
        "a handshake beyond the total was served"
    );

    // An idle socket that goes gives its slot back.
    idle_one.pop();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !handshake(&tls, address(1), to).await {
        assert!(
            Instant::now() < deadline,
            "the slot of a closed idle socket never came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    task.abort();
}
