//! `cargo xtask bench` (suite `drivers`): this repository's OmniPaxos driver
//! against the published file and openraft drivers, in one run on one
//! machine.
//!
//! Every scenario starts fresh clusters (see [`super::cluster`]) and drives
//! them with the same load, `tsoracle-paxos-testkit bench --json`, so the client,
//! the server and the measurement are identical and only the driver differs:
//!
//! 1. `get_ts` and dense `get_seq` throughput and p50/p99 at 1, 8, 64 clients;
//! 2. failover: leader `kill -9` under load, the gap between the last
//!    success before and the first after (the load reports its gaps in
//!    wall-clock time, matched against the kill times); and, this driver
//!    only, a follower and then the leader replaced under load with
//!    `member replace`: the gap and the throughput dip;
//! 3. `persist_high_water` as the server times it, with a 1 ms window so
//!    every `get_ts` persists, next to the machine's limit ([`super::limit`]);
//! 4. restart of a whole cluster to its first timestamp against log length,
//!    with and without snapshots;
//! 5. a soak of the OmniPaxos cluster: RSS and data size every few seconds.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;

use super::cluster::{
    Binaries, Cluster, Kind, Options, interrupt, rss_bytes, run_captured, spawn_captured,
    unix_micros,
};
use super::report::{
    Failover, Idle, LoadPoint, Meta, PersistPoint, Replacement, Report, RestartPoint, Soak,
    SoakSample, percentile,
};
use super::{BenchArgs, workspace_root};
use crate::cmd::{Step, build_release};
use crate::env::BuildEnv;

/// Sizes of one run.
struct Plan {
    quick: bool,
    seconds: u64,
    clients: [u32; 3],
    kills: u32,
    persist_seconds: u64,
    limit_rounds: usize,
    restart_lengths: Vec<u64>,
    /// Longest time spent filling a log up to one length.
    fill_limit: Duration,
    soak_seconds: u64,
    soak_interval: u64,
}

impl Plan {
    fn new(args: &BenchArgs) -> Self {
        let quick = args.quick;
        let mut plan = if quick {
            Self {
                quick,
                seconds: 2,
                clients: [1, 8, 64],
                kills: 4,
                persist_seconds: 3,
                limit_rounds: 300,
                restart_lengths: vec![1_000, 5_000],
                fill_limit: Duration::from_secs(30),
                soak_seconds: 20,
                soak_interval: 2,
            }
        } else {
            Self {
                quick,
                seconds: 10,
                clients: [1, 8, 64],
                kills: 20,
                persist_seconds: 20,
                limit_rounds: 2_000,
                restart_lengths: vec![10_000, 100_000, 1_000_000],
                fill_limit: Duration::from_secs(20 * 60),
                soak_seconds: 600,
                soak_interval: 10,
            }
        };
        if let Some(seconds) = args.seconds {
            plan.seconds = seconds.max(1);
        }
        if let Some(kills) = args.kills {
            plan.kills = kills.max(1);
        }
        if let Some(soak) = args.soak_seconds {
            plan.soak_seconds = soak.max(plan.soak_interval);
        }
        plan
    }

    /// The number of progress steps.
    fn steps(&self) -> u64 {
        let throughput = 3 * 2 * self.clients.len() as u64;
        let failover = 3 + 2 + 2;
        let replace = 3;
        let persist = 3 + 1;
        let restart = 2 * 2 * self.restart_lengths.len() as u64 + 1;
        throughput + failover + replace + persist + restart + 1
    }
}

/// Where the run keeps its files.
/// What every suite on node processes does first: install the signal
/// flag, build the release binaries, make the run's directories, and say
/// where they are.
pub(super) fn prepare(
    build_env: &BuildEnv,
    suite: &str,
    quick: bool,
) -> Result<(PathBuf, Binaries, Dirs)> {
    interrupt::install()?;
    let root = workspace_root();
    let bins = build(build_env, &root)?;
    let dirs = Dirs::new(&root)?;
    eprintln!(
        "==> bench {suite} ({}): data in {}, logs in {}",
        if quick { "quick" } else { "full" },
        dirs.data.path().display(),
        dirs.logs.display()
    );
    Ok((root, bins, dirs))
}

pub(super) struct Dirs {
    /// Fresh data directories, removed at the end.
    pub(super) data: tempfile::TempDir,
    /// Node and load logs, kept for a look after a failure.
    pub(super) logs: PathBuf,
    pub(super) out: PathBuf,
}

impl Dirs {
    /// Fresh directories for a run: data in a temporary directory, logs
    /// under `target/bench/logs`.
    pub(super) fn new(root: &Path) -> Result<Self> {
        let out = root.join("target").join("bench");
        let logs = out.join("logs");
        std::fs::create_dir_all(&logs)
            .with_context(|| format!("cannot create {}", logs.display()))?;
        Ok(Self {
            data: tempfile::Builder::new()
                .prefix("tsoracle-bench-")
                .tempdir()
                .context("cannot create a temporary directory")?,
            logs,
            out,
        })
    }

    pub(super) fn cluster(&self, name: &str) -> PathBuf {
        self.data.path().join(format!("{name}-{}", unix_micros()))
    }
}

/// What `tsoracle-paxos-testkit bench --json` prints.
#[derive(Debug, Deserialize)]
struct LoadResult {
    ok: u64,
    errors: u64,
    ops_per_s: f64,
    latency_ms: Latency,
    #[serde(default)]
    gaps: Vec<Gap>,
    #[serde(default)]
    start_unix_us: u64,
    #[serde(default)]
    series_ms: Option<u64>,
    #[serde(default)]
    series: Vec<u64>,
}

#[derive(Debug, Deserialize)]
struct Latency {
    p50: f64,
    p99: f64,
}

#[derive(Debug, Deserialize)]
struct Gap {
    from_unix_us: u64,
    to_unix_us: u64,
}

