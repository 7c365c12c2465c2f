//! `tsoracle-paxos demo`: a whole cluster and its failover in one command.
//!
//! It starts `--nodes` `serve` child processes on 127.0.0.1 with data in a
//! fresh directory, drives the real tsoracle client from `--workers`
//! concurrent workers, kills the leader with SIGKILL half way, restarts it at
//! three quarters, and checks the recorded history with the shared checker.
//! Every child is stopped on every exit path: the [`Cluster`] guard kills
//! them on drop, and Ctrl-C or SIGTERM ends the run early through it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Args;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use tsoracle_client::ClientBuilder;
use tsoracle_paxos_checker::{History, Outcome, Report, check};

use crate::error::Error;
use crate::load::{DENSE_KEY, Mix, Shared, worker};

/// `demo` flags.
#[derive(Debug, Clone, Args)]
pub(crate) struct DemoArgs {
    /// How long the load runs, in seconds.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Cluster size (at least 3, so the cluster survives the kill).
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Concurrent client workers.
    #[arg(long, default_value_t = 8)]
    workers: u32,
    /// Keep the data and logs here instead of a temporary directory.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Test hook: corrupt the recorded history before checking it (swap two
    /// timestamps of operations far apart), to show the checker can fail.
    #[arg(long, hide = true)]
    forge_history: bool,
}

/// The child processes; dropping it kills and reaps every one.
struct Cluster {
    dir: PathBuf,
    nodes: Vec<Option<Child>>,
    peer_ports: Vec<u16>,
    client_ports: Vec<u16>,
}

impl Cluster {
    fn start(dir: &Path, nodes: u64) -> Result<Self, Error> {
        let mut cluster = Self {
            dir: dir.to_path_buf(),
            nodes: Vec::new(),
            peer_ports: Vec::new(),
            client_ports: Vec::new(),
        };
        for _ in 0..nodes {
            cluster.peer_ports.push(free_port()?);
            cluster.client_ports.push(free_port()?);
        }
        for id in 1..=nodes {
            let child = cluster.spawn(id)?;
            cluster.nodes.push(Some(child));
        }
        Ok(cluster)
    }

