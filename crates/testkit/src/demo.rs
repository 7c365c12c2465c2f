//! `tsoracle-paxos-testkit demo`: a whole cluster and its failover in one command.
//!
//! It starts `--nodes` `serve` child processes on 127.0.0.1 with data in a
//! fresh directory, drives the real tsoracle client from `--workers`
//! concurrent workers, kills the leader with SIGKILL half way, restarts it at
//! three quarters, and checks the recorded history with the shared checker.
//! Every child is stopped on every exit path: the [`Cluster`] guard kills
//! them on drop, and Ctrl-C or SIGTERM ends the run early through it.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Args;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use tsoracle_paxos_checker::{History, Report, check};
use tsoracle_paxos_testkit::cluster::{Cluster, Serve, Setup};

use crate::error::Error;
use crate::load::{
    Mix, Shared, collect, forge, read_final_counter, ready_client, spawn_workers, verdict, verdicts,
};
use crate::run::{RunDir, interrupted, println_out, serve_nodes};

/// `demo` flags.
#[derive(Debug, Clone, Args)]
pub(crate) struct DemoArgs {
    /// How long the load runs, in seconds.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Cluster size (at least 3, so the cluster survives the kill).
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Concurrent client workers.
    #[arg(long, default_value_t = 8)]
    workers: u32,
    /// Keep the data and logs here instead of a temporary directory.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Run the nodes with this `tsoracle-paxos` binary (by default with
    /// this binary's own copy of its command line).
    #[arg(long, value_name = "PATH")]
    node_bin: Option<PathBuf>,
    /// Test hook: corrupt the recorded history before checking it (swap two
    /// timestamps of operations far apart), to show the checker can fail.
    #[arg(long, hide = true)]
    forge_history: bool,
}

/// Runs the demo; `Ok(true)` when every check passed.
pub(crate) async fn run(args: DemoArgs) -> Result<bool, Error> {
    if args.nodes < 3 {
        return Err(Error::Config(
            "--nodes must be at least 3: the demo kills one node and the rest must keep a quorum"
                .to_owned(),
        ));
    }
    if args.workers == 0 || args.duration < 4 {
        return Err(Error::Config(
            "--workers must be at least 1 and --duration at least 4 (seconds)".to_owned(),
        ));
    }
    let dir = RunDir::new(args.dir.as_deref(), "demo")?;
    let nodes = serve_nodes(args.node_bin.as_deref(), "demo")?;
    let mut cluster = Cluster::plan(nodes, Setup::new(args.nodes, dir.path()))?;
    // Waits (blocking) until every node listens.
    tokio::task::block_in_place(|| cluster.start())?;
    let result = tokio::select! {
        result = drive(&mut cluster, &args) => result,
        signal = interrupted() => Err(Error::runtime("demo", format!("interrupted by {signal}"))),
    };
    cluster.stop();
    dir.finish(false);
    result
}

