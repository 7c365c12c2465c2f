//! The node's configuration: a TOML file, overridden field by field by
//! command-line flags, checked into a [`NodeConfig`] before anything is
//! opened or bound.

use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::Deserialize;
use tsoracle_core::PeerEndpoint;
use tsoracle_driver_paxos::{DriverConfig, Member, Timing};
use tsoracle_paxos_tonic::accept::HandshakeLimits;
use tsoracle_paxos_tonic::{DEFAULT_MAX_CHUNKED_MESSAGE_BYTES, DEFAULT_MAX_FRAME_BYTES, TlsFiles};
use tsoracle_paxos_toolkit::config::MAX_NODE_ID;

use crate::error::Error;

/// `serve`'s snapshot interval unless told otherwise.
const DEFAULT_SNAPSHOT_EVERY: u64 = 4096;

/// `serve` flags. Every one overrides the same field of `--config`.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct ServeArgs {
    /// TOML configuration file (see the README for an example). Flags win
    /// over its fields.
    #[arg(long, value_name = "FILE", env = "TSORACLE_PAXOS_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// This node's id, one of the peer list's ids (`1..=N`).
    #[arg(long, env = "TSORACLE_PAXOS_NODE_ID")]
    pub(crate) node_id: Option<u64>,
    /// The cluster's name; every node and data directory of a cluster shares it.
    #[arg(long, env = "TSORACLE_PAXOS_CLUSTER_ID")]
    pub(crate) cluster_id: Option<String>,
    /// Where this node keeps its log and state (created on first start).
    #[arg(long, value_name = "DIR", env = "TSORACLE_PAXOS_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Address the tsoracle client service listens on, e.g. 0.0.0.0:7001.
    #[arg(long, value_name = "ADDR", env = "TSORACLE_PAXOS_CLIENT_LISTEN")]
    pub(crate) client_listen: Option<SocketAddr>,
    /// Address the peer transport listens on, e.g. 10.0.0.1:6001. Any
    /// address but loopback needs mutual TLS (--tls-ca, --tls-cert,
    /// --tls-key) or --insecure-peer-plaintext.
    #[arg(long, value_name = "ADDR", env = "TSORACLE_PAXOS_PEER_LISTEN")]
    pub(crate) peer_listen: Option<SocketAddr>,
    /// Serve Prometheus metrics on this address (`/metrics`), e.g. 0.0.0.0:9101.
    #[arg(long, value_name = "ADDR", env = "TSORACLE_PAXOS_METRICS_LISTEN")]
    pub(crate) metrics_listen: Option<SocketAddr>,
    /// A member of the cluster, repeated once per node (this one included):
    /// `ID=PEER_HOST:PORT,CLIENT_HOST:PORT`, e.g. `2=10.0.0.2:6001,10.0.0.2:7001`.
    /// Replaces the file's peer list. In the environment variable, members
    /// are separated by `;`. The cluster records the first list
    /// proposed; a later start with other member ids is refused, naming
    /// each difference (other addresses are only logged).
    #[arg(
        long = "peer",
        value_name = "ID=PEER,CLIENT",
        env = "TSORACLE_PAXOS_PEERS",
        value_delimiter = ';'
    )]
    pub(crate) peers: Vec<String>,
    /// Consensus tick in milliseconds (default 10).
    #[arg(long, env = "TSORACLE_PAXOS_TICK_MS")]
    pub(crate) tick_ms: Option<u64>,
    /// Ticks per election timeout (default 20).
    #[arg(long, env = "TSORACLE_PAXOS_ELECTION_TICKS")]
    pub(crate) election_ticks: Option<u64>,
    /// Leader lease in milliseconds (default 150); must be shorter than the
    /// election timeout.
    #[arg(long, env = "TSORACLE_PAXOS_LEASE_MS")]
    pub(crate) lease_ms: Option<u64>,
    /// Relative clock-rate error bound (default 0.01).
    #[arg(long, env = "TSORACLE_PAXOS_DRIFT")]
    pub(crate) drift: Option<f64>,
    /// How often the leader asks its peers for a lease round, in
    /// milliseconds (default 40; no disk write: rounds are messages only).
    #[arg(long, env = "TSORACLE_PAXOS_RENEW_EVERY_MS")]
    pub(crate) renew_every_ms: Option<u64>,
    /// Compact the log every this many decided entries (default 4096; 0
    /// disables snapshots).
    #[arg(long, env = "TSORACLE_PAXOS_SNAPSHOT_EVERY")]
    pub(crate) snapshot_every: Option<u64>,
    /// How far ahead of the clock tsoracle-server persists its timestamp
    /// window, in milliseconds (tsoracle-server's default: 3000). Smaller
    /// values persist a high-water more often; `cargo xtask bench` sets 1 to
    /// time `persist_high_water`.
    #[arg(long, value_name = "MS", env = "TSORACLE_PAXOS_WINDOW_AHEAD_MS")]
    pub(crate) window_ahead_ms: Option<u64>,
    /// PEM file of the cluster CA, for mutual TLS between peers.
    #[arg(long, value_name = "FILE", requires_all = ["tls_cert", "tls_key"], env = "TSORACLE_PAXOS_TLS_CA")]
    pub(crate) tls_ca: Option<PathBuf>,
    /// PEM certificate of this node (naming `node-<id>`).
    #[arg(long, value_name = "FILE", requires_all = ["tls_ca", "tls_key"], env = "TSORACLE_PAXOS_TLS_CERT")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// PEM private key of this node.
    #[arg(long, value_name = "FILE", requires_all = ["tls_ca", "tls_cert"], env = "TSORACLE_PAXOS_TLS_KEY")]
    pub(crate) tls_key: Option<PathBuf>,
    /// Serve the peer port without mutual TLS on an address other than
    /// loopback. INSECURE: anyone who can reach the port can act as a
    /// member and disrupt or corrupt the cluster. Without mutual TLS,
    /// `serve` refuses such an address unless this is set (or
    /// `insecure_peer_plaintext = true` in the file); a WARN is logged at
    /// start-up when it is.
    /// `--insecure-peer-plaintext` alone means true; the variable takes
    /// `true` or `false` (and `false` overrides the file).
    #[arg(
        long,
        env = "TSORACLE_PAXOS_INSECURE_PEER_PLAINTEXT",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub(crate) insecure_peer_plaintext: Option<bool>,
    /// Stop serving and exit (non-zero) when the data directory's
    /// filesystem has less than this many MiB free, and refuse to start
    /// below it (default 64). Checked every 100 ms: a full disk otherwise
    /// shows only when RocksDB's preallocated space runs out, tens of
    /// seconds later. 0 turns the check off.
    #[arg(long, value_name = "MIB", env = "TSORACLE_PAXOS_MIN_FREE_DISK_MIB")]
    pub(crate) min_free_disk_mib: Option<u64>,
    /// Largest single peer message this node sends or accepts, in MiB
    /// (default 1024). A follower that lags far behind catches up with one
    /// message holding the leader's whole state (a snapshot) or log suffix;
    /// above 4 MiB it is spooled to <data-dir>/spool on both ends and
    /// travels in 4 MiB chunks (a link that breaks resumes where it was cut),
    /// and the receiver spools at most this much of it. A larger message is dropped and counted
    /// (tsoracle_paxos_peer_dropped_total), and that follower never catches
    /// up: raise this above the data directory's state size (a million
    /// dense keys of 8 bytes make about 10 MiB). Set it alike on every node.
    #[arg(long, value_name = "MIB", env = "TSORACLE_PAXOS_MAX_PEER_MESSAGE_MIB")]
    pub(crate) max_peer_message_mib: Option<u64>,
    /// Largest peer frame, in KiB (default 4096, 64 to 65536): a batch of
    /// messages above it is split, and a single message above it goes as a
    /// spooled transfer in chunks of this size. It is also the memory one
    /// chunk takes on either end. Set it alike on every node (a frame above
    /// the receiver's limit is refused).
    #[arg(long, value_name = "KIB", env = "TSORACLE_PAXOS_PEER_FRAME_KIB")]
    pub(crate) peer_frame_kib: Option<u64>,
    /// This node's StatefulSet ordinal: the node id is the ordinal plus one
    /// (ordinals start at 0, ids at 1). Instead of --node-id.
    #[arg(
        long,
        value_name = "N",
        conflicts_with = "node_id",
        env = "TSORACLE_PAXOS_NODE_ORDINAL"
    )]
    pub(crate) node_ordinal: Option<u64>,
    /// Bound on each driver call (a write, a lease, a dense block), in
    /// milliseconds (default 2000): a call that cannot finish in time
    /// (quorum lost, leader changing) answers "unavailable" and the client
    /// retries.
    #[arg(long, value_name = "MS", env = "TSORACLE_PAXOS_REQUEST_TIMEOUT_MS")]
    pub(crate) request_timeout_ms: Option<u64>,
    /// Most distinct dense-sequence keys the cluster keeps (default
    /// 1000000); a new key beyond it is refused.
    #[arg(long, value_name = "N", env = "TSORACLE_PAXOS_DENSE_KEY_CAP")]
    pub(crate) dense_key_cap: Option<u64>,
    /// The leader stops serving this long before its lease runs out, in
    /// milliseconds (default two ticks): room for the server to notice.
    /// renew_every + stop_margin must fit in the lease.
    #[arg(long, value_name = "MS", env = "TSORACLE_PAXOS_STOP_MARGIN_MS")]
    pub(crate) stop_margin_ms: Option<u64>,
    /// On SIGTERM, how long a leader waits for its successor to lead, in
    /// milliseconds (default 2000), before it stops anyway (the cluster
    /// then elects).
    #[arg(long, value_name = "MS", env = "TSORACLE_PAXOS_HAND_OVER_WAIT_MS")]
    pub(crate) hand_over_wait_ms: Option<u64>,
    /// On SIGTERM, how long the client service may drain its calls, in
    /// milliseconds (default 10000).
    #[arg(long, value_name = "MS", env = "TSORACLE_PAXOS_CLIENT_DRAIN_MS")]
    pub(crate) client_drain_ms: Option<u64>,
    /// PEM certificate chain of the client port: with a key, clients
    /// connect with TLS. Reloaded on SIGHUP and when the file changes
    /// (checked every --tls-reload-secs). Each of the three client TLS
    /// settings comes from its flag (or variable), else from the file's
    /// [client_tls].
    #[arg(long, value_name = "FILE", env = "TSORACLE_PAXOS_CLIENT_TLS_CERT")]
    pub(crate) client_tls_cert: Option<PathBuf>,
    /// PEM private key of the client port's certificate.
    #[arg(long, value_name = "FILE", env = "TSORACLE_PAXOS_CLIENT_TLS_KEY")]
    pub(crate) client_tls_key: Option<PathBuf>,
    /// PEM CA file: when set, the client port requires client certificates
    /// signed by it (mutual TLS). Needs the port's certificate and key.
    /// Reloaded with them (SIGHUP, or a change seen by --tls-reload-secs).
    #[arg(long, value_name = "FILE", env = "TSORACLE_PAXOS_CLIENT_TLS_CA")]
    pub(crate) client_tls_ca: Option<PathBuf>,
    /// How often the node checks the TLS files of both ports (certificates,
    /// keys and CAs) for a change and reloads them, in seconds (default 30;
    /// 0: only on SIGHUP).
    #[arg(long, value_name = "SECONDS", env = "TSORACLE_PAXOS_TLS_RELOAD_SECS")]
    pub(crate) tls_reload_secs: Option<u64>,
    /// TLS handshakes one source address may have in progress at once on
    /// each TLS port (default 32 of 1,024 in all; 0: no cap per address). Raise it when many clients
    /// reach the client port through one address (a NAT, a TCP proxy).
    #[arg(
        long,
        value_name = "N",
        env = "TSORACLE_PAXOS_TLS_HANDSHAKES_PER_ADDRESS"
    )]
    pub(crate) tls_handshakes_per_address: Option<u32>,
    /// An export of another cluster (`tsoracle-paxos export`) to start
    /// above: before serving, the node waits until its cluster's state
    /// holds the export's high-water, dense counters and leases (the node
    /// that leads writes them). Give it to every founding node of the new
    /// cluster with --initial-cluster-state new; harmless on later starts.
    #[arg(long, value_name = "FILE", env = "TSORACLE_PAXOS_RESTORE_FROM")]
    pub(crate) restore_from: Option<PathBuf>,
    /// `new` on the very first start of a new cluster's founding nodes: an
    /// empty data directory is then initialized. `existing` (the default):
    /// the data directory must hold this node's state, and an empty one is
    /// refused, because a node that lost its state must not vote again under
    /// its old id (it could hand out timestamps and dense blocks twice).
    /// `join`: a new member of a running cluster; it waits until a
    /// `member add` lists its id (ask with `--peer` naming members of the
    /// cluster, this node included), then initializes its empty directory
    /// and catches up. Ignored when the directory holds state; remove `new`
    /// once the cluster has formed.
    #[arg(
        long,
        value_enum,
        value_name = "STATE",
        env = "TSORACLE_PAXOS_INITIAL_CLUSTER_STATE"
    )]
    pub(crate) initial_cluster_state: Option<InitialClusterState>,
}

