//! `tsoracle-bench-peer`: the other side of `cargo xtask bench`.
//!
//! The benchmark compares the OmniPaxos driver of this repository with the
//! published file and openraft drivers under the same `tsoracle-server` and
//! the same `tsoracle-client` load. The published openraft driver links
//! RocksDB 0.24 and this repository RocksDB 0.25, which cannot share one
//! Cargo resolve, so the peers live in this separate workspace:
//!
//! ```text
//! tsoracle-bench-peer file --data-dir D --client-listen 127.0.0.1:7001
//! tsoracle-bench-peer openraft --node-id 1 --data-dir D --client-listen ... \
//!     --raft-listen ... --peer 1=RAFT,CLIENT --peer 2=... --peer 3=... [--bootstrap]
//! tsoracle-bench-peer wait-serving --endpoint 127.0.0.1:7001 --since-unix-us T
//! tsoracle-bench-peer plot --report target/bench/report.json --out docs/benchmarks
//! tsoracle-bench-peer plot --catchup target/bench/catchup.json --out docs/benchmarks
//! ```
//!
//! `plot` lives here too, so the main workspace never compiles plotters.

mod file_node;
mod net;
mod plot;
mod probe;
mod raft_node;
mod serve;
mod status;

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "tsoracle-bench-peer",
    version,
    about = "Benchmark peers: a tsoracle-server on the published file or openraft driver, and the report's plots",
    long_about = "Benchmark peers for `cargo xtask bench`.\n\n\
        `file` runs one tsoracle-server on tsoracle-driver-file; `openraft` runs one node of a \
        tsoracle-driver-openraft cluster (RocksDB log store, synced writes, snapshots in the same \
        RocksDB) with a plain TCP peer transport on loopback. Both stop cleanly on SIGTERM or \
        SIGINT. `plot` draws the PNG figures of target/bench/report.json and \
        target/bench/catchup.json.\n\n\
        Logs go to stderr; set RUST_LOG to change the level (default: info)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve tsoracle clients on the file driver (one node).
    File(file_node::FileArgs),
    /// Serve tsoracle clients as one node of an openraft cluster.
    Openraft(Box<raft_node::RaftArgs>),
    /// Draw the benchmark report's figures as PNG files.
    Plot(plot::PlotArgs),
    /// Poll a cluster with single `get_ts` attempts until one succeeds and
    /// print how long that took.
    WaitServing(probe::ProbeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Plot(args) => plot::run(&args),
        Command::File(args) => runtime().and_then(|rt| rt.block_on(file_node::run(args))),
        Command::Openraft(args) => runtime().and_then(|rt| rt.block_on(raft_node::run(*args))),
        Command::WaitServing(args) => runtime().and_then(|rt| rt.block_on(probe::run(args))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "tsoracle-bench-peer: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|err| anyhow::anyhow!("cannot start the tokio runtime: {err}"))
}
