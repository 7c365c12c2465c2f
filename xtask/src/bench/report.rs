//! The drivers benchmark's report: the JSON written to
//! `target/bench/report.json`, the targets judged from it, and
//! `docs/benchmarks.md` rendered from it.
//!
//! The Markdown is regenerated on every run, except two marked blocks
//! carried over from the existing file: the hand-written analysis
//! (`analysis:begin` to `analysis:end`) and the catch-up section that the
//! `catchup` suite writes (`catchup:begin` to `catchup:end`).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// Everything one run measured.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Report {
    pub(crate) meta: Meta,
    pub(crate) throughput: Vec<LoadPoint>,
    pub(crate) failover: Vec<Failover>,
    /// Members replaced under load (this driver only).
    #[serde(default)]
    pub(crate) replacements: Vec<Replacement>,
    /// Planned restarts of the leader (SIGTERM, then start again).
    #[serde(default)]
    pub(crate) planned: Vec<Failover>,
    /// Disk traffic of an idle cluster.
    #[serde(default)]
    pub(crate) idle: Vec<Idle>,
    pub(crate) persist: Persist,
    pub(crate) restart: Vec<RestartPoint>,
    pub(crate) soak: Vec<Soak>,
    pub(crate) targets: Vec<Target>,
}

/// How, when and where the run happened.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Meta {
    /// `quick` or `full`.
    pub(crate) mode: String,
    /// UTC, `YYYY-MM-DD HH:MM`.
    pub(crate) date: String,
    pub(crate) command: String,
    pub(crate) cores: usize,
    pub(crate) memory_gib: f64,
    pub(crate) cpu: String,
    pub(crate) kernel: String,
    pub(crate) seconds_per_point: u64,
    pub(crate) kills: u32,
    pub(crate) restart_lengths: Vec<u64>,
    pub(crate) soak_seconds: u64,
    pub(crate) elapsed_s: f64,
    /// `/proc/loadavg` before and after the run: other work on the machine
    /// during the run shows here.
    pub(crate) loadavg_start: String,
    pub(crate) loadavg_end: String,
}

/// One load point: a driver, an operation, a number of clients.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct LoadPoint {
    pub(crate) driver: String,
    /// `ts` or `seq`.
    pub(crate) op: String,
    pub(crate) clients: u32,
    pub(crate) ops_per_s: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) errors: u64,
}

/// Leader kills of one driver.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Failover {
    pub(crate) driver: String,
    /// Last success before each kill to the first success after it.
    pub(crate) samples_ms: Vec<f64>,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
}

/// What an idle cluster (no client) writes, per node, over a few seconds.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct Idle {
    pub(crate) driver: String,
    pub(crate) seconds: f64,
    /// `fsync` + `fdatasync` calls per second of each node (`strace -c`);
    /// `None` where `strace` could not attach.
    pub(crate) syncs_per_s: Vec<Option<f64>>,
    /// Bytes per second each node sent to storage (`/proc/PID/io`
    /// `write_bytes`).
    pub(crate) bytes_per_s: Vec<f64>,
}

impl Idle {
    /// The busiest node's syncs per second, if every node was counted.
    pub(crate) fn max_syncs_per_s(&self) -> Option<f64> {
        self.syncs_per_s
            .iter()
            .try_fold(0.0_f64, |max, s| s.map(|s| max.max(s)))
    }

    /// The busiest node's bytes per second.
    pub(crate) fn max_bytes_per_s(&self) -> f64 {
        self.bytes_per_s.iter().copied().fold(0.0, f64::max)
    }
}

