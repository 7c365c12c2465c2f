//! One running node: storage, consensus thread, peer transport, driver, and
//! a `tsoracle-server` behind the reply gate, wired once for `serve`, the
//! examples and the tests.
//!
//! Everything that can be refused (the configuration, the TLS files, the
//! listen addresses, the data directory) is checked before anything is
//! written, so a refused start leaves the data directory as it was.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::{JoinError, JoinHandle};
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tsoracle_consensus::ConsensusDriver;
use tsoracle_driver_paxos::{
    ConfigError, Member, PaxosDriver, StandaloneHost, StartMode, next_incarnation,
};
use tsoracle_paxos_reply_gate::ReplyGateLayer;
use tsoracle_paxos_state::{MemberRecord, Membership, PaxosEntry, SnapshotPolicy};
use tsoracle_paxos_tonic::accept::tls_incoming_with;
use tsoracle_paxos_tonic::{
    PeerRouter, PeerService, ServerHandle, TlsMaterial, TonicSink, TransportConfig, TransportStats,
    serve_with,
};
use tsoracle_paxos_toolkit::storage::{RocksdbOptions, RocksdbStorage, StorageIdentity};
use tsoracle_paxos_toolkit::{Error as ToolkitError, RunnerStatus};

use crate::admin::{AdminService, AdminTarget, membership_of};
use crate::config::{InitialClusterState, NodeConfig};
use crate::error::Error;
use crate::http::{HttpServer, ObserverCell};
use crate::metrics::Observer;
use crate::next::{Asked, NodeNext};
use crate::record::{ConfigRecord, db_dir};
use crate::reload::Reloadable;

/// How long a node that a change removed keeps answering its peers.
const LEAVE_GRACE: Duration = Duration::from_secs(5);

/// A task stopped when its owner drops it (a start that fails or is
/// cancelled half way leaves nothing running).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The client service task: tonic's server over the gated routes.
type ClientService = JoinHandle<Result<(), tonic::transport::Error>>;

/// Listeners bound by the caller, for [`Node::start_on`]: a caller that
/// binds port 0 learns its addresses (for the member list) without a
/// window in which another process could take them.
#[derive(Debug)]
pub struct Listeners {
    /// Where the tsoracle client service accepts connections.
    pub client: TcpListener,
    /// Where the peer transport accepts links.
    pub peer: TcpListener,
}

impl Listeners {
    /// Binds `config`'s client and peer addresses as `serve` does:
    /// `SO_REUSEADDR` (a restart may reuse a port whose old connections
    /// linger in TIME_WAIT) and `TCP_NODELAY` inherited by accepted
    /// connections. A port in use is an [`Error::Bind`] that says so.
    ///
    /// Call it inside a Tokio runtime (the listeners register with it).
    pub fn bind(config: &NodeConfig) -> Result<Self, Error> {
        Ok(Self {
            client: bind(config.client_listen, "the client service")?,
            peer: bind(config.peer_listen, "the peer transport")?,
        })
    }
}

/// A running node. Start one with [`Node::start`]; stop it with
/// [`Node::shutdown`], which stops the client service, the driver, the peer
/// service and the consensus thread (after its last sync), in that order.
///
/// [`Node::failure`] resolves once the node can no longer serve, which is
/// what `serve` exits non-zero on.
pub struct Node {
    /// What health, status and metrics read; told when the client service
    /// starts and stops.
    observer: Arc<Observer>,
    host: Arc<StandaloneHost>,
    driver: Arc<PaxosDriver<StandaloneHost>>,
    peers: ServerHandle,
    /// `None` once [`failure`](Self::failure) saw it end.
    client_service: Option<ClientService>,
    client_stop: oneshot::Sender<()>,
    watch: tsoracle_server::WatchGuard,
    sampler: AbortOnDrop,
    /// The HTTP port, when it serves.
    http: Option<HttpServer>,
    /// The client port's TLS accept loop and certificate reloader.
    background: Vec<AbortOnDrop>,
    client_addr: SocketAddr,
    peer_addr: SocketAddr,
    incarnation: u64,
    node_id: u64,
    /// The data directory and the free space below which the node stops.
    data_dir: PathBuf,
    min_free_disk: u64,
    /// How long [`Node::shutdown`] waits for a successor to lead after it
    /// handed leadership over (a successor that is down costs this, then
    /// the cluster elects as after a failure), and lets the client service
    /// drain.
    hand_over_wait: Duration,
    client_drain: Duration,
    /// The peer sink's counters, which hold a peer's identity refusal.
    outbound: Arc<TransportStats>,
    /// Whether [`failure`](Self::failure) reported a reason (shutdown then
    /// does not report the same failure again).
    failed: bool,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("client_addr", &self.client_addr)
            .field("peer_addr", &self.peer_addr)
            .field("incarnation", &self.incarnation)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Checks `config`, binds its listen addresses and starts the node
    /// (see [`start_on`](Self::start_on)).
    pub async fn start(config: NodeConfig) -> Result<Self, Error> {
        precheck(&config)?;
        let tls = load_tls(&config)?;
        let listeners = Listeners::bind(&config)?;
        launch(config, tls, listeners).await
    }

