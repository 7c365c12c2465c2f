//! The outbound side: a [`MessageSink`] with one bounded queue and one
//! long-lived gRPC link per peer.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use omnipaxos::messages::Message;
use omnipaxos::storage::Entry;
use omnipaxos::util::NodeId;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tsoracle_paxos_toolkit::MessageSink;

use crate::config::{PROTOCOL_VERSION, TransportConfig, metadata};
use crate::error::Error;
use crate::frame::{EncodedFrame, Limits, split_into_frames};
use crate::proto::Frame;
use crate::proto::paxos_peer_client::PaxosPeerClient;
use crate::stats::{DropReason, TransportStats};
use crate::tls::TlsMaterial;

/// Frames buffered between a peer task and its open gRPC stream.
const LINK_FRAMES: usize = 8;

type Batch<T> = Vec<Message<T>>;

/// A [`MessageSink`] over tonic: one task, one bounded queue and one
/// client-streaming `Link` call per peer.
///
/// - [`send`](MessageSink::send) never blocks: it puts the batch on the
///   peer's queue, or drops the *new* batch when the queue is full and counts
///   it ([`DropReason::QueueFull`]). Paxos tolerates loss and resends, so a
///   dead or slow peer costs at most `queue_capacity` batches of memory (plus
///   the few frames in flight on its link), and never delays another peer.
/// - Each peer task connects with a deadline, opens the link, and forwards
///   the queue's batches as frames, splitting a batch that exceeds the frame
///   limit. On any error it reconnects after a capped exponential backoff
///   with jitter. Every successful connection (the first included) is reported
///   by [`take_reconnected`](MessageSink::take_reconnected), so the runner
///   calls `OmniPaxos::reconnected`.
/// - Frames on a link arrive in order (one HTTP/2 stream per directed link).
///
/// The tasks are owned: [`TonicSink::shutdown`] stops them and waits, and
/// dropping the sink aborts them. Pass an `Arc<TonicSink<T>>` to the runner
/// to keep a handle for shutdown and statistics.
pub struct TonicSink<T: Entry> {
    queues: BTreeMap<NodeId, mpsc::Sender<Batch<T>>>,
    queue_capacity: usize,
    reconnected: Arc<Mutex<BTreeSet<NodeId>>>,
    stats: Arc<TransportStats>,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl<T> TonicSink<T>
where
    T: Entry + Send + 'static,
    T::Snapshot: Send,
    Message<T>: Serialize,
{
    /// Starts one link task per peer. `peers` maps each other node of the
    /// configuration to its peer address, `host:port` (an entry for this
    /// node itself is ignored). With `tls`, links use mutual TLS and check
    /// that the server is `node-<peer id>`. Must be called inside a tokio
    /// runtime.
    pub fn spawn(
        config: &TransportConfig,
        peers: impl IntoIterator<Item = (NodeId, String)>,
        tls: Option<&TlsMaterial>,
    ) -> Result<Self, Error> {
        config.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let mut endpoints = BTreeMap::new();
        for (node, address) in peers {
            if node == config.node_id {
                continue;
            }
            if !config.peers.contains(&node) {
                return Err(Error::InvalidConfig(format!(
                    "peer {node} at {address:?} is not a member of the configuration {:?}",
                    config.peers
                )));
            }
            let endpoint = endpoint(config, node, &address, tls)?;
            if endpoints.insert(node, endpoint).is_some() {
                return Err(Error::InvalidConfig(format!("peer {node} is listed twice")));
            }
        }
        let stats = Arc::new(TransportStats::default());
        let reconnected = Arc::new(Mutex::new(BTreeSet::new()));
        let (stop, _) = watch::channel(false);
        let mut queues = BTreeMap::new();
        let mut tasks = Vec::new();
        for (node, endpoint) in endpoints {
            let (tx, rx) = mpsc::channel(config.queue_capacity);
            queues.insert(node, tx);
            let link = PeerLink {
                peer: node,
                endpoint,
                config: config.clone(),
                stats: Arc::clone(&stats),
                reconnected: Arc::clone(&reconnected),
                stop: stop.subscribe(),
                next_transfer: 0,
            };
            tasks.push(runtime.spawn(link.run(rx)));
        }
        Ok(Self {
            queues,
            queue_capacity: config.queue_capacity,
            reconnected,
            stats,
            stop,
            tasks: Mutex::new(tasks),
        })
    }
}

impl<T: Entry> TonicSink<T> {
    /// The sink's counters.
    pub fn stats(&self) -> &Arc<TransportStats> {
        &self.stats
    }

