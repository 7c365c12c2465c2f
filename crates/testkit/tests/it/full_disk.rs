//! Fail fast: a node whose disk fills up under load exits non-zero at once,
//! with one line saying why, instead of lingering half-alive; restarted with
//! space freed, it rejoins and nothing acknowledged is lost.
//!
//! Needs root (it mounts a small tmpfs for node 1's data directory); CI runs
//! as root.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{BIN, Layout, ServeChild, cli};

/// A tmpfs mounted for the test's lifetime.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mounting a tmpfs needs root (CI runs as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Writes zeros into `path` until the file system is full.
fn fill(path: &Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 64 * 1024];
    while file.write_all(&block).is_ok() {}
    // The last partial block too, byte by byte would take long: smaller
    // blocks until nothing fits.
    for size in [4096, 512, 1] {
        while file.write_all(&block[..size]).is_ok() {}
    }
    let _ = file.sync_all();
}

/// What `df` says of `dir`'s filesystem.
fn free_space(dir: &Path) -> String {
    Command::new("df")
        .arg("-h")
        .arg(dir)
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default()
}

/// Node 1 exited with a failure `took` after its disk filled; its last
/// stderr line (the one a supervisor's log shows).
fn failed_exit_line(status: std::process::ExitStatus, took: Duration, log: &Path) -> String {
    eprintln!("node 1 exited {took:?} after its disk filled, with {status}");
    assert!(
        !status.success(),
        "node 1 exited successfully on a full disk"
    );
    let stderr = std::fs::read_to_string(log).unwrap();
    stderr.lines().last().unwrap_or_default().to_owned()
}

/// Three nodes on 127.0.0.1, node 1's data directory on a 48 MiB tmpfs.
struct FullDiskCluster {
    // Unmounted before the layout's directory is removed (field order).
    disk: Tmpfs,
    layout: Layout,
    /// `--min-free-disk-mib` of every node.
    floor_mib: u64,
}

impl FullDiskCluster {
    fn start_with_floor(floor_mib: u64) -> Self {
        let layout = Layout::new();
        let disk = Tmpfs::mount(&layout.data_dir(1), "48m");
        Self {
            disk,
            layout,
            floor_mib,
        }
    }

    /// Node `id`'s stderr in its `round`-th life.
    fn log(&self, id: u64, round: u32) -> PathBuf {
        self.layout.log(&format!("node-{id}-{round}"))
    }

    fn args(&self, id: u64) -> Vec<String> {
        let mut args = self.layout.args(id);
        args.extend(["--min-free-disk-mib".to_owned(), self.floor_mib.to_string()]);
        args
    }

    fn spawn_all(&self) -> Vec<ServeChild> {
        (1..=3)
            .map(|id| cli().spawn(&self.args(id), &self.log(id, 1)))
            .collect()
    }
}

