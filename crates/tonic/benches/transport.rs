//! Transport benchmark: decided entries per second and commit latency for a
//! three-node OmniPaxos cluster over tonic on 127.0.0.1, side by side for
//! in-memory and RocksDB storage, with and without mutual TLS.
//!
//! Run it with `cargo xtask bench transport` (release build). Commit latency
//! is measured on the leader from `Runner::propose` to the entry reaching
//! the leader's decided-entry hook: one append, one accept round trip to a
//! majority, and (for RocksDB) the synced group commit on each side.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use omnipaxos::OmniPaxosConfig;
use omnipaxos::storage::{Entry, NoSnapshot, Storage};
use omnipaxos::util::{LogEntry, NodeId};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tsoracle_paxos_tonic::{
    PeerService, ServerHandle, TlsMaterial, TonicSink, TransportConfig, serve,
};
use tsoracle_paxos_toolkit::storage::{
    MemoryStorage, RocksdbOptions, RocksdbStorage, StorageIdentity,
};
use tsoracle_paxos_toolkit::{
    ConfigBuilder, DecidedHook, Durability, Runner, RunnerConfig, SyncedWrites,
};

const NODES: [NodeId; 3] = [1, 2, 3];
const CLUSTER: &str = "bench";

#[derive(Parser)]
#[command(about = "Three-node OmniPaxos over tonic on loopback: throughput and commit latency")]
struct Args {
    /// Measured seconds per scenario (after a one-second warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Proposals in flight on the leader.
    #[arg(long, default_value_t = 64)]
    inflight: usize,
    /// Upper bound on proposals per scenario, whatever the duration.
    #[arg(long, default_value_t = 2_000_000)]
    max_ops: u64,
    /// Where to write the JSON report.
    #[arg(long, default_value = "target/bench/transport.json")]
    json: PathBuf,
    /// Passed by `cargo bench` to every bench binary; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct BenchEntry {
    id: u64,
    /// A payload the size of a small timestamp-oracle command.
    pad: [u8; 24],
}

impl Entry for BenchEntry {
    type Snapshot = NoSnapshot;
}

type Waiters = Arc<Mutex<HashMap<u64, oneshot::Sender<()>>>>;

/// Completes the waiter of each decided entry.
struct CompletingHook {
    next: usize,
    waiters: Waiters,
}

impl DecidedHook<BenchEntry> for CompletingHook {
    fn next_idx(&self) -> usize {
        self.next
    }

