//! `cargo xtask chaos`: builds the node and the test kit in release mode and
//! runs `tsoracle-paxos-testkit chaos` on `tsoracle-paxos serve` nodes (real
//! node processes, a TCP fault proxy on every peer link, seeded kills, link
//! cuts, SIGSTOP/SIGCONT pauses and SIGTERM restarts, the history checker), writing the JSON
//! report under `target/chaos/`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::cmd::{Step, build_release};
use crate::env::BuildEnv;

/// `cargo xtask chaos` flags; the rest go to `tsoracle-paxos-testkit chaos`.
#[derive(Debug, Args)]
pub(crate) struct ChaosArgs {
    /// How long the run lasts, faults and the final quiet period included:
    /// `60s`, `60` (seconds), `2m`.
    #[arg(long, default_value = "60s")]
    duration: String,
    /// Seed of the fault schedule (printed by every run; the same seed
    /// replays the same schedule). Random when not given.
    #[arg(long)]
    seed: Option<u64>,
    /// Where the JSON report goes (relative paths: from the workspace root).
    #[arg(long, default_value = "target/chaos/report.json")]
    report: PathBuf,
    /// More `tsoracle-paxos-testkit chaos` flags, e.g. `--nodes 5 --workers 8
    /// --quiet 10s --dir ./chaos-data --faults pause`
    /// (`tsoracle-paxos-testkit chaos --help`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

pub(crate) fn run(build_env: &BuildEnv, args: &ChaosArgs) -> Result<()> {
    // `cargo run` keeps the caller's working directory, so a relative
    // report path is made absolute from the workspace root here.
    let report = crate::bench::workspace_root().join(&args.report);
    let bins = build_release(
        "build tsoracle-paxos and tsoracle-paxos-testkit (release)",
        build_env,
    )?;
    let mut step = Step::testkit(format!("chaos ({})", args.duration), &bins, "chaos")
        .args(["--duration", &args.duration])
        .args([
            std::ffi::OsString::from("--report"),
            report.into_os_string(),
        ]);
    if let Some(seed) = args.seed {
        step = step.args(["--seed".to_owned(), seed.to_string()]);
    }
    step.args(&args.args).run(build_env)
}
