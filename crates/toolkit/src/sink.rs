//! The boundary between a runner and a peer transport.
//!
//! Outbound, the runner hands each round's messages to a [`MessageSink`],
//! grouped by receiver, and never waits for the network: a sink queues or
//! drops (Paxos resends what is lost). Inbound, a transport delivers what it
//! receives through an [`Inbox`], which refuses messages that do not belong
//! to this node's configuration before they can reach OmniPaxos.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use omnipaxos::messages::Message;
use omnipaxos::storage::Entry;
use omnipaxos::util::NodeId;
use tokio::sync::mpsc;

/// Where a runner sends OmniPaxos messages.
///
/// Implementations must not block: `send` is called from the consensus
/// thread between ticks. Each link is independent, so a slow or dead peer
/// must never delay messages to another one, and memory per peer must stay
/// bounded (drop when a peer's queue is full, and count it).
pub trait MessageSink<T: Entry>: Send + Sync + 'static {
    /// Hands `batch`, every message of one round addressed to `to`, to the
    /// link towards `to`, in order.
    fn send(&self, to: NodeId, batch: Vec<Message<T>>);

    /// Appends to `out` the peers whose link came back up since the last
    /// call, so the runner can call `OmniPaxos::reconnected` for each (a
    /// healed link otherwise waits a whole resend timeout).
    fn take_reconnected(&self, out: &mut Vec<NodeId>);
}

impl<T: Entry, S: MessageSink<T> + ?Sized> MessageSink<T> for Arc<S> {
    fn send(&self, to: NodeId, batch: Vec<Message<T>>) {
        (**self).send(to, batch);
    }

    fn take_reconnected(&self, out: &mut Vec<NodeId>) {
        (**self).take_reconnected(out);
    }
}

/// Why an [`Inbox`] refused a message. Each refusal is also counted in
/// [`InboxStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The message names a sender outside this configuration; OmniPaxos
    /// would crash on it.
    #[error("message from node {0}, which is not a peer of this configuration")]
    UnknownSender(NodeId),
    /// The message is addressed to another node.
    #[error("message addressed to node {0}, not to this node")]
    WrongReceiver(NodeId),
    /// The runner's inbound queue is full; the message was dropped.
    #[error("the inbound queue is full")]
    QueueFull,
    /// The runner has stopped.
    #[error("the runner has stopped")]
    Stopped,
}

/// Counters of an [`Inbox`], shared by all its clones.
#[derive(Debug, Default)]
pub struct InboxStats {
    delivered: AtomicU64,
    unknown_sender: AtomicU64,
    wrong_receiver: AtomicU64,
    queue_full: AtomicU64,
}

impl InboxStats {
    /// Messages handed to the runner.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Messages refused because their sender is not a peer.
    pub fn unknown_sender(&self) -> u64 {
        self.unknown_sender.load(Ordering::Relaxed)
    }

    /// Messages refused because they were addressed to another node.
    pub fn wrong_receiver(&self) -> u64 {
        self.wrong_receiver.load(Ordering::Relaxed)
    }

    /// Messages dropped because the runner's queue was full.
    pub fn queue_full(&self) -> u64 {
        self.queue_full.load(Ordering::Relaxed)
    }

    fn count(&self, refusal: Refusal) {
        let counter = match refusal {
            Refusal::UnknownSender(_) => &self.unknown_sender,
            Refusal::WrongReceiver(_) => &self.wrong_receiver,
            Refusal::QueueFull => &self.queue_full,
            Refusal::Stopped => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The inbound side of a runner, cloned into each transport task.
///
/// It checks the sender and receiver ids of every message against the
/// configuration before the message is queued: a message from an unknown pid
/// crashes an OmniPaxos leader.
pub struct Inbox<T: Entry> {
    me: NodeId,
    peers: Arc<[NodeId]>,
    tx: mpsc::Sender<Message<T>>,
    stats: Arc<InboxStats>,
}

impl<T: Entry> Clone for Inbox<T> {
    fn clone(&self) -> Self {
        Self {
            me: self.me,
            peers: Arc::clone(&self.peers),
            tx: self.tx.clone(),
            stats: Arc::clone(&self.stats),
        }
    }
}

impl<T: Entry> Inbox<T> {
    pub(crate) fn new(me: NodeId, peers: Arc<[NodeId]>, tx: mpsc::Sender<Message<T>>) -> Self {
        Self {
            me,
            peers,
            tx,
            stats: Arc::default(),
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.me
    }

    /// Whether `node` is a peer of this node (itself excluded).
    pub fn is_peer(&self, node: NodeId) -> bool {
        node != self.me && self.peers.contains(&node)
    }

    /// The inbox's counters.
    pub fn stats(&self) -> &InboxStats {
        &self.stats
    }

    /// Queues `message` without waiting; a full queue drops it (Paxos resends).
    pub fn try_deliver(&self, message: Message<T>) -> Result<(), Refusal> {
        self.check(&message)?;
        self.tx.try_send(message).map_err(|err| {
            let refusal = match err {
                mpsc::error::TrySendError::Full(_) => Refusal::QueueFull,
                mpsc::error::TrySendError::Closed(_) => Refusal::Stopped,
            };
            self.stats.count(refusal);
            refusal
        })?;
        self.stats.delivered.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Queues `message`, waiting for room: a transport reading a stream uses
    /// this so a busy runner slows the stream down (flow control) instead of
    /// dropping its messages.
    pub async fn deliver(&self, message: Message<T>) -> Result<(), Refusal> {
        self.check(&message)?;
        self.tx.send(message).await.map_err(|_| Refusal::Stopped)?;
        self.stats.delivered.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn check(&self, message: &Message<T>) -> Result<(), Refusal> {
        let sender = message.get_sender();
        let receiver = message.get_receiver();
        let verdict = if receiver != self.me {
            Err(Refusal::WrongReceiver(receiver))
        } else if !self.is_peer(sender) {
            Err(Refusal::UnknownSender(sender))
        } else {
            Ok(())
        };
        if let Err(refusal) = verdict {
            self.stats.count(refusal);
        }
        verdict
    }
}
