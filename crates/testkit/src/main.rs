//! `tsoracle-paxos-testkit`: the demo, the chaos run and the load generator
//! of tsoracle-paxos, on local clusters of node processes.
//!
//! ```text
//! tsoracle-paxos-testkit demo                              # a local cluster and a failover
//! tsoracle-paxos-testkit chaos --duration 60s              # kills, cuts, pauses, a checked history
//! tsoracle-paxos-testkit bench --endpoint 127.0.0.1:7001   # a bounded load
//! tsoracle-paxos-testkit node serve ...                    # the tsoracle-paxos command line
//! ```

mod bench;
mod chaos;
mod demo;
mod error;
mod fault_proxy;
mod fill;
mod load;
mod run;

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tsoracle_paxos::cli::{LogFormat, init_logging};

use crate::error::Error;

#[derive(Parser)]
#[command(
    name = "tsoracle-paxos-testkit",
    version,
    about = "The demo, the chaos run and the load generator of tsoracle-paxos"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log line format.
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Start a local 3-node cluster as child processes, drive the real client
    /// from several workers, kill the leader half way, and check the history.
    Demo(demo::DemoArgs),
    /// Start a local cluster whose peer links pass through a TCP fault
    /// proxy, drive the real client, inject seeded faults (kill -9 and
    /// restart, link cuts, one-way cuts, leader isolation, process pauses),
    /// then check the history, liveness after the final heal, and report
    /// availability.
    ///
    /// The nodes run as child processes on 127.0.0.1 with data in a fresh
    /// directory. Faults come one at a time, so a majority always stays
    /// connected: a node killed with SIGKILL and restarted a little later;
    /// both links between two nodes cut; one link stalled in one direction;
    /// every link of the leader cut while clients still reach it; the
    /// leader (sometimes another node) stopped with SIGSTOP for 1 to 2 s,
    /// longer than a failover and, mostly, only once the leader's
    /// timestamp window reaches past the pause, then continued with
    /// SIGCONT, while workers whose client knows only that node keep
    /// sending to it (a new one every 25 ms of the pause), so their
    /// requests wait in its sockets and are answered after it resumes. The
    /// schedule is drawn from --seed (printed at the start; the same seed
    /// replays it); --faults keeps only some kinds (e.g. --faults pause).
    /// After the last fault every link is healed and every node runs, and
    /// an operation must complete within --quiet.
    ///
    /// The report gives operations ok and failed by kind, faults by kind,
    /// availability (the share of 100 ms buckets with at least one
    /// successful operation, and the longest gap) and the checker's
    /// verdicts; --report writes it as JSON, --history the recorded
    /// operations (each with its invocation and response time). The exit
    /// code is non-zero on
    /// any violation, a liveness failure, or a node that exited on its
    /// own; the data and node logs are then kept. Every child process is
    /// stopped on every exit path, Ctrl-C included (a paused one is
    /// continued first).
    Chaos(chaos::ChaosArgs),
    /// Run a bounded load against a cluster and print throughput and
    /// latency percentiles.
    Bench(bench::BenchArgs),
    /// The `tsoracle-paxos` command line (`serve`, `status`, `get-ts`,
    /// `seq`), built into this binary: `demo` and `chaos` run their nodes
    /// with it unless given `--node-bin`.
    Node {
        /// `tsoracle-paxos` arguments, e.g. `serve --config node.toml`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    // `node ...` is the node's command line verbatim, help and flags
    // included, so it is handed over before this one parses anything.
    if args.get(1).is_some_and(|arg| arg == "node") {
        return node(args.into_iter().skip(2));
    }
    let cli = Cli::parse_from(args);
    if let Command::Node { args } = cli.command {
        return node(args);
    }
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => return fail(&Error::runtime("tokio runtime", err)),
    };
    let result = runtime.block_on(run(cli.command));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(&err),
    }
}

/// `tsoracle-paxos <args>`, in this process.
fn node(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    tsoracle_paxos::cli::main_from(std::iter::once(OsString::from("tsoracle-paxos")).chain(args))
}

async fn run(command: Command) -> Result<(), Error> {
    match command {
        Command::Demo(args) => {
            if demo::run(args).await? {
                Ok(())
            } else {
                Err(Error::runtime(
                    "demo",
                    "a check failed (see the summary above)",
                ))
            }
        }
        Command::Chaos(args) => {
            if chaos::run(args).await? {
                Ok(())
            } else {
                Err(Error::runtime(
                    "chaos",
                    "a check failed (see the report above)",
                ))
            }
        }
        Command::Bench(args) => {
            let report = bench::run(args).await?;
            write!(std::io::stdout(), "{report}").map_err(|err| Error::runtime("stdout", err))
        }
        // Handed over in `main`.
        Command::Node { .. } => Ok(()),
    }
}

/// One line on stderr, exit code 1.
fn fail(err: &Error) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "tsoracle-paxos-testkit: error: {err}");
    ExitCode::FAILURE
}