    /// Starts the node on listeners the caller bound. Their addresses
    /// replace `config`'s listen addresses, for the checks too: a peer
    /// listener beyond loopback needs mutual TLS (or
    /// `insecure_peer_plaintext`) whatever `config.peer_listen` says.
    ///
    /// In order, with nothing written before the data directory is locked
    /// and proven this node's: the checks of the configuration, the TLS
    /// files, the metrics endpoint (`metrics_listen`; process-wide), the
    /// free space on the data directory's file system, the storage (RocksDB
    /// under `data_dir/db`, or `db-<id>` for a configuration `id` a
    /// membership change started), the incarnation file, the configuration
    /// record (once the host accepted the storage), the
    /// peer transport, the consensus thread, the peer service, the driver,
    /// and a `tsoracle-server` whose routes sit behind the reply gate, on
    /// the client listener with `TCP_NODELAY`.
    pub async fn start_on(mut config: NodeConfig, listeners: Listeners) -> Result<Self, Error> {
        config.client_listen = local_addr(&listeners.client, "the client service")?;
        config.peer_listen = local_addr(&listeners.peer, "the peer transport")?;
        precheck(&config)?;
        let tls = load_tls(&config)?;
        launch(config, tls, listeners).await
    }

    /// The driver, as the server calls it (role, reply gate, writes).
    pub fn driver(&self) -> &Arc<PaxosDriver<StandaloneHost>> {
        &self.driver
    }

    /// The host: the consensus thread and its state.
    pub fn host(&self) -> &Arc<StandaloneHost> {
        &self.host
    }

    /// The consensus thread's status (leader, indices, failure, StopSign),
    /// updated after every round.
    pub fn status(&self) -> watch::Receiver<RunnerStatus> {
        self.host.status()
    }

