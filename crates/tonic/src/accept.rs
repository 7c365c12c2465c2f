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
use std::time::{Duration, Instant};

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
    /// sockets and never speaks fills only its own share); 0: no cap per
    /// address.
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
    let handshakes = Arc::new(Semaphore::new(
        limits.total.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let per_address_limit = match limits.per_address {
        0 => usize::MAX,
        n => n,
    };
    let per_address = Arc::new(Mutex::new(HashMap::new()));
    let listener_address = listener
        .local_addr()
        .map_or_else(|_| "unknown".to_owned(), |addr| addr.to_string());
    let mut refusals = Refusals::new(listener_address);
    // Both series exist from the start, at zero: a first burst of
    // refusals is then an increase a rate or an alert sees.
    for reason in [Refusal::Address, Refusal::Total] {
        refusals.counter(reason).increment(0);
    }
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
            let Some(address_slot) =
                AddressSlot::take(&per_address, source_key(peer.ip()), per_address_limit)
            else {
                refusals.count(Refusal::Address, peer.ip());
                continue;
            };
            let Ok(permit) = Arc::clone(&handshakes).try_acquire_owned() else {
                refusals.count(Refusal::Total, peer.ip());
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

/// Why a connection was closed before its handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    /// Its address held its share of the handshake slots.
    Address,
    /// Every handshake slot was taken.
    Total,
}

impl Refusal {
    fn label(self) -> &'static str {
        match self {
            Self::Address => "address",
            Self::Total => "total",
        }
    }
}

/// The counter of connections a TLS listener closed before their handshake,
/// labelled `listener` (its address) and `reason` (`address`: that source
/// address held its share of the slots; `total`: every slot was taken).
pub const HANDSHAKES_REFUSED: &str = "tsoracle_paxos_tls_handshakes_refused_total";

/// How often refused handshakes are reported in the log, at most.
const REFUSAL_WARN_EVERY: Duration = Duration::from_secs(10);

/// Counts refused connections ([`HANDSHAKES_REFUSED`]) and warns about
/// them at most once per [`REFUSAL_WARN_EVERY`]: a flood costs one log line
/// per interval, and legitimate clients refused (many behind one address)
/// are seen.
struct Refusals {
    listener: String,
    since_warning: u64,
    last_warning: Option<Instant>,
}

impl Refusals {
    fn new(listener: String) -> Self {
        Self {
            listener,
            since_warning: 0,
            last_warning: None,
        }
    }

    fn counter(&self, refusal: Refusal) -> metrics::Counter {
        metrics::counter!(
            HANDSHAKES_REFUSED,
            "listener" => self.listener.clone(),
            "reason" => refusal.label()
        )
    }

    fn count(&mut self, refusal: Refusal, from: IpAddr) {
        self.counter(refusal).increment(1);
        self.since_warning += 1;
        let due = self
            .last_warning
            .is_none_or(|at| at.elapsed() >= REFUSAL_WARN_EVERY);
        if due {
            let hint = match refusal {
                Refusal::Address => {
                    "one source address held its share of the handshake slots: many clients \
                     behind one address need a larger share (HandshakeLimits::per_address; the \
                     node's --tls-handshakes-per-address)"
                }
                Refusal::Total => {
                    "every handshake slot was taken: connections that do not finish their \
                     handshake hold a slot until its timeout"
                }
            };
            tracing::warn!(
                listener = %self.listener,
                last_reason = refusal.label(),
                last_from = %from,
                refused = self.since_warning,
                hint,
                "TLS listener: connections closed before their handshake (this warning repeats \
                 at most every 10 s; the counter has every one)"
            );
            self.since_warning = 0;
            self.last_warning = Some(Instant::now());
        }
    }
}

/// The address a connection's handshakes count against: the address
/// itself, an IPv4-mapped IPv6 address as its IPv4 address (a dual-stack
/// listener sees IPv4 clients so). Not a whole IPv6 /64: that is usually a
/// subnet of many hosts, which would share one share.
fn source_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        IpAddr::V4(_) => address,
    }
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

    #[test]
    fn a_source_counts_by_its_address_and_a_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert_eq!(source_key(a), a);
        assert_ne!(source_key(a), source_key(b));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(source_key(mapped), IpAddr::from([192, 0, 2, 7]));
        let v4 = IpAddr::from([192, 0, 2, 7]);
        assert_eq!(source_key(v4), v4);
    }
}