/// How a node treats an empty data directory (`--initial-cluster-state`,
/// as etcd's flag of that name).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InitialClusterState {
    /// A founding node of a new cluster: an empty data directory is
    /// initialized (a directory that holds state is used as it is).
    New,
    /// A node of a cluster that already exists: its data directory must
    /// hold its state; an empty one is refused.
    #[default]
    Existing,
    /// A new member of a running cluster: an empty data directory is
    /// initialized once a membership change (`tsoracle-paxos member add`)
    /// lists this node's id; until then the node asks the members of its
    /// peer list which configuration they run, and waits. A directory that
    /// holds state is used as it is.
    Join,
}

/// `--max-peer-message-mib` unless told otherwise: the transport's own
/// default, 1 GiB.
const DEFAULT_MAX_PEER_MESSAGE_MIB: u64 =
    DEFAULT_MAX_CHUNKED_MESSAGE_BYTES as u64 / crate::disk::MIB;

const KIB: u64 = 1024;

/// `--peer-frame-kib` unless told otherwise: the transport's own default.
const DEFAULT_PEER_FRAME_KIB: u64 = DEFAULT_MAX_FRAME_BYTES as u64 / KIB;

/// The smallest frame: a transfer's chunk header and room for its bytes.
const MIN_PEER_FRAME_KIB: u64 = 64;

