//! The benchmark's clusters: node processes on 127.0.0.1 with data in a
//! fresh temporary directory, stopped on every exit path.
//!
//! The processes, their ports (reserved until the nodes start, and picked
//! again should one be taken meanwhile) and their status pages are the test
//! kit's process cluster (`tsoracle_paxos_testkit::cluster`); this module
//! says what each kind of node runs and reads leadership and log length
//! from the pages. A [`Cluster`] kills and reaps its children when dropped,
//! and every wait in the benchmark goes through [`interrupt`] so Ctrl-C,
//! SIGTERM or SIGHUP ends the run through those drops instead of leaving
//! nodes behind.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use tsoracle_paxos_testkit::cluster::{self as testkit, Launcher, Ports, Serve, Setup, Spec};

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

    fn nodes(self) -> u64 {
        match self {
            Kind::File => 1,
            Kind::Paxos | Kind::Openraft => 3,
        }
    }

    /// The gauge that says 2 on the leader.
    fn role_metric(self) -> &'static str {
        match self {
            Kind::Paxos => tsoracle_paxos_metrics::ROLE,
            Kind::File | Kind::Openraft => "bench_peer_role",
        }
    }

    /// The gauge with the node's log length (absolute, across compaction).
    fn index_metric(self) -> &'static str {
        match self {
            Kind::Paxos => tsoracle_paxos_metrics::DECIDED,
            Kind::File | Kind::Openraft => "bench_peer_last_log_index",
        }
    }
}

/// The release binaries the benchmark runs.
#[derive(Clone, Debug)]
pub(crate) struct Binaries {
    /// `tsoracle-paxos` (this driver's node).
    pub(crate) node: PathBuf,
    /// `tsoracle-paxos-testkit` (the client load for every driver).
    pub(crate) testkit: PathBuf,
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

impl Options {
    /// The flags every node of `kind` gets from these options.
    fn flags(&self, kind: Kind) -> Vec<String> {
        let mut flags = Vec::new();
        if let Some(every) = self.snapshot_every
            && kind != Kind::File
        {
            flags.extend(["--snapshot-every".to_owned(), every.to_string()]);
        }
        if kind == Kind::Paxos {
            flags.extend(self.paxos_flags.iter().map(|f| (*f).to_owned()));
        }
        if let Some(ms) = self.window_ahead_ms {
            flags.extend(["--window-ahead-ms".to_owned(), ms.to_string()]);
        }
        flags
    }
}

/// How the benchmark's nodes start: `tsoracle-paxos serve` (the test kit's
/// [`Serve`]) or a `tsoracle-bench-peer` file or openraft node.
struct Nodes {
    kind: Kind,
    /// The paxos nodes' command (flags included).
    serve: Serve,
    /// `tsoracle-bench-peer`.
    peer: PathBuf,
    /// The file and openraft nodes' extra flags.
    flags: Vec<String>,
}

impl Launcher for Nodes {
    fn command(&self, node: &Spec<'_>) -> Command {
        let own = node.own();
        let members: Vec<String> = node
            .members()
            .map(|(id, p)| format!("{id}=127.0.0.1:{},127.0.0.1:{}", p.peer, p.client))
            .collect();
        let mut command = match self.kind {
            Kind::Paxos => return self.serve.command(node),
            Kind::Openraft => {
                let mut c = Command::new(&self.peer);
                c.arg("openraft")
                    .args(["--node-id", &node.id.to_string()])
                    .arg("--data-dir")
                    .arg(node.data_dir)
                    .args(["--client-listen", &format!("127.0.0.1:{}", own.client)])
                    .args(["--raft-listen", &format!("127.0.0.1:{}", own.peer)])
                    .args(["--status-listen", &format!("127.0.0.1:{}", own.metrics)]);
                for m in &members {
                    c.args(["--peer", m]);
                }
                // The membership is written once, by node 1 at the first start.
                if node.first_start && node.id == 1 {
                    c.arg("--bootstrap");
                }
                c
            }
            Kind::File => {
                let mut c = Command::new(&self.peer);
                c.arg("file")
                    .arg("--data-dir")
                    .arg(node.data_dir)
                    .args(["--client-listen", &format!("127.0.0.1:{}", own.client)])
                    .args(["--status-listen", &format!("127.0.0.1:{}", own.metrics)]);
                c
            }
        };
        command.args(&self.flags);
        command
    }