    /// Where the client service listens (the bound address, so port 0 is
    /// resolved).
    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }

    /// Where the peer transport listens.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// This start's incarnation (one more than the previous start's).
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Resolves with the reason once the node cannot serve any more: the
    /// consensus thread stopped (a storage error such as a full disk, a
    /// corrupt record, a panic in OmniPaxos or the apply path), a StopSign
    /// ended the configuration, the server's leadership-watch task ended,
    /// the data directory's free space fell below the configured floor
    /// (checked every 100 ms), or the client service stopped. Staying up would only answer "not
    /// leader" for ever; `serve` exits so that a supervisor restarts the
    /// node or pages someone.
    ///
    /// Cancel-safe: dropping the future (a `select!` that a signal won)
    /// loses nothing.
    pub async fn failure(&mut self) -> Error {
        let service = self.client_service.as_mut();
        let client = async move {
            match service {
                Some(service) => Some(service.await),
                None => std::future::pending().await,
            }
        };
        let consensus = consensus_failure(
            self.node_id,
            &self.host,
            &self.watch,
            &self.data_dir,
            self.min_free_disk,
            &self.outbound,
        );
        let (reason, client_ended_now) = tokio::select! {
            ended = client => (client_ended(ended), true),
            reason = consensus => (reason, false),
        };
        if client_ended_now {
            // A finished task is not polled again.
            self.client_service = None;
        }
        self.failed = true;
        reason
    }

    /// Stops the node in order: a leader hands its leadership over (to the
    /// follower that follows it and is furthest in the log, waiting at most
    /// `hand_over_wait`, 2 s by default, for it to lead), then the client
    /// service (no reply is served from here on; it drains for at most
    /// `client_drain`, 10 s by default), the metrics
    /// sampler, the driver, the peer service, and the consensus thread
    /// after its last sync. An error of the consensus thread is returned,
    /// unless [`failure`](Self::failure) already reported why the node
    /// stopped.
    pub async fn shutdown(self) -> Result<(), Error> {
        let Self {
            observer,
            host,
            driver,
            peers,
            client_service,
            client_stop,
            watch,
            sampler,
            http,
            background,
            failed,
            hand_over_wait,
            client_drain,
            ..
        } = self;
        // A planned stop of the leader hands its leadership over first: the
        // successor serves within a round trip instead of after an
        // election and the lease (a rolling restart costs next to nothing).
        // The driver stops serving before it releases the lease.
        if !failed && driver.role().is_leader() {
            match driver.hand_over(None, hand_over_wait).await {
                Ok(leader) => tracing::info!(leader, "leadership handed over before stopping"),
                Err(err) => tracing::warn!(%err, "leadership not handed over; the cluster elects"),
            }
        }
        // Close the gate first: no reply is served from here on (and the
        // node is no longer ready).
        observer.set_client_serving(false);
        let _ = client_stop.send(());
        drop(watch);
        if let Some(mut service) = client_service
            && !service.is_finished()
        {
            match tokio::time::timeout(client_drain, &mut service).await {
                Ok(Ok(Err(err))) if !failed => {
                    tracing::warn!(%err, "client service shutdown");
                }
                Ok(_) => {}
                Err(_) => service.abort(),
            }
        }
        drop(sampler);
        drop(background);
        if let Some(http) = http {
            http.shutdown().await;
        }
        match stop_consensus(&driver, peers, &host).await {
            // A failed consensus thread is already the outcome.
            Err(err) if !failed => return Err(err),
            _ => {}
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// The end of every stop, in order: the driver, the peer service, then the
/// consensus thread after its last sync (its error, if it failed).
async fn stop_consensus(
    driver: &PaxosDriver<StandaloneHost>,
    peers: ServerHandle,
    host: &StandaloneHost,
) -> Result<(), Error> {
    driver.shutdown().await;
    if let Err(err) = peers.shutdown().await {
        tracing::warn!(%err, "peer service shutdown");
    }
    host.shutdown()
        .await
        .map_err(|err| Error::runtime("consensus", err))
}

/// The checks that need no file and no socket.
fn precheck(config: &NodeConfig) -> Result<(), Error> {
    config.check()?;
    if config.tls.is_none() && config.insecure_peer_plaintext {
        // Logged here, before anything is opened: the flag is the
        // operator's explicit opt-out of invariant 13 (secure by default).
        tracing::warn!(
            peer = %config.peer_listen,
            "the peer port serves plaintext without authentication \
             (--insecure-peer-plaintext): anyone who can reach it can act as a member; \
             configure mutual TLS ([tls] or --tls-ca/--tls-cert/--tls-key)"
        );
    }
    Ok(())
}

fn load_tls(config: &NodeConfig) -> Result<Option<TlsMaterial>, Error> {
    match &config.tls {
        Some(files) => Ok(Some(
            TlsMaterial::load(files).map_err(|err| Error::Tls(err.to_string()))?,
        )),
        None => Ok(None),
    }
}

/// Everything after the checks that need no write: see [`Node::start_on`].
async fn launch(
    config: NodeConfig,
    tls: Option<TlsMaterial>,
    listeners: Listeners,
) -> Result<Node, Error> {
    let Listeners {
        client: client_listener,
        peer: peer_listener,
    } = listeners;
    let client_addr = local_addr(&client_listener, "the client service")?;
    let peer_addr = local_addr(&peer_listener, "the peer transport")?;
    // The client port's certificate (and client CA), refused here like any
    // other bad file, before anything is written.
    let client_tls = match &config.client_tls {
        Some(files) => Some(crate::client_tls::ClientTls::load(files)?),
        None => None,
    };
    // An export to restore is read and checked now, before anything is
    // written.
    let restore = config
        .restore_from
        .as_deref()
        .map(crate::export::Document::read)
        .transpose()?;
    // The HTTP port (metrics, health) is bound with the others, before
    // anything is written.
    // It serves from now on (live, not ready) so that a long start (a join,
    // a restore) does not look dead to a supervisor.
    let observer_cell: ObserverCell = Arc::default();
    let http = match config.metrics_listen {
        Some(addr) => {
            let listener = bind(addr, "the HTTP port (metrics, health)")?;
            let recorder = crate::metrics::recorder()?;
            let server = HttpServer::serve(listener, Arc::clone(&observer_cell), recorder.clone());
            Some((server, recorder))
        }
        None => None,
    };

    // Refused like any other bad input: before anything is written.
    if let Some(reason) = crate::disk::shortage(&config.data_dir, config.min_free_disk) {
        return Err(Error::DataDir {
            dir: config.data_dir.clone(),
            reason,
        });
    }

    // A restart's time to serving is a figure users ask for: the storage open
    // (WAL replay) is logged here, the rebuild of the state from the snapshot
    // and log by the applier once the consensus thread has done it.
    let opening = Instant::now();
    let identity = StorageIdentity::new(config.cluster_id.clone(), config.node_id);
    let (record, storage, unrecorded) = open_storage(&config, &identity, tls.as_ref()).await?;
    tracing::info!(
        elapsed = ?opening.elapsed(),
        configuration = record.membership.configuration(),
        joining = record.joining,
        "storage opened"
    );
    // Only now, with the directory locked and proven ours, is anything written.
    let incarnation =
        next_incarnation(&config.data_dir.join("incarnation")).map_err(|err| Error::DataDir {
            dir: config.data_dir.clone(),
            reason: format!("cannot update the incarnation file: {err}"),
        })?;
    let durability = storage.group_commit();

    let membership = &record.membership;
    let members = members_of(membership)?;
    let ids: Vec<u64> = members.iter().map(|m| m.id).collect();
    let instance = record.instance;
    let mut transport = TransportConfig::new(
        config.cluster_id.clone(),
        config.node_id,
        membership.configuration(),
        ids,
    );
    // Presented on every link: peers refuse it once the cluster registered
    // another instance for this node id (invariant 11).
    transport.instance = Some(instance);
    // A lagging follower's catch-up is one message; it must fit.
    transport.max_chunked_message_bytes =
        usize::try_from(config.max_peer_message).unwrap_or(usize::MAX);
    transport.max_frame_bytes = usize::try_from(config.peer_frame).unwrap_or(usize::MAX);
    // Transfers spool on the data disk (anonymous files), not in memory
    // and not on a small /tmp.
    transport.spool_dir = Some(spool_dir(&config.data_dir)?);
    transport.handshakes = config.handshake_limits();
    let peer_addresses: Vec<(u64, String)> = members
        .iter()
        .filter(|m| m.id != config.node_id)
        .map(|m| (m.id, m.peer_address.clone()))
        .collect();
    let sink = Arc::new(
        TonicSink::spawn(&transport, peer_addresses, tls.as_ref())
            .map_err(|err| Error::runtime("peer transport", err))?,
    );
    let outbound = Arc::clone(sink.stats());
    let policy = match config.snapshot_every {
        Some(every) => SnapshotPolicy::EveryDecided(every),
        None => SnapshotPolicy::Disabled,
    };
    let mut builder = StandaloneHost::builder()
        .node_id(config.node_id)
        .cluster_id(config.cluster_id.clone())
        .configuration_id(membership.configuration())
        .members(members.clone())
        .incarnation(incarnation)
        .timing(config.timing)
        .snapshot_policy(policy)
        .instance(instance)
        // `open_existing` refused a directory this node did not
        // initialize; one it accepted may hold no Paxos state yet (a
        // node stopped before its first promise) and is still its own.
        .start_mode(StartMode::Initialize);
    if record.joining {
        builder = builder.joining();
    }
    let host = Arc::new(
        builder
            .start(storage, durability, Arc::clone(&sink))
            .map_err(|err| match err {
                ConfigError::Membership(mismatch) => Error::runtime("membership", mismatch),
                other => Error::runtime("consensus", other),
            })?,
    );
    if unrecorded {
        // Only now that the host accepted the storage and the member list:
        // a refused start leaves no record behind.
        record
            .store(&config.data_dir)
            .map_err(|err| Error::DataDir {
                dir: config.data_dir.clone(),
                reason: format!("cannot write the configuration record: {err}"),
            })?;
    }
    let service = PeerService::new(host.inbox(), &transport)
        .map_err(|err| Error::runtime("peer service", err))?;
    let inbound = Arc::clone(service.stats());
    let router = PeerRouter::new(service);
    host.follow_changes(Arc::new(NodeNext {
        data_dir: config.data_dir.clone(),
        identity: identity.clone(),
        instance,
        transport: transport.clone(),
        tls: tls.clone(),
        router: router.clone(),
        inbound: Arc::clone(&inbound),
        outbound: Arc::clone(&outbound),
        asked: Arc::new(Mutex::new(Asked::knowing(AdminTarget::all_of(membership)))),
        seeds: seeds(&config),
    }));
    let driver = Arc::new(
        PaxosDriver::start(Arc::clone(&host), config.driver_config())
            .map_err(|err| Error::runtime("driver", err))?,
    );
    // The admin service shares the peer port and its TLS: only a client
    // certificate of the cluster CA reaches it at all.
    let observer = Arc::new(Observer::new(
        Arc::clone(&host),
        Arc::clone(&driver),
        &config.timing,
    ));
    let admin = AdminService::new(
        config.cluster_id.clone(),
        config.node_id,
        Arc::clone(&host),
        Arc::clone(&driver),
        tls.is_some(),
        Arc::clone(&observer),
        (instance, incarnation),
    );
    let peers = serve_with(
        peer_listener,
        router,
        &transport,
        tls.as_ref(),
        Routes::new(admin.into_server()),
    )
    .map_err(|err| Error::runtime("peer service", err))?;
    // The standard gRPC health service on the client port: SERVING while
    // the node is live and ready (`crate::health`).
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let sampler = AbortOnDrop(crate::metrics::sample(
        Arc::clone(&observer),
        health_reporter,
        http.as_ref().map(|(_, recorder)| recorder.clone()),
        Arc::clone(&outbound),
        inbound,
    ));
    let http = http.map(|(server, _)| server);
    // The HTTP port answers for the running node from now on.
    let _ = observer_cell.set(Arc::clone(&observer));
    if let Some(document) = &restore {
        // Before the server exists: its first leadership reads the
        // restored high-water, and no client is served below the export.
        if let Err(err) = crate::export::restore(document, &host, &driver).await {
            // Nothing of this start may go on running (a library caller
            // gets the error back): stop it in the shutdown order.
            drop(sampler);
            let _ = stop_consensus(&driver, peers, &host).await;
            return Err(err);
        }
    }
    let mut server = tsoracle_server::Server::builder()
        .consensus_driver(Arc::clone(&driver) as Arc<dyn ConsensusDriver>);
    if let Some(ahead) = config.window_ahead {
        server = server.window_ahead(ahead);
    }
    let server = server
        .build()
        .map_err(|err| Error::runtime("tsoracle server", err))?;
    // The server's routes behind the reply gate: a reply carrying data
    // leaves only while this node still holds its lease under the reply's
    // epoch, checked after the reply was produced (a paused process).
    let (routes, watch) = server
        .into_router()
        .map_err(|err| Error::runtime("tsoracle server", err))?;
    tracing::info!(
        node = config.node_id,
        cluster = %config.cluster_id,
        client = %client_addr,
        peer = %peer_addr,
        incarnation,
        %instance,
        "serving"
    );
    let (client_stop, stop_rx) = oneshot::channel::<()>();
    let stopped = async move {
        let _ = stop_rx.await;
    };
    let router = tonic::transport::Server::builder()
        .layer(ReplyGateLayer::new(driver.reply_gate()))
        .add_routes(routes)
        .add_service(health_service);
    let mut background = Vec::new();
    let reloadable = Reloadable {
        peer: tls.clone().map(|tls| (tls, config.node_id)),
        client: client_tls.as_ref().map(Arc::clone),
    };
    background.push(AbortOnDrop(crate::reload::spawn(
        reloadable,
        config.tls_reload_every,
    )));
    let client_service = match client_tls {
        Some(client_tls) => {
            // Each handshake takes the configuration of the last reload.
            let (incoming, accept) = tls_incoming_with(
                client_listener,
                Arc::new(move || client_tls.server_config()),
                config.handshake_limits(),
            );
            background.push(AbortOnDrop(accept));
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, stopped))
        }
        None => {
            let incoming = TcpIncoming::from(client_listener).with_nodelay(Some(true));
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, stopped))
        }
    };
    // Ready from now on (as far as the lease says): the client service
    // takes calls.
    observer.set_client_serving(true);
    Ok(Node {
        observer,
        host,
        driver,
        peers,
        client_service: Some(client_service),
        client_stop,
        watch,
        sampler,
        http,
        background,
        client_addr,
        peer_addr,
        incarnation,
        node_id: config.node_id,
        data_dir: config.data_dir.clone(),
        min_free_disk: config.min_free_disk,
        hand_over_wait: config.hand_over_wait,
        client_drain: config.client_drain,
        outbound,
        failed: false,
    })
}

