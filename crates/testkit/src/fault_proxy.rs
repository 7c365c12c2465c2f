//! A TCP fault proxy for the peer links of a local cluster, used by `chaos`.
//!
//! The peer transport carries each *directed* link (node `i` sending to node
//! `j`) on one long-lived gRPC stream that `i` opens to `j`'s peer port. The
//! proxy has one listener per directed link; node `i`'s peer list names the
//! `(i -> j)` listener as `j`'s address, so every byte `i` sends to `j`
//! passes through it, and each link can be broken on its own:
//!
//! - [`Mode::Cut`]: open connections are closed and new ones are closed as
//!   soon as they are accepted (the sender sees a refused peer and backs off);
//! - [`Mode::Stall`]: bytes from `i` to `j` are no longer read (the reverse
//!   direction, HTTP/2 acknowledgements and pings, still flows); TCP and
//!   HTTP/2 flow control then stall the sender, as a one-way network
//!   partition would. Healing forwards what was held back, in order;
//! - [`Mode::Open`]: forward both ways.
//!
//! Clients do not go through the proxy, so a node cut off from its peers
//! still answers clients (the leader-isolation case of the chaos run).
//! Everything is bounded: connections per link, buffer per direction, and
//! the upstream connect time.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::Error;

/// Open connections per link at most; more are closed at once. A stalled
/// link keeps the connections its sender gave up on until it heals, and
/// the sender reconnects with backoff, so a few dozen is plenty.
const MAX_CONNECTIONS: usize = 32;
/// Bytes read per chunk in each direction.
const CHUNK: usize = 16 * 1024;
/// How long connecting to the real peer port may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// What a directed link does with its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Forward both ways.
    Open,
    /// Close every connection, refuse new ones.
    Cut,
    /// Hold back the sender's bytes (one-way: the receiver's still flow).
    Stall,
}

/// One listener per directed link between `N` nodes.
pub(crate) struct FaultProxy {
    links: BTreeMap<(u64, u64), Link>,
}

struct Link {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    accept: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a listener on 127.0.0.1 for every ordered pair of distinct
    /// nodes in `targets` (node id, its real peer address).
    pub(crate) async fn start(targets: &[(u64, SocketAddr)]) -> Result<Self, Error> {
        let mut links = BTreeMap::new();
        for &(from, _) in targets {
            for &(to, target) in targets {
                if from == to {
                    continue;
                }
                let listener = TcpListener::bind("127.0.0.1:0")
                    .await
                    .map_err(|err| Error::runtime("fault proxy: binding a listener", err))?;
                let addr = listener
                    .local_addr()
                    .map_err(|err| Error::runtime("fault proxy", err))?;
                let (mode, watcher) = watch::channel(Mode::Open);
                let accept = tokio::spawn(accept_loop(listener, target, watcher));
                links.insert((from, to), Link { addr, mode, accept });
            }
        }
        Ok(Self { links })
    }

    /// The address node `from` must dial to reach node `to`.
    pub(crate) fn addr(&self, from: u64, to: u64) -> Option<SocketAddr> {
        self.links.get(&(from, to)).map(|link| link.addr)
    }

    /// Sets the mode of the link `from -> to`.
    pub(crate) fn set(&self, from: u64, to: u64, mode: Mode) {
        if let Some(link) = self.links.get(&(from, to)) {
            link.mode.send_replace(mode);
        }
    }

    /// The directed links into and out of `node`.
    pub(crate) fn links_of(&self, node: u64) -> Vec<(u64, u64)> {
        self.links
            .keys()
            .copied()
            .filter(|&(from, to)| from == node || to == node)
            .collect()
    }