    fn listens(&self, ports: &Ports) -> Vec<u16> {
        match self.kind {
            Kind::Paxos => self.serve.listens(ports),
            Kind::Openraft => vec![ports.client, ports.peer, ports.metrics],
            Kind::File => vec![ports.client, ports.metrics],
        }
    }
}

/// A running cluster of one [`Kind`] (the test kit's process cluster, with
/// every node's status page); dropping it kills every node.
pub(crate) struct Cluster {
    kind: Kind,
    options: Options,
    inner: testkit::Cluster<Nodes>,
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
        let mut serve = Serve::new(&bins.node, "bench").with_metrics();
        let flags = options.flags(kind);
        serve.set_args(&flags);
        let nodes = Nodes {
            kind,
            serve,
            peer: bins.peer.clone(),
            flags,
        };
        let setup = Setup {
            nodes: kind.nodes(),
            data: data.to_path_buf(),
            logs: logs.to_path_buf(),
            log_prefix: format!("{}-", kind.name()),
            // Warnings only: per-request logging would cost every driver
            // alike, but it is not what is being measured.
            rust_log: "warn".to_owned(),
        };
        let mut inner = testkit::Cluster::plan(nodes, setup)?;
        inner
            .start()
            .with_context(|| format!("cannot start the {} cluster", kind.name()))?;
        Ok(Self {
            kind,
            options,
            inner,
        })
    }

    pub(crate) fn kind(&self) -> Kind {
        self.kind
    }

