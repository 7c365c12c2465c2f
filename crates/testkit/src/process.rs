//! Node processes for tests: the node's command line run as a child
//! process, a three-node layout on 127.0.0.1, and the client commands
//! retried until the cluster answers.
//!
//! The node's tests run the `tsoracle-paxos` binary, the test kit's tests
//! the same command line built into `tsoracle-paxos-testkit node`; both
//! describe it with a [`CommandLine`]. Every helper fails the calling test with
//! a message (these are assertions, not a library's errors), and every wait
//! has a deadline. A [`ServeChild`] is killed when dropped, so a test that
//! fails half-way leaves no `serve` process behind.
//!
//! ```no_run
//! use tsoracle_paxos_testkit::process::{Layout, CommandLine};
//!
//! let cli = CommandLine::new("target/debug/tsoracle-paxos", &[]);
//! let layout = Layout::new();
//! let nodes: Vec<_> = (1..=3)
//!     .map(|id| cli.spawn(&layout.args(id), &layout.log(&format!("n{id}"))))
//!     .collect();
//! let timestamps = cli.get_ts(&layout.endpoints(), 10);
//! assert_eq!(timestamps.len(), 10);
//! for mut node in nodes {
//!     node.terminate();
//! }
//! ```

// Test support: failing the calling test, with a message, is the point.
#![allow(clippy::panic)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a client command is retried before the test fails.
const CLIENT_RETRY_DEADLINE: Duration = Duration::from_secs(60);
/// How long one client command may run.
const CLIENT_RUN_LIMIT: Duration = Duration::from_secs(30);

/// `Ok` value or a failed test naming `what`.
fn must<T, E: std::fmt::Display>(result: Result<T, E>, what: &str) -> T {
    match result {
        Ok(value) => value,
        Err(err) => panic!("{what}: {err}"),
    }
}

/// A free 127.0.0.1 port that no other test process is handed while this
/// one runs, and no outgoing connection takes (module `ports`).
#[must_use]
pub fn free_port() -> u16 {
    must(crate::ports::reserve(), "reserving a free port")
}

/// A command line: a program and the arguments that come before a
/// subcommand (for the node's: `[]` with `tsoracle-paxos`, `["node"]` with
/// the test kit's binary).
#[derive(Debug, Clone)]
pub struct CommandLine {
    program: PathBuf,
    prefix: Vec<String>,
}

impl CommandLine {
    /// The command line `program prefix... <subcommand>`.
    pub fn new(program: impl Into<PathBuf>, prefix: &[&str]) -> Self {
        Self {
            program: program.into(),
            prefix: prefix.iter().map(|arg| (*arg).to_owned()).collect(),
        }
    }

