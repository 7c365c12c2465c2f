//! `tsoracle-paxos-testkit bench`: a bounded load against a running cluster, with
//! hdrhistogram latencies and a progress bar.
//!
//! `--json` prints one JSON object instead of the text report, for `cargo
//! xtask bench`; `--gap-ms` adds every stretch longer than that with no
//! completed request, in wall-clock microseconds, so a caller that killed a
//! leader at a known time can read the outage around it.
//!
//! `--op fill-keys --keys N` writes N distinct dense keys instead (see
//! [`crate::fill`]), to build a large state for a catch-up benchmark.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};

use crate::error::Error;
use crate::fill::Fill;
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
    /// Stop after this many requests (whichever comes first). With
    /// `fill-keys`: calls in all (default: one per chunk of keys); calls
    /// beyond that bump one existing key each.
    #[arg(long)]
    max_ops: Option<u64>,
    /// `fill-keys`: distinct dense keys to create (`k0000000`, ...).
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// `fill-keys`: keys per `get_seq_batch` call (tsoracle-server's
    /// default cap is 128).
    #[arg(long, default_value_t = 128)]
    batch_keys: u64,
    /// What to request.
    #[arg(long, value_enum, default_value = "ts")]
    op: BenchOp,
    /// Print one JSON object (throughput, latency percentiles in ms, and the
    /// gaps of `--gap-ms`) instead of the text report.
    #[arg(long)]
    json: bool,
    /// Report every interval longer than this many milliseconds between two
    /// consecutive completed requests (of any client), with wall-clock bounds.
    #[arg(long, value_name = "MS")]
    gap_ms: Option<u64>,
    /// With `--json`: also report completed requests per bucket of this
    /// many milliseconds (`series`, from the load's start), to read a
    /// throughput dip around an event.
    #[arg(long, value_name = "MS")]
    series_ms: Option<u64>,
    #[command(flatten)]
    tls: tsoracle_paxos::ClientTlsArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum BenchOp {
    /// `get_ts`.
    Ts,
    /// `get_seq` (dense blocks of 4).
    Seq,
    /// `get_seq_batch` over `--keys` distinct keys, `--batch-keys` per
    /// call (prints JSON, with or without `--json`).
    FillKeys,
}

/// Runs the load and returns the report.
pub(crate) async fn run(args: BenchArgs) -> Result<String, Error> {
    if args.clients == 0 || args.duration == 0 {
        return Err(Error::Config(
            "--clients and --duration must be at least 1".to_owned(),
        ));
    }
    let client = Arc::new(
        args.tls
            .client_builder(args.endpoints.clone())
            .map_err(|err| Error::Config(err.to_string()))?
            .build()
            .await
            .map_err(|err| Error::Client(format!("cannot connect: {err}")))?,
    );
    let mix = match args.op {
        BenchOp::Ts => Mix::TIMESTAMPS,
        BenchOp::Seq => Mix::DENSE,
        BenchOp::FillKeys => {
            let fill = Fill {
                keys: args.keys,
                batch_keys: args.batch_keys,
                clients: args.clients,
                max_calls: args.max_ops,
                duration: Duration::from_secs(args.duration),
            };
            return crate::fill::run(client, fill).await;
        }
    };
    let shared = Arc::new(Shared::new(args.max_ops));
    // Wall-clock time of the load's zero, so gaps can be matched against
    // events (a leader kill) that another process timed.
    let start_unix_us = unix_micros();
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
    let mut completions = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (ops, latencies) = joined.map_err(|err| Error::runtime("bench worker", err))?;
        if args.gap_ms.is_some() || args.series_ms.is_some() {
            completions.extend(ops.iter().map(|op| op.completed));
        }
        for l in latencies {
            let _ = latency.record(l.max(1));
        }
    }
    let elapsed = shared.start.elapsed().as_secs_f64();
    let ok = shared.ok.load(Ordering::Relaxed);
    let errors = shared.errors.load(Ordering::Relaxed);
    let ops_per_s = ok as f64 / elapsed.max(1e-9);
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    let (p50, p90, p99, p999) = (ms(0.5), ms(0.9), ms(0.99), ms(0.999));
    let max = latency.max() as f64 / 1000.0;
    if args.json {
        let series = args
            .series_ms
            .map(|bucket| series(&completions, bucket.max(1).saturating_mul(1000)))
            .unwrap_or_default();
        let gaps: Vec<serde_json::Value> = args
            .gap_ms
            .map(|threshold| gaps(completions, threshold.saturating_mul(1000)))
            .unwrap_or_default()
            .into_iter()
            .map(|(from, to)| {
                serde_json::json!({
                    "from_unix_us": start_unix_us + from,
                    "to_unix_us": start_unix_us + to,
                })
            })
            .collect();
        let report = serde_json::json!({
            "clients": args.clients,
            "ok": ok,
            "errors": errors,
            "elapsed_s": elapsed,
            "ops_per_s": ops_per_s,
            "start_unix_us": start_unix_us,
            "latency_ms": { "p50": p50, "p90": p90, "p99": p99, "p999": p999, "max": max },
            "gaps": gaps,
            "series_ms": args.series_ms,
            "series": series,
        });
        return Ok(format!("{report}\n"));
    }
    Ok(format!(
        "{ok} requests ok, {errors} errors in {elapsed:.1} s with {} clients: {ops_per_s:.0} req/s\n\
         latency ms: p50 {p50:.2}  p90 {p90:.2}  p99 {p99:.2}  p99.9 {p999:.2}  max {max:.2}\n",
        args.clients,
    ))
}

/// Microseconds since the Unix epoch (0 if the clock is before it).
fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Completions per bucket of `bucket` µs, from the load's start to the
/// last completion.
fn series(completions: &[u64], bucket: u64) -> Vec<u64> {
    let Some(&last) = completions.iter().max() else {
        return Vec::new();
    };
    let len = usize::try_from(last / bucket).unwrap_or(0) + 1;
    let mut counts = vec![0u64; len];
    for &at in completions {
        if let Some(slot) = usize::try_from(at / bucket)
            .ok()
            .and_then(|i| counts.get_mut(i))
        {
            *slot += 1;
        }
    }
    counts
}

/// The intervals longer than `threshold` µs between consecutive completion
/// times (µs since the load's start).
fn gaps(mut completions: Vec<u64>, threshold: u64) -> Vec<(u64, u64)> {
    completions.sort_unstable();
    completions
        .windows(2)
        .filter(|w| w[1] - w[0] > threshold)
        .map(|w| (w[0], w[1]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_the_long_silences_between_completions() {
        let completions = vec![500, 100, 200, 5_000, 5_100, 20_000];
        assert_eq!(
            gaps(completions, 1_000),
            vec![(500, 5_000), (5_100, 20_000)]
        );
        assert!(gaps(vec![], 1).is_empty());
    }

    #[test]
    fn the_series_counts_completions_per_bucket() {
        assert_eq!(series(&[10, 999, 1_000, 3_500], 1_000), vec![2, 1, 0, 1]);
        assert!(series(&[], 1_000).is_empty());
    }
}
