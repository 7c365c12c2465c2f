//! One node of a 3-node cluster on the published `tsoracle-driver-openraft`,
//! in its durable configuration: the toolkit's `RocksdbLogStore` (every
//! append, vote and truncation a synced RocksDB write) and the driver's
//! `RocksdbSnapshotStore` in the same database, under a real
//! `tsoracle-server`.
//!
//! The driver refuses dense sequences until the cluster has activated the
//! dense record format; a background task on the leader runs the driver's
//! own activation gate (every member asked for its capabilities over the
//! peer transport) once, right after the first election, so `get_seq` works
//! as on the other drivers.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use openraft::async_runtime::watch::WatchReceiver;
use openraft::{Config, Raft, ServerState, SnapshotPolicy};
use rocksdb::{ColumnFamilyDescriptor, DB, Options};
use tsoracle_consensus::ConsensusDriver;
use tsoracle_driver_openraft::{
    HighWaterStateMachine, OpenraftDriver, OpenraftPeer, RocksdbSnapshotStore, SnapshotStore,
    StandaloneHost, TypeConfig,
};
use tsoracle_openraft_toolkit::{
    ActiveWriteVersion, BATCH_WRITE_VERSION, Flat, RocksdbLogStore, recover_active_write_version,
};

use crate::net::{Capabilities, Factory, Peers};
use crate::serve::{bind, serve_clients};
use crate::status;

const LOG_CF: &str = "raft_log";
const META_CF: &str = "raft_meta";
const SNAPSHOT_CF: &str = "raft_snapshot";

/// `openraft` flags.
#[derive(Debug, Args)]
pub struct RaftArgs {
    /// This node's id, one of the `--peer` ids.
    #[arg(long)]
    node_id: u64,
    /// Where the RocksDB log, vote and snapshot live (created if missing).
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// The tsoracle client service address.
    #[arg(long, value_name = "ADDR")]
    client_listen: SocketAddr,
    /// The raft peer transport address.
    #[arg(long, value_name = "ADDR")]
    raft_listen: SocketAddr,
    /// Prometheus page with the role, log indices and tsoracle-server metrics.
    #[arg(long, value_name = "ADDR")]
    status_listen: Option<SocketAddr>,
    /// A member, repeated for each node (this one included):
    /// `ID=RAFT_HOST:PORT,CLIENT_HOST:PORT`.
    #[arg(long = "peer", value_name = "ID=RAFT,CLIENT", required = true)]
    peers: Vec<String>,
    /// Initialize the cluster's membership (on one node, at the first start).
    #[arg(long)]
    bootstrap: bool,
    /// Build a snapshot (and purge the log) every this many entries; 0: never.
    #[arg(long, default_value_t = 4096)]
    snapshot_every: u64,
    /// Leader heartbeat interval, ms (openraft's default: 50).
    #[arg(long, default_value_t = 50)]
    heartbeat_ms: u64,
    /// Shortest election timeout, ms (openraft's default: 150).
    #[arg(long, default_value_t = 150)]
    election_min_ms: u64,
    /// Longest election timeout, ms (openraft's default: 300).
    #[arg(long, default_value_t = 300)]
    election_max_ms: u64,
    /// tsoracle-server's window ahead, ms (its default: 3000). The benchmark
    /// shrinks it to make every `get_ts` persist a high-water.
    #[arg(long)]
    window_ahead_ms: Option<u64>,
}

/// `ID=RAFT,CLIENT`.
fn parse_peer(spec: &str) -> Result<(u64, String, String)> {
    let bad = || format!("malformed --peer {spec:?} (expected ID=RAFT_HOST:PORT,CLIENT_HOST:PORT)");
    let (id, addrs) = spec.split_once('=').with_context(bad)?;
    let id: u64 = id.trim().parse().with_context(bad)?;
    let (raft, client) = addrs.split_once(',').with_context(bad)?;
    Ok((id, raft.trim().to_owned(), client.trim().to_owned()))
}

fn open_db(dir: &Path) -> Result<Arc<DB>> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    let mut options = Options::default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    let families = [LOG_CF, META_CF, SNAPSHOT_CF]
        .into_iter()
        .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
    let db = DB::open_cf_descriptors(&options, dir, families)
        .with_context(|| format!("cannot open RocksDB in {}", dir.display()))?;
    Ok(Arc::new(db))
}

