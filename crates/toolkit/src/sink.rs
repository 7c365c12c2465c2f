//! The boundary between a runner and a peer transport.
//!
//! Outbound, the runner hands each round's messages to a [`MessageSink`],
//! grouped by receiver, and never waits for the network: a sink queues or
//! drops (Paxos resends what is lost). Inbound, a transport delivers what it
//! receives through an [`Inbox`], which refuses messages that do not belong
//! to this node's configuration, and messages that could end it (a
//! StopSign) unless they belong to a change the host agreed to, before they
//! can reach OmniPaxos.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use omnipaxos::messages::Message;
use omnipaxos::messages::sequence_paxos::{PaxosMessage, PaxosMsg};
use omnipaxos::storage::{Entry, StopSign};
use omnipaxos::util::{LogSync, NodeId};
use tokio::sync::mpsc;

use crate::instance::{Impostor, InstanceId, PeerAdmission};

/// Where a runner sends OmniPaxos messages.
///
/// Implementations must not block: `send` is called from the consensus
/// thread between ticks. Each link is independent, so a slow or dead peer
/// must never delay messages to another one, and memory per peer must stay
/// bounded (drop when a peer's queue is full, and count it).
pub trait MessageSink<T: Entry>: Send + Sync + 'static {
    /// Hands `batch` to the link towards `to`, in order: the messages of one
    /// round addressed to `to`, or one of the round's two parts (a leader's
    /// replication goes before the round's sync, the rest after it), each
    /// in the round's order.
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
    /// The message from this node carries a StopSign (see
    /// [`carries_stop_sign`]) that no change agreed by this node's host
    /// names ([`StopSignAdmission`]); a peer link may not end the
    /// configuration on its own.
    #[error(
        "message from node {0} carries an OmniPaxos StopSign that no agreed membership change \
         names; dropped (a peer link cannot end the configuration)"
    )]
    StopSign(NodeId),
    /// The sender presented a data-directory instance other than the one
    /// the cluster registered for it (see [`crate::instance`]).
    #[error(transparent)]
    Impostor(#[from] Impostor),
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
    stop_sign: AtomicU64,
    impostor: AtomicU64,
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

    /// Messages refused because they carry a StopSign (see
    /// [`carries_stop_sign`]) that no agreed change names. A few can be a
    /// race (a StopSign that overtook the decision agreeing on its change;
    /// OmniPaxos sends it again); a steady count means some peer tries to
    /// end the configuration on its own: a forged or misbehaving peer.
    pub fn stop_sign(&self) -> u64 {
        self.stop_sign.load(Ordering::Relaxed)
    }

    /// Messages refused because their sender presented another instance
    /// than the one registered for it ([`Refusal::Impostor`]).
    pub fn impostor(&self) -> u64 {
        self.impostor.load(Ordering::Relaxed)
    }

    /// Messages dropped because the runner's queue was full.
    pub fn queue_full(&self) -> u64 {
        self.queue_full.load(Ordering::Relaxed)
    }

    fn count(&self, refusal: Refusal) {
        let counter = match refusal {
            Refusal::UnknownSender(_) => &self.unknown_sender,
            Refusal::WrongReceiver(_) => &self.wrong_receiver,
            Refusal::StopSign(_) => &self.stop_sign,
            Refusal::Impostor(_) => &self.impostor,
            Refusal::QueueFull => &self.queue_full,
            Refusal::Stopped => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Decides whether a StopSign belongs to a membership change this node's
/// host agreed to.
///
/// OmniPaxos trusts its peers: a StopSign it accepts ends the configuration
/// for good. A host that changes membership agrees on the next
/// configuration in its own log first, and admits only the StopSign that
/// names it. Every log that holds the StopSign holds that agreement before
/// it, so the runner asks with everything that may hold it: the applied
/// state (the host's own), the entries this node holds but has not applied
/// yet (`own`: decided or only accepted), and the log sync the StopSign
/// travels with. Asked on the consensus thread for the rare messages that
/// carry a StopSign (and for [`Runner::reconfigure`](crate::Runner::reconfigure));
/// it must not block.
pub trait StopSignAdmission<T: Entry>: Send + Sync + 'static {
    /// `true` to let a message carrying `stop_sign` reach OmniPaxos. `sync`
    /// is the log sync it travels with (a `Promise` or an `AcceptSync`);
    /// `own` are this node's entries past its applied index.
    fn admit(&self, stop_sign: &StopSign, sync: Option<&LogSync<T>>, own: &[T]) -> bool;

    /// `true` to let `entry`, forwarded by a peer for the leader to propose
    /// (in a `ProposalForward`), reach OmniPaxos; the runner drops the
    /// entries refused and passes the others. A host whose membership
    /// changes only its own admin path may propose (on the leader) refuses
    /// forwarded ones: otherwise any member (or anything that can speak as
    /// one) could agree a change that the leader then ends the
    /// configuration for. The default admits every entry.
    fn admit_forward(&self, entry: &T) -> bool {
        let _ = entry;
        true
    }
}

/// The inbound side of a runner, cloned into each transport task.
///
/// It checks the sender and receiver ids of every message against the
/// configuration before the message is queued: a message from an unknown pid
/// crashes an OmniPaxos leader. Once a [`PeerAdmission`] is set, it also
/// refuses every message whose sender presents a data-directory instance
/// the cluster does not hold for it. It holds the [`StopSignAdmission`]
/// its runner asks, right before OmniPaxos would see a message that
/// carries a StopSign ([`carries_stop_sign`]); refusals are counted in
/// [`InboxStats::stop_sign`].
pub struct Inbox<T: Entry> {
    me: NodeId,
    peers: Arc<[NodeId]>,
    tx: mpsc::Sender<Message<T>>,
    stats: Arc<InboxStats>,
    admission: Arc<OnceLock<Arc<dyn PeerAdmission>>>,
    stop_signs: Arc<OnceLock<Arc<dyn StopSignAdmission<T>>>>,
}

impl<T: Entry> Clone for Inbox<T> {
    fn clone(&self) -> Self {
        Self {
            me: self.me,
            peers: Arc::clone(&self.peers),
            tx: self.tx.clone(),
            stats: Arc::clone(&self.stats),
            admission: Arc::clone(&self.admission),
            stop_signs: Arc::clone(&self.stop_signs),
        }
    }
}

impl<T: Entry + 'static> Inbox<T> {
    /// An inbox of node `me` in a configuration of `nodes` that queues the
    /// messages it accepts into `tx`. A [`Runner`](crate::Runner) makes its
    /// own ([`Runner::inbox`](crate::Runner::inbox)); this is for a
    /// transport's tests, which read what a node would receive from the
    /// other end of `tx`.
    pub fn new(me: NodeId, nodes: Arc<[NodeId]>, tx: mpsc::Sender<Message<T>>) -> Self {
        Self {
            me,
            peers: nodes,
            tx,
            stats: Arc::default(),
            admission: Arc::default(),
            stop_signs: Arc::default(),
        }
    }

    /// Checks every later message's presented instance with `admission`
    /// (this inbox and all its clones). Set once, before the inbox is handed
    /// to a transport; a second call is refused and changes nothing.
    ///
    /// # Errors
    ///
    /// Gives `admission` back when one is already set.
    pub fn set_admission(
        &self,
        admission: Arc<dyn PeerAdmission>,
    ) -> Result<(), Arc<dyn PeerAdmission>> {
        self.admission.set(admission)
    }

    /// Admits the StopSigns that `admission` admits (this inbox's runner
    /// asks it); without one, every StopSign is refused. Set once, before
    /// the inbox is handed to a transport; a second call is refused and
    /// changes nothing.
    ///
    /// # Errors
    ///
    /// Gives `admission` back when one is already set.
    pub fn set_stop_sign_admission(
        &self,
        admission: Arc<dyn StopSignAdmission<T>>,
    ) -> Result<(), Arc<dyn StopSignAdmission<T>>> {
        self.stop_signs.set(admission)
    }

    /// The gate its runner passes StopSign carriers through.
    pub(crate) fn stop_sign_gate(&self) -> StopSignGate<T> {
        StopSignGate {
            admission: Arc::clone(&self.stop_signs),
            stats: Arc::clone(&self.stats),
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

    /// Whether a message from `sender`, presenting `instance`, passes the
    /// sender and instance checks of [`deliver`](Self::deliver) (nothing is
    /// counted): a transport asks before it stores a large message's parts.
    pub fn admits(&self, sender: NodeId, instance: Option<InstanceId>) -> bool {
        self.is_peer(sender)
            && self
                .admission
                .get()
                .is_none_or(|admission| admission.admit(sender, instance).is_ok())
    }

    /// The inbox's counters.
    pub fn stats(&self) -> &InboxStats {
        &self.stats
    }

    /// The counters, shared: a holder can tell this inbox's counters from
    /// another's (`Arc::ptr_eq`), e.g. across a membership change, which
    /// starts a new inbox whose counters start at zero.
    #[must_use]
    pub fn shared_stats(&self) -> Arc<InboxStats> {
        Arc::clone(&self.stats)
    }

    /// Queues `message`, sent by a peer presenting `instance`, without
    /// waiting; a full queue drops it (Paxos resends).
    pub fn try_deliver(
        &self,
        instance: Option<InstanceId>,
        message: Message<T>,
    ) -> Result<(), Refusal> {
        self.check(instance, &message)?;
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
    pub async fn deliver(
        &self,
        instance: Option<InstanceId>,
        message: Message<T>,
    ) -> Result<(), Refusal> {
        self.check(instance, &message)?;
        self.tx.send(message).await.map_err(|_| Refusal::Stopped)?;
        self.stats.delivered.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn check(&self, instance: Option<InstanceId>, message: &Message<T>) -> Result<(), Refusal> {
        let sender = message.get_sender();
        let receiver = message.get_receiver();
        let verdict = if receiver != self.me {
            Err(Refusal::WrongReceiver(receiver))
        } else if !self.is_peer(sender) {
            Err(Refusal::UnknownSender(sender))
        } else if let Some(admission) = self.admission.get() {
            admission.admit(sender, instance).map_err(Refusal::Impostor)
        } else {
            Ok(())
        };
        if let Err(refusal) = verdict {
            self.stats.count(refusal);
        }
        verdict
    }
}

/// A runner's side of its inbox's [`StopSignAdmission`]: asked right before
/// a StopSign carrier would reach OmniPaxos, counting refusals in the
/// inbox's [`InboxStats`].
pub(crate) struct StopSignGate<T: Entry> {
    admission: Arc<OnceLock<Arc<dyn StopSignAdmission<T>>>>,
    stats: Arc<InboxStats>,
}

impl<T: Entry + 'static> StopSignGate<T> {
    /// Whether `stop_sign` is admitted (nothing is counted).
    pub(crate) fn admits(
        &self,
        stop_sign: &StopSign,
        sync: Option<&LogSync<T>>,
        own: &[T],
    ) -> bool {
        self.admission
            .get()
            .is_some_and(|admission| admission.admit(stop_sign, sync, own))
    }

    /// Whether a forwarded `entry` is admitted (nothing is counted); with
    /// no admission set, it is.
    pub(crate) fn admits_forward(&self, entry: &T) -> bool {
        self.admission
            .get()
            .is_none_or(|admission| admission.admit_forward(entry))
    }

    /// Counts a refused carrier from `sender`.
    pub(crate) fn refused(&self, sender: NodeId) {
        self.stats.count(Refusal::StopSign(sender));
    }
}

/// Whether `message` could make this node accept, or its leader propose, an
/// OmniPaxos StopSign, the entry that ends a configuration for good.
///
/// Why the runner drops these unless its inbox's [`StopSignAdmission`]
/// admits them (so for every transport, tonic and the in-memory network
/// alike): OmniPaxos trusts its peers, and a single `ForwardStopSign` from
/// anything that can speak as a member makes a leader propose the StopSign;
/// once decided and persisted, the configuration is over, across restarts.
///
/// StopSign-carrying, from OmniPaxos 0.2.4's `messages.rs` and the handlers
/// in `sequence_paxos`:
/// - `ForwardStopSign`: a leader in its accept phase proposes it.
/// - `AcceptStopSign`: a follower stores it as accepted.
/// - `Promise` whose log sync holds a stopsign: the new leader adopts it
///   and syncs it to every follower.
/// - `AcceptSync` whose log sync holds a stopsign: the follower stores it.
///
/// Not StopSign-carrying: `Decide` and `AcceptDecide` carry only a decided
/// index (and entries); they can decide a StopSign only one that the node
/// already accepted, which only the messages above can deliver.
/// `PrepareReq`, `Prepare`, `Accepted`, `NotAccepted`, `ProposalForward`,
/// `Compaction`, the election's heartbeats (and the proposal-tagging
/// messages of OmniPaxos' `async_runtime` feature) carry none. The match on
/// Sequence Paxos messages is exhaustive, so a new kind does not pass
/// unexamined.
pub fn carries_stop_sign<T: Entry>(message: &Message<T>) -> bool {
    stop_sign_of(message).is_some()
}

/// The StopSign `message` carries (see [`carries_stop_sign`]), with the log
/// sync it travels in, if any.
pub fn stop_sign_of<T: Entry>(message: &Message<T>) -> Option<(&StopSign, Option<&LogSync<T>>)> {
    let Message::SequencePaxos(PaxosMessage { msg, .. }) = message else {
        return None;
    };
    match msg {
        PaxosMsg::ForwardStopSign(stop_sign) => Some((stop_sign, None)),
        PaxosMsg::AcceptStopSign(accept) => Some((&accept.ss, None)),
        PaxosMsg::Promise(promise) => promise.log_sync.as_ref().and_then(|sync| {
            sync.stopsign
                .as_ref()
                .map(|stop_sign| (stop_sign, Some(sync)))
        }),
        PaxosMsg::AcceptSync(accept) => accept
            .log_sync
            .stopsign
            .as_ref()
            .map(|stop_sign| (stop_sign, Some(&accept.log_sync))),
        PaxosMsg::PrepareReq(_)
        | PaxosMsg::Prepare(_)
        | PaxosMsg::AcceptDecide(_)
        | PaxosMsg::Accepted(_)
        | PaxosMsg::NotAccepted(_)
        | PaxosMsg::Decide(_)
        | PaxosMsg::ProposalForward(_)
        | PaxosMsg::Compaction(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use omnipaxos::ClusterConfig;
    use omnipaxos::ballot_leader_election::Ballot;
    use omnipaxos::messages::ballot_leader_election::{BLEMessage, HeartbeatMsg, HeartbeatRequest};
    use omnipaxos::messages::sequence_paxos::{
        AcceptDecide, AcceptStopSign, AcceptSync, Decide, Promise,
    };
    use omnipaxos::storage::{NoSnapshot, StopSign};
    use omnipaxos::util::{LogSync, SequenceNumber};

    use super::*;

    #[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
    struct Put(u64);

    impl Entry for Put {
        type Snapshot = NoSnapshot;
    }

    const N: Ballot = Ballot {
        config_id: 1,
        n: 3,
        priority: 0,
        pid: 2,
    };

    fn stop_sign() -> StopSign {
        StopSign::with(
            ClusterConfig {
                configuration_id: 2,
                nodes: vec![2, 3],
                flexible_quorum: None,
            },
            None,
        )
    }

    fn log_sync(stopsign: Option<StopSign>) -> LogSync<Put> {
        LogSync {
            decided_snapshot: None,
            suffix: vec![Put(7)],
            sync_idx: 0,
            stopsign,
        }
    }

    fn paxos(msg: PaxosMsg<Put>) -> Message<Put> {
        Message::SequencePaxos(PaxosMessage {
            from: 2,
            to: 1,
            msg,
        })
    }

    fn promise(log_sync: Option<LogSync<Put>>) -> Message<Put> {
        paxos(PaxosMsg::Promise(Promise {
            n: N,
            n_accepted: N,
            decided_idx: 0,
            accepted_idx: 1,
            log_sync,
        }))
    }

    fn accept_sync(stopsign: Option<StopSign>) -> Message<Put> {
        paxos(PaxosMsg::AcceptSync(AcceptSync {
            n: N,
            seq_num: SequenceNumber::default(),
            decided_idx: 0,
            log_sync: log_sync(stopsign),
        }))
    }

    fn stop_sign_carriers() -> Vec<(&'static str, Message<Put>)> {
        vec![
            (
                "ForwardStopSign",
                paxos(PaxosMsg::ForwardStopSign(stop_sign())),
            ),
            (
                "AcceptStopSign",
                paxos(PaxosMsg::AcceptStopSign(AcceptStopSign {
                    n: N,
                    seq_num: SequenceNumber::default(),
                    ss: stop_sign(),
                })),
            ),
            (
                "Promise with a stopsign",
                promise(Some(log_sync(Some(stop_sign())))),
            ),
            ("AcceptSync with a stopsign", accept_sync(Some(stop_sign()))),
        ]
    }

    fn ordinary() -> Vec<(&'static str, Message<Put>)> {
        vec![
            ("Promise without a log sync", promise(None)),
            (
                "Promise with a plain log sync",
                promise(Some(log_sync(None))),
            ),
            ("AcceptSync without a stopsign", accept_sync(None)),
            (
                "AcceptDecide",
                paxos(PaxosMsg::AcceptDecide(AcceptDecide {
                    n: N,
                    seq_num: SequenceNumber::default(),
                    decided_idx: 5,
                    entries: vec![Put(1)],
                })),
            ),
            (
                "Decide",
                paxos(PaxosMsg::Decide(Decide {
                    n: N,
                    seq_num: SequenceNumber::default(),
                    decided_idx: 5,
                })),
            ),
            (
                "ProposalForward",
                paxos(PaxosMsg::ProposalForward(vec![Put(2)])),
            ),
            (
                "heartbeat",
                Message::BLE(BLEMessage {
                    from: 2,
                    to: 1,
                    msg: HeartbeatMsg::Request(HeartbeatRequest { round: 1 }),
                }),
            ),
        ]
    }

    #[test]
    fn stop_sign_carriers_are_told_apart_from_ordinary_messages() {
        for (name, message) in stop_sign_carriers() {
            assert!(carries_stop_sign(&message), "{name} not recognised");
        }
        for (name, message) in ordinary() {
            assert!(!carries_stop_sign(&message), "{name} taken for a StopSign");
        }
    }

    /// The inbox queues StopSign carriers like any message: its runner
    /// judges them right before OmniPaxos would see them, with the node's
    /// own log at hand (see `StopSignGate`).
    #[tokio::test]
    async fn the_inbox_leaves_stop_sign_carriers_to_its_runner() {
        let (tx, mut rx) = mpsc::channel(64);
        let inbox = Inbox::new(1, Arc::from(vec![1, 2, 3]), tx);
        let carriers = stop_sign_carriers();
        let count = carriers.len();
        for (name, message) in carriers {
            assert_eq!(inbox.try_deliver(None, message), Ok(()), "{name}");
        }
        for _ in 0..count {
            assert!(rx.try_recv().is_ok());
        }
        assert_eq!(inbox.stats().stop_sign(), 0);
    }

    /// Admits the StopSign to configuration 2, and records whether a log
    /// sync and own entries came with it.
    #[derive(Default)]
    struct AgreedOnTwo {
        with_sync: AtomicU64,
        own: AtomicU64,
    }

    impl StopSignAdmission<Put> for AgreedOnTwo {
        fn admit(&self, stop_sign: &StopSign, sync: Option<&LogSync<Put>>, own: &[Put]) -> bool {
            if let Some(sync) = sync {
                assert_eq!(sync.suffix.len(), 1, "the sync the StopSign travels in");
                self.with_sync.fetch_add(1, Ordering::Relaxed);
            }
            self.own.fetch_add(own.len() as u64, Ordering::Relaxed);
            stop_sign.next_config.configuration_id == 2
        }
    }

    #[test]
    fn the_gate_asks_the_admission_and_refuses_without_one() {
        let (tx, _rx) = mpsc::channel(1);
        let inbox = Inbox::<Put>::new(1, Arc::from(vec![1, 2, 3]), tx);
        let gate = inbox.stop_sign_gate();
        assert!(
            !gate.admits(&stop_sign(), None, &[]),
            "admitted without an admission"
        );
        let admission = Arc::new(AgreedOnTwo::default());
        assert!(inbox.set_stop_sign_admission(admission.clone()).is_ok());
        assert!(
            inbox
                .set_stop_sign_admission(Arc::new(AgreedOnTwo::default()))
                .is_err()
        );
        for (name, message) in stop_sign_carriers() {
            let (stop_sign, sync) = stop_sign_of(&message).unwrap();
            assert!(gate.admits(stop_sign, sync, &[Put(1), Put(2)]), "{name}");
        }
        // The Promise and the AcceptSync hand their log sync over, and
        // every call the node's own entries.
        assert_eq!(admission.with_sync.load(Ordering::Relaxed), 2);
        assert_eq!(admission.own.load(Ordering::Relaxed), 8);
        let mut other = stop_sign();
        other.next_config.configuration_id = 3;
        assert!(!gate.admits(&other, None, &[]));
        gate.refused(2);
        assert_eq!(inbox.stats().stop_sign(), 1);
    }

    /// Node 2 is registered as instance 0xa; node 3 is not registered.
    struct Registry;

    impl PeerAdmission for Registry {
        fn admit(&self, node: NodeId, instance: Option<InstanceId>) -> Result<(), Impostor> {
            match (node, instance) {
                (2, Some(InstanceId(0xa))) | (3, _) => Ok(()),
                _ => Err(Impostor {
                    node,
                    presented: instance,
                    registered: InstanceId(0xa),
                }),
            }
        }
    }

    #[tokio::test]
    async fn the_inbox_refuses_and_counts_a_sender_whose_instance_is_not_the_registered_one() {
        let (tx, mut rx) = mpsc::channel(64);
        let inbox = Inbox::new(1, Arc::from(vec![1, 2, 3]), tx);
        let (_, message) = ordinary().swap_remove(0);
        // Before an admission is set every instance passes (unit tests of
        // transports that check nothing else).
        assert_eq!(
            inbox.try_deliver(Some(InstanceId(0xb)), message.clone()),
            Ok(())
        );
        assert!(inbox.set_admission(Arc::new(Registry)).is_ok());
        assert!(
            inbox.set_admission(Arc::new(Registry)).is_err(),
            "set twice"
        );
        let clone = inbox.clone();
        for presented in [Some(InstanceId(0xb)), None] {
            let expected = Err(Refusal::Impostor(Impostor {
                node: 2,
                presented,
                registered: InstanceId(0xa),
            }));
            assert_eq!(clone.try_deliver(presented, message.clone()), expected);
            assert_eq!(clone.deliver(presented, message.clone()).await, expected);
        }
        assert_eq!(inbox.stats().impostor(), 4);
        // The same verdict without a message, and without counting.
        assert!(!inbox.admits(2, Some(InstanceId(0xb))));
        assert!(!inbox.admits(2, None));
        assert!(!inbox.admits(4, None), "not a member");
        assert!(inbox.admits(2, Some(InstanceId(0xa))));
        assert!(inbox.admits(3, None));
        assert_eq!(inbox.stats().impostor(), 4);
        assert_eq!(inbox.try_deliver(Some(InstanceId(0xa)), message), Ok(()));
        assert_eq!(inbox.stats().delivered(), 2);
        assert!(rx.try_recv().is_ok());
        assert!(rx.try_recv().is_ok());
        assert!(
            rx.try_recv().is_err(),
            "a refused message reached the runner queue"
        );
    }
}