/// The load's gap threshold: a kill inside no longer gap cost less than this.
const GAP_MS: u64 = 2;

/// Progress on a terminal as a bar, elsewhere as plain lines.
pub(super) struct Progress {
    pub(super) bar: ProgressBar,
}

impl Progress {
    pub(super) fn new(steps: u64) -> Self {
        let bar = ProgressBar::new(steps);
        bar.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        Self { bar }
    }

    pub(super) fn step(&self, what: &str) {
        if self.bar.is_hidden() {
            eprintln!("bench: {what}");
        }
        self.bar.set_message(what.to_owned());
    }

    pub(super) fn done(&self, line: &str) {
        self.bar.inc(1);
        self.line(line);
    }

    pub(super) fn line(&self, line: &str) {
        if self.bar.is_hidden() {
            eprintln!("  {line}");
        } else {
            self.bar.println(format!("  {line}"));
        }
    }
}

pub(crate) fn run(build_env: &BuildEnv, args: &BenchArgs) -> Result<()> {
    let plan = Plan::new(args);
    let started = Instant::now();
    let (root, bins, dirs) = prepare(build_env, "drivers", plan.quick)?;
    let progress = Progress::new(plan.steps());
    let mut report = Report {
        meta: meta(&plan, args),
        ..Report::default()
    };

    progress.step("the machine's limit: synced 64-byte write + loopback round trip");
    report.persist.limit = super::limit::measure(dirs.data.path(), plan.limit_rounds)?;
    progress.done(&format!(
        "limit: p50 {:.3} ms, p99 {:.3} ms (sync {:.3} ms + round trip {:.3} ms at p50)",
        report.persist.limit.p50_ms,
        report.persist.limit.p99_ms,
        report.persist.limit.sync_p50_ms,
        report.persist.limit.rtt_p50_ms
    ));

    for kind in Kind::ALL {
        throughput(&plan, &bins, &dirs, &progress, kind, &mut report.throughput)?;
    }
    for kind in Kind::REPLICATED {
        let options = Options::default();
        let f = failover(
            &plan,
            &bins,
            &dirs,
            &progress,
            kind,
            kind.name(),
            options,
            Stop::Kill,
        )?;
        report.failover.push(f);
    }
    // Not judged: how much of this driver's failover is its timing. The same
    // run with twice the default periods (the tolerant timing).
    let options = Options {
        paxos_flags: SLOW_TIMING,
        ..Options::default()
    };
    let f = failover(
        &plan,
        &bins,
        &dirs,
        &progress,
        Kind::Paxos,
        SLOW_LABEL,
        options,
        Stop::Kill,
    )?;
    report.failover.push(f);
    for kind in Kind::REPLICATED {
        let f = failover(
            &plan,
            &bins,
            &dirs,
            &progress,
            kind,
            kind.name(),
            Options::default(),
            Stop::Term,
        )?;
        report.planned.push(f);
    }
    for kind in Kind::REPLICATED {
        report.idle.push(idle(&bins, &dirs, &progress, kind)?);
    }
    report.replacements = replacements(&bins, &dirs, &progress)?;
    for kind in Kind::ALL {
        report
            .persist
            .drivers
            .push(persist(&plan, &bins, &dirs, &progress, kind)?);
    }
    for kind in Kind::REPLICATED {
        for snapshots in [true, false] {
            restart(
                &plan,
                &bins,
                &dirs,
                &progress,
                kind,
                snapshots,
                &mut report.restart,
            )?;
        }
    }
    restart_file(&bins, &dirs, &progress, &mut report.restart)?;
    report
        .soak
        .push(soak(&plan, &bins, &dirs, &progress, Kind::Paxos)?);
    progress.bar.finish_and_clear();

    report.meta.elapsed_s = started.elapsed().as_secs_f64();
    report.meta.loadavg_end = loadavg();
    report.judge();
    write_outputs(&report, &dirs.out, &root, &bins)?;
    print_summary(&report);
    Ok(())
}

/// Builds the node and the test kit (this workspace) and the peers (the
/// excluded `bench/peers` workspace, its own target directory) in release
/// mode.
pub(super) fn build(build_env: &BuildEnv, root: &Path) -> Result<Binaries> {
    let release = build_release(
        "build tsoracle-paxos and tsoracle-paxos-testkit (release)",
        build_env,
    )?;
    let manifest = root.join("bench").join("peers").join("Cargo.toml");
    let target = root.join("target").join("bench-peers");
    Step::new("build tsoracle-bench-peer (release, bench/peers)", "cargo")
        .args(["build", "--release", "--locked", "-q", "--manifest-path"])
        .args([manifest.into_os_string()])
        .args([
            std::ffi::OsString::from("--target-dir"),
            target.clone().into_os_string(),
        ])
        .run(build_env)?;
    Ok(Binaries {
        node: release.node,
        testkit: release.testkit,
        peer: target.join("release").join("tsoracle-bench-peer"),
    })
}

fn meta(plan: &Plan, args: &BenchArgs) -> Meta {
    let mut command = String::from("cargo xtask bench");
    if plan.quick {
        command.push_str(" --quick");
    }
    if let Some(s) = args.seconds {
        command.push_str(&format!(" --seconds {s}"));
    }
    if let Some(k) = args.kills {
        command.push_str(&format!(" --kills {k}"));
    }
    if let Some(s) = args.soak_seconds {
        command.push_str(&format!(" --soak-seconds {s}"));
    }
    let machine = Machine::now();
    Meta {
        mode: if plan.quick { "quick" } else { "full" }.to_owned(),
        date: machine.date,
        command,
        cores: machine.cores,
        memory_gib: machine.memory_gib,
        cpu: machine.cpu,
        kernel: machine.kernel,
        seconds_per_point: plan.seconds,
        kills: plan.kills,
        restart_lengths: plan.restart_lengths.clone(),
        soak_seconds: plan.soak_seconds,
        elapsed_s: 0.0,
        loadavg_start: loadavg(),
        loadavg_end: String::new(),
    }
}

