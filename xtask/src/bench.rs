//! `cargo xtask bench`: release-build benchmarks whose figures go into
//! `target/bench/` (JSON) and `docs/benchmarks.md`.
//!
//! Three suites:
//! - `drivers` (the default): this repository's OmniPaxos driver against the
//!   published file and openraft drivers, each node a process on 127.0.0.1,
//!   the same `tsoracle-server` and the same `tsoracle-client` load for all;
//!   see [`drivers`].
//! - `transport`: the peer transport alone (`crates/tonic/benches`).
//! - `catchup`: a restarted follower's catch-up time against the number of
//!   dense keys in the state; see [`catchup`].

mod catchup;
mod cluster;
mod drivers;
mod limit;
mod report;

use std::path::PathBuf;

use anyhow::Result;
use clap::ValueEnum;

use crate::cmd::Step;
use crate::env::BuildEnv;

/// The benchmarks there are.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum Suite {
    /// The OmniPaxos driver (3 nodes) against tsoracle-driver-file (1 node)
    /// and tsoracle-driver-openraft (3 nodes): throughput and latency,
    /// failover, commit latency against the machine's limit, restart time,
    /// and a soak. Writes target/bench/report.json and docs/benchmarks.md.
    Drivers,
    /// Three OmniPaxos nodes over tonic on loopback: decided entries per
    /// second and commit latency, memory vs RocksDB, plain vs mutual TLS.
    Transport,
    /// A follower killed, N distinct dense keys written, the follower
    /// restarted: its catch-up time against N (10k, 100k, 1M; 1k and 10k
    /// with --quick). Writes target/bench/catchup.json,
    /// docs/benchmarks/catchup.png and the catch-up section of
    /// docs/benchmarks.md.
    Catchup,
}

/// What `cargo xtask bench` was asked for.
pub(crate) struct BenchArgs {
    pub(crate) suite: Suite,
    /// Seconds per scenario (transport) or per load point (drivers).
    pub(crate) seconds: Option<u64>,
    /// The short version of the drivers or catchup suite.
    pub(crate) quick: bool,
    /// Failover kills per replicated driver (drivers suite).
    pub(crate) kills: Option<u32>,
    /// Soak length in seconds (drivers suite).
    pub(crate) soak_seconds: Option<u64>,
}

pub(crate) fn run(build_env: &BuildEnv, args: &BenchArgs) -> Result<()> {
    let out = workspace_root().join("target").join("bench");
    match args.suite {
        Suite::Transport => {
            let seconds = args.seconds.unwrap_or(10);
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
        Suite::Drivers => drivers::run(build_env, args),
        Suite::Catchup => catchup::run(build_env, args),
    }
}

/// The benchmark binaries run with their package as working directory, so
/// output paths are made absolute here.
pub(crate) fn workspace_root() -> PathBuf {
    let xtask_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    xtask_dir.parent().map(PathBuf::from).unwrap_or(xtask_dir)
}
