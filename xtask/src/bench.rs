//! `cargo xtask bench`: release-build benchmarks whose figures go into
//! `target/bench/` (JSON) and the issue notes.

use std::path::PathBuf;

use anyhow::Result;
use clap::ValueEnum;

use crate::cmd::Step;
use crate::env::BuildEnv;

/// The benchmarks there are.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum Suite {
    /// Three OmniPaxos nodes over tonic on loopback: decided entries per
    /// second and commit latency, memory vs RocksDB, plain vs mutual TLS.
    Transport,
}

pub(crate) fn run(build_env: &BuildEnv, suite: Suite, seconds: u64) -> Result<()> {
    let out = workspace_root().join("target").join("bench");
    match suite {
        Suite::Transport => {
            let json = out.join("transport.json");
            Step::new(
                format!("bench transport ({seconds} s per scenario)"),
                "cargo",
            )
            .args([
                "bench",
                "--locked",
                "-p",
                "tsoracle-paxos-tonic",
                "--bench",
                "transport",
                "--",
                "--seconds",
            ])
            .args([seconds.to_string()])
            .args([std::ffi::OsString::from("--json"), json.into_os_string()])
            .run(build_env)
        }
    }
}

/// The benchmark binaries run with their package as working directory, so
/// output paths are made absolute here.
fn workspace_root() -> PathBuf {
    let xtask_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    xtask_dir.parent().map(PathBuf::from).unwrap_or(xtask_dir)
}