/// When and on what a run happened.
pub(super) struct Machine {
    /// UTC, `YYYY-MM-DD HH:MM`.
    pub(super) date: String,
    pub(super) cores: usize,
    pub(super) memory_gib: f64,
    pub(super) cpu: String,
    pub(super) kernel: String,
}

impl Machine {
    pub(super) fn now() -> Self {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let cpu = read("/proc/cpuinfo")
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, name)| name.trim().to_owned())
            .unwrap_or_else(|| "unknown CPU".to_owned());
        let memory_gib = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|l| l.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
        let date = Command::new("date")
            .args(["-u", "+%Y-%m-%d %H:%M"])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        Self {
            date,
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory_gib,
            cpu,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
        }
    }
}

/// The first three fields of `/proc/loadavg`.
pub(super) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Starts a fresh cluster and waits until it answers a timestamp and a
/// dense block (openraft activates its dense record format after the first
/// election).
fn start(
    bins: &Binaries,
    dirs: &Dirs,
    kind: Kind,
    options: Options,
    label: &str,
) -> Result<Cluster> {
    start_serving(bins, dirs, kind, options, label, true)
}

/// Starts a fresh cluster (its data in `<kind>-<label>`) and waits until it
/// answers a timestamp, and a dense block too when `dense`.
pub(super) fn start_serving(
    bins: &Binaries,
    dirs: &Dirs,
    kind: Kind,
    options: Options,
    label: &str,
    dense: bool,
) -> Result<Cluster> {
    let data = dirs.cluster(&format!("{}-{label}", kind.name()));
    let mut cluster = Cluster::start(kind, bins, options, &data, &dirs.logs)?;
    let since = unix_micros();
    wait_serving(
        bins,
        dirs,
        &mut cluster,
        since,
        Duration::from_secs(120),
        dense,
    )
    .with_context(|| format!("the {} cluster did not start serving", kind.name()))?;
    Ok(cluster)
}

/// Polls with single `get_ts` attempts until one succeeds; returns the
/// milliseconds since `since_unix_us`.
fn wait_serving(
    bins: &Binaries,
    dirs: &Dirs,
    cluster: &mut Cluster,
    since_unix_us: u64,
    limit: Duration,
    require_seq: bool,
) -> Result<f64> {
    let mut command = Command::new(&bins.peer);
    command.arg("wait-serving");
    for endpoint in cluster.endpoints() {
        command.args(["--endpoint", &endpoint]);
    }
    if require_seq {
        command.args(["--require-seq", "bench-ready"]);
    }
    command
        .args(["--since-unix-us", &since_unix_us.to_string()])
        .args(["--timeout-s", &limit.as_secs().to_string()])
        .env("RUST_LOG", "error");
    let probe = spawn_captured(
        &mut command,
        "the serving probe",
        dirs.data.path(),
        &dirs.logs.join("probe.log"),
    )?;
    let text = probe.finish(limit + Duration::from_secs(10));
    cluster.check_alive()?;
    #[derive(Deserialize)]
    struct Probe {
        serving_ms: f64,
    }
    let probe: Probe = serde_json::from_str(text?.trim()).context("unreadable probe output")?;
    Ok(probe.serving_ms)
}

/// The load command for `cluster`.
fn load_command(
    bins: &Binaries,
    cluster: &Cluster,
    op: &str,
    clients: u32,
    seconds: u64,
) -> Command {
    let mut command = Command::new(&bins.testkit);
    command.arg("bench");
    for endpoint in cluster.endpoints() {
        command.args(["--endpoint", &endpoint]);
    }
    command
        .args(["--clients", &clients.to_string()])
        .args(["--duration", &seconds.to_string()])
        .args(["--op", op, "--json"])
        .env("RUST_LOG", "error");
    command
}

fn parse_load(text: &str) -> Result<LoadResult> {
    serde_json::from_str(text.trim()).with_context(|| format!("unreadable load output: {text:?}"))
}

/// Runs a load to completion and returns its result.
fn load(dirs: &Dirs, cluster: &mut Cluster, command: Command, seconds: u64) -> Result<LoadResult> {
    let text = run_captured(
        command,
        "the client load",
        Duration::from_secs(seconds + 90),
        dirs.data.path(),
        &dirs.logs.join("load.log"),
    )?;
    cluster.check_alive()?;
    parse_load(&text)
}

fn throughput(
    plan: &Plan,
    bins: &Binaries,
    dirs: &Dirs,
    progress: &Progress,
    kind: Kind,
    points: &mut Vec<LoadPoint>,
) -> Result<()> {
    progress.step(&format!("{}: starting the cluster", kind.name()));
    let mut cluster = start(bins, dirs, kind, Options::default(), "throughput")?;
    for op in ["ts", "seq"] {
        // A short unmeasured run: connections, the first window, caches.
        let warm = load_command(bins, &cluster, op, 8, 1);
        load(dirs, &mut cluster, warm, 1)?;
        for clients in plan.clients {
            progress.step(&format!("{}: {op} with {clients} clients", kind.name()));
            let command = load_command(bins, &cluster, op, clients, plan.seconds);
            let result = load(dirs, &mut cluster, command, plan.seconds)?;
            progress.done(&format!(
                "{:<8} {op:<3} {clients:>2} clients: {:>8.0} ops/s  p50 {:>7.2} ms  p99 {:>7.2} ms  {} errors",
                kind.name(),
                result.ops_per_s,
                result.latency_ms.p50,
                result.latency_ms.p99,
                result.errors
            ));
            points.push(LoadPoint {
                driver: kind.name().to_owned(),
                op: op.to_owned(),
                clients,
                ops_per_s: result.ops_per_s,
                p50_ms: result.latency_ms.p50,
                p99_ms: result.latency_ms.p99,
                errors: result.errors,
            });
        }
    }
    cluster.stop();
    Ok(())
}