fn local_addr(listener: &TcpListener, what: &'static str) -> Result<SocketAddr, Error> {
    listener
        .local_addr()
        .map_err(|err| Error::runtime(what, err))
}

fn client_ended(ended: Option<Result<Result<(), tonic::transport::Error>, JoinError>>) -> Error {
    match ended {
        Some(Ok(Ok(()))) | None => Error::runtime("tsoracle server", "the client service stopped"),
        Some(Ok(Err(err))) => Error::runtime("tsoracle server", err),
        Some(Err(err)) => Error::runtime("tsoracle server", err),
    }
}

/// Resolves with the reason once the consensus side cannot serve any more:
/// the consensus thread failed or stopped, a StopSign ended the
/// configuration, the server's leadership-watch task ended, or the data
/// directory's free space fell below `min_free_disk`.
async fn consensus_failure(
    node_id: u64,
    host: &StandaloneHost,
    watch: &tsoracle_server::WatchGuard,
    data_dir: &Path,
    min_free_disk: u64,
    outbound: &TransportStats,
) -> Error {
    let mut status = host.status();
    let mut poll = tokio::time::interval(Duration::from_millis(100));
    loop {
        {
            let now = status.borrow_and_update();
            if let Some(reason) = &now.failed {
                return Error::runtime("consensus thread failed", reason);
            }
            if now.stopped {
                return Error::runtime("consensus", "the consensus thread stopped");
            }
            // The host follows changes: a StopSign shows here only once
            // this node left its configuration for no next one.
            if let Some(stop_sign) = now.stop_sign.clone() {
                drop(now);
                let next = &stop_sign.next_config;
                if next.nodes.contains(&node_id) {
                    // Listed in the next configuration, yet it left: it could
                    // not start its instance there (its storage), or the
                    // StopSign names no agreed change. A failure, not a
                    // removal: a supervisor restarts it (it boots the ended
                    // configuration and tries again).
                    return Error::runtime(
                        "membership change",
                        format!(
                            "configuration {} ended and this node is a member of the next one, \
                             but it could not start there (see the log above); restart it to \
                             try again",
                            next.configuration_id.saturating_sub(1)
                        ),
                    );
                }
                // Lingers, its retired instance still answering, so members
                // that missed the StopSign can learn it from this node too.
                tokio::time::sleep(LEAVE_GRACE).await;
                return Error::Removed {
                    configuration: next.configuration_id,
                };
            }
        }
        if watch.is_finished() {
            return Error::runtime(
                "tsoracle server",
                "the leadership watch ended; serving is disabled",
            );
        }
        // A statvfs per tick costs microseconds; the node stops within a
        // tick of its disk filling, not when a write finally fails.
        if let Some(reason) = crate::disk::shortage(data_dir, min_free_disk) {
            return Error::runtime("disk", reason);
        }
        // A peer holds another instance for this node id: this directory
        // lost the node's promises, and every peer will refuse it.
        if let Some(reason) = outbound.identity_refusal() {
            return Error::runtime("identity", reason);
        }
        tokio::select! {
            changed = status.changed() => {
                if changed.is_err() {
                    return Error::runtime("consensus", "the consensus thread is gone");
                }
            }
            // The watch guard can only be polled.
            _ = poll.tick() => {}
        }
    }
}