    fn spawn(&self, id: u64) -> Result<Child, Error> {
        let exe = std::env::current_exe().map_err(|err| Error::runtime("demo", err))?;
        let log_path = self.dir.join(format!("node-{id}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|err| Error::runtime("demo log", err))?;
        let index = usize::try_from(id - 1).map_err(|err| Error::runtime("demo", err))?;
        let mut command = Command::new(exe);
        command
            .arg("serve")
            .args(["--node-id", &id.to_string(), "--cluster-id", "demo"])
            .arg("--data-dir")
            .arg(self.dir.join(format!("node-{id}")))
            .args([
                "--client-listen",
                &format!("127.0.0.1:{}", self.client_ports[index]),
            ])
            .args([
                "--peer-listen",
                &format!("127.0.0.1:{}", self.peer_ports[index]),
            ]);
        for (i, (peer, client)) in self.peer_ports.iter().zip(&self.client_ports).enumerate() {
            command
                .arg("--peer")
                .arg(format!("{}=127.0.0.1:{peer},127.0.0.1:{client}", i + 1));
        }
        command
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|err| Error::runtime("demo: starting a node", err))
    }

    fn endpoints(&self) -> Vec<String> {
        self.client_ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect()
    }

    /// The node id serving `endpoint`.
    fn node_of(&self, endpoint: &str) -> Option<u64> {
        let port: u16 = endpoint
            .rsplit(':')
            .next()?
            .trim_end_matches('/')
            .parse()
            .ok()?;
        let index = self.client_ports.iter().position(|&p| p == port)?;
        u64::try_from(index + 1).ok()
    }

    fn kill(&mut self, id: u64) {
        if let Some(slot) = usize::try_from(id - 1)
            .ok()
            .and_then(|i| self.nodes.get_mut(i))
            && let Some(mut child) = slot.take()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn restart(&mut self, id: u64) -> Result<(), Error> {
        let child = self.spawn(id)?;
        if let Some(slot) = usize::try_from(id - 1)
            .ok()
            .and_then(|i| self.nodes.get_mut(i))
        {
            *slot = Some(child);
        }
        Ok(())
    }

    /// SIGTERM to every node, then SIGKILL to any still running after a grace.
    fn stop(&mut self) {
        for child in self.nodes.iter().flatten() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for slot in &mut self.nodes {
            if let Some(mut child) = slot.take() {
                while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for slot in &mut self.nodes {
            if let Some(mut child) = slot.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn free_port() -> Result<u16, Error> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|err| Error::runtime("demo: picking a port", err))
}

/// Runs the demo; `Ok(true)` when every check passed.
pub(crate) async fn run(args: DemoArgs) -> Result<bool, Error> {
    if args.nodes < 3 {
        return Err(Error::Config(
            "--nodes must be at least 3: the demo kills one node and the rest must keep a quorum"
                .to_owned(),
        ));
    }
    if args.workers == 0 || args.duration < 4 {
        return Err(Error::Config(
            "--workers must be at least 1 and --duration at least 4 (seconds)".to_owned(),
        ));
    }
    let temp;
    let dir = match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|err| Error::runtime("demo dir", err))?;
            dir.clone()
        }
        None => {
            temp = tempdir()?;
            temp.clone()
        }
    };
    let mut cluster = Cluster::start(&dir, args.nodes)?;
    let result = tokio::select! {
        result = drive(&mut cluster, &args) => result,
        signal = interrupted() => Err(Error::runtime("demo", format!("interrupted by {signal}"))),
    };
    cluster.stop();
    if args.dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        println_out(&format!("data and logs kept in {}", dir.display()));
    }
    result
}

fn tempdir() -> Result<PathBuf, Error> {
    let dir = std::env::temp_dir().join(format!("tsoracle-paxos-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|err| Error::runtime("demo dir", err))?;
    Ok(dir)
}

async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

fn println_out(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}

async fn drive(cluster: &mut Cluster, args: &DemoArgs) -> Result<bool, Error> {
    let client = Arc::new(
        ClientBuilder::endpoints(cluster.endpoints())
            .build()
            .await
            .map_err(|err| Error::Client(format!("cannot connect: {err}")))?,
    );
    // Wait for a leader: the first timestamp.
    let ready = Instant::now();
    while client.get_ts().await.is_err() {
        if ready.elapsed() > Duration::from_secs(60) {
            return Err(Error::runtime(
                "demo",
                "the cluster elected no leader within 60 s",
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println_out(&format!(
        "{} nodes up in {:.1?}; {} workers for {} s; the leader is killed (SIGKILL) at {} s \
         and restarted at {} s",
        args.nodes,
        ready.elapsed(),
        args.workers,
        args.duration,
        args.duration / 2,
        args.duration * 3 / 4
    ));

    let shared = Arc::new(Shared::new(None));
    let mut tasks = tokio::task::JoinSet::new();
    for id in 0..args.workers {
        tasks.spawn(worker(
            id,
            Arc::clone(&client),
            Arc::clone(&shared),
            Mix::DENSE_EVERY_TENTH,
        ));
    }
    let total = Duration::from_secs(args.duration);
    let bar = ProgressBar::new(args.duration);
    bar.set_style(
        ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {pos}/{len}s {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut killed: Option<(u64, u64)> = None;
    let mut restarted = false;
    let mut last_ok = 0;
    while shared.start.elapsed() < total {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let elapsed = shared.start.elapsed();
        let ok = shared.ok.load(Ordering::Relaxed);
        let leader = client
            .cached_leader()
            .and_then(|e| cluster.node_of(&e))
            .map_or_else(|| "?".to_owned(), |id| id.to_string());
        let p99 = shared
            .take_recent_p99_ms()
            .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.1} ms"));
        let progress = format!(
            "{} ops/s, p99 {p99}, {} errors, leader: node {leader}",
            ok - last_ok,
            shared.errors.load(Ordering::Relaxed)
        );
        bar.set_position(elapsed.as_secs().min(args.duration));
        if bar.is_hidden() {
            // Not a terminal (a log, CI): a plain line instead of the bar.
            println_out(&format!("{:>4}s  {progress}", elapsed.as_secs()));
        }
        bar.set_message(progress);
        last_ok = ok;
        if killed.is_none() && elapsed >= total / 2 {
            let Some(id) = client.cached_leader().and_then(|e| cluster.node_of(&e)) else {
                continue;
            };
            bar.suspend(|| println_out(&format!("killing the leader, node {id} (SIGKILL)")));
            killed = Some((id, shared.micros()));
            cluster.kill(id);
        }
        if let Some((id, _)) = killed
            && !restarted
            && elapsed >= total * 3 / 4
        {
            bar.suspend(|| println_out(&format!("restarting node {id}")));
            cluster.restart(id)?;
            restarted = true;
        }
    }
    shared.stop.store(true, Ordering::Relaxed);
    bar.finish_and_clear();
    let mut history = History::default();
    let mut latency = Histogram::<u64>::new(3).map_err(|err| Error::runtime("histogram", err))?;
    while let Some(joined) = tasks.join_next().await {
        let (ops, latencies) = joined.map_err(|err| Error::runtime("demo worker", err))?;
        history.ops.extend(ops);
        for l in latencies {
            let _ = latency.record(l.max(1));
        }
    }
    // The final counter: a block taken after every worker stopped starts there.
    if let Ok(block) = client.get_seq(DENSE_KEY, 1).await {
        history
            .final_counters
            .insert(DENSE_KEY.to_owned(), block.start);
    }
    if args.forge_history {
        forge(&mut history);
    }
    let report = check(&history);
    let outage = killed.map(|(_, at)| unavailability(&history, at));
    print_summary(
        &history,
        &report,
        &latency,
        killed.map(|(id, _)| id),
        outage,
    );
    Ok(report.is_ok() && killed.is_some())
}

/// Swaps the results of the first and the last timestamp operations, which
/// do not overlap in time: a real-time order violation the checker must see.
fn forge(history: &mut History) {
    let ts: Vec<usize> = history
        .ops
        .iter()
        .enumerate()
        .filter(|(_, op)| matches!(op.outcome, Outcome::Timestamps(_)))
        .map(|(i, _)| i)
        .collect();
    if let (Some(&first), Some(&last)) = (ts.first(), ts.last()) {
        let a = history.ops[first].outcome.clone();
        history.ops[first].outcome = history.ops[last].outcome.clone();
        history.ops[last].outcome = a;
    }
}

/// The longest gap with no completed operation that spans the kill: from
/// the last completion before it to the first after it.
fn unavailability(history: &History, killed_at: u64) -> Duration {
    let before = history
        .ops
        .iter()
        .map(|op| op.completed)
        .filter(|&t| t <= killed_at)
        .max()
        .unwrap_or(killed_at);
    let after = history
        .ops
        .iter()
        .map(|op| op.completed)
        .filter(|&t| t > killed_at)
        .min()
        .unwrap_or(killed_at);
    Duration::from_micros(after.saturating_sub(before))
}

fn print_summary(
    history: &History,
    report: &Report,
    latency: &Histogram<u64>,
    killed: Option<u64>,
    outage: Option<Duration>,
) {
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    let verdict = |ok: bool| if ok { "PASS" } else { "FAIL" };
    let kinds =
        |f: fn(&tsoracle_paxos_checker::Violation) -> bool| !report.violations.iter().any(f);
    use tsoracle_paxos_checker::Violation as V;
    let lines = [
        "".to_owned(),
        "summary".to_owned(),
        format!("  operations            {:>10}", history.ops.len()),
        format!("  timestamps issued     {:>10}", report.timestamps),
        format!("  dense blocks issued   {:>10}", report.dense_blocks),
        format!(
            "  leader killed         {:>10}",
            killed.map_or_else(|| "no leader seen".to_owned(), |id| format!("node {id}"))
        ),
        format!(
            "  unavailability        {:>10}",
            outage.map_or_else(
                || "-".to_owned(),
                |d| format!("{:.0} ms", d.as_secs_f64() * 1e3)
            )
        ),
        format!("  latency p50           {:>7.2} ms", ms(0.5)),
        format!("  latency p99           {:>7.2} ms", ms(0.99)),
        "checks".to_owned(),
        format!(
            "  {}  every timestamp unique",
            verdict(kinds(|v| matches!(v, V::DuplicateTimestamp { .. })))
        ),
        format!(
            "  {}  each worker's timestamps strictly increasing",
            verdict(kinds(|v| matches!(v, V::WorkerNotIncreasing { .. })))
        ),
        format!(
            "  {}  a timestamp received before a request started is below its result",
            verdict(kinds(|v| matches!(v, V::RealTimeOrder { .. })))
        ),
        format!(
            "  {}  dense blocks disjoint and below the final counter",
            verdict(kinds(|v| matches!(
                v,
                V::DenseOverlap { .. } | V::DenseLost { .. }
            )))
        ),
        format!(
            "  {}  the leader was killed and the cluster went on",
            verdict(killed.is_some())
        ),
    ];
    for line in lines {
        println_out(&line);
    }
    for violation in report.violations.iter().take(10) {
        println_out(&format!("  violation: {violation}"));
    }
}