/// The largest frame (a frame is one gRPC message, held whole).
const MAX_PEER_FRAME_KIB: u64 = 64 * 1024;

/// The largest message the node accepts: 64 GiB (spooled to disk on both
/// ends; the message a receiver decodes is still held in memory whole).
const MAX_PEER_MESSAGE: u64 = 64 * 1024 * crate::disk::MIB;

/// Free space the node keeps on its data directory's filesystem, in MiB:
/// room for a memtable flush (4 MiB) and a compaction with plenty to spare.
const DEFAULT_MIN_FREE_DISK_MIB: u64 = 64;

/// The TOML file, every field optional (flags may supply it).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    node_id: Option<u64>,
    cluster_id: Option<String>,
    data_dir: Option<PathBuf>,
    client_listen: Option<SocketAddr>,
    peer_listen: Option<SocketAddr>,
    metrics_listen: Option<SocketAddr>,
    #[serde(default)]
    peers: Vec<FilePeer>,
    #[serde(default)]
    timing: FileTiming,
    snapshot_every: Option<u64>,
    tls: Option<FileTls>,
    insecure_peer_plaintext: Option<bool>,
    min_free_disk_mib: Option<u64>,
    max_peer_message_mib: Option<u64>,
    peer_frame_kib: Option<u64>,
    initial_cluster_state: Option<InitialClusterState>,
    node_ordinal: Option<u64>,
    window_ahead_ms: Option<u64>,
    request_timeout_ms: Option<u64>,
    dense_key_cap: Option<u64>,
    stop_margin_ms: Option<u64>,
    hand_over_wait_ms: Option<u64>,
    client_drain_ms: Option<u64>,
    client_tls: Option<FileClientTls>,
    tls_reload_secs: Option<u64>,
    tls_handshakes_per_address: Option<u32>,
    restore_from: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileClientTls {
    cert: PathBuf,
    key: PathBuf,
    ca: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePeer {
    id: u64,
    peer: String,
    client: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTiming {
    tick_ms: Option<u64>,
    election_ticks: Option<u64>,
    lease_ms: Option<u64>,
    drift: Option<f64>,
    renew_every_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTls {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// One node's configuration: what `serve` reads from its file and flags,
/// and what [`Node::start`](crate::Node::start) runs.
///
/// [`NodeConfig::new`] fills in the defaults `serve` uses; the fields can
/// be changed after. [`Node::start`](crate::Node::start) checks the whole
/// before it opens or binds anything.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's id, one of the members' ids (`1..=N`).
    pub node_id: u64,
    /// The cluster's name; every node and data directory of a cluster
    /// shares it.
    pub cluster_id: String,
    /// Where this node keeps its log and state (`db/`, `incarnation`).
    pub data_dir: PathBuf,
    /// Where the tsoracle client service listens.
    pub client_listen: SocketAddr,
    /// Where the peer transport listens.
    pub peer_listen: SocketAddr,
    /// Where the HTTP port (`/metrics`, `/livez`, `/readyz`) listens, if
    /// anywhere. The metrics recorder is process-wide: nodes of one process
    /// share it.
    pub metrics_listen: Option<SocketAddr>,
    /// Every member of the cluster, this node included.
    pub members: Vec<Member>,
    /// Consensus tick, election timeout, lease and drift.
    pub timing: Timing,
    /// Compact the log every this many decided entries; `None`: never.
    pub snapshot_every: Option<NonZeroU64>,
    /// Mutual TLS between peers; required unless `peer_listen` is loopback
    /// or `insecure_peer_plaintext` is set.
    pub tls: Option<TlsFiles>,
    /// The operator accepted a plaintext peer port on a reachable address.
    pub insecure_peer_plaintext: bool,
    /// tsoracle-server's window ahead; `None` keeps the server's default.
    pub window_ahead: Option<Duration>,
    /// Free space on the data directory's file system below which the node
    /// refuses to start or stops (bytes; 0: never checked).
    pub min_free_disk: u64,
    /// Largest single peer message, both ways (bytes; see
    /// `--max-peer-message-mib`).
    pub max_peer_message: u64,
    /// Largest peer frame, both ways (bytes; see `--peer-frame-kib`).
    pub peer_frame: u64,
    /// Whether an empty data directory may be initialized (`New`, the
    /// founding start of a new cluster) or is refused (`Existing`).
    pub initial_cluster_state: InitialClusterState,
    /// The driver's settings: its timing is `timing`; the rest (request
    /// timeout, dense key cap, stop margin) defaults as
    /// `DriverConfig::new`.
    pub driver: DriverSettings,
    /// On shutdown, how long a leader waits for its successor to lead.
    pub hand_over_wait: Duration,
    /// On shutdown, how long the client service may drain.
    pub client_drain: Duration,
    /// TLS on the client port (`None`: plaintext).
    pub client_tls: Option<ClientTlsFiles>,
    /// How often certificate files are checked for a change (`None`: only
    /// on SIGHUP).
    pub tls_reload_every: Option<Duration>,
    /// TLS handshakes one source address may have in progress at once on
    /// each TLS port (0: no cap per address).
    pub tls_handshakes_per_address: u32,
    /// An export to restore before serving (`serve --restore-from`).
    pub restore_from: Option<PathBuf>,
}

/// The driver settings a node may override (`None`: the driver's default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DriverSettings {
    /// Bound on each driver call.
    pub request_timeout: Option<Duration>,
    /// Most distinct dense keys.
    pub dense_key_cap: Option<u64>,
    /// How long before its lease ends the leader stops serving.
    pub stop_margin: Option<Duration>,
}

/// The client port's TLS files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTlsFiles {
    /// PEM certificate chain the port presents.
    pub cert: PathBuf,
    /// Its PEM private key.
    pub key: PathBuf,
    /// PEM CA of client certificates; `Some`: clients must present one.
    pub ca: Option<PathBuf>,
}

/// On shutdown, how long a leader waits for its successor unless told.
pub(crate) const DEFAULT_HAND_OVER_WAIT: Duration = Duration::from_secs(2);

/// On shutdown, how long the client service drains unless told.
pub(crate) const DEFAULT_CLIENT_DRAIN: Duration = Duration::from_secs(10);

/// How often certificate files are checked unless told.
const DEFAULT_TLS_RELOAD_SECS: u64 = 30;

/// TLS handshakes in progress per source address unless told: the
/// transport's default.
fn default_tls_handshakes_per_address() -> u32 {
    u32::try_from(HandshakeLimits::default().per_address).unwrap_or(u32::MAX)
}

impl ServeArgs {
    /// Reads `--config` (if any), applies the flags over it, and checks the
    /// result.
    pub(crate) fn resolve(&self) -> Result<NodeConfig, Error> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let peers = if self.peers.is_empty() {
            file.peers
                .iter()
                .map(|p| member(p.id, &p.peer, &p.client))
                .collect::<Result<Vec<_>, _>>()?
        } else {
            self.peers
                .iter()
                .map(|spec| parse_peer(spec))
                .collect::<Result<Vec<_>, _>>()?
        };
        let lan = Timing::lan();
        let ms = |flag: Option<u64>, file: Option<u64>, default: Duration| {
            flag.or(file).map_or(default, Duration::from_millis)
        };
        let timing = Timing {
            tick: ms(self.tick_ms, file.timing.tick_ms, lan.tick),
            election_ticks: self
                .election_ticks
                .or(file.timing.election_ticks)
                .unwrap_or(lan.election_ticks),
            lease: ms(self.lease_ms, file.timing.lease_ms, lan.lease),
            drift: self.drift.or(file.timing.drift).unwrap_or(lan.drift),
            renew_every: ms(
                self.renew_every_ms,
                file.timing.renew_every_ms,
                lan.renew_every,
            ),
        };
        timing
            .validate()
            .map_err(|err| Error::Config(err.to_string()))?;
        let tls = match (&self.tls_ca, &self.tls_cert, &self.tls_key, file.tls) {
            (Some(ca), Some(cert), Some(key), _) => Some(TlsFiles {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
            }),
            (_, _, _, Some(tls)) => Some(TlsFiles {
                ca: tls.ca,
                cert: tls.cert,
                key: tls.key,
            }),
            _ => None,
        };
        let node_id = match (self.node_id, self.node_ordinal) {
            (Some(id), _) => Some(id),
            (None, Some(ordinal)) => Some(ordinal.saturating_add(1)),
            (None, None) => file
                .node_id
                .or(file.node_ordinal.map(|ordinal| ordinal.saturating_add(1))),
        };
        // Each of the three from the flag (or its variable), else the file.
        let (file_cert, file_key, file_ca) = match file.client_tls {
            Some(tls) => (Some(tls.cert), Some(tls.key), tls.ca),
            None => (None, None, None),
        };
        let client_tls = match (
            self.client_tls_cert.clone().or(file_cert),
            self.client_tls_key.clone().or(file_key),
            self.client_tls_ca.clone().or(file_ca),
        ) {
            (Some(cert), Some(key), ca) => Some(ClientTlsFiles { cert, key, ca }),
            (None, None, None) => None,
            _ => {
                return Err(Error::Config(
                    "the client port's TLS needs both a certificate and a key \
                     (--client-tls-cert and --client-tls-key, or [client_tls] cert and key); \
                     a client CA (--client-tls-ca) needs them too"
                        .to_owned(),
                ));
            }
        };
        let millis =
            |flag: Option<u64>, file: Option<u64>| flag.or(file).map(Duration::from_millis);
        let config = NodeConfig {
            node_id: required(node_id, "node_id", "--node-id (or --node-ordinal)")?,
            cluster_id: required(
                self.cluster_id.clone().or(file.cluster_id),
                "cluster_id",
                "--cluster-id",
            )?,
            data_dir: required(
                self.data_dir.clone().or(file.data_dir),
                "data_dir",
                "--data-dir",
            )?,
            client_listen: required(
                self.client_listen.or(file.client_listen),
                "client_listen",
                "--client-listen",
            )?,
            peer_listen: required(
                self.peer_listen.or(file.peer_listen),
                "peer_listen",
                "--peer-listen",
            )?,
            metrics_listen: self.metrics_listen.or(file.metrics_listen),
            members: peers,
            timing,
            snapshot_every: match self.snapshot_every.or(file.snapshot_every) {
                None => NonZeroU64::new(DEFAULT_SNAPSHOT_EVERY),
                Some(n) => NonZeroU64::new(n),
            },
            tls,
            insecure_peer_plaintext: self
                .insecure_peer_plaintext
                .or(file.insecure_peer_plaintext)
                .unwrap_or(false),
            window_ahead: millis(self.window_ahead_ms, file.window_ahead_ms),
            min_free_disk: self
                .min_free_disk_mib
                .or(file.min_free_disk_mib)
                .unwrap_or(DEFAULT_MIN_FREE_DISK_MIB)
                .saturating_mul(crate::disk::MIB),
            max_peer_message: self
                .max_peer_message_mib
                .or(file.max_peer_message_mib)
                .unwrap_or(DEFAULT_MAX_PEER_MESSAGE_MIB)
                .saturating_mul(crate::disk::MIB),
            peer_frame: self
                .peer_frame_kib
                .or(file.peer_frame_kib)
                .unwrap_or(DEFAULT_PEER_FRAME_KIB)
                .saturating_mul(KIB),
            initial_cluster_state: self
                .initial_cluster_state
                .or(file.initial_cluster_state)
                .unwrap_or_default(),
            driver: DriverSettings {
                request_timeout: millis(self.request_timeout_ms, file.request_timeout_ms),
                dense_key_cap: self.dense_key_cap.or(file.dense_key_cap),
                stop_margin: millis(self.stop_margin_ms, file.stop_margin_ms),
            },
            hand_over_wait: millis(self.hand_over_wait_ms, file.hand_over_wait_ms)
                .unwrap_or(DEFAULT_HAND_OVER_WAIT),
            client_drain: millis(self.client_drain_ms, file.client_drain_ms)
                .unwrap_or(DEFAULT_CLIENT_DRAIN),
            client_tls,
            tls_reload_every: match self
                .tls_reload_secs
                .or(file.tls_reload_secs)
                .unwrap_or(DEFAULT_TLS_RELOAD_SECS)
            {
                0 => None,
                secs => Some(Duration::from_secs(secs)),
            },
            tls_handshakes_per_address: self
                .tls_handshakes_per_address
                .or(file.tls_handshakes_per_address)
                .unwrap_or_else(default_tls_handshakes_per_address),
            restore_from: self.restore_from.clone().or(file.restore_from),
        };
        config.check()?;
        Ok(config)
    }
}