/// Opens the storage of the configuration this node boots, and its record
/// (`true`: not on disk yet; the caller writes it once the host started):
/// the recorded one; else, on a founding or pre-change directory,
/// configuration 1 under `db/`; else, joining, the configuration a peer
/// runs that lists this node (invariant 11: an empty directory becomes a
/// member's storage only on a founding start or once a change admitted it).
async fn open_storage(
    config: &NodeConfig,
    identity: &StorageIdentity,
    tls: Option<&TlsMaterial>,
) -> Result<(ConfigRecord, RocksdbStorage<PaxosEntry>, bool), Error> {
    let data_dir = &config.data_dir;
    let refused = |reason: String| Error::DataDir {
        dir: data_dir.clone(),
        reason,
    };
    let opened = |dir: &Path, create: bool| {
        let opened = if create {
            RocksdbStorage::<PaxosEntry>::open(dir, identity.clone(), RocksdbOptions::default())
        } else {
            RocksdbStorage::<PaxosEntry>::open_existing(
                dir,
                identity.clone(),
                RocksdbOptions::default(),
            )
        };
        opened.map_err(|err| {
            refused(match err {
                ToolkitError::NotInitialized { .. } => no_state_to_rejoin(config.node_id),
                other => other.to_string(),
            })
        })
    };
    if let Some(record) = ConfigRecord::load(data_dir).map_err(|err| refused(err.to_string()))? {
        if record.membership.member(config.node_id).is_none() {
            return Err(refused(format!(
                "its configuration record lists no node {} (it belongs to another node)",
                config.node_id
            )));
        }
        let dir = db_dir(data_dir, record.membership.configuration());
        // A joiner that crashed before its storage was synced starts it again.
        let storage = opened(&dir, record.joining)?;
        if record.membership.configuration() <= 1 {
            // No change yet: the flags' list is the one the founding start
            // was given, checked against the list the cluster recorded
            // (invariant 12).
            let membership = founding_list(config)?;
            return Ok((
                ConfigRecord {
                    membership,
                    ..record
                },
                storage,
                false,
            ));
        }
        log_flag_drift(config, &record.membership);
        return Ok((record, storage, false));
    }
    let (membership, storage, joining) = match config.initial_cluster_state {
        InitialClusterState::Join => {
            let membership = await_admission(config, tls).await?;
            let dir = db_dir(data_dir, membership.configuration());
            (membership, opened(&dir, true)?, true)
        }
        state => {
            let storage = opened(&db_dir(data_dir, 1), state == InitialClusterState::New)?;
            (founding_list(config)?, storage, false)
        }
    };
    let record = ConfigRecord {
        membership,
        joining,
        instance: storage.instance(),
    };
    Ok((record, storage, true))
}

