//! A local cluster of node processes on 127.0.0.1: ports, data directories
//! and logs, the processes (start, SIGKILL, SIGSTOP and SIGCONT, restart,
//! stop), and each node's metrics page. The test kit's demo and chaos run
//! and `cargo xtask bench` start their clusters here.
//!
//! What a node runs is a [`Launcher`]'s business: [`Serve`] runs
//! `tsoracle-paxos serve`; the benchmark adds its file and openraft nodes.
//!
//! **Ports.** Every node gets a client, a peer and a metrics port. Each is
//! picked by binding `127.0.0.1:0` and stays bound by this process until
//! the node starts, so no two nodes (and nothing else that binds port 0
//! meanwhile, such as the fault proxy's listeners) can be handed the same
//! one. The reservation is released just before the nodes start; should
//! another process take a port in that short window, the node fails to
//! bind it and exits. [`Cluster::start`] waits until every node listens
//! on its ports, and when a node exited saying its address was already in
//! use it starts the whole cluster again on fresh ports (at most
//! [`START_ATTEMPTS`] times).
//!
//! **Cleanup.** Every child is stopped on every exit path: [`Cluster::stop`]
//! on a normal end, and the [`Drop`] impl (SIGKILL and reap) on an error or
//! a panic. A child paused with SIGSTOP is sent SIGCONT on each of those
//! paths too: a stopped process leaves SIGTERM pending until it is
//! continued.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io::{Read, Seek, SeekFrom};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How many times [`Cluster::start`] starts the nodes when one exits
/// because a port of its was taken.
pub const START_ATTEMPTS: u32 = 3;

/// How long [`Cluster::start`] waits for every node to listen.
const START_WAIT: Duration = Duration::from_secs(10);

/// How long [`Cluster::stop`] waits after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// What a node's log says when one of its listen addresses was taken:
/// `serve`'s own message and the operating system's (`Address already in
/// use`) both contain it.
const ADDRESS_IN_USE: &str = "already in use";

/// Why a cluster operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No port could be reserved on 127.0.0.1.
    #[error("cannot pick a free port on 127.0.0.1: {0}")]
    Port(#[source] std::io::Error),
    /// A file, a directory or a process could not be handled.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// No node has this id.
    #[error("no node {0}")]
    NoNode(u64),
    /// The node is not running.
    #[error("node {0} is not running")]
    NotRunning(u64),
    /// `kill` could not signal a node.
    #[error("kill -{signal} {pid} failed ({status})")]
    Signal {
        /// The signal's name (`TERM`, `STOP`, `CONT`).
        signal: &'static str,
        /// The node's process id.
        pid: u32,
        /// How `kill` exited.
        status: ExitStatus,
    },
    /// A node exited while the cluster started.
    #[error("node {id} exited while the cluster started ({status}); see {}", log.display())]
    Start {
        /// The node.
        id: u64,
        /// Its exit status.
        status: ExitStatus,
        /// Its log.
        log: PathBuf,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// The ports of one node, all on 127.0.0.1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ports {
    /// The tsoracle client service.
    pub client: u16,
    /// The peer transport (OmniPaxos or Raft messages).
    pub peer: u16,
    /// The metrics (or status) page.
    pub metrics: u16,
}

/// `127.0.0.1:port`.
pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// What a [`Launcher`] knows about the node it starts.
#[derive(Debug)]
pub struct Spec<'a> {
    /// The node's id, `1..=N`.
    pub id: u64,
    /// Its data directory (not created here).
    pub data_dir: &'a Path,
    /// Every node's ports, node `i + 1`'s at index `i`.
    pub ports: &'a [Ports],
    /// Whether the cluster has never been started before (the first
    /// start may initialize it; a restart must not).
    pub first_start: bool,
    /// The founding members are `1..=founding`; a node above it was added
    /// to the running cluster ([`Cluster::add_node`]) and joins it.
    pub founding: u64,
}

