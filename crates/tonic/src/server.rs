//! The inbound side: the `PaxosPeer` gRPC service and a server helper.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use omnipaxos::messages::Message;
use omnipaxos::storage::Entry;
use omnipaxos::util::NodeId;
use prost::bytes::Bytes;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::service::Routes;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Response, Status, Streaming};
use tsoracle_paxos_toolkit::{Inbox, InstanceId, Refusal};

use crate::accept::tls_incoming_with;
use crate::config::{PROTOCOL_VERSION, TransportConfig, metadata};
use crate::error::Error;
use crate::frame::{FrameKind, decode_frame, kind};
use crate::proto::paxos_peer_server::{PaxosPeer, PaxosPeerServer};
use crate::proto::{Frame, HeldReply, HeldRequest, LinkClosed};
use crate::router::PeerRouter;
use crate::stats::{RefusalReason, TransportStats};
use crate::tls::{TlsMaterial, certificate_names_node};
use crate::transfer::InTransfer;

/// How long an unfinished transfer body is kept without a new chunk: a
/// resume comes within seconds of a cut, and the spool holds disk space.
const TRANSFER_IDLE: std::time::Duration = std::time::Duration::from_secs(60);

/// The inbound peer service of one node: checks each link, decodes its
/// frames and hands the messages to the runner's [`Inbox`].
///
/// At link open it refuses (with a gRPC status, counted per
/// [`RefusalReason`]) a missing or garbled metadata key, another protocol
/// version, a foreign cluster or configuration, a link addressed to another
/// node, a sender that is this node or not a member, and, with mTLS, a
/// client certificate that does not name the claimed sender. Per frame, an
/// undecodable payload closes the link with `InvalidArgument`; a message
/// whose sender or receiver differs from the link's is dropped, and the
/// [`Inbox`] refuses (and counts) what it must. A message that carries a
/// StopSign ([`tsoracle_paxos_toolkit::carries_stop_sign`]) is judged by the
/// runner, right before OmniPaxos would see it. Nothing refused reaches
/// OmniPaxos.
///
/// Only the newest link from each sender is kept: when a sender reconnects,
/// its older link is closed, so messages of one directed link never
/// interleave from two streams.
///
/// Serve it with [`serve`], or add [`PeerService::into_server`] to a tonic
/// server of your own (without mTLS identity checks).
pub struct PeerService<T: Entry> {
    shared: Arc<Shared<T>>,
    closing: watch::Receiver<bool>,
    check_certificates: bool,
}

impl<T: Entry> Clone for PeerService<T> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            closing: self.closing.clone(),
            check_certificates: self.check_certificates,
        }
    }
}

struct Shared<T: Entry> {
    inbox: Inbox<T>,
    cluster_id: String,
    node_id: NodeId,
    configuration_id: u32,
    stats: Arc<TransportStats>,
    /// Per sender, the generation of its newest link.
    generations: BTreeMap<NodeId, watch::Sender<u64>>,
    /// Keeps `closing` open for services not run by [`serve`].
    _never_closing: watch::Sender<bool>,
    max_message_bytes: usize,
    /// Largest transfer body spooled from one sender.
    max_chunked_message_bytes: usize,
    /// Largest frame payload: the scratch buffer that decodes a transfer.
    max_frame_bytes: usize,
    /// Per sender, the transfer body it is sending (or cut).
    transfers: BTreeMap<NodeId, InTransfer>,
    spool_dir: std::path::PathBuf,
    /// When idle bodies were last given up.
    last_sweep: std::sync::Mutex<std::time::Instant>,
}