    /// Batches waiting in `peer`'s queue (`None` for an unknown peer). Never
    /// above [`queue_capacity`](Self::queue_capacity).
    pub fn queue_len(&self, peer: NodeId) -> Option<usize> {
        self.queues
            .get(&peer)
            .map(|tx| tx.max_capacity() - tx.capacity())
    }

    /// Capacity of each peer's queue, in batches.
    pub fn queue_capacity(&self) -> usize {
        self.queue_capacity
    }

    /// Whether every peer task has ended.
    pub fn is_finished(&self) -> bool {
        self.lock_tasks().iter().all(JoinHandle::is_finished)
    }

    /// Stops every peer task and waits for them to end. Batches still queued
    /// are dropped (counted as [`DropReason::Closed`]); later `send`s drop
    /// their batches the same way.
    pub async fn shutdown(&self) {
        self.stop.send_replace(true);
        let tasks = std::mem::take(&mut *self.lock_tasks());
        for task in tasks {
            // A task that panicked has ended too.
            let _ = task.await;
        }
    }

    fn lock_tasks(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<T: Entry> Drop for TonicSink<T> {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        for task in self.lock_tasks().drain(..) {
            task.abort();
        }
    }
}

impl<T> MessageSink<T> for TonicSink<T>
where
    T: Entry + Send + 'static,
    T::Snapshot: Send,
{
    fn send(&self, to: NodeId, batch: Vec<Message<T>>) {
        let Some(queue) = self.queues.get(&to) else {
            self.stats
                .drop_messages(DropReason::UnknownPeer, batch.len());
            return;
        };
        if *self.stop.borrow() {
            self.stats.drop_messages(DropReason::Closed, batch.len());
            return;
        }
        if let Err(err) = queue.try_send(batch) {
            let (reason, batch) = match err {
                mpsc::error::TrySendError::Full(batch) => (DropReason::QueueFull, batch),
                mpsc::error::TrySendError::Closed(batch) => (DropReason::Closed, batch),
            };
            self.stats.drop_messages(reason, batch.len());
        }
    }

    fn take_reconnected(&self, out: &mut Vec<NodeId>) {
        let mut reconnected = self
            .reconnected
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for peer in std::mem::take(&mut *reconnected) {
            if !out.contains(&peer) {
                out.push(peer);
            }
        }
    }
}

fn endpoint(
    config: &TransportConfig,
    node: NodeId,
    address: &str,
    tls: Option<&TlsMaterial>,
) -> Result<Endpoint, Error> {
    let invalid = |reason: String| Error::InvalidAddress {
        node,
        address: address.to_owned(),
        reason,
    };
    if address.contains("://") {
        return Err(invalid("give host:port, without a scheme".into()));
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{address}"))
        .map_err(|err| invalid(err.to_string()))?
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(config.keepalive)
        .keep_alive_timeout(config.keepalive)
        .keep_alive_while_idle(true);
    if let Some(tls) = tls {
        endpoint = endpoint
            .tls_config(tls.client_config(node))
            .map_err(Error::Setup)?;
    }
    Ok(endpoint)
}

/// The task that owns the link to one peer.
struct PeerLink {
    peer: NodeId,
    endpoint: Endpoint,
    config: TransportConfig,
    stats: Arc<TransportStats>,
    reconnected: Arc<Mutex<BTreeSet<NodeId>>>,
    stop: watch::Receiver<bool>,
    /// Id of the next message sent in chunks (see `frame`).
    next_transfer: u64,
}

/// Why a link ended.
enum Ended {
    Stopped,
    Failed,
}

impl PeerLink {
    async fn run<T>(mut self, mut queue: mpsc::Receiver<Batch<T>>)
    where
        T: Entry + Send + 'static,
        Message<T>: Serialize,
    {
        let mut backoff = Backoff::new(self.config.backoff_min, self.config.backoff_max);
        let mut connected_before = false;
        // Frames of a batch taken off the queue but not yet on a link.
        let mut pending: VecDeque<EncodedFrame> = VecDeque::new();
        loop {
            let channel = tokio::select! {
                biased;
                _ = self.stop.wait_for(|stop| *stop) => break,
                connected = tokio::time::timeout(
                    self.config.connect_timeout,
                    self.endpoint.connect(),
                ) => connected,
            };
            let channel = match channel {
                Ok(Ok(channel)) => channel,
                Ok(Err(err)) => {
                    self.stats.connect_failed();
                    tracing::debug!(peer = self.peer, "cannot connect to the peer: {err}");
                    if self.pause(backoff.next()).await {
                        break;
                    }
                    continue;
                }
                Err(_) => {
                    self.stats.connect_failed();
                    tracing::debug!(peer = self.peer, "connecting to the peer timed out");
                    if self.pause(backoff.next()).await {
                        break;
                    }
                    continue;
                }
            };
            self.stats.connected(connected_before);
            // Every connection is reported, the first included: batches may
            // have been dropped while the peer was unreachable at start-up,
            // and `OmniPaxos::reconnected` re-syncs instead of waiting a
            // resend timeout. A set keeps this bounded if nobody drains it.
            self.reconnected
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(self.peer);
            connected_before = true;
            let opened = Instant::now();
            match self.forward(channel, &mut queue, &mut pending).await {
                Ended::Stopped => break,
                Ended::Failed => {
                    self.stats.link_failed();
                    let lost: usize = pending.drain(..).map(|f| f.messages).sum();
                    self.stats.drop_messages(DropReason::LinkLost, lost);
                    // A link that stayed up for a while earns a fresh backoff.
                    if opened.elapsed() >= self.config.backoff_max {
                        backoff.reset();
                    }
                    if self.pause(backoff.next()).await {
                        break;
                    }
                }
            }
        }
        // Stopped: count what was never sent.
        queue.close();
        let mut dropped: usize = pending.iter().map(|f| f.messages).sum();
        while let Ok(batch) = queue.try_recv() {
            dropped += batch.len();
        }
        self.stats.drop_messages(DropReason::Closed, dropped);
    }

    /// Sleeps for `delay`; returns true when stopped meanwhile.
    async fn pause(&mut self, delay: Duration) -> bool {
        tokio::select! {
            biased;
            _ = self.stop.wait_for(|stop| *stop) => true,
            _ = tokio::time::sleep(delay) => false,
        }
    }

    /// Opens the link on `channel` and forwards batches until it fails or
    /// the sink stops.
    async fn forward<T>(
        &mut self,
        channel: Channel,
        queue: &mut mpsc::Receiver<Batch<T>>,
        pending: &mut VecDeque<EncodedFrame>,
    ) -> Ended
    where
        T: Entry + Send + 'static,
        Message<T>: Serialize,
    {
        let limit = self.config.grpc_message_limit();
        let mut client = PaxosPeerClient::new(channel)
            .max_encoding_message_size(limit)
            .max_decoding_message_size(limit);
        let (frames_tx, frames_rx) = mpsc::channel::<Frame>(LINK_FRAMES);
        let mut request = tonic::Request::new(ReceiverStream::new(frames_rx));
        let md = request.metadata_mut();
        for (key, value) in [
            (metadata::PROTOCOL, PROTOCOL_VERSION.to_string()),
            (metadata::CLUSTER_ID, self.config.cluster_id.clone()),
            (
                metadata::CONFIGURATION_ID,
                self.config.configuration_id.to_string(),
            ),
            (metadata::SENDER, self.config.node_id.to_string()),
            (metadata::RECEIVER, self.peer.to_string()),
        ]
        .into_iter()
        .chain(
            self.config
                .instance
                .map(|instance| (metadata::INSTANCE, instance.to_string())),
        ) {
            // The cluster id was checked to be printable ASCII; numbers are.
            match MetadataValue::try_from(value) {
                Ok(value) => {
                    md.insert(key, value);
                }
                Err(_) => return Ended::Failed,
            }
        }
        let call = client.link(request);
        tokio::pin!(call);
        let mut stop = self.stop.clone();
        // When the frame at the head of `pending` started waiting for room.
        let mut waiting_since: Option<Instant> = None;
        loop {
            if pending.is_empty() {
                waiting_since = None;
                tokio::select! {
                    biased;
                    _ = stop.wait_for(|stop| *stop) => return Ended::Stopped,
                    result = &mut call => return self.link_closed(result),
                    batch = queue.recv() => match batch {
                        // The sink is gone.
                        None => return Ended::Stopped,
                        Some(batch) => {
                            let limits = Limits {
                                frame: self.config.max_frame_bytes,
                                message: self.config.max_chunked_message_bytes,
                            };
                            let (frames, rejected) =
                                split_into_frames(&batch, limits, &mut self.next_transfer);
                            self.stats.chunked_out(rejected.chunked);
                            self.stats
                                .drop_messages(DropReason::OversizeMessage, rejected.oversize);
                            self.stats
                                .drop_messages(DropReason::EncodeFailed, rejected.failed);
                            pending.extend(frames);
                        }
                    },
                }
            } else {
                let since = *waiting_since.get_or_insert_with(Instant::now);
                let deadline = since + self.config.send_timeout;
                tokio::select! {
                    biased;
                    _ = stop.wait_for(|stop| *stop) => return Ended::Stopped,
                    result = &mut call => return self.link_closed(result),
                    permit = frames_tx.reserve() => {
                        let Ok(permit) = permit else {
                            return Ended::Failed;
                        };
                        if let Some(frame) = pending.pop_front() {
                            self.stats.frame_out(frame.payload.len(), frame.messages);
                            permit.send(Frame { payload: frame.payload.into() });
                        }
                        waiting_since = None;
                    }
                    _ = tokio::time::sleep_until(deadline) => {
                        tracing::warn!(
                            peer = self.peer,
                            "the link to the peer accepted nothing for {:?}; reconnecting",
                            self.config.send_timeout
                        );
                        return Ended::Failed;
                    }
                }
            }
        }
    }

    fn link_closed(
        &self,
        result: Result<tonic::Response<crate::proto::LinkClosed>, tonic::Status>,
    ) -> Ended {
        match result {
            Ok(_) => tracing::debug!(peer = self.peer, "the peer closed the link"),
            Err(status)
                if status
                    .metadata()
                    .get(metadata::REFUSAL)
                    .is_some_and(|value| value == metadata::REFUSAL_IMPOSTOR) =>
            {
                tracing::error!(
                    peer = self.peer,
                    "the peer refused this node: {}",
                    status.message()
                );
                self.stats.refused_as_impostor(status.message());
            }
            Err(status) => tracing::warn!(
                peer = self.peer,
                code = ?status.code(),
                "the peer ended the link: {}",
                status.message()
            ),
        }
        Ended::Failed
    }
}

/// Capped exponential backoff with "equal jitter": each delay is drawn from
/// `[d/2, d]` where `d` doubles from `min` up to `max`.
struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
    rng: fastrand::Rng,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            current: min,
            rng: fastrand::Rng::new(),
        }
    }

    fn next(&mut self) -> Duration {
        let d = self.current;
        self.current = (self.current * 2).min(self.max);
        let half = d / 2;
        let jitter_nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(self.rng.u64(0..=jitter_nanos))
    }

    fn reset(&mut self) {
        self.current = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
        let mut caps = Vec::new();
        for _ in 0..10 {
            let cap = b.current;
            let d = b.next();
            assert!(
                d >= cap / 2 && d <= cap,
                "{d:?} outside [{:?}, {cap:?}]",
                cap / 2
            );
            caps.push(cap);
        }
        assert_eq!(caps[0], Duration::from_millis(50));
        assert_eq!(caps[1], Duration::from_millis(100));
        assert_eq!(*caps.last().unwrap(), Duration::from_secs(2));
        b.reset();
        assert!(b.next() <= Duration::from_millis(50));
    }
}