impl Spec<'_> {
    /// This node's ports.
    pub fn own(&self) -> Ports {
        let index = usize::try_from(self.id.saturating_sub(1)).unwrap_or(usize::MAX);
        self.ports.get(index).copied().unwrap_or(Ports {
            client: 0,
            peer: 0,
            metrics: 0,
        })
    }

    /// Every node's id and ports, in id order.
    pub fn members(&self) -> impl Iterator<Item = (u64, Ports)> + '_ {
        (1u64..).zip(self.ports.iter().copied())
    }

    /// Whether this node was added to the running cluster.
    pub fn joins(&self) -> bool {
        self.id > self.founding
    }

    /// The members this node's `--peer` list names: the founding ones for
    /// a founding node (the list the cluster recorded first, which its
    /// restarts must repeat), every node for one that joins (whom it asks).
    pub fn listed(&self) -> impl Iterator<Item = (u64, Ports)> + '_ {
        let founding = self.founding;
        let joins = self.joins();
        self.members()
            .filter(move |(id, _)| joins || *id <= founding)
    }
}

/// How a cluster starts its nodes.
pub trait Launcher {
    /// The command that starts the node `node` describes: program and
    /// arguments. The cluster sets its standard streams (stderr to the
    /// node's log) and `RUST_LOG`.
    fn command(&self, node: &Spec<'_>) -> Command;

    /// The ports a node listens on once it started; [`Cluster::start`]
    /// waits for them. The client port by default.
    fn listens(&self, ports: &Ports) -> Vec<u16> {
        vec![ports.client]
    }
}

/// `tsoracle-paxos serve` nodes: every node knows every other one, through
/// a route of its own when [`set_route`](Self::set_route) put one (a fault
/// proxy) in between.
#[derive(Clone, Debug)]
pub struct Serve {
    program: PathBuf,
    leading: Vec<OsString>,
    cluster_id: String,
    metrics: bool,
    args: Vec<OsString>,
    routes: BTreeMap<(u64, u64), SocketAddr>,
}

impl Serve {
    /// Nodes of the cluster `cluster_id`, run as `program serve ...`.
    pub fn new(program: impl Into<PathBuf>, cluster_id: impl Into<String>) -> Self {
        Self {
            program: program.into(),
            leading: Vec::new(),
            cluster_id: cluster_id.into(),
            metrics: false,
            args: Vec::new(),
            routes: BTreeMap::new(),
        }
    }

    /// Arguments before `serve` (the test kit runs its embedded node
    /// command line as `tsoracle-paxos-testkit node serve ...`).
    pub fn leading_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.leading = args.into_iter().map(Into::into).collect();
        self
    }

    /// Serve each node's metrics on its metrics port (`--metrics-listen`).
    pub fn with_metrics(mut self) -> Self {
        self.metrics = true;
        self
    }

    /// Adds `serve` flags for every node. Takes effect when a node
    /// (re)starts.
    pub fn add_args<I, S>(&mut self, args: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
    }

    /// Replaces the added `serve` flags. Takes effect when a node
    /// (re)starts.
    pub fn set_args<I, S>(&mut self, args: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args = args.into_iter().map(Into::into).collect();
    }

    /// `<program> [leading args] member <command> --cluster-id <id>`: the
    /// node's admin commands against this cluster.
    pub fn member_command(&self, command: &str) -> Command {
        let mut member = Command::new(&self.program);
        member
            .args(&self.leading)
            .args(["member", command])
            .args(["--cluster-id", &self.cluster_id]);
        member
    }

    /// Makes node `from` reach node `to`'s peer transport through `via`.
    /// Takes effect when `from` (re)starts.
    pub fn set_route(&mut self, from: u64, to: u64, via: SocketAddr) {
        self.routes.insert((from, to), via);
    }
}

impl Launcher for Serve {
    fn command(&self, node: &Spec<'_>) -> Command {
        let own = node.own();
        let mut command = Command::new(&self.program);
        command
            .args(&self.leading)
            .arg("serve")
            .args(["--node-id", &node.id.to_string()])
            .args(["--cluster-id", &self.cluster_id])
            .arg("--data-dir")
            .arg(node.data_dir)
            .args(["--client-listen", &local(own.client).to_string()])
            .args(["--peer-listen", &local(own.peer).to_string()]);
        if self.metrics {
            command.args(["--metrics-listen", &local(own.metrics).to_string()]);
        }
        // The founding start only, as an operator would: a restart must find
        // the node's state (an empty directory is then refused). A node
        // added later joins (ignored once its directory holds state).
        if node.joins() {
            command.args(["--initial-cluster-state", "join"]);
        } else if node.first_start {
            command.args(["--initial-cluster-state", "new"]);
        }
        for (id, ports) in node.listed() {
            let peer = self
                .routes
                .get(&(node.id, id))
                .copied()
                .unwrap_or_else(|| local(ports.peer));
            command
                .arg("--peer")
                .arg(format!("{id}={peer},{}", local(ports.client)));
        }
        command.args(&self.args);
        command
    }