    /// Opens every link.
    pub(crate) fn heal_all(&self) {
        for link in self.links.values() {
            link.mode.send_replace(Mode::Open);
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // The connection tasks end when their link's mode sender is gone.
        for link in self.links.values() {
            link.accept.abort();
        }
    }
}

/// Counts a link's open connections; one guard per connection.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(count: &Arc<AtomicUsize>) -> Option<Self> {
        let taken = count.fetch_add(1, Ordering::SeqCst);
        let slot = Self(Arc::clone(count));
        (taken < MAX_CONNECTIONS).then_some(slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, mode: watch::Receiver<Mode>) {
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let inbound = match listener.accept().await {
            Ok((stream, _)) => stream,
            // Out of file descriptors or a reset before accept: try again
            // shortly rather than spin.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if *mode.borrow() == Mode::Cut {
            continue; // dropped: closed at once
        }
        let Some(slot) = Slot::take(&open) else {
            continue;
        };
        tokio::spawn(connection(inbound, target, mode.clone(), slot));
    }
}

/// Forwards one accepted connection until either side closes or the link
/// is cut; dropping the halves closes both sockets.
async fn connection(
    inbound: TcpStream,
    target: SocketAddr,
    mode: watch::Receiver<Mode>,
    _slot: Slot,
) {
    let Ok(Ok(upstream)) = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await
    else {
        return; // the peer is down: the sender sees its connection closed
    };
    let _ = inbound.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (from_sender, to_sender) = inbound.into_split();
    let (from_receiver, to_receiver) = upstream.into_split();
    tokio::select! {
        () = pump(from_sender, to_receiver, mode.clone(), true) => {}
        () = pump(from_receiver, to_sender, mode, false) => {}
    }
}

/// Copies one direction. `forward` is the sender-to-receiver direction, the
/// one [`Mode::Stall`] holds back. Returns on end of stream, an error, a
/// cut, or when the proxy is dropped.
async fn pump(
    mut reader: OwnedReadHalf,
    mut writer: OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
    forward: bool,
) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        // Wait out a stall before reading, so the sender's bytes stay in
        // its socket buffer and flow control pushes back on it.
        loop {
            let current = *mode.borrow_and_update();
            match current {
                Mode::Cut => return,
                Mode::Stall if forward => {
                    if mode.changed().await.is_err() {
                        return;
                    }
                }
                _ => break,
            }
        }
        let n = tokio::select! {
            read = reader.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            changed = mode.changed() => {
                if changed.is_err() {
                    return;
                }
                continue; // look at the new mode before reading on
            }
        };
        let write = writer.write_all(&buf[..n]);
        tokio::pin!(write);
        loop {
            tokio::select! {
                written = &mut write => {
                    if written.is_err() {
                        return;
                    }
                    break;
                }
                changed = mode.changed() => {
                    // A chunk already read is delivered unless the link is
                    // cut meanwhile.
                    if changed.is_err() || *mode.borrow() == Mode::Cut {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server standing in for a peer port.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = stream.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn round_trip(stream: &mut TcpStream, byte: u8) -> Option<u8> {
        stream.write_all(&[byte]).await.ok()?;
        let mut back = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(300), stream.read(&mut back)).await {
            Ok(Ok(1)) => Some(back[0]),
            _ => None,
        }
    }

    #[tokio::test]
    async fn open_cut_stall_and_heal() {
        let target = echo().await;
        let proxy = FaultProxy::start(&[(1, target), (2, target)])
            .await
            .unwrap();
        let addr = proxy.addr(1, 2).unwrap();
        assert_eq!(proxy.links_of(1).len(), 2);

        let mut stream = TcpStream::connect(addr).await.unwrap();
        assert_eq!(round_trip(&mut stream, 7).await, Some(7));

        // Stall: nothing comes back; heal delivers the held byte in order.
        proxy.set(1, 2, Mode::Stall);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(round_trip(&mut stream, 8).await, None);
        proxy.heal_all();
        let mut back = [0u8; 1];
        stream.read_exact(&mut back).await.unwrap();
        assert_eq!(back[0], 8);

        // Cut: the open connection is closed and a new one is refused.
        proxy.set(1, 2, Mode::Cut);
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut rest));
        assert!(closed.await.is_ok(), "a cut must close the connection");
        let mut again = TcpStream::connect(addr).await.unwrap();
        assert_eq!(round_trip(&mut again, 9).await, None);

        proxy.heal_all();
        let mut healed = TcpStream::connect(addr).await.unwrap();
        assert_eq!(round_trip(&mut healed, 10).await, Some(10));
    }
}
