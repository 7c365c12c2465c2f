//! The `tsoracle-paxos` command line: `serve`, `status`, `get-ts`, `seq`,
//! `member`.
//!
//! The shipped binary is [`main`]; [`main_from`] runs the same command line
//! from given arguments, so another binary (the test kit's) can embed it.

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

use crate::config::ServeArgs;
use crate::error::Error;
use crate::member_cmd::MemberCommand;

#[derive(Parser)]
#[command(
    name = "tsoracle-paxos",
    version = crate::metrics::VERSION,
    about = "A replicated tsoracle timestamp oracle node on OmniPaxos",
    long_about = "A replicated tsoracle timestamp oracle on OmniPaxos.\n\n\
        `serve` runs one node: a tsoracle-server for clients, the gRPC peer transport, \
        and RocksDB under --data-dir. Run one per machine, three for a cluster that \
        survives the loss of one. `get-ts` and `seq` call a running cluster; \
        `member` lists, adds, removes and replaces its members.\n\n\
        Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=info,tsoracle_driver_paxos=debug) \
        and --log-format json for machine-readable lines."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log line format.
    #[arg(
        long,
        value_enum,
        default_value = "text",
        global = true,
        env = "TSORACLE_PAXOS_LOG_FORMAT"
    )]
    log_format: LogFormat,
}

/// The log line format of `--log-format` (shared with the test kit's
/// binary).
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run one node until SIGTERM or SIGINT (then shut down cleanly).
    Serve(Box<ServeArgs>),
    /// Fetch timestamps from a cluster and print them, one per line.
    GetTs {
        /// A node's client address, HOST:PORT (repeat for several).
        #[arg(long = "endpoint", required = true)]
        endpoints: Vec<String>,
        /// How many timestamps.
        #[arg(long, default_value_t = 1)]
        count: u32,
        #[command(flatten)]
        tls: crate::client_cmd::ClientTlsArgs,
    },
    /// Show every member's role, leader, ballot, configuration, decided and
    /// applied index, lag, high-water, health, identity and links, asked of
    /// each member's admin service (on its peer port). Exits non-zero when
    /// a member does not answer or none leads (the table still prints).
    Status(Box<crate::status::StatusArgs>),
    /// Change or list the cluster's members through a node's admin service
    /// (on its peer port; with mutual TLS, a change needs a client
    /// certificate naming `tsoracle-admin`). See docs/operations.md.
    Member {
        #[command(subcommand)]
        command: MemberCommand,
    },
    /// Write the cluster's state (high-water, dense counters, leases) at a
    /// linearized point to a versioned JSON file, from the leader (a
    /// quorum is needed; with mutual TLS, the admin certificate). Start a
    /// new cluster above it with `serve --restore-from FILE` on every
    /// founding node. See docs/operations.md, "Disaster recovery".
    Export(Box<crate::export_cmd::ExportArgs>),
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
        #[command(flatten)]
        tls: crate::client_cmd::ClientTlsArgs,
    },
}

/// `tsoracle-paxos` with the process's arguments.
pub fn main() -> ExitCode {
    main_from(std::env::args_os())
}

/// `tsoracle-paxos` with `args` (the first is the program name). Parses
/// them (printing help or a usage error and exiting as clap does), sets up
/// logging to stderr, runs the command on a new Tokio runtime, and returns
/// the exit code: failure with one line `tsoracle-paxos: error: ...` on
/// stderr when the command failed.
pub fn main_from<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = Cli::parse_from(args);
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
        Command::Serve(args) => crate::serve(args.resolve()?).await,
        Command::GetTs {
            endpoints,
            count,
            tls,
        } => {
            let timestamps = crate::client_cmd::get_ts(&endpoints, &tls, count).await?;
            let mut out = std::io::stdout().lock();
            for ts in timestamps {
                writeln!(out, "{ts}").map_err(|err| Error::runtime("stdout", err))?;
            }
            Ok(())
        }
        Command::Status(args) => {
            let (text, problems) = crate::status::run(*args).await?;
            write!(std::io::stdout(), "{text}").map_err(|err| Error::runtime("stdout", err))?;
            if problems.is_empty() {
                Ok(())
            } else {
                Err(Error::Client(format!(
                    "the cluster is not healthy: {}",
                    problems.join("; ")
                )))
            }
        }
        Command::Export(args) => {
            let text = crate::export_cmd::run(*args).await?;
            write!(std::io::stdout(), "{text}").map_err(|err| Error::runtime("stdout", err))
        }
        Command::Member { command } => {
            let text = command.run().await?;
            write!(std::io::stdout(), "{text}").map_err(|err| Error::runtime("stdout", err))
        }
        Command::Seq {
            endpoints,
            key,
            count,
            tls,
        } => {
            let start = crate::client_cmd::seq(&endpoints, &tls, &key, count).await?;
            writeln!(std::io::stdout(), "{start}").map_err(|err| Error::runtime("stdout", err))
        }
    }
}

/// One line on stderr, exit code 1.
fn fail(err: &Error) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "tsoracle-paxos: error: {err}");
    ExitCode::FAILURE
}

/// Logs to stderr in `format`, filtered by `RUST_LOG` (default `info`).
/// Text lines are coloured only on a terminal: a journal, a container's log
/// or a file gets plain text (and `NO_COLOR` turns colour off everywhere).
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    // `try_init`: a binary that embeds this command line may have set up
    // logging already; its subscriber then stays.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// clap's own consistency checks of the whole command line (unique
    /// argument ids, valid `requires` and `conflicts_with`), which it
    /// otherwise runs only when a command is first parsed.
    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    /// `--version` names the commit the binary was built from.
    #[test]
    fn the_version_names_the_commit() {
        let version = Cli::command().render_version();
        assert!(version.contains("(commit "), "{version}");
        assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
    }
}