impl NodeConfig {
    /// A configuration with `serve`'s defaults: [`Timing::lan`], a
    /// snapshot every 4096 decided entries, no metrics endpoint, no TLS
    /// (so `peer_listen` must be loopback), tsoracle-server's default
    /// window, and [`InitialClusterState::Existing`] (set `New` for the
    /// founding start of a new cluster).
    pub fn new(
        node_id: u64,
        cluster_id: impl Into<String>,
        data_dir: impl Into<PathBuf>,
        client_listen: SocketAddr,
        peer_listen: SocketAddr,
        members: Vec<Member>,
    ) -> Self {
        Self {
            node_id,
            cluster_id: cluster_id.into(),
            data_dir: data_dir.into(),
            client_listen,
            peer_listen,
            metrics_listen: None,
            members,
            timing: Timing::lan(),
            snapshot_every: NonZeroU64::new(DEFAULT_SNAPSHOT_EVERY),
            tls: None,
            insecure_peer_plaintext: false,
            window_ahead: None,
            min_free_disk: DEFAULT_MIN_FREE_DISK_MIB.saturating_mul(crate::disk::MIB),
            max_peer_message: DEFAULT_MAX_PEER_MESSAGE_MIB.saturating_mul(crate::disk::MIB),
            peer_frame: DEFAULT_PEER_FRAME_KIB.saturating_mul(KIB),
            initial_cluster_state: InitialClusterState::Existing,
            driver: DriverSettings::default(),
            hand_over_wait: DEFAULT_HAND_OVER_WAIT,
            client_drain: DEFAULT_CLIENT_DRAIN,
            client_tls: None,
            tls_reload_every: Some(Duration::from_secs(DEFAULT_TLS_RELOAD_SECS)),
            tls_handshakes_per_address: default_tls_handshakes_per_address(),
            restore_from: None,
        }
    }