impl<T> PeerService<T>
where
    T: Entry + DeserializeOwned + Send + 'static,
    T::Snapshot: Send,
    Message<T>: DeserializeOwned,
{
    /// A service delivering into `inbox`, for the node `config.node_id`.
    pub fn new(inbox: Inbox<T>, config: &TransportConfig) -> Result<Self, Error> {
        Self::counting(inbox, config, Arc::default())
    }

    /// [`new`](Self::new) counting into `stats`: the services of one
    /// node's successive configurations share their counters.
    pub fn counting(
        inbox: Inbox<T>,
        config: &TransportConfig,
        stats: Arc<TransportStats>,
    ) -> Result<Self, Error> {
        config.validate()?;
        if inbox.node_id() != config.node_id {
            return Err(Error::InvalidConfig(format!(
                "the inbox belongs to node {}, the transport configuration to node {}",
                inbox.node_id(),
                config.node_id
            )));
        }
        let generations = config
            .peers
            .iter()
            .filter(|&&id| id != config.node_id)
            .map(|&id| (id, watch::Sender::new(0)))
            .collect();
        let (never_closing, closing) = watch::channel(false);
        Ok(Self {
            shared: Arc::new(Shared {
                inbox,
                cluster_id: config.cluster_id.clone(),
                node_id: config.node_id,
                configuration_id: config.configuration_id,
                stats,
                generations,
                _never_closing: never_closing,
                max_message_bytes: config.grpc_message_limit(),
                max_chunked_message_bytes: config.max_chunked_message_bytes,
                max_frame_bytes: config.max_frame_bytes,
                transfers: config
                    .peers
                    .iter()
                    .filter(|&&id| id != config.node_id)
                    .map(|&id| (id, InTransfer::default()))
                    .collect(),
                spool_dir: config.spool_dir(),
                last_sweep: std::sync::Mutex::new(std::time::Instant::now()),
            }),
            closing,
            check_certificates: false,
        })
    }

    /// The service's counters.
    pub fn stats(&self) -> &Arc<TransportStats> {
        &self.shared.stats
    }

    /// The tonic service, with its message size limits set from the frame
    /// limit, to add to a tonic server of your own.
    pub fn into_server(self) -> PaxosPeerServer<Self> {
        let limit = self.shared.max_message_bytes;
        PaxosPeerServer::new(self)
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit)
    }

    /// The OmniPaxos configuration whose links this service takes.
    #[must_use]
    pub fn configuration_id(&self) -> u32 {
        self.shared.configuration_id
    }

    pub(crate) fn node_id(&self) -> NodeId {
        self.shared.node_id
    }

    pub(crate) fn max_message_bytes(&self) -> usize {
        self.shared.max_message_bytes
    }

    /// This service as a server runs it: its links close with `closing`
    /// (when given), and check client certificates when `check`.
    pub(crate) fn serving(&self, closing: Option<watch::Receiver<bool>>, check: bool) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            closing: closing.unwrap_or_else(|| self.closing.clone()),
            check_certificates: check,
        }
    }

    fn refuse(&self, reason: RefusalReason, status: Status) -> Status {
        self.shared.stats.refuse(reason);
        tracing::warn!(
            node = self.shared.node_id,
            reason = reason.as_str(),
            "refused a peer link: {}",
            status.message()
        );
        status
    }

    /// Checks a link's metadata; returns the sender and the instance it
    /// presents.
    fn check_open(&self, md: &MetadataMap) -> Result<(NodeId, Option<InstanceId>), Status> {
        let shared = &*self.shared;
        let protocol: u32 = self.number(md, metadata::PROTOCOL)?;
        if protocol != PROTOCOL_VERSION {
            return Err(self.refuse(
                RefusalReason::UnsupportedProtocol,
                Status::failed_precondition(format!(
                    "peer protocol version {protocol} is not supported (this node speaks \
                     version {PROTOCOL_VERSION})"
                )),
            ));
        }
        let cluster = self.text(md, metadata::CLUSTER_ID)?;
        if cluster != shared.cluster_id {
            return Err(self.refuse(
                RefusalReason::ForeignCluster,
                Status::permission_denied(format!(
                    "link from cluster {cluster:?}, but this node belongs to cluster {:?}",
                    shared.cluster_id
                )),
            ));
        }
        let configuration: u32 = self.number(md, metadata::CONFIGURATION_ID)?;
        if configuration != shared.configuration_id {
            return Err(self.refuse(
                RefusalReason::ForeignConfiguration,
                Status::failed_precondition(format!(
                    "link for OmniPaxos configuration {configuration}, but this node runs \
                     configuration {}",
                    shared.configuration_id
                )),
            ));
        }
        let receiver: NodeId = self.number(md, metadata::RECEIVER)?;
        if receiver != shared.node_id {
            return Err(self.refuse(
                RefusalReason::WrongReceiver,
                Status::failed_precondition(format!(
                    "link addressed to node {receiver}, but this is node {} (wrong peer \
                     address?)",
                    shared.node_id
                )),
            ));
        }
        let sender: NodeId = self.number(md, metadata::SENDER)?;
        if sender == shared.node_id {
            return Err(self.refuse(
                RefusalReason::SenderIsSelf,
                Status::permission_denied(format!("link from node {sender}, which is this node")),
            ));
        }
        if !shared.inbox.is_peer(sender) || !shared.generations.contains_key(&sender) {
            return Err(self.refuse(
                RefusalReason::UnknownSender,
                Status::permission_denied(format!(
                    "link from node {sender}, which is not a member of configuration {}",
                    shared.configuration_id
                )),
            ));
        }
        let instance = match md.get(metadata::INSTANCE) {
            None => None,
            Some(_) => Some(self.number(md, metadata::INSTANCE)?),
        };
        Ok((sender, instance))
    }

    fn text<'a>(&self, md: &'a MetadataMap, key: &str) -> Result<&'a str, Status> {
        let value = md.get(key).ok_or_else(|| {
            self.refuse(
                RefusalReason::MissingMetadata,
                Status::invalid_argument(format!("missing link metadata {key:?}")),
            )
        })?;
        value.to_str().map_err(|_| {
            self.refuse(
                RefusalReason::GarbledMetadata,
                Status::invalid_argument(format!("link metadata {key:?} is not ASCII")),
            )
        })
    }

    fn number<N: std::str::FromStr>(&self, md: &MetadataMap, key: &str) -> Result<N, Status> {
        let text = self.text(md, key)?;
        text.parse().map_err(|_| {
            self.refuse(
                RefusalReason::GarbledMetadata,
                Status::invalid_argument(format!(
                    "link metadata {key:?} is {text:?}, not a number in range"
                )),
            )
        })
    }

    fn check_certificate<R>(&self, request: &Request<R>, sender: NodeId) -> Result<(), Status> {
        if !self.check_certificates {
            return Ok(());
        }
        let certs = request.peer_certs();
        let Some(leaf) = certs.as_ref().and_then(|certs| certs.first()) else {
            return Err(self.refuse(
                RefusalReason::MissingCertificate,
                Status::unauthenticated("mutual TLS is required: present a node certificate"),
            ));
        };
        if !certificate_names_node(leaf, sender) {
            return Err(self.refuse(
                RefusalReason::CertificateMismatch,
                Status::permission_denied(format!(
                    "the client certificate does not name node-{sender}, the sender this link \
                     claims"
                )),
            ));
        }
        Ok(())
    }

    /// Decodes one frame and delivers its messages, waiting for room in the
    /// inbox (flow control back to the sender).
    /// Resolves when this link must end: the server is closing, or a newer
    /// link from the same sender replaced it (counted).
    async fn link_ended(
        &self,
        closing: &mut watch::Receiver<bool>,
        newer: &mut watch::Receiver<u64>,
        generation: u64,
    ) -> Status {
        tokio::select! {
            biased;
            _ = closing.wait_for(|closing| *closing) => {
                Status::unavailable("the peer server is shutting down")
            }
            _ = newer.wait_for(|g| *g != generation) => {
                self.shared.stats.link_superseded();
                Status::aborted("superseded by a newer link from the same node")
            }
        }
    }

    /// Spools a chunk of `sender`'s transfer body (off the runtime). A
    /// chunk that cannot be kept gives up the body held (counted); the
    /// link goes on, and the transfer's head will not complete.
    async fn transfer_body(
        &self,
        sender: NodeId,
        instance: Option<InstanceId>,
        link: u64,
        payload: Bytes,
    ) {
        let shared = &*self.shared;
        let Some(slot) = shared.transfers.get(&sender).cloned() else {
            return;
        };
        // A sender the inbox would refuse (another data directory under a
        // member's id) stores nothing here.
        if !shared.inbox.admits(sender, instance) {
            shared.stats.transfer_failed_in();
            return;
        }
        let dir = shared.spool_dir.clone();
        let max = shared.max_chunked_message_bytes;
        let appended =
            tokio::task::spawn_blocking(move || slot.append(&payload[1..], &dir, max, link)).await;
        match appended {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                shared.stats.transfer_failed_in();
                tracing::debug!(
                    node = shared.node_id,
                    sender,
                    "transfer chunk given up: {err}"
                );
            }
            Err(_) => shared.stats.transfer_failed_in(),
        }
    }

    /// Gives up the bodies no chunk was appended to for [`TRANSFER_IDLE`],
    /// at most once a second (any frame from any sender drives it: peers
    /// send heartbeats all the time).
    fn sweep_idle_transfers(&self) {
        let shared = &*self.shared;
        {
            let mut last = shared
                .last_sweep
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.elapsed() < std::time::Duration::from_secs(1) {
                return;
            }
            *last = std::time::Instant::now();
        }
        for slot in shared.transfers.values() {
            slot.expire(TRANSFER_IDLE);
        }
    }

    /// The message `sender`'s transfer head completes, if the body held is
    /// the one it names and decodes (off the runtime); else `None`, counted.
    async fn transfer_head(&self, sender: NodeId, payload: Bytes) -> Option<Message<T>> {
        let shared = &*self.shared;
        let slot = shared.transfers.get(&sender).cloned()?;
        let scratch = shared.max_frame_bytes;
        let completed =
            tokio::task::spawn_blocking(move || slot.complete::<T>(&payload[1..], scratch)).await;
        match completed {
            Ok(Ok(message)) => {
                shared.stats.transfer_in();
                Some(message)
            }
            Ok(Err(err)) => {
                shared.stats.transfer_failed_in();
                tracing::warn!(
                    node = shared.node_id,
                    sender,
                    "dropped a large message from a peer: {err}"
                );
                None
            }
            Err(_) => {
                shared.stats.transfer_failed_in();
                None
            }
        }
    }

    async fn deliver_frame(
        &self,
        sender: NodeId,
        instance: Option<InstanceId>,
        generation: u64,
        frame: Frame,
    ) -> Result<(), Status> {
        let shared = &*self.shared;
        shared.stats.frame_in(frame.payload.len());
        self.sweep_idle_transfers();
        let messages = match kind(&frame.payload) {
            FrameKind::TransferBody => {
                self.transfer_body(sender, instance, generation, frame.payload)
                    .await;
                return Ok(());
            }
            FrameKind::TransferHead => match self.transfer_head(sender, frame.payload).await {
                Some(message) => vec![message],
                None => return Ok(()),
            },
            FrameKind::Batch => decode_frame::<T>(&frame.payload).map_err(|err| {
                self.refuse(
                    RefusalReason::GarbledFrame,
                    Status::invalid_argument(format!(
                        "undecodable frame from node {sender}: {err}"
                    )),
                )
            })?,
        };
        for message in messages {
            if message.get_sender() != sender {
                shared.stats.refuse(RefusalReason::SenderMismatch);
                continue;
            }
            if message.get_receiver() != shared.node_id {
                shared.stats.refuse(RefusalReason::ReceiverMismatch);
                continue;
            }
            match shared.inbox.deliver(instance, message).await {
                Ok(()) => shared.stats.message_in(),
                Err(Refusal::Stopped) => {
                    return Err(Status::unavailable(
                        "this node's consensus runner has stopped",
                    ));
                }
                // The sender is not the directory the cluster knows as
                // `sender`: end the link with the reason, which the sender
                // reports (and its operator reads).
                Err(Refusal::Impostor(impostor)) => {
                    let mut status = Status::permission_denied(impostor.to_string());
                    status.metadata_mut().insert(
                        metadata::REFUSAL,
                        MetadataValue::from_static(metadata::REFUSAL_IMPOSTOR),
                    );
                    return Err(self.refuse(RefusalReason::Impostor, status));
                }
                // Counted by the inbox.
                Err(_) => {}
            }
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl<T> PaxosPeer for PeerService<T>
where
    T: Entry + DeserializeOwned + Send + 'static,
    T::Snapshot: Send,
    Message<T>: DeserializeOwned,
{
    async fn held(&self, request: Request<HeldRequest>) -> Result<Response<HeldReply>, Status> {
        let (sender, _) = self.check_open(request.metadata())?;
        self.check_certificate(&request, sender)?;
        let Some(slot) = self.shared.transfers.get(&sender).cloned() else {
            return Err(Status::internal("sender vanished from the configuration"));
        };
        let (bytes, digest) = tokio::task::spawn_blocking(move || slot.held())
            .await
            .map_err(|_| Status::internal("reading the transfer spool failed"))?;
        Ok(Response::new(HeldReply {
            bytes,
            sha256: digest.to_vec(),
        }))
    }

    async fn link(
        &self,
        request: Request<Streaming<Frame>>,
    ) -> Result<Response<LinkClosed>, Status> {
        let (sender, instance) = self.check_open(request.metadata())?;
        self.check_certificate(&request, sender)?;
        let Some(generation_tx) = self.shared.generations.get(&sender) else {
            return Err(Status::internal("sender vanished from the configuration"));
        };
        let mut generation = 0;
        generation_tx.send_modify(|g| {
            *g += 1;
            generation = *g;
        });
        let mut newer = generation_tx.subscribe();
        self.shared.stats.link_accepted();
        let mut closing = self.closing.clone();
        let mut stream = request.into_inner();
        let mut frames = 0u64;
        loop {
            let next = tokio::select! {
                biased;
                status = self.link_ended(&mut closing, &mut newer, generation) => {
                    return Err(status);
                }
                next = stream.message() => next,
            };
            match next {
                Ok(Some(frame)) => {
                    frames += 1;
                    // Delivery can wait on a full inbox; a link superseded
                    // (or a server closing) meanwhile must stop delivering
                    // at once, or two streams of one directed link would
                    // interleave.
                    tokio::select! {
                        biased;
                        status = self.link_ended(&mut closing, &mut newer, generation) => {
                            return Err(status);
                        }
                        delivered = self.deliver_frame(sender, instance, generation, frame) => {
                            delivered?
                        }
                    }
                }
                Ok(None) => return Ok(Response::new(LinkClosed { frames })),
                Err(status) => {
                    // tonic refuses a frame above the size limit unread, with
                    // OutOfRange.
                    if status.code() == Code::OutOfRange {
                        return Err(self.refuse(RefusalReason::OversizeFrame, status));
                    }
                    return Err(status);
                }
            }
        }
    }
}

/// A running peer server; [`ServerHandle::shutdown`] (or dropping it) stops it.
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    closing: watch::Sender<bool>,
    task: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
    /// With TLS: the task that accepts connections and runs handshakes.
    accept: Option<JoinHandle<()>>,
    grace: std::time::Duration,
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, closes every open link, waits up to the configured
    /// shutdown grace for connections to end, then drops the rest.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        self.closing.send_replace(true);
        if let Some(accept) = self.accept.take() {
            accept.abort();
        }
        let Some(mut task) = self.task.take() else {
            return Ok(());
        };
        match tokio::time::timeout(self.grace, &mut task).await {
            Ok(Ok(result)) => result.map_err(Error::Server),
            Ok(Err(_)) => Ok(()),
            Err(_) => {
                task.abort();
                let _ = task.await;
                Ok(())
            }
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.closing.send_replace(true);
        if let Some(accept) = self.accept.take() {
            accept.abort();
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Serves `peers` (one [`PeerService`], or a [`PeerRouter`] of several
/// configurations) on `listener` (plain HTTP/2, or mutual TLS with `tls`).
///
/// With TLS, the node's own certificate must name `node-<config.node_id>`,
/// clients must present a certificate signed by the CA, and each link's
/// claimed sender must match its certificate. Must be called inside a tokio
/// runtime; the server runs on a spawned task owned by the returned handle.
pub fn serve<T>(
    listener: tokio::net::TcpListener,
    peers: impl Into<PeerRouter<T>>,
    config: &TransportConfig,
    tls: Option<&TlsMaterial>,
) -> Result<ServerHandle, Error>
where
    T: Entry + DeserializeOwned + Send + 'static,
    T::Snapshot: Send,
    Message<T>: DeserializeOwned,
{
    serve_with(listener, peers, config, tls, Routes::default())
}

/// [`serve`] with more gRPC services on the same port (a node's admin
/// service), behind the same TLS: their handlers see the client
/// certificate through `Request::peer_certs` and check it themselves.
pub fn serve_with<T>(
    listener: tokio::net::TcpListener,
    peers: impl Into<PeerRouter<T>>,
    config: &TransportConfig,
    tls: Option<&TlsMaterial>,
    extra: Routes,
) -> Result<ServerHandle, Error>
where
    T: Entry + DeserializeOwned + Send + 'static,
    T::Snapshot: Send,
    Message<T>: DeserializeOwned,
{
    config.validate()?;
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
    let local_addr = listener.local_addr().map_err(Error::Listener)?;
    let mut builder = Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(config.keepalive))
        .http2_keepalive_timeout(Some(config.keepalive));
    if let Some(tls) = tls
        && !tls.names_node(config.node_id)
    {
        return Err(Error::TlsIdentity {
            expected: crate::config::node_dns_name(config.node_id),
        });
    }
    let (closing_tx, closing_rx) = watch::channel(false);
    let router = peers.into().serving(closing_rx.clone(), tls.is_some());
    if router.node_id() != config.node_id {
        return Err(Error::InvalidConfig(format!(
            "the peer service belongs to node {}, the transport configuration to node {}",
            router.node_id(),
            config.node_id
        )));
    }
    let routes = extra.add_service(router.into_server());
    let mut stop = closing_rx;
    let stopped = async move {
        let _ = stop.wait_for(|closing| *closing).await;
    };
    let router = builder.add_routes(routes);
    let _guard = runtime.enter();
    let (task, accept) = match tls {
        // Each handshake asks the material for its current configuration:
        // a reloaded certificate is served without a restart.
        Some(tls) => {
            let tls = tls.clone();
            let (incoming, accept) = tls_incoming_with(
                listener,
                Arc::new(move || tls.server_config()),
                config.handshakes,
            );
            let task = runtime.spawn(router.serve_with_incoming_shutdown(incoming, stopped));
            (task, Some(accept))
        }
        None => {
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            let task = runtime.spawn(router.serve_with_incoming_shutdown(incoming, stopped));
            (task, None)
        }
    };
    Ok(ServerHandle {
        local_addr,
        closing: closing_tx,
        task: Some(task),
        accept,
        grace: config.shutdown_grace,
    })
}
