//! `wait-serving`: how long until a cluster answers its first `get_ts`.
//!
//! The stock client retries with exponential backoff, which would add up to
//! its last backoff to the measured time. This probe instead makes single
//! attempts with a fresh client every few milliseconds, so the first success
//! is seen within one poll of the moment the cluster can serve.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Result, bail};
use clap::Args;
use tsoracle_client::{ClientBuilder, RetryPolicy};

/// `wait-serving` flags.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// A node's client address, HOST:PORT (repeat for each node).
    #[arg(long = "endpoint", required = true)]
    endpoints: Vec<String>,
    /// Measure from this wall-clock time (µs since the Unix epoch), e.g. when
    /// the nodes were started; default: when the probe starts.
    #[arg(long, value_name = "US")]
    since_unix_us: Option<u64>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout_s: u64,
    /// Pause between attempts, ms.
    #[arg(long, default_value_t = 5)]
    poll_ms: u64,
    /// After the first timestamp, also wait for a dense `get_seq` on this
    /// key (a fresh openraft cluster serves dense sequences only once it
    /// has activated their record format). Not part of the measured time.
    #[arg(long, value_name = "KEY")]
    require_seq: Option<String>,
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Prints `{"serving_ms": X, "attempts": N}` once a `get_ts` succeeds.
pub async fn run(args: ProbeArgs) -> Result<()> {
    let since = args.since_unix_us.unwrap_or_else(unix_micros);
    let deadline = Instant::now() + Duration::from_secs(args.timeout_s);
    let policy = RetryPolicy {
        max_attempts: 1,
        per_attempt_deadline: Duration::from_millis(500),
        overall_deadline: Duration::from_millis(600),
        base_backoff: Duration::ZERO,
        ..RetryPolicy::default()
    };
    let mut attempts = 0u64;
    let mut last_error = String::new();
    while Instant::now() < deadline {
        attempts += 1;
        let client = ClientBuilder::endpoints(args.endpoints.clone())
            .retry_policy(policy.clone())
            .build()
            .await;
        match client {
            Ok(client) => match client.get_ts().await {
                Ok(_) => {
                    let serving_ms = unix_micros().saturating_sub(since) as f64 / 1000.0;
                    if let Some(key) = &args.require_seq {
                        wait_seq(&args.endpoints, key, deadline).await?;
                    }
                    println!("{{\"serving_ms\":{serving_ms:.3},\"attempts\":{attempts}}}");
                    return Ok(());
                }
                Err(err) => last_error = err.to_string(),
            },
            Err(err) => last_error = err.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(args.poll_ms)).await;
    }
    bail!(
        "no timestamp from {:?} within {} s (last error: {last_error})",
        args.endpoints,
        args.timeout_s
    )
}

/// Polls `get_seq(key, 1)` with the stock client until it succeeds.
async fn wait_seq(endpoints: &[String], key: &str, deadline: Instant) -> Result<()> {
    let client = ClientBuilder::endpoints(endpoints.to_vec()).build().await?;
    let mut last_error = String::new();
    while Instant::now() < deadline {
        match client.get_seq(key, 1).await {
            Ok(_) => return Ok(()),
            Err(err) => last_error = err.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("no dense get_seq from {endpoints:?} in time (last error: {last_error})")
}