#[test]
fn a_node_whose_disk_fills_exits_at_once_and_rejoins_after_space_is_freed() {
    // The free-space check off: this test is about the write that fails.
    let cluster = FullDiskCluster::start_with_floor(0);
    let mut nodes = cluster.spawn_all();
    let endpoints = cluster.layout.endpoints();

    // Acknowledged before the disk fills.
    let mut timestamps = cli().get_ts(&endpoints, 5);
    let mut blocks = vec![cli().seq(&endpoints, "orders", 10)];

    // Fill node 1's disk while clients keep writing. Every node writes the
    // log; RocksDB first uses up the WAL space it preallocated, then its
    // next flush, snapshot or WAL file fails with ENOSPC. The load writes
    // new dense keys, 128 per command, so the log and the snapshots (one
    // every 4096 entries, of a growing state) use that space up in seconds
    // on any machine; a load of small commands took from 15 s to over 180 s.
    fill(&cluster.disk.dir.join("filler"));
    let load_log = cluster.layout.log("load");
    let mut load = Command::new(BIN)
        .args([
            "bench",
            "--op",
            "fill-keys",
            "--keys",
            "5000000",
            "--clients",
            "8",
            "--duration",
            "180",
        ])
        .args(endpoints.iter().flat_map(|e| ["--endpoint", e.as_str()]))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&load_log).unwrap())
        .spawn()
        .unwrap();
    let filled_at = Instant::now();
    // A deadline, not a speed target.
    let exited = nodes[0].wait_exit(Duration::from_secs(180));
    let took = filled_at.elapsed();
    let _ = load.kill();
    let _ = load.wait();
    let Some(status) = exited else {
        panic!(
            "node 1 kept running on a full disk for 180 s under load ({} free); its log \
             ends:\n{}\nthe load's log:\n{}",
            free_space(&cluster.disk.dir),
            nodes[0].log_tail(),
            std::fs::read_to_string(&load_log).unwrap_or_default()
        );
    };
    let last = failed_exit_line(status, took, &cluster.log(1, 1));
    let stderr = std::fs::read_to_string(cluster.log(1, 1)).unwrap();
    assert!(
        last.starts_with("tsoracle-paxos: error:") && last.contains("consensus thread failed"),
        "the last line does not say why: {last:?}"
    );
    assert!(
        stderr.contains("No space left on device") || stderr.contains("NoSpace"),
        "the reason is not in the log:\n{stderr}"
    );

    // The others still serve.
    blocks.push(cli().seq(&endpoints, "orders", 10));
    timestamps.extend(cli().get_ts(&endpoints, 2));

    // Space freed, node 1 restarts and rejoins; with node 3 stopped, node 1
    // is half of every quorum, and nothing acknowledged went back.
    std::fs::remove_file(cluster.disk.dir.join("filler")).unwrap();
    nodes[0] = cli().spawn(&cluster.args(1), &cluster.log(1, 2));
    nodes[2].terminate();
    let after = cli().get_ts(&endpoints, 1)[0];
    let max_ts = *timestamps.iter().max().unwrap();
    assert!(
        after > max_ts,
        "timestamp {after} after the restart <= {max_ts}"
    );
    let next = cli().seq(&endpoints, "orders", 10);
    let top = blocks.iter().map(|start| start + 10).max().unwrap();
    assert!(
        next >= top,
        "dense block {next} overlaps acknowledged blocks (top {top})"
    );
    for (i, node) in nodes.iter_mut().enumerate() {
        if i != 2 {
            node.terminate();
        }
    }
}

/// The free-space check: with `--min-free-disk-mib`, a node stops as soon
/// as its filesystem runs below the floor (it polls every 100 ms), without
/// waiting for a write to fail, and refuses to start again until space is
/// freed.
#[test]
fn a_node_below_its_free_space_floor_stops_without_waiting_for_a_failed_write() {
    let cluster = FullDiskCluster::start_with_floor(8);
    let mut nodes = cluster.spawn_all();
    let endpoints = cluster.layout.endpoints();
    let before = cli().get_ts(&endpoints, 3);

    fill(&cluster.disk.dir.join("filler"));
    let filled_at = Instant::now();
    let exited = nodes[0].wait_exit(Duration::from_secs(30));
    let took = filled_at.elapsed();
    let status = exited.expect("node 1 kept running below its free-space floor for 30 s");
    let last = failed_exit_line(status, took, &cluster.log(1, 1));
    assert!(
        last.starts_with("tsoracle-paxos: error: disk:")
            && last.contains("below min_free_disk_mib"),
        "the last line does not say why: {last:?}"
    );

    // Still full (filled again: RocksDB gives back the WAL space it had
    // preallocated when the node exits): the restart is refused with the
    // same reason, before anything is opened.
    fill(&cluster.disk.dir.join("filler-2"));
    let mut refused = cli().spawn(&cluster.args(1), &cluster.log(1, 2));
    let status = refused
        .wait_exit(Duration::from_secs(30))
        .expect("a start on a full disk");
    assert!(!status.success());
    let stderr = std::fs::read_to_string(cluster.log(1, 2)).unwrap();
    assert!(stderr.contains("below min_free_disk_mib"), "{stderr}");

    // Space freed: node 1 rejoins, and with node 3 stopped it is half of
    // every quorum; time went on above everything acknowledged.
    std::fs::remove_file(cluster.disk.dir.join("filler")).unwrap();
    std::fs::remove_file(cluster.disk.dir.join("filler-2")).unwrap();
    nodes[0] = cli().spawn(&cluster.args(1), &cluster.log(1, 3));
    nodes[2].terminate();
    let after = cli().get_ts(&endpoints, 1)[0];
    let max_ts = *before.iter().max().unwrap();
    assert!(
        after > max_ts,
        "timestamp {after} after the restart <= {max_ts}"
    );
    for node in &mut nodes[..2] {
        node.terminate();
    }
}