    /// The bounds of TLS handshakes in progress on both TLS ports.
    pub(crate) fn handshake_limits(&self) -> HandshakeLimits {
        HandshakeLimits {
            per_address: usize::try_from(self.tls_handshakes_per_address).unwrap_or(usize::MAX),
            ..HandshakeLimits::default()
        }
    }

    /// The driver's configuration: `timing` and [`DriverSettings`].
    pub(crate) fn driver_config(&self) -> DriverConfig {
        let mut config = DriverConfig::new(self.timing);
        if let Some(timeout) = self.driver.request_timeout {
            config.request_timeout = timeout;
        }
        if let Some(cap) = self.driver.dense_key_cap {
            config.dense_key_cap = cap;
        }
        if let Some(margin) = self.driver.stop_margin {
            config.stop_margin = margin;
        }
        config
    }

    /// Every rule `serve` enforces before it opens anything: the timing,
    /// the member list, and mutual TLS on a peer port beyond loopback.
    pub(crate) fn check(&self) -> Result<(), Error> {
        self.timing
            .validate()
            .map_err(|err| Error::Config(err.to_string()))?;
        self.driver_config()
            .validate()
            .map_err(|err| Error::Config(err.to_string()))?;
        if self.driver.dense_key_cap == Some(0) {
            return Err(Error::Config(
                "dense_key_cap (--dense-key-cap) must be at least 1".to_owned(),
            ));
        }
        if self.cluster_id.is_empty() {
            return Err(Error::Config("cluster_id must not be empty".to_owned()));
        }
        let frame = DEFAULT_MAX_FRAME_BYTES as u64;
        if self.max_peer_message < frame || self.max_peer_message > MAX_PEER_MESSAGE {
            return Err(Error::Config(format!(
                "max_peer_message_mib (--max-peer-message-mib) must be between {} and {} MiB, \
                 got {} MiB",
                frame / crate::disk::MIB,
                MAX_PEER_MESSAGE / crate::disk::MIB,
                self.max_peer_message / crate::disk::MIB
            )));
        }
        if !(MIN_PEER_FRAME_KIB * KIB..=MAX_PEER_FRAME_KIB * KIB).contains(&self.peer_frame) {
            return Err(Error::Config(format!(
                "peer_frame_kib (--peer-frame-kib) must be between {MIN_PEER_FRAME_KIB} and \
                 {MAX_PEER_FRAME_KIB} KiB, got {} KiB",
                self.peer_frame / KIB
            )));
        }
        if self.peer_frame > self.max_peer_message {
            return Err(Error::Config(format!(
                "peer_frame_kib (--peer-frame-kib, {} KiB) must not be above \
                 max_peer_message_mib (--max-peer-message-mib, {} MiB)",
                self.peer_frame / KIB,
                self.max_peer_message / crate::disk::MIB
            )));
        }
        let mut ids: Vec<u64> = self.members.iter().map(|m| m.id).collect();
        ids.sort_unstable();
        if ids.len() < 2 {
            return Err(Error::Config(format!(
                "the peer list needs at least two nodes (OmniPaxos cannot run one), got {}",
                ids.len()
            )));
        }
        // A founding list is 1..=N; membership changes later add and remove
        // ids, so a running cluster's list may have gaps.
        let founding = self.initial_cluster_state == InitialClusterState::New;
        if founding && ids.iter().zip(1u64..).any(|(&id, expected)| id != expected) {
            return Err(Error::Config(format!(
                "a new cluster's peer ids must be 1..=N without gaps or repeats, got {ids:?}"
            )));
        }
        if ids.windows(2).any(|pair| pair[0] == pair[1])
            || ids.iter().any(|&id| !(1..=MAX_NODE_ID).contains(&id))
        {
            return Err(Error::Config(format!(
                "peer ids must be distinct and in 1..={MAX_NODE_ID}, got {ids:?}"
            )));
        }
        if !ids.contains(&self.node_id) {
            return Err(Error::Config(format!(
                "this node's id {} is not in the peer list {ids:?}",
                self.node_id
            )));
        }
        // Secure by default: the peer link trusts whoever speaks as a member
        // (a single forged message once ended the configuration), so only
        // loopback may go without mutual TLS unless the operator says so.
        if self.tls.is_none()
            && !self.peer_listen.ip().is_loopback()
            && !self.insecure_peer_plaintext
        {
            return Err(Error::Config(format!(
                "peer_listen {} is not a loopback address and mutual TLS is not configured: \
                 anyone who can reach the peer port could act as a member. Configure mutual \
                 TLS ([tls] ca/cert/key in the file, or --tls-ca/--tls-cert/--tls-key), listen \
                 on 127.0.0.1, or accept the risk with --insecure-peer-plaintext \
                 (insecure_peer_plaintext = true in the file)",
                self.peer_listen
            )));
        }
        Ok(())
    }