pub async fn run(args: RaftArgs) -> Result<()> {
    let members = args
        .peers
        .iter()
        .map(|spec| parse_peer(spec))
        .collect::<Result<Vec<_>>>()?;
    if !members.iter().any(|(id, _, _)| *id == args.node_id) {
        bail!("--node-id {} is not in the --peer list", args.node_id);
    }
    if args.election_min_ms >= args.election_max_ms || args.heartbeat_ms >= args.election_min_ms {
        bail!("need --heartbeat-ms < --election-min-ms < --election-max-ms");
    }
    let client_listener = bind(args.client_listen, "the client service").await?;
    let raft_listener = bind(args.raft_listen, "the raft transport").await?;
    if let Some(addr) = args.status_listen {
        status::install(addr)?;
    }

    let db = open_db(&args.data_dir.join("db"))?;
    let log_store: RocksdbLogStore<TypeConfig, Flat> =
        RocksdbLogStore::open(Arc::clone(&db), LOG_CF, META_CF, Flat)
            .context("cannot open the raft log store")?;
    // The format version this node writes is recovered from what it already
    // wrote (the newest log record; the snapshot's byte is folded in by the
    // state machine), as the toolkit prescribes for a restart.
    let highest = log_store
        .highest_log_record_version()
        .context("cannot read the raft log")?;
    let version = recover_active_write_version(None, highest)
        .map_err(|err| anyhow::anyhow!("unreadable raft log format: {err}"))?;
    let active = ActiveWriteVersion::new(version);
    let log_store = log_store.with_active_write_version(active.clone());
    let snapshots: Arc<dyn SnapshotStore> = Arc::new(
        RocksdbSnapshotStore::open(Arc::clone(&db), SNAPSHOT_CF)
            .context("cannot open the snapshot store")?,
    );
    let state_machine = HighWaterStateMachine::with_store_and_active_version(snapshots, active)
        .context("cannot load the persisted snapshot")?;

    let config = Config {
        cluster_name: "tsoracle-bench".to_owned(),
        heartbeat_interval: args.heartbeat_ms,
        election_timeout_min: args.election_min_ms,
        election_timeout_max: args.election_max_ms,
        snapshot_policy: if args.snapshot_every == 0 {
            SnapshotPolicy::Never
        } else {
            SnapshotPolicy::LogsSinceLast(args.snapshot_every)
        },
        ..Config::default()
    }
    .validate()
    .context("invalid openraft configuration")?;

    let addrs: HashMap<u64, String> = members
        .iter()
        .filter(|(id, _, _)| *id != args.node_id)
        .map(|(id, raft, _)| (*id, raft.clone()))
        .collect();
    let peers = Peers::new(addrs);
    let factory = Factory {
        id: args.node_id,
        peers: Arc::clone(&peers),
    };
    let raft = Raft::<TypeConfig, HighWaterStateMachine>::new(
        args.node_id,
        Arc::new(config),
        factory,
        log_store,
        state_machine.clone(),
    )
    .await
    .context("cannot start openraft")?;
    let version_cell = state_machine.clone();
    crate::net::serve(raft_listener, raft.clone(), move || {
        version_cell.active_write_version()
    });

    if args.bootstrap {
        let nodes: BTreeMap<u64, OpenraftPeer> = members
            .iter()
            .map(|(id, raft_addr, client)| {
                (
                    *id,
                    OpenraftPeer {
                        addr: raft_addr.clone(),
                        service_endpoint: client.clone(),
                        admin_endpoint: String::new(),
                    },
                )
            })
            .collect();
        if let Err(err) = raft.initialize(nodes).await {
            // A restart with --bootstrap still set: the membership is in the log.
            tracing::warn!(%err, "initialize refused (already initialized?)");
        }
    }

    let host = Arc::new(StandaloneHost::new(raft.clone(), state_machine));
    tokio::spawn(activate_formats(
        raft.clone(),
        Arc::clone(&host),
        Capabilities {
            peers: Arc::clone(&peers),
        },
    ));
    if args.status_listen.is_some() {
        tokio::spawn(sample(raft.clone()));
    }
    let driver = OpenraftDriver::from_arc(host);
    let result = serve_clients(
        driver as Arc<dyn ConsensusDriver>,
        client_listener,
        args.window_ahead_ms,
    )
    .await;
    let _ = raft.shutdown().await;
    result
}

/// On the leader, activates the newest record format (dense and batch
/// sequences) once; every node runs it so whichever node leads does it.
async fn activate_formats(
    raft: Raft<TypeConfig, HighWaterStateMachine>,
    host: Arc<StandaloneHost>,
    source: Capabilities,
) {
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if host.active_write_version() >= BATCH_WRITE_VERSION {
            return;
        }
        let leader = raft.metrics().borrow_watched().state == ServerState::Leader;
        if !leader {
            continue;
        }
        match host
            .initiate_format_activation(BATCH_WRITE_VERSION, &source)
            .await
        {
            Ok(()) => tracing::info!(version = BATCH_WRITE_VERSION, "record format activated"),
            Err(err) => tracing::debug!(%err, "format activation not yet possible"),
        }
    }
}

/// Publishes the role and log indices every 100 ms for the benchmark's
/// leader detection and log-length checks.
async fn sample(raft: Raft<TypeConfig, HighWaterStateMachine>) {
    let mut every = tokio::time::interval(Duration::from_millis(100));
    loop {
        every.tick().await;
        let m = raft.metrics().borrow_watched().clone();
        let role = match m.state {
            ServerState::Leader => 2.0,
            ServerState::Follower => 1.0,
            _ => 0.0,
        };
        status::set_role(role);
        status::set_index(
            m.last_log_index.unwrap_or(0),
            m.last_applied.map_or(0, |id| id.index()),
            m.snapshot.map_or(0, |id| id.index()),
        );
    }
}