/// Waits until every node runs, answers its status page and one leads.
pub(super) fn settle(cluster: &mut Cluster, limit: Duration) -> Result<()> {
    let end = Instant::now() + limit;
    while !cluster.settled() {
        cluster.check_alive()?;
        if Instant::now() > end {
            bail!(
                "the {} cluster did not settle within {limit:?}",
                cluster.kind().name()
            );
        }
        interrupt::sleep(Duration::from_millis(50))?;
    }
    Ok(())
}

/// Waits (at most `limit`) until the nodes' log indices are within `slack`
/// of each other, so a restarted node has caught up before the next kill.
fn caught_up(cluster: &Cluster, slack: u64, limit: Duration) -> Result<()> {
    let end = Instant::now() + limit;
    loop {
        let indices = cluster.indices();
        let (lo, hi) = (
            indices.iter().copied().min().unwrap_or(0),
            indices.iter().copied().max().unwrap_or(0),
        );
        if indices.len() == cluster.pids().len() && hi - lo <= slack {
            return Ok(());
        }
        if Instant::now() > end {
            // Not fatal: the next kill may hit a lagging cluster, as it may
            // in production; the sample is still a real failover.
            return Ok(());
        }
        interrupt::sleep(Duration::from_millis(50))?;
    }
}

/// The unavailability around a leader stop that took from `from` (the
/// signal) to `to` (the process reaped), Unix µs: the longest gap between
/// completions that overlaps that stretch or starts within 100 ms after it
/// (a response already on the wire may land just after). Without such a
/// gap the outage was shorter than the load's gap threshold. A kill has
/// `from == to`.
fn outage_between(gaps: &[Gap], from: u64, to: u64) -> f64 {
    let window_end = to + 100_000;
    gaps.iter()
        .filter(|g| g.to_unix_us >= from && g.from_unix_us <= window_end)
        .map(|g| (g.to_unix_us - g.from_unix_us) as f64 / 1000.0)
        .fold(GAP_MS as f64, f64::max)
}

/// The slower paxos timing of the extra rows, twice `Timing::lan()`'s
/// periods: tick 20 ms, election after 20 ticks (400 ms), lease 300 ms,
/// renewal every 60 ms (the default before the benchmarks showed its
/// failover above 1.5 s).
const SLOW_TIMING: &[&str] = &[
    "--tick-ms",
    "20",
    "--election-ticks",
    "20",
    "--lease-ms",
    "300",
    "--renew-every-ms",
    "60",
];
const SLOW_LABEL: &str = "paxos, 400 ms election";

/// How a sample stops the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// `kill -9`, restarted 2.5 s later: a failure.
    Kill,
    /// SIGTERM, restarted at once: a planned (rolling) restart.
    Term,
}

/// Leader stops under a `get_ts` load of 8 clients: `plan.kills` of them
/// for [`Stop::Kill`], at least 20 for [`Stop::Term`].
#[allow(clippy::too_many_arguments)]
fn failover(
    plan: &Plan,
    bins: &Binaries,
    dirs: &Dirs,
    progress: &Progress,
    kind: Kind,
    label: &str,
    options: Options,
    stop: Stop,
) -> Result<Failover> {
    let (what, count) = match stop {
        Stop::Kill => ("failover", plan.kills),
        Stop::Term => ("planned restart", plan.kills.max(20)),
    };
    progress.step(&format!("{label}: {what}, {count} leader stops"));
    let mut cluster = start(bins, dirs, kind, options, "failover")?;
    // About 6 s per kill: a second of steady load, the outage, the restart
    // and catch-up; the load runs long enough for all of them.
    let per_kill = match stop {
        Stop::Kill => 6,
        Stop::Term => 4,
    };
    let seconds = u64::from(count) * per_kill + 10;
    let mut command = load_command(bins, &cluster, "ts", 8, seconds);
    command.args(["--gap-ms", &GAP_MS.to_string()]);
    let load = spawn_captured(
        &mut command,
        "the failover load",
        dirs.data.path(),
        &dirs.logs.join("load.log"),
    )?;
    let load_started = Instant::now();
    // (the stop began, the old leader was gone), Unix µs.
    let mut kills: Vec<(u64, u64)> = Vec::new();
    interrupt::sleep(Duration::from_secs(2))?;
    while kills.len() < count as usize
        && load_started.elapsed() + Duration::from_secs(per_kill) < Duration::from_secs(seconds)
    {
        settle(&mut cluster, Duration::from_secs(20))?;
        caught_up(&cluster, 64, Duration::from_secs(5))?;
        interrupt::sleep(Duration::from_secs(1))?;
        let Some(leader) = cluster.leader() else {
            continue;
        };
        match stop {
            Stop::Kill => {
                cluster.kill(leader);
                // Taken once the process is reaped: any completion after
                // this was served by a survivor. (Timed before the kill,
                // responses the old leader sent in its last milliseconds
                // would split the outage.)
                let dead = unix_micros();
                kills.push((dead, dead));
            }
            Stop::Term => {
                // The hand-over happens between the signal and the exit.
                let sent = unix_micros();
                cluster.terminate(leader);
                kills.push((sent, unix_micros()));
            }
        }
        progress.step(&format!(
            "{label}: {what}, stopped the leader (node {leader}), {}/{count}",
            kills.len(),
        ));
        if stop == Stop::Kill {
            // Time for the outage itself before the node comes back, so the
            // measured gap is the survivors' election, not a quick restart.
            interrupt::sleep(Duration::from_millis(2500))?;
        }
        cluster.restart(leader)?;
    }
    let text = load.finish(Duration::from_secs(seconds + 90))?;
    let result = parse_load(&text)?;
    cluster.stop();
    let mut samples: Vec<f64> = kills
        .iter()
        .map(|&(from, to)| outage_between(&result.gaps, from, to))
        .collect();
    let reported = samples.clone();
    let f = Failover {
        driver: label.to_owned(),
        p50_ms: percentile(&mut samples, 0.5),
        p99_ms: percentile(&mut samples, 0.99),
        max_ms: samples.iter().copied().fold(0.0, f64::max),
        samples_ms: reported,
    };
    progress.done(&format!(
        "{label:<8} {what} over {} stops: p50 {:.0} ms  p99 {:.0} ms  max {:.0} ms ({} requests ok)",
        f.samples_ms.len(),
        f.p50_ms,
        f.p99_ms,
        f.max_ms,
        result.ok
    ));
    Ok(f)
}

