//! The benchmark's clusters: node processes on 127.0.0.1 with data in a
//! fresh temporary directory, stopped on every exit path.
//!
//! A [`Cluster`] kills and reaps its children when dropped, and every wait in
//! the benchmark goes through [`interrupt`] so Ctrl-C, SIGTERM or SIGHUP
//! ends the run through those drops instead of leaving nodes behind.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

/// Ctrl-C, SIGTERM and SIGHUP set a flag; every wait checks it.
pub(crate) mod interrupt {
    use std::sync::Arc;
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    use anyhow::{Context, Result, bail};

    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();

    /// Replaces the default "die at once" for SIGINT, SIGTERM and SIGHUP with
    /// a flag, so the run unwinds and its guards stop the children.
    pub(crate) fn install() -> Result<()> {
        let flag = FLAG.get_or_init(|| Arc::new(AtomicBool::new(false)));
        for signal in [
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGHUP,
        ] {
            signal_hook::flag::register(signal, Arc::clone(flag))
                .context("cannot install the signal handler")?;
        }
        Ok(())
    }

    /// Fails once a signal arrived.
    pub(crate) fn check() -> Result<()> {
        if FLAG.get().is_some_and(|flag| flag.load(Ordering::Relaxed)) {
            bail!("interrupted; stopping every node");
        }
        Ok(())
    }

    /// Sleeps `duration`, failing early on a signal.
    pub(crate) fn sleep(duration: Duration) -> Result<()> {
        let end = Instant::now() + duration;
        loop {
            check()?;
            let now = Instant::now();
            if now >= end {
                return Ok(());
            }
            std::thread::sleep((end - now).min(Duration::from_millis(50)));
        }
    }
}

/// Microseconds since the Unix epoch: the clock shared with the load
/// process, which reports its gaps on it.
pub(crate) fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The driver under a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// This repository's OmniPaxos driver: `tsoracle-paxos serve`, 3 nodes.
    Paxos,
    /// The published `tsoracle-driver-file`, 1 node.
    File,
    /// The published `tsoracle-driver-openraft`, 3 nodes.
    Openraft,
}

impl Kind {
    pub(crate) const ALL: [Kind; 3] = [Kind::Paxos, Kind::File, Kind::Openraft];
    pub(crate) const REPLICATED: [Kind; 2] = [Kind::Paxos, Kind::Openraft];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Paxos => "paxos",
            Kind::File => "file",
            Kind::Openraft => "openraft",
        }
    }

    fn nodes(self) -> usize {
        match self {
            Kind::File => 1,
            Kind::Paxos | Kind::Openraft => 3,
        }
    }

    /// The gauge that says 2 on the leader.
    fn role_metric(self) -> &'static str {
        match self {
            Kind::Paxos => "tsoracle_paxos_role",
            Kind::File | Kind::Openraft => "bench_peer_role",
        }
    }

    /// The gauge with the node's log length (absolute, across compaction).
    fn index_metric(self) -> &'static str {
        match self {
            Kind::Paxos => "tsoracle_paxos_decided_index",
            Kind::File | Kind::Openraft => "bench_peer_last_log_index",
        }
    }
}

/// The two release binaries the benchmark runs.
#[derive(Clone, Debug)]
pub(crate) struct Binaries {
    /// `tsoracle-paxos` (the node, and the client load for every driver).
    pub(crate) node: PathBuf,
    /// `tsoracle-bench-peer` (file and openraft nodes, the probe, the plots).
    pub(crate) peer: PathBuf,
}

/// Per-cluster settings.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Options {
    /// Snapshot every this many entries (0: never); `None`: the default 4096.
    pub(crate) snapshot_every: Option<u64>,
    /// tsoracle-server's window ahead; `None`: its default (3 s).
    pub(crate) window_ahead_ms: Option<u64>,
    /// Extra `serve` flags for the paxos nodes (a timing other than
    /// `Timing::lan()`).
    pub(crate) paxos_flags: &'static [&'static str],
}

struct Node {
    id: usize,
    client: u16,
    peer: u16,
    status: u16,
    dir: PathBuf,
    child: Option<Child>,
}

/// A running cluster of one [`Kind`]; dropping it kills every node.
pub(crate) struct Cluster {
    kind: Kind,
    bins: Binaries,
    options: Options,
    logs: PathBuf,
    nodes: Vec<Node>,
    /// Whether the openraft membership was initialized (first start only).
    initialized: bool,
}

fn free_port() -> Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .context("cannot pick a free port on 127.0.0.1")
}

