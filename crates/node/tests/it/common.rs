//! Starting `serve` processes and calling them.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_tsoracle-paxos");

/// A free 127.0.0.1 port (bound, then released).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Ports and data directories of a three-node cluster.
pub(crate) struct Layout {
    pub(crate) root: tempfile::TempDir,
    pub(crate) peer: BTreeMap<u64, u16>,
    pub(crate) client: BTreeMap<u64, u16>,
    pub(crate) metrics: BTreeMap<u64, u16>,
}

impl Layout {
    pub(crate) fn new() -> Self {
        let ids = 1..=3u64;
        Self {
            root: tempfile::tempdir().unwrap(),
            peer: ids.clone().map(|id| (id, free_port())).collect(),
            client: ids.clone().map(|id| (id, free_port())).collect(),
            metrics: ids.map(|id| (id, free_port())).collect(),
        }
    }

    pub(crate) fn data_dir(&self, id: u64) -> PathBuf {
        self.root.path().join(format!("node-{id}"))
    }

    /// The `serve` arguments of node `id`.
    pub(crate) fn args(&self, id: u64) -> Vec<String> {
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
        for peer in 1..=3u64 {
            args.push("--peer".to_owned());
            args.push(format!(
                "{peer}=127.0.0.1:{},127.0.0.1:{}",
                self.peer[&peer], self.client[&peer]
            ));
        }
        args
    }

    pub(crate) fn endpoints(&self) -> Vec<String> {
        self.client
            .values()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect()
    }
}

/// Starts `serve` with `args`; its logs go to `log`.
pub(crate) fn spawn(args: &[String], log: &Path) -> Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new(BIN)
        .args(args)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// Runs the binary to completion (bounded) and returns its output.
pub(crate) fn run(args: &[String], within: Duration) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + within;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{args:?} did not finish within {within:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends SIGTERM and waits (bounded) for a clean exit.
pub(crate) fn terminate(child: &mut Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "serve exited with {status} after SIGTERM");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "serve did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `get-ts` against the cluster, retried until it succeeds (bounded).
pub(crate) fn get_ts(endpoints: &[String], count: u32) -> Vec<u64> {
    let mut args = vec!["get-ts".to_owned(), "--count".to_owned(), count.to_string()];
    for e in endpoints {
        args.push("--endpoint".to_owned());
        args.push(e.clone());
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = run(&args, Duration::from_secs(30));
        if out.status.success() {
            return String::from_utf8(out.stdout)
                .unwrap()
                .lines()
                .map(|l| l.parse().unwrap())
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "get-ts kept failing: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every file under `dir` with its bytes, to compare a directory before
/// and after a refused start.
pub(crate) fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    out
}