/// How often a joining node asks whether a change admitted it.
const JOIN_POLL: Duration = Duration::from_secs(1);

/// How long a joining node waits for a change that admits it.
const JOIN_WAIT: Duration = Duration::from_secs(600);

/// Asks the members of `config`'s peer list, until one runs a configuration
/// that lists this node, for that configuration.
async fn await_admission(
    config: &NodeConfig,
    tls: Option<&TlsMaterial>,
) -> Result<Membership, Error> {
    let targets: Vec<AdminTarget> = seeds(config)
        .into_iter()
        .filter(|target| target.node != config.node_id)
        .collect();
    let started = Instant::now();
    let mut last_report = None::<Instant>;
    loop {
        let mut heard = Vec::new();
        // Every peer is asked, and the newest list wins: a peer still in an
        // ended configuration may list a reused id.
        let mut admitted: Option<Membership> = None;
        for target in &targets {
            match crate::admin::members_of(target, &config.cluster_id, tls, JOIN_POLL).await {
                Ok(reply) => match membership_of(&reply) {
                    // A joiner never joins the founding configuration.
                    Ok(Some(list))
                        if list.member(config.node_id).is_some() && list.configuration() > 1 =>
                    {
                        if admitted
                            .as_ref()
                            .is_none_or(|a| a.configuration() < list.configuration())
                        {
                            admitted = Some(list);
                        }
                    }
                    Ok(Some(list)) => heard.push(format!(
                        "node {} runs configuration {} without node {}",
                        target.node,
                        list.configuration(),
                        config.node_id
                    )),
                    Ok(None) => heard.push(format!("node {} runs no member list yet", target.node)),
                    Err(err) => heard.push(format!("node {}: {err}", target.node)),
                },
                Err(err) => heard.push(err.to_string()),
            }
        }
        if let Some(list) = admitted {
            tracing::info!(
                node = config.node_id,
                configuration = list.configuration(),
                members = %list,
                "a membership change admitted this node; joining"
            );
            return Ok(list);
        }
        if started.elapsed() >= JOIN_WAIT {
            return Err(Error::Config(format!(
                "no member admitted node {} within {JOIN_WAIT:?}: add it first \
                 (tsoracle-paxos member add --id {} ...); last answers: {}",
                config.node_id,
                config.node_id,
                heard.join("; ")
            )));
        }
        if last_report.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
            last_report = Some(Instant::now());
            tracing::info!(
                node = config.node_id,
                answers = %heard.join("; "),
                "waiting for a membership change that adds this node \
                 (tsoracle-paxos member add)"
            );
        }
        tokio::time::sleep(JOIN_POLL).await;
    }
}