impl Cluster {
    /// Starts every node with data under `data` and logs under `logs`.
    pub(crate) fn start(
        kind: Kind,
        bins: &Binaries,
        options: Options,
        data: &Path,
        logs: &Path,
    ) -> Result<Self> {
        std::fs::create_dir_all(data)
            .with_context(|| format!("cannot create {}", data.display()))?;
        std::fs::create_dir_all(logs)
            .with_context(|| format!("cannot create {}", logs.display()))?;
        let mut nodes = Vec::new();
        for id in 1..=kind.nodes() {
            nodes.push(Node {
                id,
                client: free_port()?,
                peer: free_port()?,
                status: free_port()?,
                dir: data.join(format!("node-{id}")),
                child: None,
            });
        }
        let mut cluster = Self {
            kind,
            bins: bins.clone(),
            options,
            logs: logs.to_path_buf(),
            nodes,
            initialized: false,
        };
        for index in 0..cluster.nodes.len() {
            cluster.spawn(index)?;
        }
        cluster.initialized = true;
        Ok(cluster)
    }

    pub(crate) fn kind(&self) -> Kind {
        self.kind
    }

    /// Changes the paxos `serve` flags for the next (re)starts.
    pub(crate) fn set_paxos_flags(&mut self, flags: &'static [&'static str]) {
        self.options.paxos_flags = flags;
    }

    fn spawn(&mut self, index: usize) -> Result<()> {
        let members: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("{}=127.0.0.1:{},127.0.0.1:{}", n.id, n.peer, n.client))
            .collect();
        let node = &self.nodes[index];
        let mut command = match self.kind {
            Kind::Paxos => {
                let mut c = Command::new(&self.bins.node);
                c.arg("serve")
                    .args(["--node-id", &node.id.to_string(), "--cluster-id", "bench"])
                    .arg("--data-dir")
                    .arg(&node.dir)
                    .args(["--client-listen", &format!("127.0.0.1:{}", node.client)])
                    .args(["--peer-listen", &format!("127.0.0.1:{}", node.peer)])
                    .args(["--metrics-listen", &format!("127.0.0.1:{}", node.status)]);
                for m in &members {
                    c.args(["--peer", m]);
                }
                c
            }
            Kind::Openraft => {
                let mut c = Command::new(&self.bins.peer);
                c.arg("openraft")
                    .args(["--node-id", &node.id.to_string()])
                    .arg("--data-dir")
                    .arg(&node.dir)
                    .args(["--client-listen", &format!("127.0.0.1:{}", node.client)])
                    .args(["--raft-listen", &format!("127.0.0.1:{}", node.peer)])
                    .args(["--status-listen", &format!("127.0.0.1:{}", node.status)]);
                for m in &members {
                    c.args(["--peer", m]);
                }
                // The membership is written once, by node 1 at the first start.
                if !self.initialized && node.id == 1 {
                    c.arg("--bootstrap");
                }
                c
            }
            Kind::File => {
                let mut c = Command::new(&self.bins.peer);
                c.arg("file")
                    .arg("--data-dir")
                    .arg(&node.dir)
                    .args(["--client-listen", &format!("127.0.0.1:{}", node.client)])
                    .args(["--status-listen", &format!("127.0.0.1:{}", node.status)]);
                c
            }
        };
        if let Some(every) = self.options.snapshot_every
            && self.kind != Kind::File
        {
            command.args(["--snapshot-every", &every.to_string()]);
        }
        if self.kind == Kind::Paxos {
            command.args(self.options.paxos_flags);
        }
        if let Some(ms) = self.options.window_ahead_ms {
            command.args(["--window-ahead-ms", &ms.to_string()]);
        }
        let log_path = self
            .logs
            .join(format!("{}-node-{}.log", self.kind.name(), node.id));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        // Warnings only: per-request logging would cost every driver alike,
        // but it is not what is being measured.
        let child = command
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start a {} node", self.kind.name()))?;
        self.nodes[index].child = Some(child);
        Ok(())
    }

    /// The client endpoints, `127.0.0.1:PORT` each.
    pub(crate) fn endpoints(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.client))
            .collect()
    }

    /// SIGKILL (`kill -9`) to one node, reaped.
    pub(crate) fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.nodes.get_mut(index).and_then(|n| n.child.take()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGKILL to every node.
    pub(crate) fn kill_all(&mut self) {
        for index in 0..self.nodes.len() {
            self.kill(index);
        }
    }

    /// Starts a killed node again on the same ports and data.
    pub(crate) fn restart(&mut self, index: usize) -> Result<()> {
        self.kill(index);
        self.spawn(index)
    }

    /// Starts every node again (after [`kill_all`](Self::kill_all)).
    pub(crate) fn restart_all(&mut self) -> Result<()> {
        for index in 0..self.nodes.len() {
            self.restart(index)?;
        }
        Ok(())
    }

    /// Fails when a node that should run has exited on its own.
    pub(crate) fn check_alive(&mut self) -> Result<()> {
        for node in &mut self.nodes {
            if let Some(child) = node.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                bail!(
                    "{} node {} exited ({status}); see {}",
                    self.kind.name(),
                    node.id,
                    self.logs
                        .join(format!("{}-node-{}.log", self.kind.name(), node.id))
                        .display()
                );
            }
        }
        Ok(())
    }

    /// SIGTERM to every node, then SIGKILL after a grace period.
    pub(crate) fn stop(&mut self) {
        for child in self.nodes.iter().filter_map(|n| n.child.as_ref()) {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// The un-labelled and labelled samples of a node's status page, keyed
    /// by `name` or `name{labels}`.
    pub(crate) fn status(&self, index: usize) -> Option<BTreeMap<String, f64>> {
        let node = self.nodes.get(index)?;
        node.child.as_ref()?;
        fetch_metrics(node.status).ok()
    }

    /// The node that says it leads (the highest role, then log index, wins
    /// when a stale sample shows two).
    pub(crate) fn leader(&self) -> Option<usize> {
        let mut best: Option<(usize, f64)> = None;
        for index in 0..self.nodes.len() {
            let Some(page) = self.status(index) else {
                continue;
            };
            if page.get(self.kind.role_metric()).copied() != Some(2.0) {
                continue;
            }
            let log = page.get(self.kind.index_metric()).copied().unwrap_or(0.0);
            if best.is_none_or(|(_, b)| log > b) {
                best = Some((index, log));
            }
        }
        best.map(|(index, _)| index)
    }

    /// Every running node's log index.
    pub(crate) fn indices(&self) -> Vec<u64> {
        (0..self.nodes.len())
            .filter_map(|i| self.status(i))
            .map(|page| page.get(self.kind.index_metric()).copied().unwrap_or(0.0) as u64)
            .collect()
    }

    /// Whether every node runs, answers its status page, and one leads.
    pub(crate) fn settled(&self) -> bool {
        let answering = (0..self.nodes.len())
            .filter(|&i| self.status(i).is_some())
            .count();
        answering == self.nodes.len() && self.leader().is_some()
    }

    /// Process ids of the running nodes.
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .filter_map(|n| n.child.as_ref().map(Child::id))
            .collect()
    }

    /// Bytes under every node's data directory.
    pub(crate) fn data_bytes(&self) -> u64 {
        self.nodes.iter().map(|n| dir_bytes(&n.dir)).sum()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_bytes(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Resident set size of a process, in bytes (`VmRSS` of `/proc/PID/status`).
pub(crate) fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// `GET /metrics` over plain HTTP/1.0 with short deadlines.
fn fetch_metrics(port: u16) -> Result<BTreeMap<String, f64>> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(300))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(1)))?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut page = String::new();
    stream.read_to_string(&mut page)?;
    Ok(parse_metrics(&page))
}

