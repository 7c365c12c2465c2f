//! `tsoracle-paxos serve`: one node. Everything that can be refused (the
//! TLS files, the listen addresses, the data directory) is checked before
//! anything is written, so a refused start leaves the data directory as it
//! was.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tsoracle_consensus::ConsensusDriver;
use tsoracle_driver_paxos::{DriverConfig, PaxosDriver, StandaloneHost, next_incarnation};
use tsoracle_paxos_reply_gate::ReplyGateLayer;
use tsoracle_paxos_state::{PaxosEntry, SnapshotPolicy};
use tsoracle_paxos_tonic::{PeerService, TlsMaterial, TonicSink, TransportConfig, serve};
use tsoracle_paxos_toolkit::storage::{RocksdbOptions, RocksdbStorage, StorageIdentity};

use crate::config::NodeConfig;
use crate::error::Error;

/// Runs the node until SIGTERM or SIGINT, or until it can no longer serve
/// (then `Err`, so the process exits non-zero), and shuts it down in order:
/// client service, driver, peer service, consensus thread (last sync).
pub(crate) async fn run(config: NodeConfig) -> Result<(), Error> {
    let tls = match &config.tls {
        Some(files) => Some(TlsMaterial::load(files).map_err(|err| Error::Tls(err.to_string()))?),
        None => None,
    };
    let client_listener = bind(config.client_listen, "the client service").await?;
    let peer_listener = bind(config.peer_listen, "the peer transport").await?;
    if let Some(addr) = config.metrics_listen {
        crate::metrics::install(addr)?;
    }

    // Refused like any other bad input: before anything is written.
    if let Some(reason) = crate::disk::shortage(&config.data_dir, config.min_free_disk) {
        return Err(Error::DataDir {
            dir: config.data_dir.clone(),
            reason,
        });
    }

    let db_dir = config.data_dir.join("db");
    // A restart's time to serving is a figure users ask for: the storage open
    // (WAL replay) is logged here, the rebuild of the state from the snapshot
    // and log by the applier once the consensus thread has done it.
    let opening = Instant::now();
    let storage = RocksdbStorage::<PaxosEntry>::open(
        &db_dir,
        StorageIdentity::new(config.cluster_id.clone(), config.node_id),
        RocksdbOptions::default(),
    )
    .map_err(|err| Error::DataDir {
        dir: config.data_dir.clone(),
        reason: err.to_string(),
    })?;
    tracing::info!(elapsed = ?opening.elapsed(), "storage opened");
    // Only now, with the directory locked and proven ours, is anything written.
    let incarnation =
        next_incarnation(&config.data_dir.join("incarnation")).map_err(|err| Error::DataDir {
            dir: config.data_dir.clone(),
            reason: format!("cannot update the incarnation file: {err}"),
        })?;
    let durability = storage.group_commit();

    let ids: Vec<u64> = config.members.iter().map(|m| m.id).collect();
    let transport = TransportConfig::new(config.cluster_id.clone(), config.node_id, 1, ids);
    let sink = Arc::new(
        TonicSink::spawn(&transport, config.peer_addresses(), tls.as_ref())
            .map_err(|err| Error::runtime("peer transport", err))?,
    );
    let outbound = Arc::clone(sink.stats());
    let policy = match config.snapshot_every {
        Some(every) => SnapshotPolicy::EveryDecided(every),
        None => SnapshotPolicy::Disabled,
    };
    let host = Arc::new(
        StandaloneHost::builder()
            .node_id(config.node_id)
            .cluster_id(config.cluster_id.clone())
            .members(config.members.clone())
            .incarnation(incarnation)
            .timing(config.timing)
            .snapshot_policy(policy)
            .start(storage, durability, sink)
            .map_err(|err| Error::runtime("consensus", err))?,
    );
    let service = PeerService::new(host.inbox(), &transport)
        .map_err(|err| Error::runtime("peer service", err))?;
    let inbound = Arc::clone(service.stats());
    let peers = serve(peer_listener, service, &transport, tls.as_ref())
        .map_err(|err| Error::runtime("peer service", err))?;
    let driver = Arc::new(
        PaxosDriver::start(Arc::clone(&host), DriverConfig::new(config.timing))
            .map_err(|err| Error::runtime("driver", err))?,
    );
    let sampler = config
        .metrics_listen
        .map(|_| crate::metrics::sample(Arc::clone(&host), Arc::clone(&driver), outbound, inbound));
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
        client = %config.client_listen,
        peer = %config.peer_listen,
        incarnation,
        "serving"
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let incoming = TcpIncoming::from(client_listener).with_nodelay(Some(true));
    let mut client_service = tokio::spawn(
        tonic::transport::Server::builder()
            .layer(ReplyGateLayer::new(driver.reply_gate()))
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stop_rx.await;
            }),
    );
    let outcome = tokio::select! {
        signal = shutdown_signal() => {
            tracing::info!(signal, "shutting down");
            Ok(())
        }
        ended = &mut client_service => match ended {
            Ok(Ok(())) => Err(Error::runtime("tsoracle server", "the client service stopped")),
            Ok(Err(err)) => Err(Error::runtime("tsoracle server", err)),
            Err(err) => Err(Error::runtime("tsoracle server", err)),
        },
        reason = failure(&host, &watch, &config) => {
            // One line a supervisor's log shows; the exit code says the rest.
            tracing::error!(%reason, "stopping: this node can no longer serve");
            Err(reason)
        }
    };
    // Close the gate first: no reply is served from here on.
    let _ = stop_tx.send(());
    drop(watch);
    if !client_service.is_finished() {
        match tokio::time::timeout(Duration::from_secs(10), &mut client_service).await {
            Ok(Ok(Err(err))) if outcome.is_ok() => {
                tracing::warn!(%err, "client service shutdown");
            }
            Ok(_) => {}
            Err(_) => client_service.abort(),
        }
    }
    if let Some(sampler) = sampler {
        sampler.abort();
    }
    driver.shutdown().await;
    if let Err(err) = peers.shutdown().await {
        tracing::warn!(%err, "peer service shutdown");
    }
    match host.shutdown().await {
        // A failed consensus thread is already the outcome.
        Err(err) if outcome.is_ok() => return Err(Error::runtime("consensus", err)),
        _ => {}
    }
    tracing::info!("stopped");
    outcome
}