    /// Changes the paxos `serve` flags for the next (re)starts.
    pub(crate) fn set_paxos_flags(&mut self, flags: &'static [&'static str]) {
        self.options.paxos_flags = flags;
        let flags = self.options.flags(self.kind);
        let nodes = self.inner.launcher_mut();
        nodes.serve.set_args(&flags);
        nodes.flags = flags;
    }

    /// The client endpoints, `127.0.0.1:PORT` each.
    pub(crate) fn endpoints(&self) -> Vec<String> {
        self.inner.endpoints()
    }

    /// SIGKILL (`kill -9`) to node `id`, reaped.
    pub(crate) fn kill(&mut self, id: u64) {
        self.inner.kill(id);
    }

    /// SIGTERM to node `id` (a planned stop), reaped; SIGKILL after the
    /// stop grace.
    pub(crate) fn terminate(&mut self, id: u64) {
        let _ = self.inner.terminate(id);
    }

    /// SIGKILL to every node.
    pub(crate) fn kill_all(&mut self) {
        self.inner.kill_all();
    }

    /// Starts a killed node again on the same ports and data.
    pub(crate) fn restart(&mut self, id: u64) -> Result<()> {
        Ok(self.inner.restart(id)?)
    }

    /// Starts every node again (after [`kill_all`](Self::kill_all)).
    pub(crate) fn restart_all(&mut self) -> Result<()> {
        Ok(self.inner.restart_all()?)
    }

    /// Adds a node that joins the running cluster and replaces node `old`
    /// by it with `member replace` (run with `node_bin`); `old` then
    /// leaves by itself. The new node's id.
    pub(crate) fn replace(&mut self, old: u64, node_bin: &Path) -> Result<u64> {
        let new = self.inner.add_node()?;
        let peer = |id: u64| {
            self.inner
                .peer_listen(id)
                .with_context(|| format!("no node {id}"))
        };
        let mut command = Command::new(node_bin);
        command.args(["member", "replace", "--cluster-id", "bench"]);
        for id in self.inner.members() {
            if id != old && id != new {
                command.args(["--node", &format!("{id}={}", peer(id)?)]);
            }
        }
        let client = self
            .inner
            .endpoint(new)
            .with_context(|| format!("no node {new}"))?;
        command
            .args(["--old", &old.to_string(), "--id", &new.to_string()])
            .args(["--peer-address", &peer(new)?.to_string()])
            .args(["--client-address", &client])
            .args(["--wait-secs", "60"]);
        let output = command
            .output()
            .context("cannot run tsoracle-paxos member replace")?;
        if !output.status.success() {
            bail!(
                "member replace of node {old} by node {new} failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        self.inner.retire(old);
        Ok(new)
    }

    /// Fails when a node that should run has exited on its own (a node a
    /// membership change removed leaves with exit 0, which is expected).
    pub(crate) fn check_alive(&mut self) -> Result<()> {
        let exited = self.inner.exited();
        if let Some((id, status)) = exited
            .into_iter()
            .find(|(id, status)| !(self.inner.is_retired(*id) && status.success()))
        {
            bail!(
                "{} node {id} exited ({status}); see {}",
                self.kind.name(),
                self.inner.log_path(id).display()
            );
        }
        Ok(())
    }

    /// SIGTERM to every node, then SIGKILL after a grace period.
    pub(crate) fn stop(&mut self) {
        self.inner.stop();
    }

    /// The un-labelled and labelled samples of node `id`'s status page,
    /// keyed by `name` or `name{labels}`.
    pub(crate) fn status(&self, id: u64) -> Option<BTreeMap<String, f64>> {
        self.inner.metrics(id)
    }

    /// The node that says it leads (the highest role, then log index, wins
    /// when a stale sample shows two).
    pub(crate) fn leader(&self) -> Option<u64> {
        let mut best: Option<(u64, f64)> = None;
        for id in self.inner.ids() {
            let Some(page) = self.status(id) else {
                continue;
            };
            if page.get(self.kind.role_metric()).copied() != Some(2.0) {
                continue;
            }
            let log = page.get(self.kind.index_metric()).copied().unwrap_or(0.0);
            if best.is_none_or(|(_, b)| log > b) {
                best = Some((id, log));
            }
        }
        best.map(|(id, _)| id)
    }

    /// Every running node's log index.
    pub(crate) fn indices(&self) -> Vec<u64> {
        self.inner
            .ids()
            .filter_map(|id| self.status(id))
            .map(|page| page.get(self.kind.index_metric()).copied().unwrap_or(0.0) as u64)
            .collect()
    }

    /// Whether every member runs, answers its status page, and one leads.
    pub(crate) fn settled(&self) -> bool {
        let members = self.inner.members();
        let answering = members
            .iter()
            .filter(|&&id| self.status(id).is_some())
            .count();
        answering == members.len() && self.leader().is_some()
    }

    /// The members (nodes no membership change removed).
    pub(crate) fn members(&self) -> Vec<u64> {
        self.inner.members()
    }

    /// Process ids of the running nodes.
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.inner.pids()
    }

    /// The node ids, `1..=N`.
    pub(crate) fn ids(&self) -> std::ops::RangeInclusive<u64> {
        self.inner.ids()
    }

    /// Node `id`'s client endpoint, `127.0.0.1:PORT`, if it runs.
    pub(crate) fn live_endpoint(&self, id: u64) -> Option<String> {
        self.pid(id).and(self.inner.endpoint(id))
    }

    /// Process id of node `id`, if it runs.
    pub(crate) fn pid(&self, id: u64) -> Option<u32> {
        self.inner.pid(id)
    }

    /// Node `id`'s log file.
    pub(crate) fn log_path(&self, id: u64) -> PathBuf {
        self.inner.log_path(id)
    }

    /// Bytes under node `id`'s data directory.
    pub(crate) fn node_data_bytes(&self, id: u64) -> u64 {
        self.inner.node_data_bytes(id)
    }

    /// Bytes under every node's data directory.
    pub(crate) fn data_bytes(&self) -> u64 {
        self.inner.data_bytes()
    }
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
    fn own_rss_is_readable() {
        assert!(rss_bytes(std::process::id()).is_some_and(|b| b > 0));
    }
}
