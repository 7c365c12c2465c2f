//! TLS connections for a tonic server, accepted with a rustls configuration
//! asked anew for every connection: a certificate reloaded meanwhile is
//! served from the next handshake on, without a restart. Handshakes run on
//! their own tasks (a slow or failed one costs only itself), bounded in
//! number, per source address and in time ([`HandshakeLimits`]): a
//! connection that arrives while its slots are taken is closed at once
//! rather than queued, so idle sockets delay nobody's handshake by more than
//! their own timeout, and one address cannot take every slot.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

/// Connections handed to the server but not yet taken by it.
const ACCEPTED_QUEUE: usize = 64;

/// How many TLS handshakes may be in progress, and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandshakeLimits {
    /// In progress at once, from all addresses.
    pub total: usize,
    /// In progress at once from one source address (a client that opens
    /// sockets and never speaks fills only its own share).
    pub per_address: usize,
    /// How long a client may take to finish its handshake.
    pub timeout: Duration,
}

impl Default for HandshakeLimits {
    /// 1,024 in all, 32 per address, 5 s each: a peer, an admin client or a
    /// tsoracle client on a LAN finishes in milliseconds, and a host behind
    /// one address (a proxy, a NAT) rarely opens more than a few
    /// connections at the same instant.
    fn default() -> Self {
        Self {
            total: 1024,
            per_address: 32,
            timeout: Duration::from_secs(5),
        }
    }
}

/// Where each handshake gets its configuration.
pub type ServerConfigSource = Arc<dyn Fn() -> Arc<rustls::ServerConfig> + Send + Sync>;

/// The connections of a TLS listener, as tonic's `serve_with_incoming`
/// takes them.
pub type TlsIncoming = ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>>;

/// [`tls_incoming_with`] the default [`HandshakeLimits`].
pub fn tls_incoming(
    listener: TcpListener,
    source: ServerConfigSource,
) -> (TlsIncoming, JoinHandle<()>) {
    tls_incoming_with(listener, source, HandshakeLimits::default())
}

/// Accepts connections on `listener`, runs each TLS handshake with the
/// configuration `source` returns at that moment, within `limits`, and
/// hands the finished ones to the returned stream. The accept task ends
/// once the stream is dropped (the server stopped); abort it to end it
/// sooner.
pub fn tls_incoming_with(
    listener: TcpListener,
    source: ServerConfigSource,
    limits: HandshakeLimits,
) -> (TlsIncoming, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(ACCEPTED_QUEUE);
    let handshakes = Arc::new(Semaphore::new(limits.total));
    let per_address = Arc::new(Mutex::new(HashMap::new()));
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
            let Some(address_slot) = AddressSlot::take(&per_address, peer.ip(), limits.per_address)
            else {
                tracing::debug!(%peer, "TLS listener: this address's handshake slots are taken; closed");
                continue;
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
                let handshake = tokio::time::timeout(limits.timeout, acceptor.accept(socket)).await;
                // The slots are the handshake's only: a server slow to take
                // finished connections must not hold them.
                drop(permit);
                drop(address_slot);
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

/// Handshakes in progress per source address.
type AddressCounts = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// One of an address's handshake slots, given back on drop.
struct AddressSlot {
    counts: AddressCounts,
    address: IpAddr,
}

impl AddressSlot {
    /// A slot for `address`, unless it holds `limit` already.
    fn take(counts: &AddressCounts, address: IpAddr, limit: usize) -> Option<Self> {
        let mut map = counts.lock().unwrap_or_else(PoisonError::into_inner);
        let held = map.entry(address).or_insert(0);
        if *held >= limit {
            return None;
        }
        *held += 1;
        Some(Self {
            counts: Arc::clone(counts),
            address,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut map = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(held) = map.get_mut(&self.address) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                // Addresses that come and go leave nothing behind.
                map.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_holds_at_most_its_limit_and_gets_its_slots_back() {
        let counts = AddressCounts::default();
        let one: IpAddr = [127, 0, 0, 1].into();
        let two: IpAddr = [127, 0, 0, 2].into();
        let first = AddressSlot::take(&counts, one, 2).unwrap();
        let second = AddressSlot::take(&counts, one, 2).unwrap();
        assert!(AddressSlot::take(&counts, one, 2).is_none());
        let other = AddressSlot::take(&counts, two, 2).unwrap();
        drop(first);
        let third = AddressSlot::take(&counts, one, 2).unwrap();
        drop((second, third, other));
        assert!(counts.lock().unwrap().is_empty(), "nothing left behind");
    }
}
