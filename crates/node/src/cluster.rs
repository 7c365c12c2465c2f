//! A local cluster of `serve` child processes on 127.0.0.1, shared by `demo`
//! and `chaos`: the run directory, the node processes (start, SIGKILL,
//! restart, stop), and the signal that ends a run early.
//!
//! Every child is stopped on every exit path: [`Cluster::stop`] on a normal
//! end, and the [`Drop`] impl (SIGKILL and reap) on an error or a panic.
//! A run that is interrupted (Ctrl-C, SIGTERM) ends through [`interrupted`]
//! (the node's own shutdown signal) and then the same path.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::error::Error;

/// The child processes; dropping it kills and reaps every one.
pub(crate) struct Cluster {
    dir: PathBuf,
    cluster_id: &'static str,
    nodes: Vec<Option<Child>>,
    peer_ports: Vec<u16>,
    client_ports: Vec<u16>,
    /// `routes[i][j]`: the address node `i + 1` dials to reach node
    /// `j + 1`'s peer transport. Node `j + 1`'s own peer port unless
    /// [`set_route`](Self::set_route) put a fault proxy in between.
    routes: Vec<Vec<SocketAddr>>,
    /// The picked ports stay bound here until [`start`](Self::start), so
    /// that nothing else binding port 0 meanwhile (the fault proxy's
    /// listeners) can be handed one of them.
    reserved: Vec<std::net::TcpListener>,
}

impl Cluster {
    /// Picks the ports of `nodes` nodes whose data and logs go under `dir`;
    /// starts nothing (see [`start`](Self::start)).
    pub(crate) fn plan(dir: &Path, cluster_id: &'static str, nodes: u64) -> Result<Self, Error> {
        let mut peer_ports = Vec::new();
        let mut client_ports = Vec::new();
        let mut reserved = Vec::new();
        for _ in 0..nodes {
            for ports in [&mut peer_ports, &mut client_ports] {
                let (port, listener) = reserve_port()?;
                ports.push(port);
                reserved.push(listener);
            }
        }
        let direct: Vec<SocketAddr> = peer_ports.iter().map(|&p| local(p)).collect();
        Ok(Self {
            dir: dir.to_path_buf(),
            cluster_id,
            nodes: Vec::new(),
            routes: vec![direct; peer_ports.len()],
            peer_ports,
            client_ports,
            reserved,
        })
    }

    /// Starts every node.
    pub(crate) fn start(&mut self) -> Result<(), Error> {
        // Released only now, for the nodes to bind.
        self.reserved.clear();
        for id in self.ids() {
            let child = self.spawn(id)?;
            self.nodes.push(Some(child));
        }
        Ok(())
    }

    /// The node ids, `1..=N`.
    pub(crate) fn ids(&self) -> std::ops::RangeInclusive<u64> {
        1..=self.peer_ports.len() as u64
    }

    /// Where node `id`'s peer transport listens.
    pub(crate) fn peer_listen(&self, id: u64) -> Option<SocketAddr> {
        index(id).and_then(|i| self.peer_ports.get(i).map(|&p| local(p)))
    }

    /// Makes node `from` reach node `to`'s peer transport through `via`.
    /// Takes effect when `from` (re)starts.
    pub(crate) fn set_route(&mut self, from: u64, to: u64, via: SocketAddr) {
        if let (Some(f), Some(t)) = (index(from), index(to))
            && let Some(slot) = self.routes.get_mut(f).and_then(|r| r.get_mut(t))
        {
            *slot = via;
        }
    }