/// One member replaced under load with `member replace`: the gap and the
/// throughput dip it cost.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct Replacement {
    /// `follower` or `leader`: which member was replaced.
    pub(crate) target: String,
    /// From starting the new node to `member replace` returning.
    pub(crate) took_s: f64,
    /// The longest stretch without a completed request from the start of
    /// the replacement to one second after it returned.
    pub(crate) gap_ms: f64,
    /// Requests per second in the 3 s before the replacement.
    pub(crate) baseline_ops_per_s: f64,
    /// The lowest rate over a sliding second during the replacement.
    pub(crate) worst_ops_per_s: f64,
    /// `1 - worst / baseline`, in percent.
    pub(crate) dip_pct: f64,
    /// Seconds (in 250 ms buckets) below 80 % of the baseline.
    pub(crate) below_80pct_s: f64,
}

impl std::fmt::Display for Replacement {
    /// The figures of one replacement, as the progress and the summary
    /// print them after its target.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.1} s, gap {:.0} ms, dip {:.0} % ({:.0} -> {:.0} ops/s), {:.2} s below 80 %",
            self.took_s,
            self.gap_ms,
            self.dip_pct,
            self.baseline_ops_per_s,
            self.worst_ops_per_s,
            self.below_80pct_s
        )
    }
}

/// `persist_high_water` commit latency next to the machine's limit.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Persist {
    pub(crate) limit: Limit,
    pub(crate) drivers: Vec<PersistPoint>,
}

/// One synced 64-byte write plus one loopback round trip.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Limit {
    pub(crate) rounds: usize,
    pub(crate) sync_p50_ms: f64,
    pub(crate) sync_p99_ms: f64,
    pub(crate) rtt_p50_ms: f64,
    pub(crate) rtt_p99_ms: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
}

/// The server-side time of `persist_high_water` on one driver.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct PersistPoint {
    pub(crate) driver: String,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    /// How many persists the quantiles cover.
    pub(crate) count: u64,
    /// The client's `get_ts` latency in the same run, for comparison.
    pub(crate) client_p50_ms: f64,
}

/// Restart of the whole cluster after `entries` log entries.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct RestartPoint {
    pub(crate) driver: String,
    pub(crate) snapshots: bool,
    pub(crate) entries: u64,
    /// From starting the processes to the first timestamp.
    pub(crate) serving_ms: f64,
}

/// A long run's resource samples.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Soak {
    pub(crate) driver: String,
    pub(crate) seconds: u64,
    pub(crate) interval_s: u64,
    pub(crate) ops: u64,
    pub(crate) samples: Vec<SoakSample>,
    /// Whether the last third's peaks stay within the middle third's (plus
    /// a small slack): growth that has levelled off.
    pub(crate) rss_bounded: bool,
    pub(crate) data_bounded: bool,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct SoakSample {
    pub(crate) t_s: f64,
    /// Sum over the cluster's nodes.
    pub(crate) rss_mib: f64,
    pub(crate) rss_max_node_mib: f64,
    /// Sum over the nodes' data directories.
    pub(crate) data_mib: f64,
}

/// One goal of the issue, as a ratio measured in this run.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Target {
    pub(crate) goal: String,
    pub(crate) measured: String,
    /// `None` when the run did not measure it.
    pub(crate) met: Option<bool>,
}