/// How long the idle cluster is watched.
const IDLE_SECONDS: u64 = 10;

/// A fresh cluster of `kind`, settled and then left without any client:
/// what each node writes to storage per second over [`IDLE_SECONDS`].
fn idle(bins: &Binaries, dirs: &Dirs, progress: &Progress, kind: Kind) -> Result<Idle> {
    progress.step(&format!(
        "{}: an idle cluster, {IDLE_SECONDS} s",
        kind.name()
    ));
    let mut cluster = start(bins, dirs, kind, Options::default(), "idle")?;
    settle(&mut cluster, Duration::from_secs(20))?;
    // Past start-up writes (registrations, the first high-water).
    interrupt::sleep(Duration::from_secs(3))?;
    let pids = cluster.pids();
    let tracers: Vec<Option<std::process::Child>> = pids
        .iter()
        .map(|&pid| {
            Command::new("strace")
                .args(["-c", "-f", "-q", "-e", "trace=fsync,fdatasync", "-p"])
                .arg(pid.to_string())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .ok()
        })
        .collect();
    // Let strace attach before the window opens.
    interrupt::sleep(Duration::from_millis(500))?;
    let before: Vec<u64> = pids.iter().map(|&pid| write_bytes(pid)).collect();
    let started = Instant::now();
    interrupt::sleep(Duration::from_secs(IDLE_SECONDS))?;
    let after: Vec<u64> = pids.iter().map(|&pid| write_bytes(pid)).collect();
    let seconds = started.elapsed().as_secs_f64();
    let syncs_per_s = tracers
        .into_iter()
        .map(|tracer| {
            let tracer = tracer?;
            let _ = Command::new("kill")
                .args(["-INT", &tracer.id().to_string()])
                .status();
            let output = tracer.wait_with_output().ok()?;
            strace_calls(&String::from_utf8_lossy(&output.stderr)).map(|n| n as f64 / seconds)
        })
        .collect();
    cluster.stop();
    let bytes_per_s = before
        .iter()
        .zip(&after)
        .map(|(b, a)| a.saturating_sub(*b) as f64 / seconds)
        .collect();
    let idle = Idle {
        driver: kind.name().to_owned(),
        seconds,
        syncs_per_s,
        bytes_per_s,
    };
    progress.done(&format!(
        "{:<8} idle: busiest node {} syncs/s, {:.0} B/s",
        idle.driver,
        idle.max_syncs_per_s()
            .map_or_else(|| "n/a".to_owned(), |s| format!("{s:.1}")),
        idle.max_bytes_per_s()
    ));
    Ok(idle)
}

/// `write_bytes` of `/proc/PID/io`: bytes the process sent to storage.
fn write_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|line| line.strip_prefix("write_bytes: "))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The `total` calls of a `strace -c` summary. strace prints no table at
/// all when none of the traced calls happened (0); `None` when it could not
/// attach (its own `strace:` error lines).
fn strace_calls(summary: &str) -> Option<u64> {
    if summary.lines().any(|line| line.starts_with("strace:")) {
        return None;
    }
    let total = summary
        .lines()
        .find(|line| line.trim_end().ends_with("total"))
        .and_then(|line| line.split_whitespace().nth(3))
        .and_then(|calls| calls.parse().ok());
    Some(total.unwrap_or(0))
}

/// The load's buckets for the replacement scenario.
const SERIES_MS: u64 = 250;

/// A follower, then the leader, of a fresh paxos cluster replaced under a
/// `get_ts` load of 8 clients (`member replace` with a new node in join
/// mode); the gap and the throughput dip of each.
fn replacements(bins: &Binaries, dirs: &Dirs, progress: &Progress) -> Result<Vec<Replacement>> {
    progress.step("paxos: replacing a follower, then the leader, under load");
    let mut cluster = start(bins, dirs, Kind::Paxos, Options::default(), "replace")?;
    let seconds = 30;
    let mut command = load_command(bins, &cluster, "ts", 8, seconds);
    command
        .args(["--gap-ms", &GAP_MS.to_string()])
        .args(["--series-ms", &SERIES_MS.to_string()]);
    let load = spawn_captured(
        &mut command,
        "the replacement load",
        dirs.data.path(),
        &dirs.logs.join("load.log"),
    )?;
    let mut done: Vec<(&str, u64, u64)> = Vec::new();
    interrupt::sleep(Duration::from_secs(5))?;
    for target in ["follower", "leader"] {
        settle(&mut cluster, Duration::from_secs(20))?;
        caught_up(&cluster, 64, Duration::from_secs(5))?;
        let leader = cluster.leader().context("no leader to replace around")?;
        let old = if target == "leader" {
            leader
        } else {
            cluster
                .members()
                .into_iter()
                .find(|&id| id != leader)
                .context("no follower to replace")?
        };
        let began = unix_micros();
        let new = cluster.replace(old, &bins.node)?;
        let ended = unix_micros();
        progress.step(&format!(
            "paxos: replaced the {target} (node {old}) by node {new} in {:.1} s",
            (ended - began) as f64 / 1e6
        ));
        done.push((target, began, ended));
        interrupt::sleep(Duration::from_secs(5))?;
    }
    let text = load.finish(Duration::from_secs(seconds + 90))?;
    let result = parse_load(&text)?;
    cluster.stop();
    let replacements: Vec<Replacement> = done
        .into_iter()
        .map(|(target, began, ended)| dip(target, &result, began, ended))
        .collect();
    for r in &replacements {
        progress.done(&format!("paxos    replace {:<8}: {r}", r.target));
    }
    Ok(replacements)
}

