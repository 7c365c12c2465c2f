//! A single node on the published `tsoracle-driver-file`: the high-water and
//! dense counters in files under `--data-dir`, each write synced, under a
//! real `tsoracle-server`. It is the single-machine baseline of the
//! benchmark: no replication, no election.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use tsoracle_consensus::ConsensusDriver;
use tsoracle_driver_file::FileDriver;

use crate::serve::{bind, serve_clients};
use crate::status;

/// `file` flags.
#[derive(Debug, Args)]
pub struct FileArgs {
    /// Where the driver keeps its files (created if missing).
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// The tsoracle client service address.
    #[arg(long, value_name = "ADDR")]
    client_listen: SocketAddr,
    /// Prometheus page with the role and the tsoracle-server metrics.
    #[arg(long, value_name = "ADDR")]
    status_listen: Option<SocketAddr>,
    /// tsoracle-server's window ahead, ms (its default: 3000).
    #[arg(long)]
    window_ahead_ms: Option<u64>,
}

pub async fn run(args: FileArgs) -> Result<()> {
    let listener = bind(args.client_listen, "the client service").await?;
    if let Some(addr) = args.status_listen {
        status::install(addr)?;
        // A single node is always the leader.
        status::set_role(2.0);
    }
    let driver = FileDriver::open_or_init(&args.data_dir)
        .with_context(|| format!("cannot open the file driver in {}", args.data_dir.display()))?;
    serve_clients(
        driver as Arc<dyn ConsensusDriver>,
        listener,
        args.window_ahead_ms,
    )
    .await
}