/// Sample lines of a Prometheus text page, keyed by everything before the
/// value (`name` or `name{labels}`).
pub(crate) fn parse_metrics(page: &str) -> BTreeMap<String, f64> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.trim().to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

/// Runs `command` to completion within `limit`, stdout to a file that is
/// returned as text, stderr appended to `log`. A signal or the limit kills it.
pub(crate) fn run_captured(
    mut command: Command,
    what: &str,
    limit: Duration,
    scratch: &Path,
    log: &Path,
) -> Result<String> {
    let child = spawn_captured(&mut command, what, scratch, log)?;
    child.finish(limit)
}

/// A child whose stdout goes to a scratch file (a long gap list cannot fill a
/// pipe and stall it); killed on drop.
pub(crate) struct Captured {
    what: String,
    child: Option<Child>,
    out: PathBuf,
    log: PathBuf,
}

pub(crate) fn spawn_captured(
    command: &mut Command,
    what: &str,
    scratch: &Path,
    log: &Path,
) -> Result<Captured> {
    let out = scratch.join(format!("load-{}.out", unix_micros()));
    let stdout = File::create(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    let child = command
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("cannot start {what}"))?;
    Ok(Captured {
        what: what.to_owned(),
        child: Some(child),
        out,
        log: log.to_path_buf(),
    })
}

impl Captured {
    /// Waits (at most `limit`) and returns stdout; a failure names the log.
    pub(crate) fn finish(mut self, limit: Duration) -> Result<String> {
        let deadline = Instant::now() + limit;
        let Some(child) = self.child.as_mut() else {
            bail!("{} was already reaped", self.what);
        };
        let status = loop {
            interrupt::check()?;
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                bail!("{} did not finish within {limit:?}", self.what);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.child = None;
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        let _ = std::fs::remove_file(&self.out);
        if !status.success() {
            bail!(
                "{} failed ({status}); see {}",
                self.what,
                self.log.display()
            );
        }
        Ok(text)
    }
}

impl Drop for Captured {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_pages_are_parsed_with_labels() {
        let page = "# TYPE x summary\nx{quantile=\"0.5\"} 0.002\nx_count 12\nrole 2\nbad line\n";
        let m = parse_metrics(page);
        assert_eq!(m.get("x{quantile=\"0.5\"}"), Some(&0.002));
        assert_eq!(m.get("x_count"), Some(&12.0));
        assert_eq!(m.get("role"), Some(&2.0));
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn directory_sizes_add_up_recursively() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), [0u8; 100]).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub").join("b"), [0u8; 50]).unwrap();
        assert_eq!(dir_bytes(dir.path()), 150);
    }

    #[test]
    fn own_rss_is_readable() {
        assert!(rss_bytes(std::process::id()).is_some_and(|b| b > 0));
    }
}
