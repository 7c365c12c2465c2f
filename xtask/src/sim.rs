//! `cargo xtask sim`: the deterministic cluster simulation (`crates/sim`).

use std::path::Path;

use anyhow::Result;
use clap::Args;

use crate::cmd::Step;
use crate::env::BuildEnv;

/// `cargo xtask sim` flags, passed on to `tsoracle-paxos-sim`.
#[derive(Debug, Args)]
pub(crate) struct SimArgs {
    /// Seeds to run (CI runs 300, from 0).
    #[arg(long, default_value_t = 300)]
    seeds: u64,
    /// The first seed. A long run over a fresh range (e.g. `--seeds 10000
    /// --first 200000 --release`) finds interleavings CI's fixed seeds miss;
    /// run one before resolving a change to the apply path, the lease,
    /// leadership or storage.
    #[arg(long, default_value_t = 0)]
    first: u64,
    /// Replay one seed and print its full report.
    #[arg(long, conflicts_with_all = ["seeds", "first"])]
    seed: Option<u64>,
    /// Remove a guard (grant-hold, sync-before-acknowledge,
    /// stop-before-release, epoch-fence, read-barrier, reply-gate,
    /// identity-check, carry-state, stop-sign-admission) to watch the checks
    /// catch it.
    #[arg(long)]
    mutation: Option<String>,
    /// Nodes per cluster.
    #[arg(long)]
    nodes: Option<u64>,
    /// Build the simulator with optimizations (faster for long runs; CI
    /// reuses the debug build of the test step instead).
    #[arg(long)]
    release: bool,
}

impl SimArgs {
    /// What CI runs: 300 seeds of 3-node clusters, on the debug build the
    /// test step already made.
    pub(crate) fn ci() -> Self {
        Self {
            seeds: 300,
            first: 0,
            seed: None,
            mutation: None,
            nodes: None,
            release: false,
        }
    }
}

pub(crate) fn run(build_env: &BuildEnv, args: &SimArgs) -> Result<()> {
    let mut cargo = vec!["run", "--locked", "-q"];
    if args.release {
        cargo.push("--release");
    }
    cargo.extend(["-p", "tsoracle-paxos-sim", "--"]);
    Step::new(step_name(args), "cargo")
        .args(cargo)
        .args(sim_args(args))
        .run(build_env)
}

/// Runs the simulation binary the tests' build made (`cargo xtask ci`):
/// `cargo run -p tsoracle-paxos-sim` would resolve the simulation's
/// features alone and compile its dependencies a second time.
pub(crate) fn run_built(build_env: &BuildEnv, args: &SimArgs, bins: &Path) -> Result<()> {
    Step::new(step_name(args), bins.join("tsoracle-paxos-sim"))
        .args(sim_args(args))
        .run(build_env)
}

fn step_name(args: &SimArgs) -> String {
    match args.seed {
        Some(seed) => format!("simulation (seed {seed})"),
        None => format!("simulation ({} seeds from {})", args.seeds, args.first),
    }
}

/// The simulation binary's own arguments.
fn sim_args(args: &SimArgs) -> Vec<String> {
    let mut sim: Vec<String> = match args.seed {
        Some(seed) => vec!["--seed".into(), seed.to_string()],
        None => vec![
            "--seeds".into(),
            args.seeds.to_string(),
            "--first".into(),
            args.first.to_string(),
        ],
    };
    if let Some(mutation) = &args.mutation {
        sim.extend(["--mutation".into(), mutation.clone()]);
    }
    if let Some(nodes) = args.nodes {
        sim.extend(["--nodes".into(), nodes.to_string()]);
    }
    sim
}
