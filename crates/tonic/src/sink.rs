//! The outbound side: a [`MessageSink`] with one bounded queue and one
//! long-lived gRPC link per peer.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::messages::Message;
use omnipaxos::storage::Entry;
use omnipaxos::util::NodeId;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tsoracle_paxos_toolkit::MessageSink;

use crate::config::{TransportConfig, metadata};
use crate::error::Error;
use crate::frame::{EncodedFrame, Limits, Piece, split_into_frames};
use crate::proto::paxos_peer_client::PaxosPeerClient;
use crate::proto::{Frame, HeldReply, HeldRequest};
use crate::stats::{DropReason, TransportStats};
use crate::tls::TlsMaterial;
use crate::transfer::{
    BODY_HEADER_MAX, Digest, OutTransfer, accept_sync, chunk_frame, prefix_matches,
};

/// Frames buffered between a peer task and its open gRPC stream.
const LINK_FRAMES: usize = 8;

type Batch<T> = Vec<Message<T>>;

/// What waits for a link, in order.
enum Outgoing<T: Entry> {
    /// A frame ready to send.
    Frame(EncodedFrame),
    /// A message too large for a frame, to send as a transfer.
    Large(Message<T>),
}

impl<T: Entry> Outgoing<T> {
    /// The messages this piece delivers.
    fn messages(&self) -> usize {
        match self {
            Outgoing::Frame(frame) => frame.messages,
            Outgoing::Large(_) => 1,
        }
    }
}

/// A peer's two queues. Election (BLE) messages have their own: they may
/// overtake the sequence-paxos messages queued before them, so that a long
/// transfer never starves the peer of heartbeats (and the peer never
/// suspects a live leader). OmniPaxos needs FIFO order among sequence-paxos
/// messages only; each queue keeps its own order.
struct Queues<T: Entry> {
    paxos: mpsc::Sender<Batch<T>>,
    election: mpsc::Sender<Batch<T>>,
}

/// The receiving ends of [`Queues`], owned by the peer's link task.
struct Inbound<T: Entry> {
    paxos: mpsc::Receiver<Batch<T>>,
    election: mpsc::Receiver<Batch<T>>,
}