/// Nearest-rank percentile of `values` (sorted in place); 0 when empty.
pub(crate) fn percentile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let rank = (q * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

impl Report {
    fn point(&self, driver: &str, op: &str, clients: u32) -> Option<&LoadPoint> {
        self.throughput
            .iter()
            .find(|p| p.driver == driver && p.op == op && p.clients == clients)
    }

    fn failover_of(&self, driver: &str) -> Option<&Failover> {
        self.failover.iter().find(|f| f.driver == driver)
    }

    fn persist_of(&self, driver: &str) -> Option<&PersistPoint> {
        self.persist
            .drivers
            .iter()
            .find(|d| d.driver == driver && d.count > 0)
    }

    /// Judges the current issue's targets (issue 16: the lease and
    /// replication path) from the figures of this run.
    pub(crate) fn judge(&mut self) {
        let mut targets = Vec::new();
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
        let top = 64;
        match self.idle.iter().find(|i| i.driver == "paxos") {
            Some(idle) => {
                let goal = "idle: ≤ 1 fdatasync/s and ≤ 1 KiB/s written per node";
                let bytes = idle.max_bytes_per_s();
                let syncs = idle.max_syncs_per_s();
                targets.push(Target {
                    goal: goal.to_owned(),
                    measured: format!(
                        "busiest node: {} syncs/s, {:.0} B/s",
                        syncs.map_or_else(|| "n/a (no strace)".to_owned(), |s| format!("{s:.1}")),
                        bytes
                    ),
                    met: syncs.map(|s| s <= 1.0 && bytes <= 1024.0),
                });
            }
            None => targets.push(missing(
                "idle: ≤ 1 fdatasync/s and ≤ 1 KiB/s written per node",
            )),
        }
        match (self.failover_of("paxos"), self.failover_of("openraft")) {
            (Some(p), Some(o)) if !p.samples_ms.is_empty() && !o.samples_ms.is_empty() => {
                let r = ratio(p.p99_ms, o.p99_ms);
                targets.push(Target {
                    goal: "failover (kill -9) p99 ≤ 0.7 × openraft's".to_owned(),
                    measured: format!("{:.2} × ({:.0} ms vs {:.0} ms)", r, p.p99_ms, o.p99_ms),
                    met: Some(r <= 0.7),
                });
            }
            _ => targets.push(missing("failover (kill -9) p99 ≤ 0.7 × openraft's")),
        }
        let errors: u64 = self
            .throughput
            .iter()
            .filter(|p| p.driver == "paxos")
            .map(|p| p.errors)
            .sum();
        let measured_points = self.throughput.iter().any(|p| p.driver == "paxos");
        targets.push(Target {
            goal: "no failed request (lease lapse) at any paxos load point".to_owned(),
            measured: format!("{errors} failed requests"),
            met: measured_points.then_some(errors == 0),
        });
        match self.planned.iter().find(|f| f.driver == "paxos") {
            Some(p) if !p.samples_ms.is_empty() => targets.push(Target {
                goal: "planned leader restart (SIGTERM) unavailability p99 ≤ 100 ms".to_owned(),
                measured: format!("{:.0} ms over {} restarts", p.p99_ms, p.samples_ms.len()),
                met: Some(p.p99_ms <= 100.0),
            }),
            _ => targets.push(missing(
                "planned leader restart (SIGTERM) unavailability p99 ≤ 100 ms",
            )),
        }
        match (
            self.persist_of("paxos"),
            self.persist_of("openraft"),
            self.persist_of("file"),
        ) {
            (Some(p), Some(o), Some(f)) => targets.push(Target {
                goal: "persist_high_water p50 below openraft's and the file driver's".to_owned(),
                measured: format!(
                    "{:.3} ms vs {:.3} ms and {:.3} ms",
                    p.p50_ms, o.p50_ms, f.p50_ms
                ),
                met: Some(p.p50_ms < o.p50_ms && p.p50_ms < f.p50_ms),
            }),
            _ => targets.push(missing(
                "persist_high_water p50 below openraft's and the file driver's",
            )),
        }
        match self.persist_of("paxos") {
            Some(p) if self.persist.limit.p50_ms > 0.0 => {
                let r = ratio(p.p50_ms, self.persist.limit.p50_ms);
                targets.push(Target {
                    goal: "persist_high_water p50 ≤ 2.5 × the machine's limit".to_owned(),
                    measured: format!(
                        "{:.2} × ({:.3} ms vs {:.3} ms)",
                        r, p.p50_ms, self.persist.limit.p50_ms
                    ),
                    met: Some(r <= 2.5),
                });
            }
            _ => targets.push(missing(
                "persist_high_water p50 ≤ 2.5 × the machine's limit",
            )),
        }
        match (
            self.point("paxos", "seq", top),
            self.point("openraft", "seq", top),
        ) {
            (Some(p), Some(o)) => {
                let r = ratio(p.ops_per_s, o.ops_per_s);
                targets.push(Target {
                    goal: "dense get_seq ops/s at 64 clients ≥ 1.0 × openraft".to_owned(),
                    measured: format!(
                        "{:.2} × ({:.0} vs {:.0} ops/s)",
                        r, p.ops_per_s, o.ops_per_s
                    ),
                    met: Some(r >= 1.0),
                });
            }
            _ => targets.push(missing(
                "dense get_seq ops/s at 64 clients ≥ 1.0 × openraft",
            )),
        }
        self.targets = targets;
    }
}

/// One table row per driver of leader stops (kills or planned restarts).
fn stop_rows(md: &mut String, rows: &[Failover]) {
    for f in rows {
        let _ = writeln!(
            md,
            "| {} | {} | {:.0} | {:.0} | {:.0} |",
            f.driver,
            f.samples_ms.len(),
            f.p50_ms,
            f.p99_ms,
            f.max_ms
        );
    }
}

fn missing(goal: &str) -> Target {
    Target {
        goal: goal.to_owned(),
        measured: "not measured".to_owned(),
        met: None,
    }
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "n/a",
    }
}