    /// The peer transport addresses of the other members.
    #[cfg(test)]
    pub(crate) fn peer_addresses(&self) -> Vec<(u64, String)> {
        self.members
            .iter()
            .filter(|m| m.id != self.node_id)
            .map(|m| (m.id, m.peer_address.clone()))
            .collect()
    }
}

fn read_file(path: &Path) -> Result<FileConfig, Error> {
    let text = std::fs::read_to_string(path).map_err(|err| {
        Error::Config(format!(
            "cannot read the configuration file {}: {err}",
            path.display()
        ))
    })?;
    toml::from_str(&text)
        .map_err(|err| Error::Config(format!("{}: {}", path.display(), err.message())))
}

fn required<T>(value: Option<T>, field: &str, flag: &str) -> Result<T, Error> {
    value.ok_or_else(|| {
        Error::Config(format!(
            "{field} is not set (set it in the file or with {flag})"
        ))
    })
}

/// Parses `ID=PEER_HOST:PORT,CLIENT_HOST:PORT`.
fn parse_peer(spec: &str) -> Result<Member, Error> {
    let malformed = |why: &str| {
        Error::Config(format!(
            "malformed --peer {spec:?}: {why} (expected ID=PEER_HOST:PORT,CLIENT_HOST:PORT)"
        ))
    };
    let (id, addrs) = spec.split_once('=').ok_or_else(|| malformed("no '='"))?;
    let id: u64 = id
        .trim()
        .parse()
        .map_err(|_| malformed("the id is not a number"))?;
    let (peer, client) = addrs.split_once(',').ok_or_else(|| malformed("no ','"))?;
    member(id, peer.trim(), client.trim()).map_err(|err| malformed(&err.to_string()))
}

