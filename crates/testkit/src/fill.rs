//! `tsoracle-paxos-testkit bench --op fill-keys`: writes `--keys N` distinct
//! dense keys (`k0000000`, `k0000001`, ...) through `get_seq_batch`, up to
//! `--batch-keys` keys per call, with `--clients` calls in flight, so a
//! benchmark can build a large replicated state quickly.
//!
//! The keys are cut into chunks of `--batch-keys`, one call each. Calls
//! beyond that (`--max-ops`) bump one existing key each: log entries with
//! the smallest payload and no new key, so a caller can push the log past
//! a snapshot without making the state or the raw log it folds larger. A
//! failed call is retried with the same keys until it succeeds or the time
//! is up: an uncertain outcome that did commit only bumps counters again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tsoracle_client::Client;

use crate::error::Error;

/// What a fill is asked to do.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fill {
    /// Distinct keys to create.
    pub(crate) keys: u64,
    /// Keys per `get_seq_batch` call (tsoracle-server's default cap is 128).
    pub(crate) batch_keys: u64,
    /// Calls in flight.
    pub(crate) clients: u32,
    /// Calls in all (`None`: one per chunk).
    pub(crate) max_calls: Option<u64>,
    /// Longest run.
    pub(crate) duration: Duration,
}

/// The `n`-th key: fixed width, so keys sort in creation order.
pub(crate) fn key(n: u64) -> String {
    format!("k{n:07}")
}

/// The keys of call `call`: chunk `call` (the last one may be shorter)
/// for the first pass, then one existing key per call.
fn call_keys(fill: &Fill, call: u64) -> Vec<String> {
    if call >= chunks(fill) {
        return vec![key(call % fill.keys)];
    }
    let from = call * fill.batch_keys;
    let to = (from + fill.batch_keys).min(fill.keys);
    (from..to).map(key).collect()
}

fn chunks(fill: &Fill) -> u64 {
    fill.keys.div_ceil(fill.batch_keys)
}

/// Counters the callers share.
struct Shared {
    next: AtomicU64,
    stop: AtomicBool,
    ok: AtomicU64,
    errors: AtomicU64,
    /// Keys created: the lengths of the first-pass chunks that succeeded.
    written: AtomicU64,
}

/// Runs the fill and returns its JSON report (one line).
pub(crate) async fn run(client: Arc<Client>, fill: Fill) -> Result<String, Error> {
    if fill.keys == 0 || fill.batch_keys == 0 || fill.clients == 0 {
        return Err(Error::Config(
            "--keys, --batch-keys and --clients must be at least 1".to_owned(),
        ));
    }
    let total = fill.max_calls.unwrap_or_else(|| chunks(&fill));
    let shared = Arc::new(Shared {
        next: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        ok: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        written: AtomicU64::new(0),
    });
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..fill.clients {
        tasks.spawn(caller(
            Arc::clone(&client),
            Arc::clone(&shared),
            fill,
            total,
        ));
    }
    let mut latency = Histogram::<u64>::new(3).map_err(|err| Error::runtime("histogram", err))?;
    let deadline = tokio::time::sleep(fill.duration);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                Some(joined) => {
                    let latencies = joined.map_err(|err| Error::runtime("fill caller", err))?;
                    for l in latencies {
                        let _ = latency.record(l.max(1));
                    }
                }
                None => break,
            },
            () = &mut deadline => shared.stop.store(true, Ordering::Relaxed),
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let ok = shared.ok.load(Ordering::Relaxed);
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    let report = serde_json::json!({
        "op": "fill-keys",
        "clients": fill.clients,
        "keys": fill.keys,
        "keys_written": shared.written.load(Ordering::Relaxed),
        "calls": total,
        "ok": ok,
        "errors": shared.errors.load(Ordering::Relaxed),
        "elapsed_s": elapsed,
        "ops_per_s": ok as f64 / elapsed.max(1e-9),
        "latency_ms": {
            "p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "p999": ms(0.999),
            "max": latency.max() as f64 / 1000.0,
        },
        "gaps": [],
    });
    Ok(format!("{report}\n"))
}

/// One caller: takes the next call number, retries its chunk until it
/// succeeds or the run stops. Returns its latencies (µs).
async fn caller(client: Arc<Client>, shared: Arc<Shared>, fill: Fill, total: u64) -> Vec<u64> {
    let mut latencies = Vec::new();
    let chunks = chunks(&fill);
    loop {
        let call = shared.next.fetch_add(1, Ordering::Relaxed);
        if call >= total {
            return latencies;
        }
        let keys = call_keys(&fill, call);
        let entries: Vec<(&str, u32)> = keys.iter().map(|k| (k.as_str(), 1)).collect();
        loop {
            if shared.stop.load(Ordering::Relaxed) {
                return latencies;
            }
            let invoked = Instant::now();
            if client.get_seq_batch(&entries).await.is_ok() {
                latencies.push(u64::try_from(invoked.elapsed().as_micros()).unwrap_or(u64::MAX));
                shared.ok.fetch_add(1, Ordering::Relaxed);
                if call < chunks {
                    shared
                        .written
                        .fetch_add(keys.len() as u64, Ordering::Relaxed);
                }
                break;
            }
            shared.errors.fetch_add(1, Ordering::Relaxed);
            // A failover or an overloaded node: back off a little.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(keys: u64) -> Fill {
        Fill {
            keys,
            batch_keys: 128,
            clients: 1,
            max_calls: None,
            duration: Duration::from_secs(1),
        }
    }

    #[test]
    fn chunks_cover_every_key_once() {
        let f = fill(300);
        assert_eq!(chunks(&f), 3);
        let all: Vec<String> = (0..3).flat_map(|c| call_keys(&f, c)).collect();
        assert_eq!(all.len(), 300);
        assert_eq!(all[0], "k0000000");
        assert_eq!(all[299], "k0000299");
        assert_eq!(call_keys(&f, 2).len(), 44);
        // Padding calls bump one existing key each.
        assert_eq!(call_keys(&f, 3), vec!["k0000003".to_owned()]);
        assert_eq!(call_keys(&f, 301), vec!["k0000001".to_owned()]);
        let mut unique = all.clone();
        unique.dedup();
        assert_eq!(unique, all, "keys are distinct and in order");
    }

    #[test]
    fn a_million_keys_keep_the_fixed_width() {
        assert_eq!(key(999_999), "k0999999");
        assert_eq!(chunks(&fill(1_000_000)), 7813);
    }
}
