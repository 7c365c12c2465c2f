//! A local cluster of `serve` child processes on 127.0.0.1, shared by `demo`
//! and `chaos`: the run directory, the node processes (start, SIGKILL,
//! SIGSTOP and SIGCONT, restart, stop), and the signal that ends a run
//! early.
//!
//! Every child is stopped on every exit path: [`Cluster::stop`] on a normal
//! end, and the [`Drop`] impl (SIGKILL and reap) on an error or a panic.
//! A child paused with SIGSTOP is sent SIGCONT on each of those paths too:
//! a stopped process leaves SIGTERM pending until it is continued.
//! A run that is interrupted (Ctrl-C, SIGTERM) ends through [`interrupted`]
//! (the node's own shutdown signal) and then the same path.

use std::collections::BTreeSet;
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
    /// Nodes stopped with SIGSTOP and not yet continued.
    paused: BTreeSet<u64>,
    /// More `serve` flags, for every node.
    serve_args: Vec<String>,
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
            paused: BTreeSet::new(),
            serve_args: Vec::new(),
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

    /// Adds `serve` flags for every node. Takes effect when a node
    /// (re)starts.
    pub(crate) fn add_serve_args<I, S>(&mut self, args: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.serve_args.extend(args.into_iter().map(Into::into));
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
            .args(&self.serve_args)
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

    /// Node `id`'s client address, `127.0.0.1:PORT`.
    pub(crate) fn endpoint(&self, id: u64) -> Option<String> {
        index(id).and_then(|i| {
            self.client_ports
                .get(i)
                .map(|&port| local(port).to_string())
        })
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
        self.continue_if_paused(id);
        if let Some(slot) = index(id).and_then(|i| self.nodes.get_mut(i))
            && let Some(mut child) = slot.take()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP node `id`: the process is frozen while the kernel still
    /// accepts connections and queues requests for it. Until
    /// [`resume`](Self::resume) it counts as paused, and every exit path
    /// continues it before stopping it.
    pub(crate) fn pause(&mut self, id: u64) -> Result<(), Error> {
        let child = index(id)
            .and_then(|i| self.nodes.get(i))
            .and_then(Option::as_ref)
            .ok_or_else(|| Error::runtime("cluster", format!("node {id} is not running")))?;
        send_signal(child, "STOP")?;
        self.paused.insert(id);
        Ok(())
    }

    /// SIGCONT node `id` after [`pause`](Self::pause); nothing if it is
    /// not paused.
    pub(crate) fn resume(&mut self, id: u64) -> Result<(), Error> {
        if !self.paused.contains(&id) {
            return Ok(());
        }
        if let Some(child) = index(id)
            .and_then(|i| self.nodes.get(i))
            .and_then(Option::as_ref)
        {
            send_signal(child, "CONT")?;
        }
        self.paused.remove(&id);
        Ok(())
    }

    /// Whether node `id` is stopped with SIGSTOP.
    pub(crate) fn is_paused(&self, id: u64) -> bool {
        self.paused.contains(&id)
    }

    /// Best-effort SIGCONT on an exit path (errors are not worth stopping
    /// the cleanup for: a SIGKILL follows anyway).
    fn continue_if_paused(&mut self, id: u64) {
        if self.paused.remove(&id)
            && let Some(child) = index(id)
                .and_then(|i| self.nodes.get(i))
                .and_then(Option::as_ref)
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
                self.paused.remove(&id);
            }
        }
        out
    }

    /// SIGTERM to every node, then SIGKILL to any still running after a grace.
    pub(crate) fn stop(&mut self) {
        for child in self.nodes.iter().flatten() {
            let _ = send_signal(child, "TERM");
        }
        // A stopped node keeps SIGTERM pending until it is continued.
        self.continue_all();
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
        // SIGKILL ends a stopped process too; continuing it first leaves
        // no stopped child behind should the kill fail.
        self.continue_all();
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
fn send_signal(child: &Child, name: &str) -> Result<(), Error> {
    let status = Command::new("kill")
        .args([format!("-{name}"), child.id().to_string()])
        .stdin(Stdio::null())
        .status()
        .map_err(|err| Error::runtime("cluster: kill", err))?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::runtime(
            "cluster: kill",
            format!("kill -{name} {} failed ({status})", child.id()),
        ))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-node cluster whose node is `sleep 60` (stands in for `serve`:
    /// only the signals matter here).
    fn sleeper(dir: &Path) -> Cluster {
        let mut cluster = Cluster::plan(dir, "test", 1).unwrap();
        cluster.reserved.clear();
        let child = Command::new("sleep").arg("60").spawn().unwrap();
        cluster.nodes.push(Some(child));
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
}