/// The ratio lines printed at the end of a run.
pub(crate) fn summary(report: &Report) -> String {
    let mut out = String::new();
    for r in &report.replacements {
        let _ = writeln!(out, "replacing the {} under load: {r}", r.target);
    }
    out.push_str("targets (ratios measured side by side in this run)\n");
    for t in &report.targets {
        let _ = writeln!(
            out,
            "  {:<7} {:<58} {}",
            verdict(t.met).trim_matches('*'),
            t.goal,
            t.measured
        );
    }
    out
}

pub(crate) const ANALYSIS_BEGIN: &str = "<!-- analysis:begin -->";
pub(crate) const ANALYSIS_END: &str = "<!-- analysis:end -->";

pub(crate) const CATCHUP_BEGIN: &str = "<!-- catchup:begin -->";
pub(crate) const CATCHUP_END: &str = "<!-- catchup:end -->";

/// The text from `begin` to the next `end`, markers included, if both are
/// there.
pub(crate) fn carried_block(existing: &str, begin: &str, end: &str) -> Option<String> {
    let start = existing.find(begin)?;
    let stop = existing[start..].find(end)? + start + end.len();
    Some(existing[start..stop].to_owned())
}

/// The hand-written analysis of an existing `docs/benchmarks.md`, markers
/// included, if it has one.
pub(crate) fn carried_analysis(existing: &str) -> Option<String> {
    carried_block(existing, ANALYSIS_BEGIN, ANALYSIS_END)
}

/// The catch-up section of an existing `docs/benchmarks.md`, markers
/// included, if it has one: this suite does not measure it, so it keeps it.
pub(crate) fn carried_catchup(existing: &str) -> Option<String> {
    carried_block(existing, CATCHUP_BEGIN, CATCHUP_END)
}

const DEFAULT_ANALYSIS: &str = "<!-- analysis:begin -->\n\
## Analysis\n\n\
(Write the analysis of this run here: `cargo xtask bench` keeps the text \
between these markers when it regenerates the file.)\n\
<!-- analysis:end -->";