    fn on_decided(
        &mut self,
        entries: Vec<LogEntry<BenchEntry>>,
    ) -> Result<Option<usize>, Box<dyn std::error::Error + Send + Sync>> {
        let mut waiters = self.waiters.lock().map_err(|_| "poisoned")?;
        for entry in entries {
            if let LogEntry::Decided(entry) = entry
                && let Some(waiter) = waiters.remove(&entry.id)
            {
                let _ = waiter.send(());
            }
            self.next += 1;
        }
        Ok(None)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StorageKind {
    Memory,
    Rocksdb,
}

#[derive(Clone, Copy, Debug)]
struct Scenario {
    storage: StorageKind,
    tls: bool,
}

impl Scenario {
    fn name(self) -> String {
        let storage = match self.storage {
            StorageKind::Memory => "memory",
            StorageKind::Rocksdb => "rocksdb",
        };
        format!("{storage}/{}", if self.tls { "mtls" } else { "plain" })
    }
}

#[derive(Debug, Serialize)]
struct Report {
    scenario: String,
    storage: String,
    tls: bool,
    inflight: usize,
    seconds: f64,
    decided: u64,
    decided_per_sec: f64,
    lost: u64,
    latency_us_p50: u64,
    latency_us_p99: u64,
    latency_us_p999: u64,
    latency_us_max: u64,
}

struct Node {
    runner: Arc<Runner<BenchEntry>>,
    sink: Arc<TonicSink<BenchEntry>>,
    server: ServerHandle,
    waiters: Waiters,
    _dir: Option<tempfile::TempDir>,
}

fn omnipaxos_config(pid: NodeId) -> Result<OmniPaxosConfig, tsoracle_paxos_toolkit::Error> {
    ConfigBuilder::new(NODES)
        .election_ticks(5)
        .buffer_size(100_000)
        .build(pid)
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn spawn_runner<B, D>(
    id: NodeId,
    storage: B,
    durability: D,
    sink: Arc<TonicSink<BenchEntry>>,
    waiters: Waiters,
) -> Result<Runner<BenchEntry>, BoxError>
where
    B: Storage<BenchEntry> + Send + 'static,
    D: Durability,
{
    let omnipaxos = omnipaxos_config(id)?.build(storage)?;
    let hook = CompletingHook { next: 0, waiters };
    let config = RunnerConfig {
        tick: Duration::from_millis(10),
        ..RunnerConfig::default()
    };
    Ok(Runner::spawn(
        omnipaxos, &NODES, sink, durability, hook, config,
    )?)
}

fn certificates() -> Result<HashMap<NodeId, TlsMaterial>, BoxError> {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let issuer = rcgen::CertifiedIssuer::self_signed(ca, rcgen::KeyPair::generate()?)?;
    let mut out = HashMap::new();
    for id in NODES {
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(vec![format!("node-{id}")])?;
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &issuer)?;
        out.insert(
            id,
            TlsMaterial::from_pem(issuer.pem(), cert.pem(), key.serialize_pem())?,
        );
    }
    Ok(out)
}

async fn start(scenario: Scenario) -> Result<Vec<Node>, BoxError> {
    let mut listeners = HashMap::new();
    let mut addrs = HashMap::new();
    for id in NODES {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        addrs.insert(id, listener.local_addr()?.to_string());
        listeners.insert(id, listener);
    }
    let certs = if scenario.tls {
        Some(certificates()?)
    } else {
        None
    };
    let mut nodes = Vec::new();
    for id in NODES {
        let config = TransportConfig::new(CLUSTER, id, 1, NODES);
        let tls = certs.as_ref().and_then(|c| c.get(&id));
        let peers = addrs.iter().map(|(&p, a)| (p, a.clone()));
        let sink = Arc::new(TonicSink::spawn(&config, peers, tls)?);
        let waiters = Waiters::default();
        let (runner, dir) = match scenario.storage {
            StorageKind::Memory => {
                let storage = MemoryStorage::<BenchEntry>::new();
                let runner = spawn_runner(
                    id,
                    storage,
                    SyncedWrites,
                    Arc::clone(&sink),
                    Arc::clone(&waiters),
                )?;
                (runner, None)
            }
            StorageKind::Rocksdb => {
                let dir = tempfile::tempdir()?;
                let storage = RocksdbStorage::<BenchEntry>::open(
                    dir.path(),
                    StorageIdentity::new(CLUSTER, id),
                    RocksdbOptions::default(),
                )?;
                let durability = storage.group_commit();
                let runner = spawn_runner(
                    id,
                    storage,
                    durability,
                    Arc::clone(&sink),
                    Arc::clone(&waiters),
                )?;
                (runner, Some(dir))
            }
        };
        let service = PeerService::new(runner.inbox(), &config)?;
        let listener = listeners.remove(&id).ok_or("listener")?;
        let server = serve(listener, service, &config, tls)?;
        nodes.push(Node {
            runner: Arc::new(runner),
            sink,
            server,
            waiters,
            _dir: dir,
        });
    }
    Ok(nodes)
}

/// The node every node agrees leads, in the accept phase, for half a second.
async fn stable_leader(nodes: &[Node]) -> Result<usize, BoxError> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut held: Option<(NodeId, Instant)> = None;
    while Instant::now() < deadline {
        let statuses: Vec<_> = nodes
            .iter()
            .map(|n| n.runner.status().borrow().clone())
            .collect();
        let agreed = statuses[0]
            .leader
            .filter(|&(_, accepting)| accepting)
            .and_then(|(l, _)| {
                statuses
                    .iter()
                    .all(|s| s.leader.map(|(x, _)| x) == Some(l))
                    .then_some(l)
            });
        match (agreed, held) {
            (Some(l), Some((h, since))) if l == h => {
                if since.elapsed() >= Duration::from_millis(500) {
                    return Ok((l - 1) as usize);
                }
            }
            (Some(l), _) => held = Some((l, Instant::now())),
            (None, _) => held = None,
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err("no stable leader within 20 s".into())
}

struct Load {
    histogram: Histogram<u64>,
    decided: u64,
    lost: u64,
}

/// `inflight` proposers on the leader until `until`; latencies recorded only
/// after `record_from`.
async fn drive(
    leader: &Node,
    inflight: usize,
    record_from: Instant,
    until: Instant,
    max_ops: u64,
) -> Result<Load, BoxError> {
    let next_id = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..inflight {
        let runner = Arc::clone(&leader.runner);
        let waiters = Arc::clone(&leader.waiters);
        let next_id = Arc::clone(&next_id);
        tasks.spawn(async move {
            let mut load = Load {
                histogram: Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?,
                decided: 0,
                lost: 0,
            };
            loop {
                let now = Instant::now();
                let id = next_id.fetch_add(1, Ordering::Relaxed);
                if now >= until || id >= max_ops {
                    break;
                }
                let (tx, rx) = oneshot::channel();
                waiters.lock().map_err(|_| "poisoned")?.insert(id, tx);
                let started = Instant::now();
                runner.propose(BenchEntry { id, pad: [7; 24] }).await?;
                match tokio::time::timeout(Duration::from_secs(2), rx).await {
                    Ok(Ok(())) if started >= record_from => {
                        load.decided += 1;
                        let micros =
                            u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                        load.histogram.saturating_record(micros.max(1));
                    }
                    Ok(Ok(())) => {}
                    _ => {
                        waiters.lock().map_err(|_| "poisoned")?.remove(&id);
                        load.lost += 1;
                    }
                }
            }
            Ok::<Load, BoxError>(load)
        });
    }
    let mut total = Load {
        histogram: Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?,
        decided: 0,
        lost: 0,
    };
    while let Some(joined) = tasks.join_next().await {
        let load = joined??;
        total.histogram.add(&load.histogram)?;
        total.decided += load.decided;
        total.lost += load.lost;
    }
    Ok(total)
}

async fn run(scenario: Scenario, args: &Args) -> Result<Report, BoxError> {
    let nodes = start(scenario).await?;
    let leader = stable_leader(&nodes).await?;
    let record_from = Instant::now() + Duration::from_secs(1);
    let until = record_from + Duration::from_secs(args.seconds);
    let load = drive(
        &nodes[leader],
        args.inflight,
        record_from,
        until,
        args.max_ops,
    )
    .await?;
    let measured = until.saturating_duration_since(record_from).as_secs_f64();
    for node in nodes {
        node.runner.shutdown().await?;
        node.sink.shutdown().await;
        node.server.shutdown().await?;
    }
    let h = &load.histogram;
    Ok(Report {
        scenario: scenario.name(),
        storage: format!("{:?}", scenario.storage).to_lowercase(),
        tls: scenario.tls,
        inflight: args.inflight,
        seconds: measured,
        decided: load.decided,
        decided_per_sec: load.decided as f64 / measured,
        lost: load.lost,
        latency_us_p50: h.value_at_quantile(0.50),
        latency_us_p99: h.value_at_quantile(0.99),
        latency_us_p999: h.value_at_quantile(0.999),
        latency_us_max: h.max(),
    })
}

#[allow(clippy::print_stdout, reason = "a benchmark prints its table")]
fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let scenarios = [
        Scenario {
            storage: StorageKind::Memory,
            tls: false,
        },
        Scenario {
            storage: StorageKind::Memory,
            tls: true,
        },
        Scenario {
            storage: StorageKind::Rocksdb,
            tls: false,
        },
        Scenario {
            storage: StorageKind::Rocksdb,
            tls: true,
        },
    ];
    let mut reports = Vec::new();
    for scenario in scenarios {
        eprintln!(
            "bench transport: {} for {} s ...",
            scenario.name(),
            args.seconds
        );
        let report = runtime.block_on(run(scenario, &args))?;
        reports.push(report);
    }
    println!(
        "\n{:<15} {:>12} {:>10} {:>10} {:>10} {:>8}",
        "scenario", "decided/s", "p50 (µs)", "p99 (µs)", "p99.9", "lost"
    );
    for r in &reports {
        println!(
            "{:<15} {:>12.0} {:>10} {:>10} {:>10} {:>8}",
            r.scenario,
            r.decided_per_sec,
            r.latency_us_p50,
            r.latency_us_p99,
            r.latency_us_p999,
            r.lost
        );
    }
    if let Some(parent) = args.json.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let json = serde_json::json!({
        "benchmark": "transport",
        "nodes": NODES.len(),
        "inflight": args.inflight,
        "seconds_per_scenario": args.seconds,
        "machine_cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "results": reports,
    });
    std::fs::write(&args.json, serde_json::to_vec_pretty(&json)?)?;
    println!("\nwrote {}", args.json.display());
    Ok(())
}