/// Binds a listener whose accepted connections have `TCP_NODELAY` set.
///
/// Accepted sockets inherit `TCP_NODELAY` from the listening socket (Linux,
/// and the BSDs). `tsoracle-server`'s `serve_with_listener` does not set it
/// on the connections it accepts, and Nagle's algorithm meeting the client's
/// delayed ACKs then holds small gRPC replies back for 40 ms (a p99 of
/// ~42 ms under 64 clients in `cargo xtask bench`).
/// Resolves with the reason once the node cannot serve any more: the
/// consensus thread stopped (a storage error such as a full disk, a corrupt
/// record, a panic in OmniPaxos or the apply path), a StopSign ended the
/// configuration, or the server's leadership-watch task ended. Staying up would only answer "not leader"
/// for ever; exiting lets a supervisor restart the node or page someone.
async fn failure(
    host: &StandaloneHost,
    watch: &tsoracle_server::WatchGuard,
    config: &NodeConfig,
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
            // Until membership changes exist, no StopSign is ever ours: the
            // node can never serve again, and says why (the driver logs the
            // high-water to start a new cluster above).
            if now.stop_sign.is_some() {
                return Error::runtime(
                    "consensus",
                    tsoracle_driver_paxos::Error::ConfigurationEnded,
                );
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
        if let Some(reason) = crate::disk::shortage(&config.data_dir, config.min_free_disk) {
            return Error::runtime("disk", reason);
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

async fn bind(addr: std::net::SocketAddr, what: &'static str) -> Result<TcpListener, Error> {
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

/// Resolves with the name of the first SIGTERM or SIGINT (also how `demo`
/// and `chaos` notice Ctrl-C).
pub(crate) async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the node can only be killed; run until then.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