    fn listens(&self, ports: &Ports) -> Vec<u16> {
        let mut listens = vec![ports.client, ports.peer];
        if self.metrics {
            listens.push(ports.metrics);
        }
        listens
    }
}

/// Where a cluster keeps its nodes' data and logs, and how they log.
#[derive(Clone, Debug)]
pub struct Setup {
    /// How many nodes.
    pub nodes: u64,
    /// Node `id`'s data directory is `data/node-<id>`.
    pub data: PathBuf,
    /// Node `id`'s log (its stderr, appended) is
    /// `logs/<log_prefix>node-<id>.log`.
    pub logs: PathBuf,
    /// See `logs`.
    pub log_prefix: String,
    /// The nodes' `RUST_LOG`.
    pub rust_log: String,
}

impl Setup {
    /// `nodes` nodes with data and logs under `dir`, logging at `info`.
    pub fn new(nodes: u64, dir: &Path) -> Self {
        Self {
            nodes,
            data: dir.to_path_buf(),
            logs: dir.to_path_buf(),
            log_prefix: String::new(),
            rust_log: "info".to_owned(),
        }
    }
}

/// The node processes; dropping it kills and reaps every one.
pub struct Cluster<L> {
    launcher: L,
    setup: Setup,
    /// The founding nodes are `1..=founding`; later ones were added.
    founding: u64,
    /// Nodes a membership change removed: their exit is expected.
    retired: BTreeSet<u64>,
    ports: Vec<Ports>,
    /// The picked ports stay bound here until [`start`](Self::start).
    reserved: Vec<TcpListener>,
    nodes: Vec<Option<Child>>,
    /// Nodes stopped with SIGSTOP and not yet continued.
    paused: BTreeSet<u64>,
    /// Whether every node has been started once.
    started: bool,
    /// How long [`start`](Self::start) waits for the nodes to listen.
    start_wait: Duration,
}

impl<L: Launcher> Cluster<L> {
    /// Picks and reserves the ports of `setup.nodes` nodes; starts nothing
    /// (see [`start`](Self::start)).
    pub fn plan(launcher: L, setup: Setup) -> Result<Self, Error> {
        let (ports, reserved) = reserve(setup.nodes)?;
        Ok(Self {
            launcher,
            nodes: Vec::new(),
            founding: setup.nodes,
            retired: BTreeSet::new(),
            setup,
            ports,
            reserved,
            paused: BTreeSet::new(),
            started: false,
            start_wait: START_WAIT,
        })
    }

    /// The launcher, e.g. to change a node's flags before it (re)starts.
    pub fn launcher_mut(&mut self) -> &mut L {
        &mut self.launcher
    }

    /// The launcher.
    pub fn launcher(&self) -> &L {
        &self.launcher
    }