/// The flags' member list as configuration 1.
fn founding_list(config: &NodeConfig) -> Result<Membership, Error> {
    Membership::new(1, config.members.iter().map(record_of).collect())
        .map_err(|err| Error::Config(err.to_string()))
}

/// The driver's members of `membership`.
fn members_of(membership: &Membership) -> Result<Vec<Member>, Error> {
    membership
        .members()
        .iter()
        .map(|m| crate::config::member(m.id, &m.peer_address, &m.client_endpoint))
        .collect()
}

/// `member` as the replicated state records it.
fn record_of(member: &Member) -> MemberRecord {
    MemberRecord {
        id: member.id,
        peer_address: member.peer_address.clone(),
        client_endpoint: member.client_endpoint.as_str().to_owned(),
    }
}

/// The members of the `--peer` list: whom a joiner, or a node that missed
/// a change, asks.
fn seeds(config: &NodeConfig) -> Vec<AdminTarget> {
    AdminTarget::all(
        config
            .members
            .iter()
            .map(|m| (m.id, m.peer_address.as_str())),
    )
}

/// The flags' peer list is only the founding list (or whom a joiner asks);
/// after a change the record is what counts. Say so when they differ.
fn log_flag_drift(config: &NodeConfig, recorded: &Membership) {
    let flagged: Vec<u64> = config.members.iter().map(|m| m.id).collect();
    let listed: Vec<u64> = recorded.members().iter().map(|m| m.id).collect();
    if flagged != listed && recorded.configuration() > 1 {
        tracing::info!(
            configuration = recorded.configuration(),
            members = %recorded,
            ?flagged,
            "starting the recorded configuration; the --peer list differs from it since a \
             membership change (update it to the list above)"
        );
    }
}