async fn drive(cluster: &mut Cluster<Serve>, args: &DemoArgs) -> Result<bool, Error> {
    let (client, ready) = ready_client(cluster.endpoints(), Duration::from_secs(60)).await?;
    println_out(&format!(
        "{} nodes up in {:.1?}; {} workers for {} s; the leader is killed (SIGKILL) at {} s \
         and restarted at {} s",
        args.nodes,
        ready,
        args.workers,
        args.duration,
        args.duration / 2,
        args.duration * 3 / 4
    ));

    let shared = Arc::new(Shared::new(None));
    let tasks = spawn_workers(
        args.workers,
        std::slice::from_ref(&client),
        &shared,
        Mix::DENSE_EVERY_TENTH,
    );
    let total = Duration::from_secs(args.duration);
    let bar = ProgressBar::new(args.duration);
    bar.set_style(
        ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {pos}/{len}s {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut killed: Option<(u64, u64)> = None;
    let mut restarted = false;
    let mut last_ok = 0;
    while shared.start.elapsed() < total {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let elapsed = shared.start.elapsed();
        let ok = shared.ok.load(Ordering::Relaxed);
        let leader = client
            .cached_leader()
            .and_then(|e| cluster.node_of(&e))
            .map_or_else(|| "?".to_owned(), |id| id.to_string());
        let p99 = shared
            .take_recent_p99_ms()
            .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.1} ms"));
        let progress = format!(
            "{} ops/s, p99 {p99}, {} errors, leader: node {leader}",
            ok - last_ok,
            shared.errors.load(Ordering::Relaxed)
        );
        bar.set_position(elapsed.as_secs().min(args.duration));
        if bar.is_hidden() {
            // Not a terminal (a log, CI): a plain line instead of the bar.
            println_out(&format!("{:>4}s  {progress}", elapsed.as_secs()));
        }
        bar.set_message(progress);
        last_ok = ok;
        if killed.is_none() && elapsed >= total / 2 {
            let Some(id) = client.cached_leader().and_then(|e| cluster.node_of(&e)) else {
                continue;
            };
            bar.suspend(|| println_out(&format!("killing the leader, node {id} (SIGKILL)")));
            killed = Some((id, shared.micros()));
            cluster.kill(id);
        }
        if let Some((id, _)) = killed
            && !restarted
            && elapsed >= total * 3 / 4
        {
            bar.suspend(|| println_out(&format!("restarting node {id}")));
            cluster.restart(id)?;
            restarted = true;
        }
    }
    shared.stop.store(true, Ordering::Relaxed);
    bar.finish_and_clear();
    let (mut history, latency) = collect(tasks).await?;
    read_final_counter(&client, &mut history, Duration::from_secs(10)).await;
    if args.forge_history {
        forge(&mut history);
    }
    let report = check(&history);
    let outage = killed.map(|(_, at)| unavailability(&history, at));
    print_summary(
        &history,
        &report,
        &latency,
        killed.map(|(id, _)| id),
        outage,
    );
    Ok(report.is_ok() && killed.is_some())
}

/// The longest gap with no completed operation that spans the kill: from
/// the last completion before it to the first after it.
fn unavailability(history: &History, killed_at: u64) -> Duration {
    let before = history
        .ops
        .iter()
        .map(|op| op.completed)
        .filter(|&t| t <= killed_at)
        .max()
        .unwrap_or(killed_at);
    let after = history
        .ops
        .iter()
        .map(|op| op.completed)
        .filter(|&t| t > killed_at)
        .min()
        .unwrap_or(killed_at);
    Duration::from_micros(after.saturating_sub(before))
}

fn print_summary(
    history: &History,
    report: &Report,
    latency: &Histogram<u64>,
    killed: Option<u64>,
    outage: Option<Duration>,
) {
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    let lines = [
        "".to_owned(),
        "summary".to_owned(),
        format!("  operations            {:>10}", history.ops.len()),
        format!("  timestamps issued     {:>10}", report.timestamps),
        format!("  dense blocks issued   {:>10}", report.dense_blocks),
        format!(
            "  leader killed         {:>10}",
            killed.map_or_else(|| "no leader seen".to_owned(), |id| format!("node {id}"))
        ),
        format!(
            "  unavailability        {:>10}",
            outage.map_or_else(
                || "-".to_owned(),
                |d| format!("{:.0} ms", d.as_secs_f64() * 1e3)
            )
        ),
        format!("  latency p50           {:>7.2} ms", ms(0.5)),
        format!("  latency p99           {:>7.2} ms", ms(0.99)),
        "checks".to_owned(),
    ];
    let checks = verdicts(report)
        .into_iter()
        .chain([(
            killed.is_some(),
            "the leader was killed and the cluster went on",
        )])
        .map(|(ok, rule)| format!("  {}  {rule}", verdict(ok)));
    for line in lines.into_iter().chain(checks) {
        println_out(&line);
    }
    for violation in report.violations.iter().take(10) {
        println_out(&format!("  violation: {violation}"));
    }
}