/// A member of the cluster: its id, the address its peer transport is
/// reached at (`HOST:PORT`), and its client address (`HOST:PORT`).
pub fn member(id: u64, peer: &str, client: &str) -> Result<Member, Error> {
    if id == 0 {
        return Err(Error::Config("peer id 0: ids start at 1".to_owned()));
    }
    if !has_port(peer) {
        return Err(Error::Config(format!(
            "peer {id}: peer address {peer:?} is not HOST:PORT"
        )));
    }
    let client_endpoint = PeerEndpoint::try_from(client.to_owned()).map_err(|err| {
        Error::Config(format!(
            "peer {id}: client address {client:?} is not HOST:PORT: {err}"
        ))
    })?;
    Ok(Member {
        id,
        peer_address: peer.to_owned(),
        client_endpoint,
    })
}

fn has_port(address: &str) -> bool {
    address
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ServeArgs {
        ServeArgs {
            node_id: Some(1),
            cluster_id: Some("c".into()),
            data_dir: Some("/tmp/x".into()),
            client_listen: Some("127.0.0.1:7001".parse().unwrap()),
            peer_listen: Some("127.0.0.1:6001".parse().unwrap()),
            peers: vec![
                "1=127.0.0.1:6001,127.0.0.1:7001".into(),
                "2=127.0.0.1:6002,127.0.0.1:7002".into(),
            ],
            ..ServeArgs::default()
        }
    }

    #[test]
    fn flags_alone_make_a_config() {
        let config = args().resolve().unwrap();
        assert_eq!(config.members.len(), 2);
        assert_eq!(
            config.peer_addresses(),
            vec![(2, "127.0.0.1:6002".to_owned())]
        );
        assert_eq!(config.timing, Timing::lan());
        assert_eq!(config.max_peer_message, 1 << 30);
        let mut larger = args();
        larger.max_peer_message_mib = Some(4096);
        assert_eq!(larger.resolve().unwrap().max_peer_message, 4 << 30);
    }

    #[test]
    fn flags_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(
            &path,
            r#"
node_id = 2
cluster_id = "from-file"
snapshot_every = 0
[timing]
lease_ms = 120
[[peers]]
id = 1
peer = "h1:6001"
client = "h1:7001"
[[peers]]
id = 2
peer = "h2:6001"
client = "h2:7001"
"#,
        )
        .unwrap();
        let mut a = args();
        a.config = Some(path);
        a.peers.clear();
        a.cluster_id = None;
        let config = a.resolve().unwrap();
        assert_eq!(config.node_id, 1, "the flag wins");
        assert_eq!(config.cluster_id, "from-file");
        assert_eq!(config.timing.lease, Duration::from_millis(120));
        assert_eq!(config.snapshot_every, None);
        assert_eq!(config.peer_addresses(), vec![(2, "h2:6001".to_owned())]);
    }

    /// Each client TLS setting comes from its flag, else from the file: a
    /// certificate given by flag keeps the file's client CA (mutual TLS is
    /// never dropped by a partial override), and a false
    /// `insecure_peer_plaintext` flag overrides a true one in the file.
    #[test]
    fn client_tls_and_booleans_merge_setting_by_setting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(
            &path,
            "insecure_peer_plaintext = true\n[client_tls]\ncert = \"/f.pem\"\nkey = \"/f.key\"\nca = \"/clients.pem\"\n",
        )
        .unwrap();
        let mut a = args();
        a.config = Some(path.clone());
        a.client_tls_cert = Some("/flag.pem".into());
        a.client_tls_key = Some("/flag.key".into());
        let config = a.resolve().unwrap();
        assert_eq!(
            config.client_tls,
            Some(ClientTlsFiles {
                cert: "/flag.pem".into(),
                key: "/flag.key".into(),
                ca: Some("/clients.pem".into()),
            })
        );
        assert!(config.insecure_peer_plaintext, "the file's true stands");
        a.insecure_peer_plaintext = Some(false);
        assert!(
            !a.resolve().unwrap().insecure_peer_plaintext,
            "the flag's false wins"
        );
        // A client CA without a certificate and key anywhere is refused.
        let mut b = args();
        b.client_tls_ca = Some("/clients.pem".into());
        let err = b.resolve().unwrap_err().to_string();
        assert!(err.contains("needs both a certificate and a key"), "{err}");
    }

    #[test]
    fn bad_configurations_say_what_is_wrong() {
        type Change = Box<dyn Fn(&mut ServeArgs)>;
        let cases: Vec<(Change, &str)> = vec![
            (
                Box::new(|a| a.peers[1] = "2=nonsense".into()),
                "malformed --peer",
            ),
            (
                Box::new(|a| a.peers[1] = "x=h:1,h:2".into()),
                "the id is not a number",
            ),
            (
                Box::new(|a| a.peers[1] = "2=h:1,h".into()),
                "client address",
            ),
            (Box::new(|a| a.node_id = Some(3)), "not in the peer list"),
            (
                Box::new(|a| {
                    a.peers[1] = "3=h:1,h:2".into();
                    a.initial_cluster_state = Some(InitialClusterState::New);
                }),
                "1..=N",
            ),
            (Box::new(|a| a.peers[1] = "1=h:1,h:2".into()), "distinct"),
            (
                Box::new(|a| a.peers[1] = "5000=h:1,h:2".into()),
                "in 1..=4096",
            ),
            (Box::new(|a| a.peers.truncate(1)), "at least two"),
            (Box::new(|a| a.data_dir = None), "data_dir is not set"),
            (Box::new(|a| a.lease_ms = Some(500)), "strictly shorter"),
            (
                Box::new(|a| a.max_peer_message_mib = Some(2)),
                "max_peer_message_mib (--max-peer-message-mib) must be between 4 and 65536 MiB, \
                 got 2 MiB",
            ),
            (
                Box::new(|a| a.peer_frame_kib = Some(32)),
                "peer_frame_kib (--peer-frame-kib) must be between 64 and 65536 KiB, got 32 KiB",
            ),
            (
                Box::new(|a| {
                    a.peer_frame_kib = Some(8192);
                    a.max_peer_message_mib = Some(4);
                }),
                "must not be above max_peer_message_mib",
            ),
        ];
        for (change, needle) in cases {
            let mut a = args();
            change(&mut a);
            let err = a.resolve().unwrap_err().to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }

    /// After membership changes a running cluster's ids may have gaps; only
    /// a founding list must be `1..=N`.
    #[test]
    fn a_running_cluster_may_list_ids_with_gaps() {
        let mut a = args();
        a.peers[1] = "3=h:1,h:2".into();
        a.resolve().unwrap();
        a.initial_cluster_state = Some(InitialClusterState::Join);
        a.resolve().unwrap();
    }

    /// Invariant 13 (secure by default): a peer port reachable from other
    /// machines needs mutual TLS, or the operator's explicit opt-out.
    #[test]
    fn a_reachable_plaintext_peer_port_needs_the_insecure_flag() {
        let reachable = |addr: &str| {
            let mut a = args();
            a.peer_listen = Some(addr.parse().unwrap());
            a
        };
        for addr in ["0.0.0.0:6001", "10.0.0.1:6001", "[::]:6001"] {
            let err = reachable(addr).resolve().unwrap_err().to_string();
            assert!(err.contains("not a loopback address"), "{addr}: {err}");
            assert!(err.contains("--insecure-peer-plaintext"), "{addr}: {err}");
            assert!(
                err.contains("insecure_peer_plaintext = true"),
                "{addr}: {err}"
            );
            assert!(err.contains("--tls-ca"), "{addr}: {err}");

            // The flag, or the file key, accepts it.
            let mut flagged = reachable(addr);
            flagged.insecure_peer_plaintext = Some(true);
            assert!(flagged.resolve().unwrap().insecure_peer_plaintext);

            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("node.toml");
            std::fs::write(&path, "insecure_peer_plaintext = true\n").unwrap();
            let mut filed = reachable(addr);
            filed.config = Some(path);
            assert!(filed.resolve().unwrap().insecure_peer_plaintext);

            // Mutual TLS needs no flag.
            let mut tls = reachable(addr);
            tls.tls_ca = Some("ca.pem".into());
            tls.tls_cert = Some("node-1.pem".into());
            tls.tls_key = Some("node-1.key".into());
            let config = tls.resolve().unwrap();
            assert!(config.tls.is_some());
            assert!(!config.insecure_peer_plaintext);
        }
        // Loopback needs neither.
        for addr in ["127.0.0.1:6001", "127.0.0.2:6001", "[::1]:6001"] {
            let config = reachable(addr).resolve().unwrap();
            assert!(config.tls.is_none() && !config.insecure_peer_plaintext);
        }
        // The same rule for mutual TLS from the file.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(
            &path,
            "[tls]\nca = \"ca.pem\"\ncert = \"node-1.pem\"\nkey = \"node-1.key\"\n",
        )
        .unwrap();
        let mut filed = reachable("0.0.0.0:6001");
        filed.config = Some(path);
        assert!(filed.resolve().unwrap().tls.is_some());
    }

    #[test]
    fn an_unknown_file_field_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, "node_idd = 1\n").unwrap();
        let mut a = args();
        a.config = Some(path);
        let err = a.resolve().unwrap_err().to_string();
        assert!(err.contains("node_idd"), "{err}");
    }
}