/// What the replacement from `began` to `ended` (Unix µs) cost the load:
/// the longest gap from its start to a second after it, and the worst
/// sliding second against the 3 s before it.
fn dip(target: &str, load: &LoadResult, began: u64, ended: u64) -> Replacement {
    let bucket_us = load.series_ms.unwrap_or(SERIES_MS).max(1) * 1000;
    let per_s = 1e6 / bucket_us as f64;
    let index = |unix: u64| {
        usize::try_from(unix.saturating_sub(load.start_unix_us) / bucket_us).unwrap_or(0)
    };
    let window_end = ended + 1_000_000;
    let (from, to) = (index(began), index(window_end).min(load.series.len()));
    let before = index(began.saturating_sub(3_000_000));
    let baseline_buckets = load.series.get(before..from).unwrap_or_default();
    let baseline = if baseline_buckets.is_empty() {
        0.0
    } else {
        baseline_buckets.iter().sum::<u64>() as f64 / baseline_buckets.len() as f64 * per_s
    };
    // A sliding second: the buckets that make one.
    let width = usize::try_from(1_000_000 / bucket_us).unwrap_or(1).max(1);
    let during = load.series.get(from..to).unwrap_or_default();
    let worst = during
        .windows(width.min(during.len().max(1)))
        .map(|w| w.iter().sum::<u64>() as f64 / w.len() as f64 * per_s)
        .fold(f64::INFINITY, f64::min);
    let worst = if worst.is_finite() { worst } else { 0.0 };
    let below = during
        .iter()
        .filter(|&&n| (n as f64 * per_s) < 0.8 * baseline)
        .count() as f64
        * bucket_us as f64
        / 1e6;
    let gap_ms = load
        .gaps
        .iter()
        .filter(|g| g.to_unix_us >= began && g.from_unix_us <= window_end)
        .map(|g| (g.to_unix_us - g.from_unix_us) as f64 / 1000.0)
        .fold(GAP_MS as f64, f64::max);
    Replacement {
        target: target.to_owned(),
        took_s: (ended - began) as f64 / 1e6,
        gap_ms,
        baseline_ops_per_s: baseline,
        worst_ops_per_s: worst,
        dip_pct: if baseline > 0.0 {
            (1.0 - worst / baseline).max(0.0) * 100.0
        } else {
            0.0
        },
        below_80pct_s: below,
    }
}

fn persist(
    plan: &Plan,
    bins: &Binaries,
    dirs: &Dirs,
    progress: &Progress,
    kind: Kind,
) -> Result<PersistPoint> {
    progress.step(&format!(
        "{}: persist_high_water with a 1 ms window",
        kind.name()
    ));
    let options = Options {
        window_ahead_ms: Some(1),
        ..Options::default()
    };
    let mut cluster = start(bins, dirs, kind, options, "persist")?;
    let command = load_command(bins, &cluster, "ts", 1, plan.persist_seconds);
    let result = load(dirs, &mut cluster, command, plan.persist_seconds)?;
    let page = cluster
        .leader()
        .and_then(|leader| cluster.status(leader))
        .with_context(|| format!("no {} leader's metrics after the persist load", kind.name()))?;
    cluster.stop();
    let get = |key: &str| page.get(key).copied().unwrap_or(0.0);
    let name = "tsoracle_window_extension_latency";
    let point = PersistPoint {
        driver: kind.name().to_owned(),
        p50_ms: get(&format!("{name}{{quantile=\"0.5\"}}")) * 1e3,
        p99_ms: get(&format!("{name}{{quantile=\"0.99\"}}")) * 1e3,
        count: get(&format!("{name}_count")) as u64,
        client_p50_ms: result.latency_ms.p50,
    };
    progress.done(&format!(
        "{:<8} persist_high_water: p50 {:.3} ms  p99 {:.3} ms over {} persists (client get_ts p50 {:.3} ms)",
        kind.name(),
        point.p50_ms,
        point.p99_ms,
        point.count,
        point.client_p50_ms
    ));
    Ok(point)
}

/// Kills every node with `kill -9` (optionally changing the paxos nodes'
/// flags), starts them again, and returns the log length before the kill and
/// the milliseconds from the start to the first `get_ts` served.
fn timed_restart(
    bins: &Binaries,
    dirs: &Dirs,
    cluster: &mut Cluster,
    paxos_flags: Option<&'static [&'static str]>,
) -> Result<(u64, f64)> {
    let entries = cluster.indices().into_iter().max().unwrap_or(0);
    cluster.kill_all();
    if let Some(flags) = paxos_flags {
        cluster.set_paxos_flags(flags);
    }
    let since = unix_micros();
    cluster.restart_all()?;
    let serving_ms = wait_serving(bins, dirs, cluster, since, Duration::from_secs(300), false)?;
    Ok((entries, serving_ms))
}

