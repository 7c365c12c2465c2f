//! `tsoracle-paxos-sim`: runs simulation seeds and reports failures with the
//! seed that replays them.

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use tsoracle_driver_paxos::mutation::Guard;
use tsoracle_paxos_sim::{FaultCounts, SimConfig, run};

#[derive(Parser)]
#[command(
    name = "tsoracle-paxos-sim",
    about = "Deterministic simulation of tsoracle-paxos clusters",
    long_about = "Deterministic simulation of tsoracle-paxos clusters.\n\n\
        Each seed simulates a cluster in virtual time with the real driver, host, runner \
        and apply path, under crashes, partitions (the leader cut off while clients still \
        reach it), lossy and reordering links and clock drift, then checks the clients' \
        history (unique, ordered timestamps; no high-water regression; linearized reads; \
        disjoint dense blocks; lease rules) and that service resumes after everything \
        heals. A failing seed is printed; `--seed S` replays it exactly."
)]
struct Args {
    /// How many seeds to run, starting at `--first`.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    first: u64,
    /// Run this one seed and print its full report (replays a failure).
    #[arg(long, conflicts_with_all = ["seeds", "first"])]
    seed: Option<u64>,
    /// Nodes per cluster.
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Client workers.
    #[arg(long, default_value_t = 6)]
    workers: u32,
    /// Length of the faulty phase, in election timeouts.
    #[arg(long, default_value_t = 150)]
    fault_phase: u32,
    /// Remove one guard (grant-hold, sync-before-acknowledge,
    /// stop-before-release, epoch-fence, read-barrier, reply-gate,
    /// identity-check, carry-state, stop-sign-admission) to see the checks
    /// catch it: seeds that
    /// break a rule are then printed as failures.
    #[arg(long, value_parser = parse_guard)]
    mutation: Option<Guard>,
    /// Stop at the first failing seed.
    #[arg(long)]
    fail_fast: bool,
}

fn parse_guard(name: &str) -> Result<Guard, String> {
    Guard::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = Guard::ALL.iter().map(|g| g.name()).collect();
        format!("unknown guard {name:?}; one of {}", names.join(", "))
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    // RUST_LOG=tsoracle_paxos_sim=debug traces a replayed seed: faults,
    // leadership events, failed calls, all timed in virtual µs.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .with_writer(std::io::stderr)
        .without_time()
        .init();
    let config = SimConfig {
        nodes: args.nodes,
        workers: args.workers,
        fault_phase: args.fault_phase,
        mutation: args.mutation,
        ..SimConfig::default()
    };
    let mut out = std::io::stdout().lock();
    if let Some(seed) = args.seed {
        return match run(seed, &config) {
            Ok(report) => {
                let _ = write!(out, "{report}");
                if report.passed() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(err) => {
                let _ = writeln!(std::io::stderr(), "tsoracle-paxos-sim: error: {err}");
                ExitCode::FAILURE
            }
        };
    }
    let started = Instant::now();
    let bar = ProgressBar::new(args.seeds);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} seeds, {elapsed} ({msg})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let (mut failed, mut ops, mut simulated) = (Vec::new(), 0u64, 0f64);
    let mut faults = FaultCounts::default();
    for seed in args.first..args.first.saturating_add(args.seeds) {
        match run(seed, &config) {
            Ok(report) => {
                ops += report.calls.ok;
                simulated += report.simulated.as_secs_f64();
                faults.add(&report.faults);
                if !report.passed() {
                    bar.suspend(|| {
                        let _ = write!(std::io::stdout(), "FAILED {report}");
                    });
                    failed.push(seed);
                }
            }
            Err(err) => {
                bar.suspend(|| {
                    let _ = writeln!(std::io::stderr(), "seed {seed}: error: {err}");
                });
                failed.push(seed);
            }
        }
        bar.inc(1);
        bar.set_message(format!("{} failed", failed.len()));
        // Without a terminal (CI logs) the bar is hidden: a line now and then.
        if bar.is_hidden() && bar.position().is_multiple_of(25) {
            let _ = writeln!(
                std::io::stderr(),
                "{}/{} seeds, {} failed, {:.0?}",
                bar.position(),
                args.seeds,
                failed.len(),
                started.elapsed()
            );
        }
        if args.fail_fast && !failed.is_empty() {
            break;
        }
    }
    bar.finish_and_clear();
    let _ = writeln!(
        out,
        "{} seeds in {:.0?}: {:.0} s simulated, {ops} successful client calls, faults: {faults}",
        bar.position(),
        started.elapsed(),
        simulated
    );
    if failed.is_empty() {
        let _ = writeln!(out, "all seeds passed");
        ExitCode::SUCCESS
    } else {
        let _ = writeln!(
            out,
            "{} seeds failed: {:?} (replay one with --seed S)",
            failed.len(),
            failed
        );
        ExitCode::FAILURE
    }
}
