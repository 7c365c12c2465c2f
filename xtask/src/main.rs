//! Project automation for tsoracle-paxos, run as `cargo xtask <command>`.
//!
//! Everything CI does is a subcommand here, so a newcomer's machine and CI run
//! the same steps. `cargo xtask --help` lists them.

mod bench;
mod chaos;
mod cmd;
mod env;
mod fuzz;
mod image;
mod layering;
mod outside;
mod sim;

use std::time::Instant;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::cmd::Step;

#[derive(Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    about = "Build, check and test automation for tsoracle-paxos",
    long_about = "Build, check and test automation for tsoracle-paxos.\n\n\
        Every command first prepares the build environment: it points PROTOC at the \
        protoc binary vendored by the protoc-bin-vendored crate (unless PROTOC is already \
        set) and makes sure libclang, which RocksDB's bindgen loads, is installed \
        (installing Debian's libclang-dev with apt-get when running as root, or \
        stopping with the exact command to run)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Everything CI checks: fmt, clippy, layering, tests, simulation,
    /// examples, the container image (where podman runs), docs, cargo-deny.
    Ci,
    /// Run the workspace tests (nextest when installed, then doctests).
    Test {
        /// Extra arguments passed to the test runner, after `--`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Check that no crate depends on a layer above it (see docs/architecture.md).
    Layering,
    /// Build the workspace as the tests do (so `ci` afterwards compiles no
    /// dependency again) and run `tsoracle-paxos-testkit demo` on
    /// `tsoracle-paxos serve` nodes: a local 3-node cluster, a leader kill,
    /// and the history checks.
    Demo {
        /// Arguments for `tsoracle-paxos-testkit demo` (e.g. `--duration 60`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build the node and the test kit in release mode and run
    /// `tsoracle-paxos-testkit chaos` on `tsoracle-paxos serve` nodes: real
    /// node processes with a TCP fault proxy on every peer link, the real
    /// client load, seeded kill -9 and restarts, link cuts and heals, leader
    /// isolation; then the history checks, liveness after the final heal,
    /// and an availability report (also `target/chaos/report.json`).
    Chaos(chaos::ChaosArgs),
    /// Run the deterministic cluster simulation: seeded faults, crashes,
    /// partitions and clock drift in virtual time, then the history checks.
    /// A failing seed is printed; `--seed S` replays it exactly.
    Sim(sim::SimArgs),
    /// Build and run the worked examples (`examples/`); each checks its own
    /// outcome and exits non-zero when a check fails.
    Examples,
    /// Prepare the build environment (protoc, libclang) and print what was set.
    Env,
    /// Build deploy/Dockerfile's runtime stage around the node binary of the
    /// tests' build, with podman, and run it as a three-node cluster (user,
    /// readiness, timestamps, clean SIGTERM, restart from its volumes).
    /// Skipped, saying why, where podman, debootstrap or root is missing or
    /// the host is not Debian.
    Image,
    /// Run a benchmark in release mode. Without a suite: the driver
    /// comparison (this driver against the file and openraft drivers), which
    /// writes target/bench/report.json, docs/benchmarks.md and
    /// docs/benchmarks/*.png and prints the target ratios.
    #[command(long_about = "Run a benchmark in release mode.\n\n\
        `cargo xtask bench` (suite `drivers`) starts this driver (3 nodes), tsoracle-driver-file \
        (1 node) and tsoracle-driver-openraft (3 nodes) as processes on 127.0.0.1 with fresh \
        temporary data, drives each with the same tsoracle-client load, and measures get_ts and \
        dense get_seq throughput and latency at 1, 8 and 64 clients, failover after leader \
        kill -9, persist_high_water latency next to the machine's limit, restart-to-serving \
        against log length, and a soak. The full run takes about 25 minutes; --quick \
        takes a few minutes. Node and load logs stay in target/bench/logs.\n\n\
        `cargo xtask bench transport` measures the peer transport alone.\n\n\
        `cargo xtask bench catchup` measures how long a follower killed with kill -9 takes to \
        catch up after N distinct dense keys were written (10k, 100k and 1M; --quick: 1k and \
        10k), on fresh 3-node clusters; it writes target/bench/catchup.json, \
        docs/benchmarks/catchup.png and the catch-up section of docs/benchmarks.md (which the \
        drivers suite keeps) and prints a table.")]
    Bench {
        /// Which benchmark.
        #[arg(value_enum, default_value = "drivers")]
        suite: bench::Suite,
        /// Measured seconds per scenario (transport; default 10) or per load
        /// point (drivers; default 10, 2 with --quick).
        #[arg(long)]
        seconds: Option<u64>,
        /// The short version: drivers with 2 s load points, 4 kills, logs of
        /// 1k and 5k entries, a 20 s soak; catchup with 1k and 10k keys.
        #[arg(long)]
        quick: bool,
        /// Leader kills per replicated driver (drivers; default 20, 4 with --quick).
        #[arg(long)]
        kills: Option<u32>,
        /// Soak length in seconds (drivers; default 600, 20 with --quick).
        #[arg(long)]
        soak_seconds: Option<u64>,
    },
    /// Fuzz every decoder that reads bytes from the network or disk (needs
    /// nightly and cargo-fuzz). Runs each target for `--seconds`.
    Fuzz {
        /// How long to fuzz each target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Fuzz only this target (see `cargo +nightly fuzz list`).
        #[arg(long)]
        target: Option<String>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let started = Instant::now();
    let build_env = env::prepare()?;
    match cli.command {
        Command::Ci => ci(&build_env)?,
        Command::Test { args } => test(&build_env, &args)?,
        Command::Layering => layering::check(&build_env)?,
        Command::Env => build_env.describe(),
        Command::Examples => examples(&build_env)?,
        Command::Sim(args) => sim::run(&build_env, &args)?,
        Command::Demo { args } => {
            let bins = cmd::build_with_tests(
                "build the workspace as the tests do (tsoracle-paxos, the test kit; shared with `ci`)",
                &build_env,
            )?;
            Step::testkit("demo", &bins, "demo")
                .args(args)
                .run(&build_env)?;
        }
        Command::Image => {
            let bins = cmd::build_with_tests(
                "build the workspace as the tests do (tsoracle-paxos; shared with `ci`)",
                &build_env,
            )?;
            image::check(&bins)?;
        }
        Command::Chaos(args) => chaos::run(&build_env, &args)?,
        Command::Bench {
            suite,
            seconds,
            quick,
            kills,
            soak_seconds,
        } => bench::run(
            &build_env,
            &bench::BenchArgs {
                suite,
                seconds,
                quick,
                kills,
                soak_seconds,
            },
        )?,
        Command::Fuzz { seconds, target } => fuzz::run(&build_env, seconds, target.as_deref())?,
    }
    eprintln!("xtask: done in {:.0?}", started.elapsed());
    Ok(())
}

/// The CI pipeline. Cheap checks first so a formatting slip fails in seconds,
/// not after a seven-minute RocksDB build.
fn ci(build_env: &env::BuildEnv) -> Result<()> {
    let locked = ["--locked"];
    Step::new("rustfmt", "cargo")
        .args(["fmt", "--all", "--check"])
        .run(build_env)?;
    Step::new("layering", "").run_fn(|| layering::check(build_env))?;
    Step::new("clippy (all targets, all features)", "cargo")
        .args(["clippy", "--workspace", "--all-targets", "--all-features"])
        .args(locked)
        .args(["--", "-D", "warnings"])
        .run(build_env)?;
    Step::new("clippy (toolkit without RocksDB)", "cargo")
        .args([
            "clippy",
            "-p",
            "tsoracle-paxos-toolkit",
            "--no-default-features",
            "--all-targets",
        ])
        .args(locked)
        .args(["--", "-D", "warnings"])
        .run(build_env)?;
    // One build for the tests, the simulation, the examples (and the demo,
    // which builds the same): `cargo run -p` would resolve each package's
    // features alone and compile their dependencies again.
    let built = cmd::build_with_tests("build (the tests' build, shared with `demo`)", build_env)?;
    test(build_env, &[])?;
    sim::run_built(build_env, &sim::SimArgs::ci(), &built.dir)?;
    for example in EXAMPLES {
        Step::new(format!("example {example}"), built.dir.join(example)).run(build_env)?;
    }
    image::check(&built)?;
    outside::check(build_env)?;
    Step::new("rustdoc (warnings denied)", "cargo")
        .args(["doc", "--workspace", "--no-deps", "--all-features"])
        .args(locked)
        // Replaces .cargo/config.toml's rustdocflags, so it repeats them.
        .env("RUSTDOCFLAGS", "-D warnings --cfg tokio_unstable")
        .run(build_env)?;
    if !cmd::cargo_subcommand_available("deny") {
        // A fresh machine lacks it: installed once (about 5 CPU-minutes),
        // pinned so every machine checks with the same rules.
        Step::new("install cargo-deny (once per machine)", "cargo")
            .args(["install", "--locked", "cargo-deny", "--version", CARGO_DENY])
            // Built as its authors build it, without this workspace's
            // `--cfg tokio_unstable` (an empty RUSTFLAGS replaces the list).
            .env("RUSTFLAGS", "")
            .run(build_env)?;
    }
    // The advisory database cannot be fetched on this network, so only the
    // offline checks run (see deny.toml).
    Step::new("cargo deny (licenses, bans, sources)", "cargo")
        .args(["deny", "--locked", "check", "licenses", "bans", "sources"])
        .run(build_env)?;
    Ok(())
}

/// The cargo-deny release CI installs when it is missing (builds on 1.95).
const CARGO_DENY: &str = "0.20.2";

/// The worked examples (`cargo xtask examples`; `ci` runs the binaries
/// its tests' build made).
const EXAMPLES: &[&str] = &["paxos-piggyback", "paxos-standalone"];

fn examples(build_env: &env::BuildEnv) -> Result<()> {
    for example in EXAMPLES {
        Step::new(format!("example {example}"), "cargo")
            .args(["run", "--locked", "-q", "-p", example])
            .run(build_env)?;
    }
    Ok(())
}

fn test(build_env: &env::BuildEnv, extra: &[String]) -> Result<()> {
    if cmd::cargo_subcommand_available("nextest") {
        Step::new("tests (nextest)", "cargo")
            .args(["nextest", "run", "--no-fail-fast"])
            .args(cmd::TEST_SELECTION)
            .args(extra)
            .run(build_env)?;
        // nextest does not run doctests; the crate-level examples must compile and pass.
        Step::new("doctests", "cargo")
            .args(["test", "--doc"])
            .args(cmd::TEST_SELECTION)
            .run(build_env)?;
    } else {
        Step::new("tests (cargo test)", "cargo")
            .args(["test"])
            .args(cmd::TEST_SELECTION)
            .args(extra)
            .run(build_env)?;
    }
    Ok(())
}
