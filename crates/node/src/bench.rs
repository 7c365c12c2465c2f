//! `tsoracle-paxos bench`: a bounded load against a running cluster, with
//! hdrhistogram latencies and a progress bar.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use tsoracle_client::ClientBuilder;

use crate::error::Error;
use crate::load::{Mix, Shared, worker};

/// `bench` flags.
#[derive(Debug, Clone, Args)]
pub(crate) struct BenchArgs {
    /// A node's client address, HOST:PORT (repeat for several).
    #[arg(long = "endpoint", required = true)]
    endpoints: Vec<String>,
    /// Concurrent clients, each with one request in flight.
    #[arg(long, default_value_t = 8)]
    clients: u32,
    /// Longest run, in seconds.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Stop after this many requests (whichever comes first).
    #[arg(long)]
    max_ops: Option<u64>,
    /// What to request.
    #[arg(long, value_enum, default_value = "ts")]
    op: BenchOp,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum BenchOp {
    /// `get_ts`.
    Ts,
    /// `get_seq` (dense blocks of 4).
    Seq,
}

/// Runs the load and returns the report.
pub(crate) async fn run(args: BenchArgs) -> Result<String, Error> {
    if args.clients == 0 || args.duration == 0 {
        return Err(Error::Config(
            "--clients and --duration must be at least 1".to_owned(),
        ));
    }
    let client = Arc::new(
        ClientBuilder::endpoints(args.endpoints.clone())
            .build()
            .await
            .map_err(|err| Error::Client(format!("cannot connect: {err}")))?,
    );
    let mix = match args.op {
        BenchOp::Ts => Mix::TIMESTAMPS,
        BenchOp::Seq => Mix::DENSE,
    };
    let shared = Arc::new(Shared::new(args.max_ops));
    let mut tasks = tokio::task::JoinSet::new();
    for id in 0..args.clients {
        tasks.spawn(worker(id, Arc::clone(&client), Arc::clone(&shared), mix));
    }
    let bar = ProgressBar::new(args.duration);
    bar.set_style(
        ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {pos}/{len}s {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let total = Duration::from_secs(args.duration);
    while shared.start.elapsed() < total && !shared.exhausted() {
        tokio::time::sleep(Duration::from_millis(200)).await;
        bar.set_position(shared.start.elapsed().as_secs().min(args.duration));
        bar.set_message(format!(
            "{} ok, {} errors",
            shared.ok.load(Ordering::Relaxed),
            shared.errors.load(Ordering::Relaxed)
        ));
    }
    shared.stop.store(true, Ordering::Relaxed);
    bar.finish_and_clear();
    let mut latency = Histogram::<u64>::new(3).map_err(|err| Error::runtime("histogram", err))?;
    while let Some(joined) = tasks.join_next().await {
        let (_, latencies) = joined.map_err(|err| Error::runtime("bench worker", err))?;
        for l in latencies {
            let _ = latency.record(l.max(1));
        }
    }
    let elapsed = shared.start.elapsed().as_secs_f64();
    let ok = shared.ok.load(Ordering::Relaxed);
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    Ok(format!(
        "{ok} requests ok, {} errors in {elapsed:.1} s with {} clients: {:.0} req/s\n\
         latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}\n",
        shared.errors.load(Ordering::Relaxed),
        args.clients,
        ok as f64 / elapsed.max(1e-9),
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999),
        latency.max() as f64 / 1000.0,
    ))
}
