//! `cargo xtask bench catchup`: how long a lagging follower takes to catch
//! up, against the size of the replicated state.
//!
//! Per number of dense keys N, on a fresh 3-node cluster of release
//! `tsoracle-paxos serve` processes (default snapshot interval, 4096
//! decided entries):
//!
//! 1. a follower is killed with `kill -9` once a leader is elected;
//! 2. `tsoracle-paxos-testkit bench --op fill-keys` writes N distinct keys
//!    through `tsoracle-client`'s `get_seq_batch`, 128 keys per call, then
//!    single-key calls (no new key) until the leader has compacted its log
//!    past the follower's index, so the follower can only catch up from a
//!    snapshot;
//! 3. the follower is started again, and the time runs from its start
//!    until its status page shows a decided index at or above the leader's
//!    as of the restart.
//!
//! Also recorded: the leader's data directory size, the follower's peak
//! RSS during the catch-up, and the messages the leader sent in chunks
//! (larger than one transport frame) or dropped meanwhile. The run writes
//! `target/bench/catchup.json`, `docs/benchmarks/catchup.png` and the
//! catch-up block of `docs/benchmarks.md` (see [`report`]).

mod report;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use tsoracle_paxos_metrics::{CHUNKED_OUT, COMPACTED, DECIDED, TRANSFERS_IN};

use super::BenchArgs;
use super::cluster::{Binaries, Cluster, Kind, Options, interrupt, rss_bytes, run_captured};
use super::drivers::{Dirs, Machine, Progress, loadavg, plot, prepare, settle, start_serving};
use crate::env::BuildEnv;
use report::{CatchupMeta, CatchupPoint, CatchupReport};

/// The node's default snapshot interval (`--snapshot-every`), which the
/// clusters keep.
const SNAPSHOT_EVERY: u64 = 4096;
/// Keys per `get_seq_batch` call: tsoracle-server's default cap.
const BATCH_KEYS: u64 = 128;
/// Fill calls in flight.
const FILL_CLIENTS: u32 = 8;
/// Fewest fill calls: one log entry each, past the first snapshot with a
/// margin, so even a small state reaches the follower as a snapshot (the
/// calls beyond one per 128 keys bump a single key each).
const MIN_CALLS: u64 = SNAPSHOT_EVERY + 256;
/// The driver's cap on distinct dense keys (`DEFAULT_DENSE_KEY_CAP`).
const KEY_CAP: u64 = 1_000_000;
/// Transport counter of messages the leader dropped.
const DROPPED: &str = "tsoracle_paxos_peer_dropped_total";

/// Sizes and bounds of one run.
struct Plan {
    quick: bool,
    sizes: Vec<u64>,
    fill_limit: Duration,
    catchup_limit: Duration,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                quick,
                sizes: vec![1_000, 10_000],
                fill_limit: Duration::from_secs(180),
                catchup_limit: Duration::from_secs(60),
            }
        } else {
            Self {
                quick,
                sizes: vec![10_000, 100_000, 1_000_000],
                fill_limit: Duration::from_secs(900),
                catchup_limit: Duration::from_secs(600),
            }
        }
    }
}

/// What `bench --op fill-keys` prints (the fields used here).
#[derive(Debug, Deserialize)]
struct FillResult {
    keys_written: u64,
    ok: u64,
    errors: u64,
    elapsed_s: f64,
}