/// `docs/benchmarks.md`: setup, tables, figures, the carried catch-up
/// section (if any) and the carried analysis.
pub(crate) fn markdown(report: &Report, analysis: Option<&str>, catchup: Option<&str>) -> String {
    let m = &report.meta;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Benchmarks: the OmniPaxos driver against the file and openraft drivers\n"
    );
    let _ = writeln!(
        md,
        "Generated by `{}` ({} run) on {} UTC, in {:.0} s. Everything below was measured in \
         that one run on one machine: {} cores ({}), {:.0} GiB of memory, Linux {}. Figures \
         vary between machines and runs; the ratios are what the targets judge.\n",
        m.command, m.mode, m.date, m.elapsed_s, m.cores, m.cpu, m.memory_gib, m.kernel
    );
    let _ = writeln!(
        md,
        "Reproduce with `cargo xtask bench` (full, about 25 minutes) or `cargo xtask bench --quick` (a few minutes: shorter load points, fewer kills, shorter logs, a shorter soak). The run writes `target/bench/report.json` (every figure, and the failover samples) and regenerates this file and `docs/benchmarks/*.png`.\n"
    );
    md.push_str(SETUP);
    let _ = writeln!(
        md,
        "\nThis run: {} s per load point, {} leader kills per replicated driver, restart after \
         {} log entries, a {} s soak. Load average (1, 5, 15 min) before the run: {}; after: {} \
         (the machine has {} cores; anything above the benchmark's own processes is other work \
         that shared the machine).\n",
        m.seconds_per_point,
        m.kills,
        m.restart_lengths
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(" / "),
        m.soak_seconds,
        m.loadavg_start,
        m.loadavg_end,
        m.cores
    );

    let _ = writeln!(
        md,
        "## Targets\n\n| goal | measured | verdict |\n|---|---|---|"
    );
    for t in &report.targets {
        let _ = writeln!(md, "| {} | {} | {} |", t.goal, t.measured, verdict(t.met));
    }

    for (op, title) in [("ts", "`get_ts`"), ("seq", "dense `get_seq` (blocks of 4)")] {
        let _ = writeln!(
            md,
            "\n## {title}: throughput and latency\n\n| driver | clients | ops/s | p50 ms | p99 ms | errors |\n|---|---:|---:|---:|---:|---:|"
        );
        for p in report.throughput.iter().filter(|p| p.op == op) {
            let _ = writeln!(
                md,
                "| {} | {} | {:.0} | {:.2} | {:.2} | {} |",
                p.driver, p.clients, p.ops_per_s, p.p50_ms, p.p99_ms, p.errors
            );
        }
        let _ = writeln!(
            md,
            "\n![{op} throughput](benchmarks/throughput_{op}.png)\n![{op} latency](benchmarks/latency_{op}.png)"
        );
    }

    let _ = writeln!(
        md,
        "\n## Failover\n\nUnavailability: from the last completed request before a leader's \
         `kill -9` to the first completed request after it, under a `get_ts` load of 8 clients. \
         The killed node is restarted and the cluster settles before the next kill. The file \
         driver has a single node and no failover. The row \"paxos, 400 ms election\" is not \
         judged: the same driver with `--tick-ms 20 --election-ticks 20 --lease-ms 300 \
         --renew-every-ms 60`, twice the default periods, to show how much of the failover \
         time is the timing.\n\n| driver | kills | p50 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|"
    );
    stop_rows(&mut md, &report.failover);
    let _ = writeln!(md, "\n![failover](benchmarks/failover.png)");

    if !report.planned.is_empty() {
        let _ = writeln!(
            md,
            "\n## Planned leader restart\n\nThe leader is stopped with SIGTERM and started \
             again at once (a rolling restart), under the same load; unavailability from the \
             last completed request before the signal to the first after it. A paxos leader \
             hands its leadership over before it exits (it stops serving, releases its lease \
             and lets a caught-up follower take over); the openraft peer does not.\n\n| driver \
             | restarts | p50 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|"
        );
        stop_rows(&mut md, &report.planned);
    }

    if !report.idle.is_empty() {
        let _ = writeln!(
            md,
            "\n## An idle cluster\n\nNo client for the whole window: `fsync` and `fdatasync` \
             calls per second of each node (`strace -c -f` attached to the process) and bytes \
             per second it sent to storage (`/proc/PID/io` `write_bytes`).\n\n| driver | \
             seconds | syncs/s per node | bytes/s per node |\n|---|---:|---|---|"
        );
        for i in &report.idle {
            let syncs: Vec<String> = i
                .syncs_per_s
                .iter()
                .map(|s| s.map_or_else(|| "n/a".to_owned(), |s| format!("{s:.1}")))
                .collect();
            let bytes: Vec<String> = i.bytes_per_s.iter().map(|b| format!("{b:.0}")).collect();
            let _ = writeln!(
                md,
                "| {} | {:.0} | {} | {} |",
                i.driver,
                i.seconds,
                syncs.join(" / "),
                bytes.join(" / ")
            );
        }
    }

    if !report.replacements.is_empty() {
        let _ = writeln!(
            md,
            "\n## Replacing a member under load\n\nThis driver only (the others have no online \
             membership change to compare with): a new node started empty in `join` mode, then \
             `tsoracle-paxos member replace` (add it, wait until it caught up, remove the old \
             member) under a `get_ts` load of 8 clients; first a follower, then the leader. \
             The gap is the longest stretch without a completed request from the new node's \
             start to one second after the command returned; the dip compares the worst \
             sliding second of that stretch with the 3 s before it (the OmniPaxos paper \
             reports at most a 20 % dip for at most 15 s).\n\n| replaced | took s | gap ms | \
             baseline ops/s | worst second ops/s | dip % | s below 80 % |\n|---|---:|---:|---:|---:|---:|---:|"
        );
        for r in &report.replacements {
            let _ = writeln!(
                md,
                "| {} | {:.1} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} |",
                r.target,
                r.took_s,
                r.gap_ms,
                r.baseline_ops_per_s,
                r.worst_ops_per_s,
                r.dip_pct,
                r.below_80pct_s
            );
        }
    }

    let l = &report.persist.limit;
    let _ = writeln!(
        md,
        "\n## `persist_high_water` commit latency\n\nThe server's own timing of each \
         `persist_high_water` (tsoracle-server's `tsoracle_window_extension_latency` summary, \
         read from the leader's metrics page), with the server's window shrunk to 1 ms so that \
         every `get_ts` of one client persists a new high-water. The machine's limit is one \
         synced 64-byte write on the data directories' file system plus one 64-byte loopback \
         round trip, measured {} times in this run (sync p50 {:.3} ms / p99 {:.3} ms; round trip \
         p50 {:.3} ms / p99 {:.3} ms).\n\n| | p50 ms | p99 ms | persists | client get_ts p50 ms |\n|---|---:|---:|---:|---:|\n| machine limit | {:.3} | {:.3} | | |",
        l.rounds, l.sync_p50_ms, l.sync_p99_ms, l.rtt_p50_ms, l.rtt_p99_ms, l.p50_ms, l.p99_ms
    );
    for d in &report.persist.drivers {
        let _ = writeln!(
            md,
            "| {} | {:.3} | {:.3} | {} | {:.3} |",
            d.driver, d.p50_ms, d.p99_ms, d.count, d.client_p50_ms
        );
    }
    let _ = writeln!(md, "\n![persist](benchmarks/persist.png)");

    let _ = writeln!(
        md,
        "\n## Restart to serving\n\nEvery node of the cluster is killed with `kill -9` after the \
         log reached the given length (dense `get_seq` entries), then all are started again; \
         the time runs from starting the processes to the first `get_ts` answered (a probe \
         polling every 5 ms). \"With snapshots\": a snapshot every 4096 entries; \"without\": \
         snapshots off, so a restart replays the whole log. The row \"paxos, 400 ms election\" \
         (not judged) restarts the longest snapshotted log once more with the slower timing of \
         the failover section, to separate election time from recovery time.\n\n| driver | snapshots | log entries | restart to serving ms |\n|---|---|---:|---:|"
    );
    for r in &report.restart {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.0} |",
            r.driver,
            if r.snapshots { "yes" } else { "no" },
            r.entries,
            r.serving_ms
        );
    }
    let _ = writeln!(md, "\n![restart](benchmarks/restart.png)");

    let _ = writeln!(md, "\n## Soak\n");
    for s in &report.soak {
        let first = s.samples.first().cloned().unwrap_or_default();
        let last = s.samples.last().cloned().unwrap_or_default();
        let peak_rss = s.samples.iter().map(|x| x.rss_mib).fold(0.0, f64::max);
        let peak_data = s.samples.iter().map(|x| x.data_mib).fold(0.0, f64::max);
        let _ = writeln!(
            md,
            "{}: {} s of dense `get_seq` from 8 clients ({} operations, each one log entry), \
             sampled every {} s. RSS of all nodes {:.0} MiB at the first sample, {:.0} MiB at the \
             last, peak {:.0} MiB (largest node {:.0} MiB); data directories {:.1} → {:.1} MiB, \
             peak {:.1} MiB. Memory bounded: {}; disk bounded: {} (the last third's peak within \
             the middle third's plus 10% and 8 MiB).\n",
            s.driver,
            s.seconds,
            s.ops,
            s.interval_s,
            first.rss_mib,
            last.rss_mib,
            peak_rss,
            s.samples
                .iter()
                .map(|x| x.rss_max_node_mib)
                .fold(0.0, f64::max),
            first.data_mib,
            last.data_mib,
            peak_data,
            if s.rss_bounded { "yes" } else { "**no**" },
            if s.data_bounded { "yes" } else { "**no**" },
        );
    }
    let _ = writeln!(md, "![soak](benchmarks/soak.png)\n");
    if let Some(catchup) = catchup {
        let _ = writeln!(md, "{catchup}\n");
    }
    md.push_str(analysis.unwrap_or(DEFAULT_ANALYSIS));
    md.push('\n');
    md
}

