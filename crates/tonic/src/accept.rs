//! TLS connections for a tonic server, accepted with a rustls configuration
//! asked anew for every connection: a certificate reloaded meanwhile is
//! served from the next handshake on, without a restart. Handshakes run on
//! their own tasks (a slow or failed one costs only itself), bounded in
//! number and in time: a connection that arrives while every handshake
//! slot is taken is closed at once rather than queued, so idle sockets can
//! delay nobody's handshake by more than their own timeout.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

/// How long a client may take to finish its TLS handshake (a peer or an
/// admin client on a LAN takes milliseconds).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Handshakes in progress at once, at most (a connection beyond it is
/// closed: the client retries).
const MAX_HANDSHAKES: usize = 1024;

/// Connections handed to the server but not yet taken by it.
const ACCEPTED_QUEUE: usize = 64;

/// Where each handshake gets its configuration.
pub type ServerConfigSource = Arc<dyn Fn() -> Arc<rustls::ServerConfig> + Send + Sync>;

/// The connections of a TLS listener, as tonic's `serve_with_incoming`
/// takes them.
pub type TlsIncoming = ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>>;

/// Accepts connections on `listener`, runs each TLS handshake with the
/// configuration `source` returns at that moment, and hands the finished
/// ones to the returned stream. The accept task ends once the stream is
/// dropped (the server stopped); abort it to end it sooner.
pub fn tls_incoming(
    listener: TcpListener,
    source: ServerConfigSource,
) -> (TlsIncoming, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(ACCEPTED_QUEUE);
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    let task = tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = tx.closed() => return,
                accepted = listener.accept() => accepted,
            };
            let (socket, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: pause, go on.
                    tracing::warn!(%err, "TLS listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = Arc::clone(&handshakes).try_acquire_owned() else {
                tracing::debug!(%peer, "TLS listener: every handshake slot is taken; closed");
                continue;
            };
            // As TcpIncoming does for plaintext: small gRPC frames must not
            // wait for Nagle.
            if let Err(err) = socket.set_nodelay(true) {
                tracing::debug!(%peer, %err, "TLS listener: cannot set TCP_NODELAY");
            }
            let acceptor = TlsAcceptor::from(source());
            let tx = tx.clone();
            tokio::spawn(async move {
                let handshake =
                    tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(socket)).await;
                // The slot is the handshake's only: a server slow to take
                // finished connections must not hold it.
                drop(permit);
                match handshake {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(err)) => tracing::debug!(%peer, %err, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    (ReceiverStream::new(rx), task)
}