    fn spawn(&self, id: u64) -> Result<Child, Error> {
        let exe = std::env::current_exe().map_err(|err| Error::runtime("cluster", err))?;
        let log_path = self.dir.join(format!("node-{id}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|err| Error::runtime("cluster: node log", err))?;
        let i = index(id).ok_or_else(|| Error::runtime("cluster", format!("no node {id}")))?;
        let mut command = Command::new(exe);
        command
            .arg("serve")
            .args([
                "--node-id",
                &id.to_string(),
                "--cluster-id",
                self.cluster_id,
            ])
            .arg("--data-dir")
            .arg(self.dir.join(format!("node-{id}")))
            .args(["--client-listen", &local(self.client_ports[i]).to_string()])
            .args(["--peer-listen", &local(self.peer_ports[i]).to_string()]);
        for (j, (peer, client)) in self.routes[i].iter().zip(&self.client_ports).enumerate() {
            command
                .arg("--peer")
                .arg(format!("{}={peer},{}", j + 1, local(*client)));
        }
        command
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|err| Error::runtime("cluster: starting a node", err))
    }

    /// The client addresses, `127.0.0.1:PORT`, in id order.
    pub(crate) fn endpoints(&self) -> Vec<String> {
        self.client_ports
            .iter()
            .map(|&port| local(port).to_string())
            .collect()
    }

    /// The node id serving `endpoint`.
    pub(crate) fn node_of(&self, endpoint: &str) -> Option<u64> {
        let port: u16 = endpoint
            .rsplit(':')
            .next()?
            .trim_end_matches('/')
            .parse()
            .ok()?;
        let index = self.client_ports.iter().position(|&p| p == port)?;
        u64::try_from(index + 1).ok()
    }

    /// SIGKILL (`kill -9`) node `id` and reap it; nothing if it is down.
    pub(crate) fn kill(&mut self, id: u64) {
        if let Some(slot) = index(id).and_then(|i| self.nodes.get_mut(i))
            && let Some(mut child) = slot.take()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `id` again (on the same data directory and ports).
    pub(crate) fn restart(&mut self, id: u64) -> Result<(), Error> {
        let child = self.spawn(id)?;
        if let Some(slot) = index(id).and_then(|i| self.nodes.get_mut(i)) {
            *slot = Some(child);
        }
        Ok(())
    }

    /// Whether node `id` was started and not killed since.
    pub(crate) fn is_up(&self, id: u64) -> bool {
        index(id)
            .and_then(|i| self.nodes.get(i))
            .is_some_and(Option::is_some)
    }

    /// The nodes that exited on their own (not killed by this cluster),
    /// with their exit status; they count as down from now on.
    pub(crate) fn exited(&mut self) -> Vec<(u64, ExitStatus)> {
        let mut out = Vec::new();
        for (id, slot) in (1u64..).zip(&mut self.nodes) {
            if let Some(child) = slot
                && let Ok(Some(status)) = child.try_wait()
            {
                out.push((id, status));
                *slot = None;
            }
        }
        out
    }

    /// SIGTERM to every node, then SIGKILL to any still running after a grace.
    pub(crate) fn stop(&mut self) {
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

fn index(id: u64) -> Option<usize> {
    usize::try_from(id.checked_sub(1)?).ok()
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A free 127.0.0.1 port, and the listener that holds it.
fn reserve_port() -> Result<(u16, std::net::TcpListener), Error> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| Ok((l.local_addr()?.port(), l)))
        .map_err(|err| Error::runtime("cluster: picking a port", err))
}

/// Where a run keeps its nodes' data and logs: `--dir` (kept), or a fresh
/// temporary directory (removed at the end unless asked to keep it).
pub(crate) struct RunDir {
    path: PathBuf,
    temporary: bool,
}

impl RunDir {
    /// `dir`, created if missing, or `$TMPDIR/tsoracle-paxos-<what>-<pid>`.
    pub(crate) fn new(dir: Option<&Path>, what: &str) -> Result<Self, Error> {
        let (path, temporary) = match dir {
            Some(dir) => (dir.to_path_buf(), false),
            None => (
                std::env::temp_dir().join(format!("tsoracle-paxos-{what}-{}", std::process::id())),
                true,
            ),
        };
        std::fs::create_dir_all(&path).map_err(|err| Error::runtime("run directory", err))?;
        Ok(Self { path, temporary })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Removes a temporary directory, unless `keep`; says where kept data is.
    pub(crate) fn finish(self, keep: bool) {
        if self.temporary && !keep {
            let _ = std::fs::remove_dir_all(&self.path);
        } else {
            println_out(&format!("data and logs kept in {}", self.path.display()));
        }
    }
}

pub(crate) use crate::serve::shutdown_signal as interrupted;

/// One line on stdout (a closed stdout is not an error worth stopping for).
pub(crate) fn println_out(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}