    /// A command for `program prefix... args...`.
    #[must_use]
    pub fn command(&self, args: &[String]) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.prefix).args(args);
        command
    }

    /// Starts `args` (e.g. [`Layout::args`]) in the background; its logs go
    /// to `log`.
    #[must_use]
    pub fn spawn(&self, args: &[String], log: &Path) -> ServeChild {
        ServeChild::spawn(self.command(args), log)
    }

    /// Runs `args` to completion within `within` and returns its output;
    /// kills it and fails the test when it takes longer.
    #[must_use]
    pub fn run(&self, args: &[String], within: Duration) -> Output {
        match self.run_within(args, within) {
            Ok(out) => out,
            Err(out) => panic!(
                "{args:?} did not finish within {within:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }

    /// Runs `args` for at most `within`: `Ok` with its output when it
    /// finished, `Err` with what it wrote when it was still running at the
    /// deadline (it is killed then).
    pub fn run_within(&self, args: &[String], within: Duration) -> Result<Output, Output> {
        let mut child = must(
            self.command(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn(),
            "starting a command",
        );
        let deadline = Instant::now() + within;
        loop {
            if must(child.try_wait(), "polling a command").is_some() {
                return Ok(must(child.wait_with_output(), "reading a command's output"));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(must(child.wait_with_output(), "reading a command's output"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `get-ts` against `endpoints`, retried until it succeeds (bounded);
    /// the timestamps. (Also how a test waits until the cluster serves.)
    pub fn get_ts(&self, endpoints: &[String], count: u32) -> Vec<u64> {
        let args = client_args(&["get-ts", "--count", &count.to_string()], endpoints);
        self.until_answered(&args)
            .lines()
            .map(|line| must(line.parse(), "parsing a timestamp"))
            .collect()
    }

    /// The arguments of `seq`: a block of `count` of `key` from `endpoints`.
    #[must_use]
    pub fn seq_args(endpoints: &[String], key: &str, count: u32) -> Vec<String> {
        client_args(
            &["seq", "--key", key, "--count", &count.to_string()],
            endpoints,
        )
    }

    /// `seq` against `endpoints`, retried until it succeeds (bounded); the
    /// block's first value.
    pub fn seq(&self, endpoints: &[String], key: &str, count: u32) -> u64 {
        let args = Self::seq_args(endpoints, key, count);
        must(self.until_answered(&args).trim().parse(), "parsing a block")
    }

    /// Runs a client command until it exits successfully (a leader may be
    /// being elected); its stdout.
    fn until_answered(&self, args: &[String]) -> String {
        let deadline = Instant::now() + CLIENT_RETRY_DEADLINE;
        loop {
            let out = self.run(args, CLIENT_RUN_LIMIT);
            if out.status.success() {
                return must(String::from_utf8(out.stdout), "reading a command's output");
            }
            assert!(
                Instant::now() < deadline,
                "{} kept failing: {}",
                args[0],
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn client_args(command: &[&str], endpoints: &[String]) -> Vec<String> {
    let mut args: Vec<String> = command.iter().map(|arg| (*arg).to_owned()).collect();
    for endpoint in endpoints {
        args.push("--endpoint".to_owned());
        args.push(endpoint.clone());
    }
    args
}

/// A node process that is killed (SIGKILL) and reaped when dropped, so a
/// failing test leaves no node running. Derefs to its [`Child`].
#[derive(Debug)]
pub struct ServeChild {
    child: Child,
    log: PathBuf,
}

impl ServeChild {
    /// Starts `command` (e.g. [`CommandLine::command`] with environment
    /// variables added) in the background; its stderr goes to `log`.
    #[must_use]
    pub fn spawn(mut command: Command, log: &Path) -> Self {
        let log_file = must(std::fs::File::create(log), "creating a node log");
        let child = must(
            command.stdout(Stdio::null()).stderr(log_file).spawn(),
            "starting a node",
        );
        Self {
            child,
            log: log.to_path_buf(),
        }
    }

    /// Sends SIGTERM and waits (at most 30 s) for a clean exit; fails the
    /// test on a non-zero exit or a node that does not stop.
    pub fn terminate(&mut self) {
        let within = Duration::from_secs(30);
        let status = must(
            Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status(),
            "running kill",
        );
        assert!(status.success(), "kill -TERM failed");
        match self.wait_exit(within) {
            Some(status) => assert!(
                status.success(),
                "serve exited with {status} after SIGTERM; the end of its log:\n{}",
                self.log_tail()
            ),
            None => panic!(
                "serve did not stop within {within:?} after SIGTERM; the end of its log:\n{}",
                self.log_tail()
            ),
        }
    }

    /// Waits until the node's log holds `text` (polling every
    /// millisecond, so a test can act right after the line); fails the
    /// test after `within`.
    pub fn wait_for_log(&self, text: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !std::fs::read_to_string(&self.log).is_ok_and(|log| log.contains(text)) {
            assert!(
                Instant::now() < deadline,
                "no {text:?} in the node's log after {within:?}:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The last lines of the node's log, for a failure message.
    #[must_use]
    pub fn log_tail(&self) -> String {
        const LINES: usize = 40;
        match std::fs::read_to_string(&self.log) {
            Ok(text) => {
                let lines: Vec<&str> = text.lines().collect();
                lines[lines.len().saturating_sub(LINES)..].join("\n")
            }
            Err(err) => format!("(cannot read {}: {err})", self.log.display()),
        }
    }

    /// The exit status once the process exits, or `None` if it still runs
    /// after `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = must(self.child.try_wait(), "polling a node") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Deref for ServeChild {
    type Target = Child;

    fn deref(&self) -> &Child {
        &self.child
    }
}

impl DerefMut for ServeChild {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for ServeChild {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Ports, data directories and logs of a three-node cluster on 127.0.0.1,
/// under a temporary directory removed with it.
#[derive(Debug)]
pub struct Layout {
    root: tempfile::TempDir,
    /// Peer port of each node.
    pub peer: BTreeMap<u64, u16>,
    /// Client port of each node.
    pub client: BTreeMap<u64, u16>,
    /// A free port per node for `--metrics-listen`, if a test wants one.
    pub metrics: BTreeMap<u64, u16>,
}

impl Layout {
    /// Three nodes, ids 1 to 3, with fresh ports.
    #[must_use]
    pub fn new() -> Self {
        let ids = 1..=3u64;
        Self {
            root: must(tempfile::tempdir(), "creating a temporary directory"),
            peer: ids.clone().map(|id| (id, free_port())).collect(),
            client: ids.clone().map(|id| (id, free_port())).collect(),
            metrics: ids.map(|id| (id, free_port())).collect(),
        }
    }

    /// The temporary directory everything lives under.
    #[must_use]
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// Node `id`'s data directory.
    #[must_use]
    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.root().join(format!("node-{id}"))
    }

    /// A log file named `name` under the root.
    #[must_use]
    pub fn log(&self, name: &str) -> PathBuf {
        self.root().join(format!("{name}.log"))
    }

    /// The `serve` arguments of node `id` (cluster `it`, every member) for
    /// a founding start: with `--initial-cluster-state new`, which a
    /// restart on the same directory ignores.
    #[must_use]
    pub fn args(&self, id: u64) -> Vec<String> {
        let mut args = self.rejoin_args(id);
        // Before the peers: tests that edit the arguments edit the last.
        let at = args
            .iter()
            .position(|arg| arg == "--peer")
            .unwrap_or(args.len());
        args.splice(
            at..at,
            ["--initial-cluster-state".to_owned(), "new".to_owned()],
        );
        args
    }

    /// The `serve` arguments of node `id` without `--initial-cluster-state
    /// new`: the node must find its state in its data directory.
    #[must_use]
    pub fn rejoin_args(&self, id: u64) -> Vec<String> {
        let mut args = vec![
            "serve".to_owned(),
            "--node-id".to_owned(),
            id.to_string(),
            "--cluster-id".to_owned(),
            "it".to_owned(),
            "--data-dir".to_owned(),
            self.data_dir(id).display().to_string(),
            "--client-listen".to_owned(),
            format!("127.0.0.1:{}", self.client[&id]),
            "--peer-listen".to_owned(),
            format!("127.0.0.1:{}", self.peer[&id]),
        ];
        for (peer, port) in &self.peer {
            args.push("--peer".to_owned());
            args.push(format!(
                "{peer}=127.0.0.1:{port},127.0.0.1:{}",
                self.client[peer]
            ));
        }
        args
    }

    /// Node `id`'s client endpoint.
    #[must_use]
    pub fn endpoint(&self, id: u64) -> String {
        format!("127.0.0.1:{}", self.client[&id])
    }

    /// Every node's client endpoint.
    #[must_use]
    pub fn endpoints(&self) -> Vec<String> {
        self.client
            .values()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect()
    }
}

impl Default for Layout {
    fn default() -> Self {
        Self::new()
    }
}

/// Every file under `dir` with its bytes, to compare a directory before and
/// after a refused start.
#[must_use]
pub fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries {
            let path = must(entry, "listing a directory").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = must(std::fs::read(&path), "reading a file");
                out.insert(path, bytes);
            }
        }
    }
    out
}

/// `GET path` on `127.0.0.1:port` over plain HTTP/1.0, with bounded
/// deadlines: the status code and the body; `None` when nothing answers.
#[must_use]
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let fetch = || -> std::io::Result<String> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(300))?;
        // Generous: a loaded 2-core machine may take a while to answer.
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.set_write_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())?;
        let mut page = String::new();
        stream.read_to_string(&mut page)?;
        Ok(page)
    };
    let page = fetch().ok()?;
    let code = page.split_whitespace().nth(1)?.parse().ok()?;
    let body = page
        .split_once("\r\n\r\n")
        .map_or_else(String::new, |(_, body)| body.to_owned());
    Some((code, body))
}

/// The samples of the metrics page on `127.0.0.1:port` (`GET /metrics`,
/// see [`http_get`]), keyed by `name` or `name{labels}`; `None` when
/// nothing answers.
#[must_use]
pub fn metrics(port: u16) -> Option<BTreeMap<String, f64>> {
    http_get(port, "/metrics").map(|(_, page)| tsoracle_paxos_metrics::parse(&page))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alive(pid: u32) -> bool {
        Command::new("kill")
            .args(["-0", &pid.to_string()])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }

    #[test]
    fn a_dropped_child_is_killed_and_reaped_even_when_its_test_panics() {
        let dir = tempfile::tempdir().unwrap();
        let sleeper = CommandLine::new("sleep", &[]);
        let pid = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let child = sleeper.spawn(&["60".to_owned()], &dir.path().join("log"));
                    let pid = child.id();
                    assert!(alive(pid));
                    std::panic::panic_any(pid);
                })
                .join()
                .unwrap_err()
                .downcast::<u32>()
                .map(|pid| *pid)
                .unwrap()
        });
        // Reaped, not a zombie: `kill -0` fails on a pid no process has.
        assert!(!alive(pid), "pid {pid} still runs after its test panicked");
    }

    #[test]
    fn client_arguments_name_every_endpoint() {
        let args = client_args(
            &["get-ts", "--count", "3"],
            &["a:1".to_owned(), "b:2".to_owned()],
        );
        assert_eq!(
            args,
            [
                "get-ts",
                "--count",
                "3",
                "--endpoint",
                "a:1",
                "--endpoint",
                "b:2"
            ]
        );
    }
}