const SETUP: &str = "## Setup\n\n\
Each node is its own process on 127.0.0.1, with its data in a fresh temporary directory on \
the machine's disk, stopped at the end of each scenario. All three serve clients through the \
same `tsoracle-server` 3.2.2 (window ahead 3 s unless said otherwise), and the load is the \
same `tsoracle-client` 1.3 for all: `tsoracle-paxos-testkit bench`, one shared client with N \
concurrent workers, each with one request in flight.\n\n\
| driver | nodes | configuration |\n|---|---:|---|\n\
| paxos (this repository) | 3 | `tsoracle-paxos serve`: RocksDB storage, one synced `WriteBatch` per consensus round (group commit), tonic peer transport without TLS, RocksDB memtables of 4 MiB flushed together (WAL replay after a crash bounded), `Timing::lan()` (tick 10 ms, election after 20 ticks, lease 150 ms, renewal every 40 ms), a snapshot every 4096 decided entries |\n\
| file | 1 | `tsoracle-driver-file` 2.2.0 `FileDriver::open_or_init`: each write synced; no replication |\n\
| openraft | 3 | `tsoracle-driver-openraft` 2.3.0 `StandaloneHost` + `OpenraftDriver` on openraft 0.10.0-alpha: the toolkit's `RocksdbLogStore` (every append, vote and truncation a synced RocksDB write) and `RocksdbSnapshotStore` in the same database; openraft's default timing (heartbeat 50 ms, election timeout 150–300 ms); a snapshot every 4096 entries (`SnapshotPolicy::LogsSinceLast`); a plain TCP request/response peer transport with postcard frames and pooled connections (`bench/peers/src/net.rs`, the driver ships none); dense and batch record formats activated through the driver's own gate at startup |\n\n\
The openraft and file nodes are `tsoracle-bench-peer` (the excluded workspace `bench/peers`, \
because the openraft driver links RocksDB 0.24 and this repository RocksDB 0.25). Each \
replicated driver runs with its library's default timing (openraft: election timeout \
150–300 ms; this driver: `Timing::lan()`, a 200 ms election timeout); the failover ratio is \
measured between those defaults.\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut v = vec![5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(percentile(&mut v, 0.5), 3.0);
        assert_eq!(percentile(&mut v, 0.99), 5.0);
        assert_eq!(percentile(&mut v, 0.0), 1.0);
        assert_eq!(percentile(&mut [], 0.5), 0.0);
    }

    #[test]
    fn the_analysis_is_carried_over() {
        let old = format!("# x\n\ntables\n{ANALYSIS_BEGIN}\nmy notes\n{ANALYSIS_END}\ntrailer");
        let kept = carried_analysis(&old).unwrap();
        assert_eq!(kept, format!("{ANALYSIS_BEGIN}\nmy notes\n{ANALYSIS_END}"));
        let md = markdown(&Report::default(), Some(&kept), None);
        assert!(md.contains("my notes"));
        assert!(carried_analysis("no markers").is_none());
    }

    #[test]
    fn the_catchup_section_survives_a_drivers_run() {
        let block = format!("{CATCHUP_BEGIN}\n## Catch-up\n| 1k | 50 ms |\n{CATCHUP_END}");
        let old = format!("# old tables\n{block}\n\n{ANALYSIS_BEGIN}\nnotes\n{ANALYSIS_END}\n");
        let catchup = carried_catchup(&old);
        assert_eq!(catchup.as_deref(), Some(block.as_str()));
        let md = markdown(
            &Report::default(),
            carried_analysis(&old).as_deref(),
            catchup.as_deref(),
        );
        assert_eq!(carried_catchup(&md).as_deref(), Some(block.as_str()));
        // Before the analysis, which stays last.
        let (at_catchup, at_analysis) = (md.find(CATCHUP_BEGIN), md.find(ANALYSIS_BEGIN));
        assert!(at_catchup < at_analysis);
        assert!(md.trim_end().ends_with(ANALYSIS_END));
        // No block before: none after (and no stray markers).
        let md = markdown(&Report::default(), None, None);
        assert!(!md.contains(CATCHUP_BEGIN));
    }

    #[test]
    fn targets_are_judged_as_ratios() {
        let point = |driver: &str, op: &str, ops: f64, errors: u64| LoadPoint {
            driver: driver.to_owned(),
            op: op.to_owned(),
            clients: 64,
            ops_per_s: ops,
            errors,
            ..LoadPoint::default()
        };
        let failover = |driver: &str, p99: f64| Failover {
            driver: driver.to_owned(),
            samples_ms: vec![p99],
            p99_ms: p99,
            ..Failover::default()
        };
        let mut report = Report {
            throughput: vec![
                point("paxos", "seq", 150.0, 0),
                point("openraft", "seq", 100.0, 3),
            ],
            failover: vec![failover("paxos", 400.0), failover("openraft", 500.0)],
            planned: vec![failover("paxos", 60.0)],
            idle: vec![Idle {
                driver: "paxos".to_owned(),
                seconds: 10.0,
                syncs_per_s: vec![Some(0.0), Some(0.2), Some(0.0)],
                bytes_per_s: vec![0.0, 2048.0, 0.0],
            }],
            ..Report::default()
        };
        report.judge();
        let met = |goal: &str| {
            report
                .targets
                .iter()
                .find(|t| t.goal.starts_with(goal))
                .map(|t| t.met)
                .unwrap()
        };
        assert_eq!(met("idle"), Some(false), "2 KiB/s > 1 KiB/s");
        assert_eq!(met("failover"), Some(false), "0.8 > 0.7");
        assert_eq!(
            met("no failed request"),
            Some(true),
            "openraft's errors do not count"
        );
        assert_eq!(met("planned"), Some(true), "60 ms ≤ 100 ms");
        assert_eq!(met("dense get_seq"), Some(true), "1.5 ≥ 1");
        assert_eq!(met("persist_high_water p50 below"), None, "not measured");
        // Without strace the idle syncs are not judged.
        report.idle[0].syncs_per_s[1] = None;
        report.idle[0].bytes_per_s[1] = 0.0;
        report.judge();
        let idle = report
            .targets
            .iter()
            .find(|t| t.goal.starts_with("idle"))
            .unwrap();
        assert_eq!(idle.met, None);
    }
}