pub(crate) fn run(build_env: &BuildEnv, args: &BenchArgs) -> Result<()> {
    let plan = Plan::new(args.quick);
    let started = Instant::now();
    let (root, bins, dirs) = prepare(build_env, "catchup", plan.quick)?;
    let machine = Machine::now();
    let mut report = CatchupReport {
        meta: CatchupMeta {
            mode: if plan.quick { "quick" } else { "full" }.to_owned(),
            date: machine.date,
            command: format!(
                "cargo xtask bench catchup{}",
                if plan.quick { " --quick" } else { "" }
            ),
            cores: machine.cores,
            memory_gib: machine.memory_gib,
            cpu: machine.cpu,
            kernel: machine.kernel,
            snapshot_every: SNAPSHOT_EVERY,
            batch_keys: BATCH_KEYS,
            fill_clients: FILL_CLIENTS,
            elapsed_s: 0.0,
            loadavg_start: loadavg(),
            loadavg_end: String::new(),
        },
        points: Vec::new(),
    };
    let json = dirs.out.join("catchup.json");
    let progress = Progress::new(plan.sizes.len() as u64);
    for &keys in &plan.sizes {
        let point = measure(&plan, &bins, &dirs, &progress, keys)
            .with_context(|| format!("catch-up with {keys} keys"))?;
        progress.done(&format!(
            "{keys:>8} keys: caught up in {:.0} ms (decided {}, leader data {:.1} MiB, follower peak RSS {:.0} MiB, {} chunked, {} received)",
            point.catchup_ms,
            point.leader_decided,
            mib(point.leader_data_bytes),
            mib(point.follower_peak_rss_bytes),
            point.chunked_messages,
            point.transfers_received
        ));
        report.points.push(point);
        // Written after every size, so a later failure keeps the figures.
        write_json(&report, &json)?;
    }
    progress.bar.finish_and_clear();
    report.meta.elapsed_s = started.elapsed().as_secs_f64();
    report.meta.loadavg_end = loadavg();
    write_json(&report, &json)?;
    write_outputs(&report, &json, &root, &bins)?;
    print_summary(&report);
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// One size: fresh cluster, kill a follower, fill, restart it, time it.
fn measure(
    plan: &Plan,
    bins: &Binaries,
    dirs: &Dirs,
    progress: &Progress,
    keys: u64,
) -> Result<CatchupPoint> {
    if keys > KEY_CAP {
        bail!("{keys} keys is above the driver's cap of {KEY_CAP} distinct dense keys");
    }
    progress.step(&format!("{keys} keys: starting the cluster"));
    // Readiness through get_ts only: a get_seq would create a key beyond
    // the N the fill writes (and 1M is exactly the driver's cap).
    let mut cluster = start_serving(
        bins,
        dirs,
        Kind::Paxos,
        Options::default(),
        &format!("catchup-{keys}"),
        false,
    )?;
    settle(&mut cluster, Duration::from_secs(30))?;
    let leader = cluster.leader().context("no leader after settling")?;
    let follower = cluster
        .ids()
        .find(|&id| id != leader)
        .context("the cluster has a single node")?;
    let follower_before = gauge(&cluster, follower, DECIDED)
        .with_context(|| format!("node {follower}'s status page does not answer"))?;
    cluster.kill(follower);

    progress.step(&format!(
        "{keys} keys: node {follower} killed, filling through node {leader}"
    ));
    let calls = keys.div_ceil(BATCH_KEYS).max(MIN_CALLS);
    let fill = fill(plan, bins, dirs, &mut cluster, keys, calls)?;
    if fill.keys_written < keys {
        bail!(
            "the fill wrote {} of {keys} keys within {:?} ({} calls ok, {} failed); see {}",
            fill.keys_written,
            plan.fill_limit,
            fill.ok,
            fill.errors,
            dirs.logs.join("load.log").display()
        );
    }

    // The status pages are sampled every 250 ms: wait for the leader's to
    // show a compaction past the follower's last index.
    let leader = cluster.leader().context("no leader after the fill")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let compacted = loop {
        let compacted = gauge(&cluster, leader, COMPACTED).unwrap_or(0);
        if compacted > follower_before {
            break compacted;
        }
        if Instant::now() > deadline {
            bail!(
                "the leader (node {leader}) did not compact its log past the follower's index \
                 {follower_before} within 30 s of the fill (compacted index {compacted}); see {}",
                cluster.log_path(leader).display()
            );
        }
        cluster.check_alive()?;
        interrupt::sleep(Duration::from_millis(50))?;
    };
    interrupt::sleep(Duration::from_millis(300))?;
    let page = cluster
        .status(leader)
        .with_context(|| format!("the leader's (node {leader}) status page does not answer"))?;
    let read = |page: &std::collections::BTreeMap<String, f64>, name: &str| {
        page.get(name).copied().unwrap_or(0.0) as u64
    };
    let target = read(&page, DECIDED);
    let (chunked_before, dropped_before) = (read(&page, CHUNKED_OUT), read(&page, DROPPED));
    let leader_data_bytes = cluster.node_data_bytes(leader);

    progress.step(&format!(
        "{keys} keys: node {follower} restarted, catching up to index {target}"
    ));
    let restarted = Instant::now();
    cluster.restart(follower)?;
    let pid = cluster.pid(follower);
    let mut peak_rss = 0;
    let mut status_up_ms = None;
    let mut seen = None;
    let catchup_ms = loop {
        cluster.check_alive()?;
        if let Some(rss) = pid.and_then(rss_bytes) {
            peak_rss = peak_rss.max(rss);
        }
        let elapsed = restarted.elapsed();
        if let Some(decided) = gauge(&cluster, follower, DECIDED) {
            status_up_ms.get_or_insert(elapsed.as_secs_f64() * 1e3);
            seen = Some(decided);
            if decided >= target {
                break elapsed.as_secs_f64() * 1e3;
            }
        }
        if elapsed > plan.catchup_limit {
            bail!(
                "the follower (node {follower}) did not catch up within {:?}: its status page {}, \
                 the leader's decided index was {target} at the restart; see {}",
                plan.catchup_limit,
                seen.map_or("never answered".to_owned(), |d| format!(
                    "last showed decided index {d}"
                )),
                cluster.log_path(follower).display()
            );
        }
        interrupt::sleep(Duration::from_millis(20))?;
    };
    // Two more samples of the leader's counters (every 250 ms) so they
    // include the catch-up's last messages.
    interrupt::sleep(Duration::from_millis(600))?;
    let after = cluster.status(leader).unwrap_or_default();
    let follower_compacted = gauge(&cluster, follower, COMPACTED).unwrap_or(0);
    let transfers_received = gauge(&cluster, follower, TRANSFERS_IN).unwrap_or(0);
    let follower_data_bytes = cluster.node_data_bytes(follower);
    cluster.check_alive()?;
    cluster.stop();
    Ok(CatchupPoint {
        keys,
        fill_calls: fill.ok,
        fill_errors: fill.errors,
        fill_s: fill.elapsed_s,
        leader,
        follower,
        follower_decided_before: follower_before,
        leader_decided: target,
        leader_compacted: compacted,
        status_up_ms: status_up_ms.unwrap_or(catchup_ms),
        catchup_ms,
        follower_compacted_after: follower_compacted,
        leader_data_bytes,
        follower_data_bytes,
        follower_peak_rss_bytes: peak_rss,
        chunked_messages: read(&after, CHUNKED_OUT).saturating_sub(chunked_before),
        transfers_received,
        dropped_messages: read(&after, DROPPED).saturating_sub(dropped_before),
    })
}

/// Node `id`'s gauge `name`, if its status page answers.
fn gauge(cluster: &Cluster, id: u64, name: &str) -> Option<u64> {
    let page = cluster.status(id)?;
    Some(page.get(name).copied().unwrap_or(0.0) as u64)
}

/// Writes `keys` distinct keys in `calls` calls through the running nodes.
fn fill(
    plan: &Plan,
    bins: &Binaries,
    dirs: &Dirs,
    cluster: &mut Cluster,
    keys: u64,
    calls: u64,
) -> Result<FillResult> {
    let mut command = Command::new(&bins.testkit);
    command.arg("bench");
    for id in cluster.ids() {
        if let Some(endpoint) = cluster.live_endpoint(id) {
            command.args(["--endpoint", &endpoint]);
        }
    }
    command
        .args(["--op", "fill-keys", "--json"])
        .args(["--keys", &keys.to_string()])
        .args(["--batch-keys", &BATCH_KEYS.to_string()])
        .args(["--max-ops", &calls.to_string()])
        .args(["--clients", &FILL_CLIENTS.to_string()])
        .args(["--duration", &plan.fill_limit.as_secs().to_string()])
        .env("RUST_LOG", "error");
    let text = run_captured(
        command,
        "the fill load",
        plan.fill_limit + Duration::from_secs(60),
        dirs.data.path(),
        &dirs.logs.join("load.log"),
    )?;
    cluster.check_alive()?;
    serde_json::from_str(text.trim()).with_context(|| format!("unreadable fill output: {text:?}"))
}

fn write_json(report: &CatchupReport, json: &Path) -> Result<()> {
    if let Some(dir) = json.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(json, serde_json::to_string_pretty(report)?)
        .with_context(|| format!("cannot write {}", json.display()))
}

/// The figure (through the plotter in `bench/peers`) and the catch-up
/// block of `docs/benchmarks.md`, the rest of that file left as it is.
fn write_outputs(report: &CatchupReport, json: &Path, root: &Path, bins: &Binaries) -> Result<()> {
    let figures = plot(bins, "--catchup", json, root)?;
    let doc = root.join("docs").join("benchmarks.md");
    let existing = std::fs::read_to_string(&doc).unwrap_or_default();
    let md = report::splice(&existing, &report::section(report));
    std::fs::write(&doc, md).with_context(|| format!("cannot write {}", doc.display()))?;
    eprintln!(
        "bench: wrote {}, {} and {}",
        json.display(),
        doc.display(),
        figures.join("catchup.png").display()
    );
    Ok(())
}

#[allow(clippy::print_stdout, reason = "the table is the command's output")]
fn print_summary(report: &CatchupReport) {
    print!("{}", report::summary(report));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_output_parses() {
        let text = r#"{"op":"fill-keys","clients":8,"keys":1000,"keys_written":1000,"calls":4352,"ok":4352,"errors":0,"elapsed_s":3.5,"ops_per_s":1243.4,"latency_ms":{"p50":5.0,"p90":7.0,"p99":9.0,"p999":12.0,"max":20.0},"gaps":[]}"#;
        let fill: FillResult = serde_json::from_str(text).unwrap();
        assert_eq!(fill.keys_written, 1000);
        assert_eq!(fill.ok, 4352);
    }

    #[test]
    fn every_size_fits_under_the_key_cap() {
        for quick in [true, false] {
            let plan = Plan::new(quick);
            assert!(plan.sizes.iter().all(|&n| n <= KEY_CAP));
        }
    }
}