/// A [`MessageSink`] over tonic: one task, one bounded queue and one
/// client-streaming `Link` call per peer.
///
/// - [`send`](MessageSink::send) never blocks: it puts the batch on the
///   peer's queues (election messages on one, the others on the other), or
///   drops the *new* batch when a queue is full and counts it
///   ([`DropReason::QueueFull`]). Paxos tolerates loss and resends, so a
///   dead or slow peer costs at most `queue_capacity` batches per queue of
///   memory (plus the few frames in flight on its link), and never delays
///   another peer.
/// - Each peer task connects with a deadline, opens the link, and forwards
///   the queue's batches as frames, splitting a batch that exceeds the frame
///   limit. On any error it reconnects after a capped exponential backoff
///   with jitter. Every successful connection (the first included) is reported
///   by [`take_reconnected`](MessageSink::take_reconnected), so the runner
///   calls `OmniPaxos::reconnected`.
/// - Frames on a link arrive in order (one HTTP/2 stream per directed link).
///   A message above the frame limit is a transfer (spooled, sent in
///   chunks, see `transfer`) in its place; election messages may overtake
///   it, nothing else does.
///
/// The tasks are owned: [`TonicSink::shutdown`] stops them and waits, and
/// dropping the sink aborts them. Pass an `Arc<TonicSink<T>>` to the runner
/// to keep a handle for shutdown and statistics.
pub struct TonicSink<T: Entry> {
    queues: BTreeMap<NodeId, Queues<T>>,
    queue_capacity: usize,
    reconnected: Arc<Mutex<BTreeSet<NodeId>>>,
    stats: Arc<TransportStats>,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl<T> TonicSink<T>
where
    T: Entry + Serialize + Send + 'static,
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
        Self::spawn_counting(config, peers, tls, Arc::default())
    }

    /// [`spawn`](Self::spawn) counting into `stats`: the sinks of one
    /// node's successive configurations share their counters (and a peer's
    /// identity refusal, which the node watches).
    pub fn spawn_counting(
        config: &TransportConfig,
        peers: impl IntoIterator<Item = (NodeId, String)>,
        tls: Option<&TlsMaterial>,
        stats: Arc<TransportStats>,
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
            // Checked now; built again for every connection, so that a
            // reloaded certificate is presented from the next one on.
            endpoint(config, node, &address, tls)?;
            if endpoints.insert(node, address).is_some() {
                return Err(Error::InvalidConfig(format!("peer {node} is listed twice")));
            }
        }
        let reconnected = Arc::new(Mutex::new(BTreeSet::new()));
        let (stop, _) = watch::channel(false);
        let mut queues = BTreeMap::new();
        let mut tasks = Vec::new();
        for (node, address) in endpoints {
            let (paxos, paxos_rx) = mpsc::channel(config.queue_capacity);
            let (election, election_rx) = mpsc::channel(config.queue_capacity);
            queues.insert(node, Queues { paxos, election });
            let inbound = Inbound {
                paxos: paxos_rx,
                election: election_rx,
            };
            let link = PeerLink {
                peer: node,
                address,
                tls: tls.cloned(),
                config: config.clone(),
                stats: Arc::clone(&stats),
                reconnected: Arc::clone(&reconnected),
                stop: stop.subscribe(),
            };
            tasks.push(runtime.spawn(link.run(inbound)));
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

    /// Batches waiting in `peer`'s queues (`None` for an unknown peer). Never
    /// above [`queue_capacity`](Self::queue_capacity) per queue.
    pub fn queue_len(&self, peer: NodeId) -> Option<usize> {
        let len = |tx: &mpsc::Sender<Batch<T>>| tx.max_capacity() - tx.capacity();
        self.queues
            .get(&peer)
            .map(|queues| len(&queues.paxos) + len(&queues.election))
    }

    /// Capacity of each of a peer's two queues, in batches.
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
        let Some(queues) = self.queues.get(&to) else {
            self.stats
                .drop_messages(DropReason::UnknownPeer, batch.len());
            return;
        };
        if *self.stop.borrow() {
            self.stats.drop_messages(DropReason::Closed, batch.len());
            return;
        }
        let (election, paxos): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .partition(|message| matches!(message, Message::BLE(_) | Message::Lease(_)));
        for (queue, batch) in [(&queues.election, election), (&queues.paxos, paxos)] {
            if batch.is_empty() {
                continue;
            }
            if let Err(err) = queue.try_send(batch) {
                let (reason, batch) = match err {
                    mpsc::error::TrySendError::Full(batch) => (DropReason::QueueFull, batch),
                    mpsc::error::TrySendError::Closed(batch) => (DropReason::Closed, batch),
                };
                self.stats.drop_messages(reason, batch.len());
            }
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
    /// The peer's address and this node's TLS material: the endpoint is
    /// built for each connection (a reloaded certificate counts).
    address: String,
    tls: Option<TlsMaterial>,
    config: TransportConfig,
    stats: Arc<TransportStats>,
    reconnected: Arc<Mutex<BTreeSet<NodeId>>>,
    stop: watch::Receiver<bool>,
}

/// Why a link ended.
enum Ended {
    Stopped,
    Failed,
}

/// What is in hand on an open link, not yet on it: counted as lost if the
/// link ends.
struct InHand {
    /// Election frames, sent before anything else.
    urgent: VecDeque<EncodedFrame>,
    /// The next sequence-paxos frame (a batch, or a piece of a transfer).
    ready: Option<EncodedFrame>,
    /// The transfer being produced, if any.
    active: Option<Producer>,
    /// Transfers started on this link so far.
    transfers: u64,
}

impl InHand {
    fn messages(&self) -> usize {
        self.urgent.iter().map(|f| f.messages).sum::<usize>()
            + self.ready.as_ref().map_or(0, |f| f.messages)
            + self.active.as_ref().map_or(0, Producer::messages)
    }
}

/// A transfer's frames, made by a task of its own (spooling, the `Held`
/// call, reading chunks), so that the link can wait on it and on election
/// messages at once: receiving from a channel loses nothing when another
/// branch wins. The task is aborted when this is dropped.
struct Producer {
    frames: mpsc::Receiver<EncodedFrame>,
    task: JoinHandle<()>,
    /// The round it syncs, when the message is an `AcceptSync`.
    round: Option<Ballot>,
    /// Set by whoever counts the message as dropped first: the task when
    /// it gives up, or the link when it ends with the transfer unfinished.
    settled: Arc<AtomicBool>,
}

impl Producer {
    /// The message as lost with the link (1), unless the task already
    /// counted it when it gave up (0). Counts once, whoever comes first.
    fn messages(&self) -> usize {
        usize::from(!self.settled.swap(true, Ordering::SeqCst))
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PeerLink {
    async fn run<T>(mut self, mut inbound: Inbound<T>)
    where
        T: Entry + Serialize + Send + 'static,
        T::Snapshot: Send,
        Message<T>: Serialize,
    {
        let mut backoff = Backoff::new(self.config.backoff_min, self.config.backoff_max);
        let mut connected_before = false;
        // Pieces of a batch taken off the queue but not yet on a link.
        let mut pending: VecDeque<Outgoing<T>> = VecDeque::new();
        loop {
            let endpoint = match endpoint(&self.config, self.peer, &self.address, self.tls.as_ref())
            {
                Ok(endpoint) => endpoint,
                Err(err) => {
                    // Checked at spawn; only a reloaded TLS material could
                    // fail here. Wait and try again.
                    self.stats.connect_failed();
                    tracing::warn!(peer = self.peer, %err, "cannot set up a link to the peer");
                    if self.pause(backoff.next()).await {
                        break;
                    }
                    continue;
                }
            };
            let channel = tokio::select! {
                biased;
                _ = self.stop.wait_for(|stop| *stop) => break,
                connected = tokio::time::timeout(
                    self.config.connect_timeout,
                    endpoint.connect(),
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
            match self.forward(channel, &mut inbound, &mut pending).await {
                Ended::Stopped => break,
                Ended::Failed => {
                    self.stats.link_failed();
                    // A transfer cut here continues, when OmniPaxos sends
                    // it again, after what the peer holds.
                    let lost: usize = pending.drain(..).map(|p| p.messages()).sum();
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
        inbound.paxos.close();
        inbound.election.close();
        let mut dropped: usize = pending.iter().map(Outgoing::messages).sum();
        for queue in [&mut inbound.paxos, &mut inbound.election] {
            while let Ok(batch) = queue.try_recv() {
                dropped += batch.len();
            }
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
    /// the sink stops. What it holds when the link ends is counted here;
    /// what is left in `pending`, by the caller.
    async fn forward<T>(
        &mut self,
        channel: Channel,
        inbound: &mut Inbound<T>,
        pending: &mut VecDeque<Outgoing<T>>,
    ) -> Ended
    where
        T: Entry + Serialize + Send + 'static,
        T::Snapshot: Send,
        Message<T>: Serialize,
    {
        let limit = self.config.grpc_message_limit();
        let mut client = PaxosPeerClient::new(channel)
            .max_encoding_message_size(limit)
            .max_decoding_message_size(limit);
        let transfers = Arc::new(Transfers {
            peer: self.peer,
            client: client.clone(),
            config: self.config.clone(),
            stats: Arc::clone(&self.stats),
        });
        let (frames_tx, frames_rx) = mpsc::channel::<Frame>(LINK_FRAMES);
        let mut request = tonic::Request::new(ReceiverStream::new(frames_rx));
        if self
            .config
            .set_link_metadata(self.peer, request.metadata_mut())
            .is_err()
        {
            return Ended::Failed;
        }
        let call = client.link(request);
        tokio::pin!(call);
        let mut stop = self.stop.clone();
        let mut hand = InHand {
            urgent: VecDeque::new(),
            ready: None,
            active: None,
            transfers: 0,
        };
        let ended = loop {
            // Election frames first; then the sequence-paxos frame in hand.
            let (frame, urgent) = match hand.urgent.pop_front() {
                Some(frame) => (frame, true),
                None => match hand.ready.take() {
                    Some(frame) => (frame, false),
                    None => {
                        if let Some(ended) = self
                            .refill(
                                &mut hand, inbound, pending, &transfers, &mut call, &mut stop,
                            )
                            .await
                        {
                            break ended;
                        }
                        continue;
                    }
                },
            };
            let deadline = Instant::now() + self.config.send_timeout;
            let room_for_urgent = hand.urgent.len() < self.config.queue_capacity;
            tokio::select! {
                biased;
                _ = stop.wait_for(|stop| *stop) => {
                    put_back(&mut hand, frame, urgent);
                    break Ended::Stopped;
                }
                result = &mut call => {
                    put_back(&mut hand, frame, urgent);
                    break self.link_closed(result);
                }
                permit = frames_tx.reserve() => {
                    let Ok(permit) = permit else {
                        put_back(&mut hand, frame, urgent);
                        break Ended::Failed;
                    };
                    self.stats.frame_out(frame.payload.len(), frame.messages);
                    permit.send(Frame { payload: frame.payload.into() });
                }
                // Heartbeats keep coming while a frame waits for room.
                batch = inbound.election.recv(), if room_for_urgent => {
                    put_back(&mut hand, frame, urgent);
                    match batch {
                        // The sink is gone.
                        None => break Ended::Stopped,
                        Some(batch) => hand.urgent.extend(self.election_frames(batch)),
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    put_back(&mut hand, frame, urgent);
                    tracing::warn!(
                        peer = self.peer,
                        "the link to the peer accepted nothing for {:?}; reconnecting",
                        self.config.send_timeout
                    );
                    break Ended::Failed;
                }
            }
        };
        let reason = match ended {
            Ended::Stopped => DropReason::Closed,
            Ended::Failed => DropReason::LinkLost,
        };
        self.stats.drop_messages(reason, hand.messages());
        ended
    }

    /// Waits until something can be put in hand: an election batch, the
    /// next frame of the transfer in progress, the next piece of `pending`,
    /// or a new batch. `Some` when the link ends instead.
    async fn refill<T, C>(
        &self,
        hand: &mut InHand,
        inbound: &mut Inbound<T>,
        pending: &mut VecDeque<Outgoing<T>>,
        transfers: &Arc<Transfers>,
        call: &mut std::pin::Pin<&mut C>,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<Ended>
    where
        T: Entry + Serialize + Send + 'static,
        T::Snapshot: Send,
        Message<T>: Serialize,
        C: std::future::Future<
                Output = Result<tonic::Response<crate::proto::LinkClosed>, tonic::Status>,
            >,
    {
        if hand.active.is_none() {
            match pending.pop_front() {
                Some(Outgoing::Frame(frame)) => {
                    hand.ready = Some(frame);
                    return None;
                }
                Some(Outgoing::Large(message)) => {
                    let first_on_link = hand.transfers == 0;
                    hand.transfers += 1;
                    hand.active = Some(Arc::clone(transfers).start(message, first_on_link));
                    return None;
                }
                None => {}
            }
        }
        let producing = hand.active.is_some();
        // While a transfer goes out, the queue is still drained into
        // `pending` (up to its capacity), so that a newer catch-up replaces
        // an older one waiting there instead of piling up in the queue.
        let room = pending.len() < self.config.queue_capacity;
        tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => Some(Ended::Stopped),
            result = call.as_mut() => Some(self.link_closed(result)),
            batch = inbound.election.recv() => match batch {
                None => Some(Ended::Stopped),
                Some(batch) => {
                    hand.urgent.extend(self.election_frames(batch));
                    None
                }
            },
            // The queue before the transfer's next chunk: draining it is
            // cheap, and a newer catch-up must meet the one in progress.
            batch = inbound.paxos.recv(), if room => match batch {
                None => Some(Ended::Stopped),
                Some(batch) => {
                    let active_round = hand.active.as_ref().and_then(|p| p.round);
                    for piece in self.split(batch) {
                        self.enqueue(pending, piece, active_round);
                    }
                    None
                }
            },
            frame = next_produced(&mut hand.active), if producing => {
                match frame {
                    // The head completes the transfer: from here it counts
                    // as the frame in hand.
                    Some(frame) if frame.messages > 0 => {
                        hand.active = None;
                        hand.ready = Some(frame);
                    }
                    Some(frame) => hand.ready = Some(frame),
                    // Given up (counted by the producer).
                    None => hand.active = None,
                }
                None
            }
        }
    }

    /// Appends `piece` to `pending`. OmniPaxos answers each `Promise` a
    /// waiting follower resends with a new catch-up (`AcceptSync`, each a
    /// copy of the state) while the first is on its way. One too large for
    /// a frame is dropped when the transfer in progress (`active_round`)
    /// syncs the same round: the follower syncs from the first and would
    /// ignore the rest. The accepts queued after a dropped sync belong to
    /// its new sequence session, so the follower sees a gap and asks to be
    /// synced again; that sync is a small delta, as it holds the state by
    /// then (sending the second copy would end in the same gap). Otherwise
    /// it replaces one still waiting, the newest being the one worth
    /// sending. Either is a loss OmniPaxos tolerates (counted).
    fn enqueue<T: Entry>(
        &self,
        pending: &mut VecDeque<Outgoing<T>>,
        piece: Outgoing<T>,
        active_round: Option<Ballot>,
    ) {
        if let Outgoing::Large(message) = &piece
            && let Some(round) = sync_round(message)
        {
            if active_round == Some(round) {
                self.stats.drop_messages(DropReason::Superseded, 1);
                return;
            }
            let before = pending.len();
            pending.retain(
                |waiting| !matches!(waiting, Outgoing::Large(message) if sync_round(message).is_some()),
            );
            self.stats
                .drop_messages(DropReason::Superseded, before - pending.len());
        }
        pending.push_back(piece);
    }

    /// An election batch as frames (its messages are small: never a
    /// transfer).
    fn election_frames<T>(&self, batch: Batch<T>) -> Vec<EncodedFrame>
    where
        T: Entry,
        Message<T>: Serialize,
    {
        let mut frames = Vec::new();
        for piece in self.split(batch) {
            match piece {
                Outgoing::Frame(frame) => frames.push(frame),
                Outgoing::Large(_) => self.stats.drop_messages(DropReason::OversizeMessage, 1),
            }
        }
        frames
    }

    /// A batch as pieces for the link, its losses counted.
    fn split<T>(&self, batch: Batch<T>) -> impl Iterator<Item = Outgoing<T>> + use<T>
    where
        T: Entry,
        Message<T>: Serialize,
    {
        let limits = Limits {
            frame: self.config.max_frame_bytes,
            message: self.config.max_chunked_message_bytes,
        };
        let (pieces, rejected) = split_into_frames(batch, limits);
        self.stats.chunked_out(rejected.large);
        self.stats
            .drop_messages(DropReason::OversizeMessage, rejected.oversize);
        self.stats
            .drop_messages(DropReason::EncodeFailed, rejected.failed);
        pieces.into_iter().map(|piece| match piece {
            Piece::Frame(frame) => Outgoing::Frame(frame),
            Piece::Large(message) => Outgoing::Large(message),
        })
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

/// The round of an `AcceptSync` (`None` for any other message).
fn sync_round<T: Entry>(message: &Message<T>) -> Option<Ballot> {
    accept_sync(message).map(|sync| sync.n)
}

/// The frame in hand goes back where it came from (the link ended or an
/// election batch came first).
fn put_back(hand: &mut InHand, frame: EncodedFrame, urgent: bool) {
    if urgent {
        hand.urgent.push_front(frame);
    } else {
        hand.ready = Some(frame);
    }
}

/// The next frame of the transfer in progress (`None`: it ended).
async fn next_produced(active: &mut Option<Producer>) -> Option<EncodedFrame> {
    match active {
        Some(producer) => producer.frames.recv().await,
        None => None,
    }
}

/// The transfer side of one open link: spools a large message, asks the
/// peer what it holds, and reads body chunks. File work runs off the
/// runtime.
struct Transfers {
    peer: NodeId,
    client: PaxosPeerClient<Channel>,
    config: TransportConfig,
    stats: Arc<TransportStats>,
}

impl Transfers {
    /// Starts producing the frames of `message`'s transfer.
    fn start<T>(self: Arc<Self>, message: Message<T>, first_on_link: bool) -> Producer
    where
        T: Entry + Serialize + Send + 'static,
        T::Snapshot: Send,
        Message<T>: Serialize,
    {
        // One frame ahead: the next chunk is read while one is sent.
        let (tx, frames) = mpsc::channel(1);
        let round = sync_round(&message);
        let settled = Arc::new(AtomicBool::new(false));
        let give_up = Arc::clone(&settled);
        let task =
            tokio::spawn(async move { self.produce(message, first_on_link, tx, &give_up).await });
        Producer {
            frames,
            task,
            round,
            settled,
        }
    }

    /// Spools `message`, then sends its body chunks from where the peer's
    /// held prefix ends, then its head. Returns early (the drop counted)
    /// when it cannot go on, and quietly when the link is gone.
    async fn produce<T>(
        &self,
        message: Message<T>,
        first_on_link: bool,
        out: mpsc::Sender<EncodedFrame>,
        settled: &AtomicBool,
    ) where
        T: Entry + Serialize + Send + 'static,
        T::Snapshot: Send,
        Message<T>: Serialize,
    {
        let Some(mut transfer) = self.spool(message, settled).await else {
            return;
        };
        // Only the first transfer of a link can continue a cut one: later
        // ones follow a transfer that completed on this link.
        let resume = if first_on_link {
            self.resume_point(&transfer).await
        } else {
            None
        };
        self.stats
            .transfer_skipped(resume.map_or(0, |(held, _)| held));
        transfer.start_at(resume);
        let body_len = transfer.body_len();
        let room = self.config.max_frame_bytes - BODY_HEADER_MAX;
        loop {
            let next = transfer.next().unwrap_or(body_len);
            if next >= body_len {
                // The body is through: the head completes the message.
                let head = EncodedFrame {
                    payload: transfer.take_head(),
                    messages: 1,
                };
                let _ = out.send(head).await;
                return;
            }
            let file = transfer.file();
            let resumes = transfer.take_resumes();
            let read = tokio::task::spawn_blocking(move || {
                chunk_frame(&file, next, body_len, room, resumes)
            })
            .await;
            let payload = match read {
                Ok(Ok(payload)) => payload,
                Ok(Err(err)) => return self.give_up(DropReason::EncodeFailed, &err, settled),
                Err(err) => return self.give_up(DropReason::EncodeFailed, &err, settled),
            };
            transfer.advance((body_len - next).min(room as u64));
            let chunk = EncodedFrame {
                payload,
                messages: 0,
            };
            if out.send(chunk).await.is_err() {
                return;
            }
        }
    }

    /// Spools `message`; `None` when it cannot be sent (counted).
    async fn spool<T>(&self, message: Message<T>, settled: &AtomicBool) -> Option<OutTransfer>
    where
        T: Entry + Serialize + Send + 'static,
        T::Snapshot: Send,
        Message<T>: Serialize,
    {
        let dir = self.config.spool_dir();
        match tokio::task::spawn_blocking(move || OutTransfer::spool(message, &dir)).await {
            Ok(Ok(transfer)) if transfer.head_len() <= self.config.max_frame_bytes => {
                Some(transfer)
            }
            Ok(Ok(transfer)) => {
                let reason = format!(
                    "its head alone is {} bytes, above the frame limit",
                    transfer.head_len()
                );
                self.give_up(DropReason::OversizeMessage, &reason, settled);
                None
            }
            Ok(Err(err)) => {
                self.give_up(DropReason::EncodeFailed, &err, settled);
                None
            }
            Err(err) => {
                self.give_up(DropReason::EncodeFailed, &err, settled);
                None
            }
        }
    }

    /// Counts the message as dropped, unless the link already counted it
    /// as lost with it.
    fn give_up(&self, reason: DropReason, why: &dyn std::fmt::Display, settled: &AtomicBool) {
        if !settled.swap(true, Ordering::SeqCst) {
            self.stats.drop_messages(reason, 1);
        }
        tracing::warn!(peer = self.peer, "dropped a large message: {why}");
    }

    /// The prefix of `transfer`'s body the peer holds from an earlier, cut
    /// transfer (its length and digest), when this body starts with the
    /// same bytes. Any failure to ask means none.
    async fn resume_point(&self, transfer: &OutTransfer) -> Option<(u64, Digest)> {
        let mut request = tonic::Request::new(HeldRequest {});
        if self
            .config
            .set_link_metadata(self.peer, request.metadata_mut())
            .is_err()
        {
            return None;
        }
        let mut client = self.client.clone();
        let asked = tokio::time::timeout(self.config.send_timeout, client.held(request)).await;
        let Ok(Ok(reply)) = asked else {
            return None;
        };
        let HeldReply { bytes, sha256 } = reply.into_inner();
        let Ok(digest) = Digest::try_from(sha256.as_slice()) else {
            return None;
        };
        if bytes == 0 || bytes > transfer.body_len() {
            return None;
        }
        let file = transfer.file();
        let same = tokio::task::spawn_blocking(move || prefix_matches(&file, bytes, &digest)).await;
        match same {
            Ok(Ok(true)) => Some((bytes, digest)),
            _ => None,
        }
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