    /// Starts every node and waits (at most 10 s) until each listens on
    /// its ports. A node that exits meanwhile because an address of its
    /// was taken makes the whole cluster start again on fresh ports (data
    /// directories this start created are removed first), at most
    /// [`START_ATTEMPTS`] times in all; any other exit is an error.
    pub fn start(&mut self) -> Result<(), Error> {
        if !self.nodes.is_empty() {
            return Ok(());
        }
        let existed: Vec<bool> = self.ids().map(|id| self.data_dir(id).exists()).collect();
        let mut attempt = 1;
        loop {
            let marks: Vec<u64> = self.ids().map(|id| self.log_len(id)).collect();
            // Released only now, for the nodes to bind.
            self.reserved.clear();
            for id in self.ids() {
                let child = self.spawn(id)?;
                self.nodes.push(Some(child));
            }
            let Some((id, status)) = self.await_listening() else {
                self.started = true;
                return Ok(());
            };
            let mark = marks
                .get(usize::try_from(id - 1).unwrap_or(usize::MAX))
                .copied()
                .unwrap_or(0);
            let taken = self.log_since(id, mark).contains(ADDRESS_IN_USE);
            self.kill_all();
            self.nodes.clear();
            if !taken || attempt >= START_ATTEMPTS {
                return Err(Error::Start {
                    id,
                    status,
                    log: self.log_path(id),
                });
            }
            attempt += 1;
            for (id, existed) in (1u64..).zip(&existed) {
                if !existed {
                    let _ = std::fs::remove_dir_all(self.data_dir(id));
                }
            }
            let (ports, reserved) = reserve(self.setup.nodes)?;
            self.ports = ports;
            self.reserved = reserved;
        }
    }

    /// Waits until every node listens on its ports, or one exited (that
    /// one, with its status). A node still not listening after
    /// [`START_WAIT`] is left to the caller's own checks.
    fn await_listening(&mut self) -> Option<(u64, ExitStatus)> {
        let deadline = Instant::now() + self.start_wait;
        let mut waiting: BTreeSet<u64> = self.ids().collect();
        while !waiting.is_empty() && Instant::now() < deadline {
            if let Some(exited) = self.first_exit() {
                return Some(exited);
            }
            let ports = &self.ports;
            let launcher = &self.launcher;
            waiting.retain(|&id| {
                let Some(own) = index(id).and_then(|i| ports.get(i)) else {
                    return false;
                };
                !launcher.listens(own).into_iter().all(listening)
            });
            std::thread::sleep(Duration::from_millis(20));
        }
        // A node that found its port taken exits right after the bind, by
        // now; someone else's listener may have answered for it above.
        std::thread::sleep(Duration::from_millis(100));
        self.first_exit()
    }

    /// The first node that exited, with its status (left in place).
    fn first_exit(&mut self) -> Option<(u64, ExitStatus)> {
        (1u64..).zip(&mut self.nodes).find_map(|(id, slot)| {
            let child = slot.as_mut()?;
            match child.try_wait() {
                Ok(Some(status)) => Some((id, status)),
                _ => None,
            }
        })
    }

    fn spawn(&self, id: u64) -> Result<Child, Error> {
        let data_dir = self.data_dir(id);
        let spec = Spec {
            id,
            data_dir: &data_dir,
            ports: &self.ports,
            first_start: !self.started,
            founding: self.founding,
        };
        let mut command = self.launcher.command(&spec);
        std::fs::create_dir_all(&self.setup.logs)
            .map_err(io(format!("cannot create {}", self.setup.logs.display())))?;
        let log_path = self.log_path(id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io(format!("cannot open {}", log_path.display())))?;
        command
            .env("RUST_LOG", &self.setup.rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(io(format!("cannot start node {id}")))
    }

    /// The node ids, `1..=N` (added nodes included).
    pub fn ids(&self) -> std::ops::RangeInclusive<u64> {
        1..=self.setup.nodes
    }

    /// Adds node N + 1 on fresh ports and starts it (the launcher sees it
    /// as joining: [`Spec::joins`]); waits (at most the start wait) until
    /// it listens. Its id.
    ///
    /// # Errors
    ///
    /// No free port, the node could not be started, or it exited at once.
    pub fn add_node(&mut self) -> Result<u64, Error> {
        let (mut ports, reserved) = reserve(1)?;
        let Some(own) = ports.pop() else {
            return Err(Error::NoNode(self.setup.nodes + 1));
        };
        drop(reserved);
        self.ports.push(own);
        self.setup.nodes += 1;
        let id = self.setup.nodes;
        let child = self.spawn(id)?;
        self.nodes.push(Some(child));
        let deadline = Instant::now() + self.start_wait;
        while Instant::now() < deadline {
            if let Some(Some(child)) = index(id).and_then(|i| self.nodes.get_mut(i))
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(Error::Start {
                    id,
                    status,
                    log: self.log_path(id),
                });
            }
            if self.launcher.listens(&own).into_iter().all(listening) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(id)
    }

    /// Node `id` was removed by a membership change: it stops by itself,
    /// which is not a crash, and it is never restarted.
    pub fn retire(&mut self, id: u64) {
        self.retired.insert(id);
    }

    /// Whether a membership change removed node `id`.
    pub fn is_retired(&self, id: u64) -> bool {
        self.retired.contains(&id)
    }

    /// The nodes not removed, in id order.
    pub fn members(&self) -> Vec<u64> {
        self.ids().filter(|id| !self.retired.contains(id)).collect()
    }

    /// Node `id`'s ports.
    pub fn ports(&self, id: u64) -> Option<Ports> {
        index(id).and_then(|i| self.ports.get(i).copied())
    }

    /// Where node `id`'s peer transport listens.
    pub fn peer_listen(&self, id: u64) -> Option<SocketAddr> {
        self.ports(id).map(|p| local(p.peer))
    }

    /// Node `id`'s data directory.
    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.setup.data.join(format!("node-{id}"))
    }

