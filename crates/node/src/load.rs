//! Client load shared by `demo` and `bench`: workers that issue one request
//! at a time and record what came back.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tsoracle_client::Client;
use tsoracle_paxos_checker::{Op, Outcome};

/// The dense key the workers draw blocks from.
pub(crate) const DENSE_KEY: &str = "demo";

/// Which requests a worker issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mix {
    /// Every n-th request is a `get_seq` of 4; the rest are `get_ts`.
    /// `Some(1)`: dense only; `None`: timestamps only.
    pub(crate) dense_every: Option<u64>,
}

impl Mix {
    pub(crate) const TIMESTAMPS: Self = Self { dense_every: None };
    pub(crate) const DENSE: Self = Self {
        dense_every: Some(1),
    };
    pub(crate) const DENSE_EVERY_TENTH: Self = Self {
        dense_every: Some(10),
    };
}

/// What the workers share: the clock, the stop flag, counters, and an
/// optional bound on the number of requests.
pub(crate) struct Shared {
    pub(crate) start: Instant,
    pub(crate) stop: AtomicBool,
    pub(crate) ok: AtomicU64,
    pub(crate) errors: AtomicU64,
    issued: AtomicU64,
    max_ops: Option<u64>,
    /// Latencies since the last [`take_recent`](Self::take_recent), for
    /// live progress.
    recent: Mutex<Option<Histogram<u64>>>,
}

impl Shared {
    pub(crate) fn new(max_ops: Option<u64>) -> Self {
        Self {
            start: Instant::now(),
            stop: AtomicBool::new(false),
            ok: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            issued: AtomicU64::new(0),
            max_ops,
            recent: Mutex::new(Histogram::new(2).ok()),
        }
    }

    fn record_recent(&self, micros: u64) {
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(h) = recent.as_mut() {
            let _ = h.record(micros.max(1));
        }
    }

    /// The p99 latency (ms) since the last call, and resets it.
    pub(crate) fn take_recent_p99_ms(&self) -> Option<f64> {
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        let h = recent.as_mut()?;
        if h.is_empty() {
            return None;
        }
        let p99 = h.value_at_quantile(0.99) as f64 / 1000.0;
        h.reset();
        Some(p99)
    }

    /// Microseconds since the start.
    pub(crate) fn micros(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Whether the request budget is spent.
    pub(crate) fn exhausted(&self) -> bool {
        self.max_ops
            .is_some_and(|max| self.issued.load(Ordering::Relaxed) >= max)
    }

    /// Takes one request slot; `false` once stopped or out of budget.
    fn take(&self) -> bool {
        if self.stop.load(Ordering::Relaxed) {
            return false;
        }
        let n = self.issued.fetch_add(1, Ordering::Relaxed);
        self.max_ops.is_none_or(|max| n < max)
    }
}

/// One worker: one request at a time until stopped. Returns its successful
/// operations and their latencies (µs).
pub(crate) async fn worker(
    id: u32,
    client: Arc<Client>,
    shared: Arc<Shared>,
    mix: Mix,
) -> (Vec<Op>, Vec<u64>) {
    let mut ops = Vec::new();
    let mut latencies = Vec::new();
    let mut n: u64 = 0;
    while shared.take() {
        n += 1;
        let invoked = shared.micros();
        let dense = mix.dense_every.is_some_and(|every| n.is_multiple_of(every));
        let outcome = if dense {
            client
                .get_seq(DENSE_KEY, 4)
                .await
                .ok()
                .map(|block| Outcome::Dense {
                    key: DENSE_KEY.to_owned(),
                    start: block.start,
                    count: block.count,
                })
        } else {
            client
                .get_ts()
                .await
                .ok()
                .map(|ts| Outcome::Timestamps(vec![ts.0]))
        };
        let completed = shared.micros();
        match outcome {
            Some(outcome) => {
                shared.ok.fetch_add(1, Ordering::Relaxed);
                let latency = completed.saturating_sub(invoked);
                shared.record_recent(latency);
                latencies.push(latency);
                ops.push(Op {
                    worker: id,
                    invoked,
                    completed,
                    outcome,
                });
            }
            None => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
                // A failover or an overloaded node: back off a little.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    (ops, latencies)
}