fn restart(
    plan: &Plan,
    bins: &Binaries,
    dirs: &Dirs,
    progress: &Progress,
    kind: Kind,
    snapshots: bool,
    points: &mut Vec<RestartPoint>,
) -> Result<()> {
    let mode = if snapshots {
        "with snapshots"
    } else {
        "without snapshots"
    };
    progress.step(&format!("{}: restart {mode}, starting", kind.name()));
    let options = Options {
        snapshot_every: Some(if snapshots { 4096 } else { 0 }),
        ..Options::default()
    };
    let mut cluster = start(bins, dirs, kind, options, "restart")?;
    for &length in &plan.restart_lengths {
        // Fill the log with dense entries (one per get_seq) up to `length`.
        let fill_started = Instant::now();
        loop {
            let have = cluster.indices().into_iter().max().unwrap_or(0);
            if have >= length {
                break;
            }
            if fill_started.elapsed() > plan.fill_limit {
                progress.line(&format!(
                    "{}: filling to {length} entries took over {:?}; restarting at {have}",
                    kind.name(),
                    plan.fill_limit
                ));
                break;
            }
            progress.step(&format!(
                "{}: restart {mode}, filling the log {have}/{length}",
                kind.name()
            ));
            let missing = length - have;
            let mut command = load_command(bins, &cluster, "seq", 64, 120);
            command.args(["--max-ops", &missing.to_string()]);
            load(dirs, &mut cluster, command, 120)?;
        }
        settle(&mut cluster, Duration::from_secs(30))?;
        // Lease renewals keep adding entries, so "equal" is within a few.
        caught_up(&cluster, 64, Duration::from_secs(5))?;
        let (entries, serving_ms) = timed_restart(bins, dirs, &mut cluster, None)?;
        progress.done(&format!(
            "{:<8} restart {mode} after {entries} entries: serving after {serving_ms:.0} ms",
            kind.name()
        ));
        points.push(RestartPoint {
            driver: kind.name().to_owned(),
            snapshots,
            entries,
            serving_ms,
        });
    }
    if kind == Kind::Paxos && snapshots {
        // Not judged: the same data restarted with the slower timing of the
        // extra failover row, to separate election time from recovery time.
        let (entries, serving_ms) = timed_restart(bins, dirs, &mut cluster, Some(SLOW_TIMING))?;
        progress.line(&format!(
            "{SLOW_LABEL}: restart with snapshots after {entries} entries: serving after {serving_ms:.0} ms"
        ));
        points.push(RestartPoint {
            driver: SLOW_LABEL.to_owned(),
            snapshots,
            entries,
            serving_ms,
        });
    }
    cluster.stop();
    Ok(())
}

/// The file driver has no log: one restart, as the baseline.
fn restart_file(
    bins: &Binaries,
    dirs: &Dirs,
    progress: &Progress,
    points: &mut Vec<RestartPoint>,
) -> Result<()> {
    progress.step("file: restart");
    let mut cluster = start(bins, dirs, Kind::File, Options::default(), "restart")?;
    cluster.kill_all();
    let since = unix_micros();
    cluster.restart_all()?;
    let serving_ms = wait_serving(
        bins,
        dirs,
        &mut cluster,
        since,
        Duration::from_secs(60),
        false,
    )?;
    cluster.stop();
    progress.done(&format!(
        "file     restart (no log): serving after {serving_ms:.0} ms"
    ));
    points.push(RestartPoint {
        driver: "file".to_owned(),
        snapshots: false,
        entries: 0,
        serving_ms,
    });
    Ok(())
}

fn soak(
    plan: &Plan,
    bins: &Binaries,
    dirs: &Dirs,
    progress: &Progress,
    kind: Kind,
) -> Result<Soak> {
    progress.step(&format!("{}: soak, {} s", kind.name(), plan.soak_seconds));
    let mut cluster = start(bins, dirs, kind, Options::default(), "soak")?;
    let mut command = load_command(bins, &cluster, "seq", 8, plan.soak_seconds);
    let load = spawn_captured(
        &mut command,
        "the soak load",
        dirs.data.path(),
        &dirs.logs.join("load.log"),
    )?;
    let started = Instant::now();
    let mut samples = Vec::new();
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    let mut next = Duration::ZERO;
    while started.elapsed() < Duration::from_secs(plan.soak_seconds) {
        if started.elapsed() >= next {
            let rss: Vec<u64> = cluster.pids().into_iter().filter_map(rss_bytes).collect();
            let sample = SoakSample {
                t_s: started.elapsed().as_secs_f64(),
                rss_mib: mib(rss.iter().sum()),
                rss_max_node_mib: mib(rss.iter().copied().max().unwrap_or(0)),
                data_mib: mib(cluster.data_bytes()),
            };
            progress.step(&format!(
                "{}: soak {:.0}/{} s, RSS {:.0} MiB, data {:.1} MiB",
                kind.name(),
                sample.t_s,
                plan.soak_seconds,
                sample.rss_mib,
                sample.data_mib
            ));
            samples.push(sample);
            next += Duration::from_secs(plan.soak_interval);
        }
        cluster.check_alive()?;
        interrupt::sleep(Duration::from_millis(100))?;
    }
    let text = load.finish(Duration::from_secs(90))?;
    let result = parse_load(&text)?;
    cluster.stop();
    let rss: Vec<f64> = samples.iter().map(|s| s.rss_mib).collect();
    let data: Vec<f64> = samples.iter().map(|s| s.data_mib).collect();
    let soak = Soak {
        driver: kind.name().to_owned(),
        seconds: plan.soak_seconds,
        interval_s: plan.soak_interval,
        ops: result.ok,
        rss_bounded: levelled_off(&rss),
        data_bounded: levelled_off(&data),
        samples,
    };
    progress.done(&format!(
        "{:<8} soak: {} operations; RSS bounded: {}; data bounded: {}",
        kind.name(),
        soak.ops,
        soak.rss_bounded,
        soak.data_bounded
    ));
    Ok(soak)
}

/// Whether a series has stopped growing: the peak of its last third is at
/// most the peak of its middle third plus 10% and 8 MiB (compaction and
/// allocator noise).
fn levelled_off(series: &[f64]) -> bool {
    let third = series.len() / 3;
    if third == 0 {
        return true;
    }
    let peak = |s: &[f64]| s.iter().copied().fold(0.0, f64::max);
    let middle = peak(&series[third..2 * third]);
    let last = peak(&series[2 * third..]);
    last <= middle * 1.1 + 8.0
}

