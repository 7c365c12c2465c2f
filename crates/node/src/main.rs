//! `tsoracle-paxos`: a tsoracle timestamp oracle node on the OmniPaxos
//! driver, and the client commands to talk to one.
//!
//! ```text
//! tsoracle-paxos demo                              # a local cluster and a failover
//! tsoracle-paxos chaos --duration 60s              # kills, cuts, pauses, a checked history
//! tsoracle-paxos serve --config node.toml          # run a node
//! tsoracle-paxos get-ts --endpoint 10.0.0.1:7001   # one timestamp
//! tsoracle-paxos seq --endpoint 10.0.0.1:7001 --key orders --count 10
//! ```

mod bench;
mod chaos;
mod client_cmd;
mod cluster;
mod config;
mod demo;
mod disk;
mod error;
mod fault_proxy;
mod load;
mod metrics;
mod serve;
mod status;

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

use crate::config::ServeArgs;
use crate::error::Error;

#[derive(Parser)]
#[command(
    name = "tsoracle-paxos",
    version,
    about = "A replicated tsoracle timestamp oracle node on OmniPaxos",
    long_about = "A replicated tsoracle timestamp oracle on OmniPaxos.\n\n\
        `serve` runs one node: a tsoracle-server for clients, the gRPC peer transport, \
        and RocksDB under --data-dir. Run one per machine, three for a cluster that \
        survives the loss of one. `get-ts` and `seq` call a running cluster.\n\n\
        Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=info,tsoracle_driver_paxos=debug) \
        and --log-format json for machine-readable lines."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log line format.
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run one node until SIGTERM or SIGINT (then shut down cleanly).
    Serve(Box<ServeArgs>),
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
    /// Fetch timestamps from a cluster and print them, one per line.
    GetTs {
        /// A node's client address, HOST:PORT (repeat for several).
        #[arg(long = "endpoint", required = true)]
        endpoints: Vec<String>,
        /// How many timestamps.
        #[arg(long, default_value_t = 1)]
        count: u32,
    },
    /// Run a bounded load against a cluster and print throughput and
    /// latency percentiles.
    Bench(bench::BenchArgs),
    /// Show each node's role, ballot, decided index, high-water and lag,
    /// read from the nodes' metrics endpoints (`serve --metrics-listen`).
    Status {
        /// A node's metrics address, HOST:PORT (repeat for each node).
        #[arg(long = "metrics", required = true)]
        endpoints: Vec<String>,
    },
    /// Take a block of a dense sequence and print its first value.
    Seq {
        /// A node's client address, HOST:PORT (repeat for several).
        #[arg(long = "endpoint", required = true)]
        endpoints: Vec<String>,
        /// The sequence's key.
        #[arg(long)]
        key: String,
        /// The block's length.
        #[arg(long, default_value_t = 1)]
        count: u32,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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

async fn run(command: Command) -> Result<(), Error> {
    match command {
        Command::Serve(args) => serve::run(args.resolve()?).await,
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
        Command::GetTs { endpoints, count } => {
            let timestamps = client_cmd::get_ts(&endpoints, count).await?;
            let mut out = std::io::stdout().lock();
            for ts in timestamps {
                writeln!(out, "{ts}").map_err(|err| Error::runtime("stdout", err))?;
            }
            Ok(())
        }
        Command::Bench(args) => {
            let report = bench::run(args).await?;
            write!(std::io::stdout(), "{report}").map_err(|err| Error::runtime("stdout", err))
        }
        Command::Status { endpoints } => {
            let table = status::run(&endpoints).await?;
            write!(std::io::stdout(), "{table}").map_err(|err| Error::runtime("stdout", err))
        }
        Command::Seq {
            endpoints,
            key,
            count,
        } => {
            let start = client_cmd::seq(&endpoints, &key, count).await?;
            writeln!(std::io::stdout(), "{start}").map_err(|err| Error::runtime("stdout", err))
        }
    }
}

/// One line on stderr, exit code 1.
fn fail(err: &Error) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "tsoracle-paxos: error: {err}");
    ExitCode::FAILURE
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