/// `<data-dir>/spool`, created if missing: where peer transfers are spooled.
fn spool_dir(data_dir: &Path) -> Result<PathBuf, Error> {
    let dir = data_dir.join("spool");
    std::fs::create_dir_all(&dir).map_err(|err| Error::DataDir {
        dir: dir.clone(),
        reason: format!("cannot create the transfer spool directory: {err}"),
    })?;
    Ok(dir)
}

/// Why a node without state is not started, and the ways out.
fn no_state_to_rejoin(node_id: u64) -> String {
    format!(
        "it holds no state (missing or empty), and this node is not bootstrapping a new \
         cluster. If node {node_id} ran before, its promises are lost with its data, and a node \
         that forgot them must not vote again under its old id: it could hand out timestamps \
         and dense blocks twice. If its disk was wiped, lost or replaced, do not start it like \
         this: keep serving from the other members and replace this member (README, \
         \"Lost data directories\"). If this is the first start of a new cluster, start each \
         founding node once with --initial-cluster-state new"
    )
}

/// Binds a listener whose accepted connections have `TCP_NODELAY` set.
///
/// Accepted sockets inherit `TCP_NODELAY` from the listening socket (Linux,
/// and the BSDs). `tsoracle-server`'s `serve_with_listener` does not set it
/// on the connections it accepts, and Nagle's algorithm meeting the client's
/// delayed ACKs then holds small gRPC replies back for 40 ms (a p99 of
/// ~42 ms under 64 clients in `cargo xtask bench`).
fn bind(addr: SocketAddr, what: &'static str) -> Result<TcpListener, Error> {
    let listen = || -> std::io::Result<TcpListener> {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        // As `TcpListener::bind` does: a restart may reuse a port whose old
        // connections linger in TIME_WAIT (a port in use still fails).
        socket.set_reuseaddr(true)?;
        socket.set_nodelay(true)?;
        socket.bind(addr)?;
        socket.listen(1024)
    };
    listen().map_err(|err| Error::Bind {
        what,
        addr,
        reason: if err.kind() == std::io::ErrorKind::AddrInUse {
            "the address is already in use (is another node running?)".to_owned()
        } else {
            err.to_string()
        },
    })
}