/// Draws the figures of the JSON report `json` (the plotter's input flag
/// `input`) into `docs/benchmarks`, which it returns.
pub(super) fn plot(bins: &Binaries, input: &str, json: &Path, root: &Path) -> Result<PathBuf> {
    let figures = root.join("docs").join("benchmarks");
    let status = Command::new(&bins.peer)
        .arg("plot")
        .arg(input)
        .arg(json)
        .arg("--out")
        .arg(&figures)
        .status()
        .context("cannot start the plotter")?;
    if !status.success() {
        bail!(
            "drawing the figures of {} failed ({status})",
            json.display()
        );
    }
    Ok(figures)
}

fn write_outputs(report: &Report, out: &Path, root: &Path, bins: &Binaries) -> Result<()> {
    std::fs::create_dir_all(out)?;
    let json = out.join("report.json");
    std::fs::write(&json, serde_json::to_string_pretty(report)?)
        .with_context(|| format!("cannot write {}", json.display()))?;
    let figures = plot(bins, "--report", &json, root)?;
    let doc = root.join("docs").join("benchmarks.md");
    let existing = std::fs::read_to_string(&doc).unwrap_or_default();
    let analysis = super::report::carried_analysis(&existing);
    // The catch-up suite's section is not measured here: kept as it is.
    let catchup = super::report::carried_catchup(&existing);
    let md = super::report::markdown(report, analysis.as_deref(), catchup.as_deref());
    std::fs::write(&doc, md).with_context(|| format!("cannot write {}", doc.display()))?;
    eprintln!(
        "bench: wrote {}, {} and {}",
        json.display(),
        doc.display(),
        figures.display()
    );
    Ok(())
}

#[allow(clippy::print_stdout, reason = "the ratios are the command's output")]
fn print_summary(report: &Report) {
    print!("{}", super::report::summary(report));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_that_levels_off_is_bounded() {
        assert!(levelled_off(&[10.0, 50.0, 60.0, 62.0, 61.0, 63.0]));
        assert!(!levelled_off(&[10.0, 20.0, 30.0, 40.0, 80.0, 160.0]));
        assert!(levelled_off(&[1.0]));
    }

    #[test]
    fn strace_summaries_give_the_total_calls() {
        let summary = "% time     seconds  usecs/call     calls    errors syscall\n\
------ ----------- ----------- --------- --------- ----------------\n\
100.00    0.000123           4        30           fdatasync\n\
------ ----------- ----------- --------- --------- ----------------\n\
100.00    0.000123           4        30           total\n";
        assert_eq!(strace_calls(summary), Some(30));
        assert_eq!(
            strace_calls("strace: attach: ptrace(PTRACE_SEIZE, 1): Operation not permitted"),
            None
        );
    }

    #[test]
    fn a_planned_stop_costs_the_gap_that_overlaps_it() {
        let gaps = [
            Gap {
                from_unix_us: 1_000,
                to_unix_us: 2_000,
            },
            Gap {
                from_unix_us: 10_000,
                to_unix_us: 60_000,
            },
        ];
        // The signal at 5 ms, the process gone at 20 ms: the 50 ms gap.
        assert_eq!(outage_between(&gaps, 5_000, 20_000), 50.0);
    }

    #[test]
    fn the_outage_is_the_long_gap_at_the_kill() {
        let gap = |from, to| Gap {
            from_unix_us: from,
            to_unix_us: to,
        };
        // A short gap just before the death, the outage right after it.
        let gaps = [gap(990_000, 1_002_500), gap(1_003_000, 1_900_000)];
        assert_eq!(outage_between(&gaps, 1_001_000, 1_001_000), 897.0);
        // A gap far after the kill is another event.
        let late = [gap(1_500_000, 2_000_000)];
        assert_eq!(outage_between(&late, 1_000_000, 1_000_000), GAP_MS as f64);
    }

    #[test]
    fn a_replacement_costs_its_gap_and_its_worst_second() {
        // 250 ms buckets of 100 completions (400/s), a dead half second at
        // 5.0-5.5 s, the replacement from 4.5 s to 6.0 s.
        let mut series = vec![100u64; 40];
        series[20] = 0;
        series[21] = 0;
        let load = LoadResult {
            ok: 0,
            errors: 0,
            ops_per_s: 0.0,
            latency_ms: Latency { p50: 0.0, p99: 0.0 },
            gaps: vec![Gap {
                from_unix_us: 10_000_000 + 4_990_000,
                to_unix_us: 10_000_000 + 5_510_000,
            }],
            start_unix_us: 10_000_000,
            series_ms: Some(250),
            series,
        };
        let r = dip("leader", &load, 14_500_000, 16_000_000);
        assert_eq!(r.took_s, 1.5);
        assert_eq!(r.gap_ms, 520.0);
        assert_eq!(r.baseline_ops_per_s, 400.0);
        // The worst second holds the two empty buckets: 200/s, a 50 % dip.
        assert_eq!(r.worst_ops_per_s, 200.0);
        assert_eq!(r.dip_pct, 50.0);
        assert_eq!(r.below_80pct_s, 0.5);
    }

    #[test]
    fn load_output_parses() {
        let text = r#"{"clients":8,"ok":10,"errors":0,"elapsed_s":1.0,"ops_per_s":10.0,"start_unix_us":5,"latency_ms":{"p50":1.0,"p90":2.0,"p99":3.0,"p999":4.0,"max":5.0},"gaps":[{"from_unix_us":7,"to_unix_us":9}]}"#;
        let load = parse_load(text).unwrap();
        assert_eq!(load.ok, 10);
        assert_eq!(load.gaps.len(), 1);
        assert_eq!(load.latency_ms.p99, 3.0);
    }
}