    /// Node `id`'s log.
    pub fn log_path(&self, id: u64) -> PathBuf {
        self.setup
            .logs
            .join(format!("{}node-{id}.log", self.setup.log_prefix))
    }

    /// The length of node `id`'s log so far (0 if unreadable).
    pub fn log_len(&self, id: u64) -> u64 {
        std::fs::metadata(self.log_path(id)).map_or(0, |m| m.len())
    }

    /// What node `id` logged from byte `from` on (empty if unreadable).
    pub fn log_since(&self, id: u64, from: u64) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(self.log_path(id))
            && file.seek(SeekFrom::Start(from)).is_ok()
        {
            let _ = file.read_to_string(&mut text);
        }
        text
    }

    /// The client addresses, `127.0.0.1:PORT`, in id order.
    pub fn endpoints(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| local(p.client).to_string())
            .collect()
    }

    /// Node `id`'s client address, `127.0.0.1:PORT`.
    pub fn endpoint(&self, id: u64) -> Option<String> {
        self.ports(id).map(|p| local(p.client).to_string())
    }

    /// The node id serving `endpoint` (`HOST:PORT`, or a URL ending in it).
    pub fn node_of(&self, endpoint: &str) -> Option<u64> {
        let port: u16 = endpoint
            .rsplit(':')
            .next()?
            .trim_end_matches('/')
            .parse()
            .ok()?;
        let index = self.ports.iter().position(|p| p.client == port)?;
        u64::try_from(index + 1).ok()
    }

    /// SIGKILL (`kill -9`) node `id` and reap it; nothing if it is down.
    pub fn kill(&mut self, id: u64) {
        self.continue_if_paused(id);
        if let Some(slot) = index(id).and_then(|i| self.nodes.get_mut(i))
            && let Some(mut child) = slot.take()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM node `id` (a planned stop: a leader hands its leadership
    /// over first) and reap it; SIGKILL if it is still running after the
    /// stop grace. Returns its exit status; `None` if it was down.
    pub fn terminate(&mut self, id: u64) -> Option<ExitStatus> {
        self.continue_if_paused(id);
        let mut child = index(id)
            .and_then(|i| self.nodes.get_mut(i))
            .and_then(Option::take)?;
        let _ = send_signal(&child, "TERM");
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.kill();
        child.wait().ok()
    }

    /// SIGKILL every node, and reap them.
    pub fn kill_all(&mut self) {
        for id in self.ids() {
            self.kill(id);
        }
    }

    /// SIGSTOP node `id`: the process is frozen while the kernel still
    /// accepts connections and queues requests for it. Until
    /// [`resume`](Self::resume) it counts as paused, and every exit path
    /// continues it before stopping it.
    pub fn pause(&mut self, id: u64) -> Result<(), Error> {
        let child = self.child(id).ok_or(Error::NotRunning(id))?;
        send_signal(child, "STOP")?;
        self.paused.insert(id);
        Ok(())
    }

    /// SIGCONT node `id` after [`pause`](Self::pause); nothing if it is
    /// not paused.
    pub fn resume(&mut self, id: u64) -> Result<(), Error> {
        if !self.paused.contains(&id) {
            return Ok(());
        }
        if let Some(child) = self.child(id) {
            send_signal(child, "CONT")?;
        }
        self.paused.remove(&id);
        Ok(())
    }

    /// Whether node `id` is stopped with SIGSTOP.
    pub fn is_paused(&self, id: u64) -> bool {
        self.paused.contains(&id)
    }

    fn child(&self, id: u64) -> Option<&Child> {
        index(id)
            .and_then(|i| self.nodes.get(i))
            .and_then(Option::as_ref)
    }

    /// Best-effort SIGCONT on an exit path (errors are not worth stopping
    /// the cleanup for: a SIGKILL follows anyway).
    fn continue_if_paused(&mut self, id: u64) {
        if self.paused.remove(&id)
            && let Some(child) = self.child(id)
        {
            let _ = send_signal(child, "CONT");
        }
    }

    /// [`continue_if_paused`](Self::continue_if_paused) for every node.
    fn continue_all(&mut self) {
        let paused: Vec<u64> = self.paused.iter().copied().collect();
        for id in paused {
            self.continue_if_paused(id);
        }
    }

    /// Starts node `id` again on the same data directory and ports (killing
    /// it first if it still runs).
    pub fn restart(&mut self, id: u64) -> Result<(), Error> {
        let i = index(id)
            .filter(|&i| i < self.nodes.len())
            .ok_or(Error::NoNode(id))?;
        self.kill(id);
        let child = self.spawn(id)?;
        self.nodes[i] = Some(child);
        Ok(())
    }

    /// Starts every node again (after [`kill_all`](Self::kill_all)).
    pub fn restart_all(&mut self) -> Result<(), Error> {
        for id in self.ids() {
            self.restart(id)?;
        }
        Ok(())
    }

    /// Whether node `id` was started and not killed since.
    pub fn is_up(&self, id: u64) -> bool {
        self.child(id).is_some()
    }

    /// The nodes that exited on their own (not killed by this cluster),
    /// with their exit status; they count as down from now on.
    pub fn exited(&mut self) -> Vec<(u64, ExitStatus)> {
        let mut out = Vec::new();
        for (id, slot) in (1u64..).zip(&mut self.nodes) {
            if let Some(child) = slot
                && let Ok(Some(status)) = child.try_wait()
            {
                out.push((id, status));
                *slot = None;
                self.paused.remove(&id);
            }
        }
        out
    }

    /// Process ids of the running nodes.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().flatten().map(Child::id).collect()
    }

    /// Process id of node `id`, if it runs.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.child(id).map(Child::id)
    }

    /// Bytes under every node's data directory.
    pub fn data_bytes(&self) -> u64 {
        self.ids().map(|id| self.node_data_bytes(id)).sum()
    }

    /// Bytes under node `id`'s data directory.
    pub fn node_data_bytes(&self, id: u64) -> u64 {
        dir_bytes(&self.data_dir(id))
    }

    /// The samples of running node `id`'s metrics page (`GET /metrics` on
    /// its metrics port, with short deadlines), keyed by `name` or
    /// `name{labels}`; `None` when the node is down or does not answer.
    pub fn metrics(&self, id: u64) -> Option<BTreeMap<String, f64>> {
        self.child(id)?;
        crate::process::metrics(self.ports(id)?.metrics)
    }

    /// SIGTERM to every node, then SIGKILL to any still running after a
    /// grace of 10 s.
    pub fn stop(&mut self) {
        for child in self.nodes.iter().flatten() {
            let _ = send_signal(child, "TERM");
        }
        // A stopped node keeps SIGTERM pending until it is continued.
        self.continue_all();
        let deadline = Instant::now() + STOP_GRACE;
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

impl<L> Drop for Cluster<L> {
    fn drop(&mut self) {
        // SIGKILL ends a stopped process too; continuing it first leaves
        // no stopped child behind should the kill fail.
        let paused = std::mem::take(&mut self.paused);
        for id in paused {
            if let Some(Some(child)) = index(id).and_then(|i| self.nodes.get(i)) {
                let _ = send_signal(child, "CONT");
            }
        }
        for slot in &mut self.nodes {
            if let Some(mut child) = slot.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// `kill -<name> <pid>`: the same tool for SIGTERM, SIGSTOP and SIGCONT
/// (the standard library only sends SIGKILL).
fn send_signal(child: &Child, name: &'static str) -> Result<(), Error> {
    let status = Command::new("kill")
        .args([format!("-{name}"), child.id().to_string()])
        .stdin(Stdio::null())
        .status()
        .map_err(io("cannot run kill"))?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::Signal {
            signal: name,
            pid: child.id(),
            status,
        })
    }
}

fn index(id: u64) -> Option<usize> {
    usize::try_from(id.checked_sub(1)?).ok()
}

/// Ports for `nodes` nodes, and the listeners that hold them.
fn reserve(nodes: u64) -> Result<(Vec<Ports>, Vec<TcpListener>), Error> {
    let mut ports = Vec::new();
    let mut reserved = Vec::new();
    let mut pick = || -> Result<u16, Error> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(Error::Port)?;
        let port = listener.local_addr().map_err(Error::Port)?.port();
        reserved.push(listener);
        Ok(port)
    };
    for _ in 0..nodes {
        ports.push(Ports {
            client: pick()?,
            peer: pick()?,
            metrics: pick()?,
        });
    }
    Ok((ports, reserved))
}

/// Whether something accepts connections on `127.0.0.1:port`.
fn listening(port: u16) -> bool {
    TcpStream::connect_timeout(&local(port), Duration::from_millis(200)).is_ok()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Nodes that are `sleep 60` (only the signals matter here).
    struct Sleeper;

    impl Launcher for Sleeper {
        fn command(&self, _: &Spec<'_>) -> Command {
            let mut command = Command::new("sleep");
            command.arg("60");
            command
        }

        fn listens(&self, _: &Ports) -> Vec<u16> {
            Vec::new()
        }
    }

    fn sleeper(dir: &Path) -> Cluster<Sleeper> {
        let mut cluster = Cluster::plan(Sleeper, Setup::new(1, dir)).unwrap();
        cluster.start().unwrap();
        cluster
    }

    /// `/proc/<pid>/stat`'s state letter (`T`: stopped), if it still exists.
    fn state(pid: u32) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit(')').next()?.trim().chars().next()
    }

    #[test]
    fn a_paused_node_is_continued_and_stopped_without_waiting_out_the_grace() {
        let dir = tempfile::tempdir().unwrap();
        let mut cluster = sleeper(dir.path());
        let pid = cluster.nodes[0].as_ref().unwrap().id();
        cluster.pause(1).unwrap();
        assert!(cluster.is_paused(1));
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(state(pid), Some('T'));
        // A stopped process would leave SIGTERM pending for the whole
        // 10 s grace; stop() continues it, so SIGTERM ends it at once.
        let began = Instant::now();
        cluster.stop();
        assert!(
            began.elapsed() < Duration::from_secs(5),
            "{:?}",
            began.elapsed()
        );
        assert_eq!(state(pid), None, "the child was not reaped");
    }

    #[test]
    fn resume_continues_and_drop_kills_a_paused_node() {
        let dir = tempfile::tempdir().unwrap();
        let mut cluster = sleeper(dir.path());
        let pid = cluster.nodes[0].as_ref().unwrap().id();
        cluster.pause(1).unwrap();
        cluster.resume(1).unwrap();
        assert!(!cluster.is_paused(1));
        std::thread::sleep(Duration::from_millis(100));
        assert_ne!(state(pid), Some('T'));
        cluster.pause(1).unwrap();
        drop(cluster);
        assert_eq!(state(pid), None, "the child was not reaped");
    }

    /// Node 1 fails its first start as a node whose port was taken does;
    /// every other start is `sleep 60`. None listens: the start waits out
    /// its (shortened) wait, so node 1's exit is seen however slow `sh` is.
    struct TakenOnce {
        marker: PathBuf,
        message: &'static str,
    }

    impl Launcher for TakenOnce {
        fn command(&self, node: &Spec<'_>) -> Command {
            let mut command = Command::new("sh");
            if node.id == 1 {
                command.arg("-c").arg(format!(
                    "if [ -e '{marker}' ]; then exec sleep 60; fi; touch '{marker}'; \
                     echo 'error: {message}' >&2; exit 1",
                    marker = self.marker.display(),
                    message = self.message,
                ));
            } else {
                command.args(["-c", "exec sleep 60"]);
            }
            command
        }

        fn listens(&self, ports: &Ports) -> Vec<u16> {
            vec![ports.client]
        }
    }

    fn taken_once(dir: &Path, nodes: u64, message: &'static str) -> Cluster<TakenOnce> {
        let launcher = TakenOnce {
            marker: dir.join("marker"),
            message,
        };
        let mut cluster = Cluster::plan(launcher, Setup::new(nodes, dir)).unwrap();
        cluster.start_wait = Duration::from_secs(1);
        cluster
    }

    #[test]
    fn a_node_whose_port_was_taken_makes_the_cluster_start_again_on_fresh_ports() {
        let dir = tempfile::tempdir().unwrap();
        let mut cluster = taken_once(
            dir.path(),
            3,
            "cannot listen on 127.0.0.1:1 for the client service: \
             the address is already in use (is another node running?)",
        );
        let first = cluster.ports.clone();
        cluster.start().unwrap();
        assert_ne!(cluster.ports, first, "the ports were not picked again");
        assert!(cluster.ids().all(|id| cluster.is_up(id)));
        assert!(cluster.exited().is_empty());
        let log = std::fs::read_to_string(cluster.log_path(1)).unwrap();
        assert!(log.contains("already in use"), "{log}");
        cluster.stop();
    }

    #[test]
    fn a_node_that_exits_at_start_for_another_reason_fails_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut cluster = taken_once(dir.path(), 2, "configuration: the peer list lacks node 1");
        let err = cluster.start().unwrap_err().to_string();
        assert!(
            err.contains("node 1 exited while the cluster started"),
            "{err}"
        );
        assert!(err.contains("node-1.log"), "{err}");
        assert!(cluster.pids().is_empty(), "a node was left running");
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
    fn serve_nodes_know_every_member_through_their_routes() {
        let mut serve = Serve::new("/bin/tsoracle-paxos", "c")
            .leading_args(["node"])
            .with_metrics();
        serve.add_args(["--window-ahead-ms", "3000"]);
        let via = local(9999);
        serve.set_route(1, 2, via);
        let ports = [
            Ports {
                client: 7001,
                peer: 6001,
                metrics: 9001,
            },
            Ports {
                client: 7002,
                peer: 6002,
                metrics: 9002,
            },
            Ports {
                client: 7003,
                peer: 6003,
                metrics: 9003,
            },
        ];
        let with = |id, first_start, founding| {
            let spec = Spec {
                id,
                data_dir: Path::new("/d/node-1"),
                ports: &ports,
                first_start,
                founding,
            };
            let command = serve.command(&spec);
            command
                .get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        };
        let args_of = |id, first_start| with(id, first_start, 2);
        let args = |id| args_of(id, true);
        assert_eq!(
            args(1),
            "node serve --node-id 1 --cluster-id c --data-dir /d/node-1 \
             --client-listen 127.0.0.1:7001 --peer-listen 127.0.0.1:6001 \
             --metrics-listen 127.0.0.1:9001 --initial-cluster-state new \
             --peer 1=127.0.0.1:6001,127.0.0.1:7001 \
             --peer 2=127.0.0.1:9999,127.0.0.1:7002 --window-ahead-ms 3000"
        );
        assert!(args(2).contains("--peer 1=127.0.0.1:6001,127.0.0.1:7001"));
        // A restart must find its state: no bootstrap flag.
        assert!(!args_of(1, false).contains("--initial-cluster-state"));
        assert_eq!(serve.listens(&ports[0]), vec![7001, 6001, 9001]);
        // Node 3 was added: it joins and asks every node, while a founding
        // node's restart still names the founding list only.
        let joiner = with(3, false, 2);
        assert!(joiner.contains("--initial-cluster-state join"), "{joiner}");
        assert!(joiner.contains("--peer 3=127.0.0.1:6003"), "{joiner}");
        assert!(!with(1, false, 2).contains("6003"));
    }
}
