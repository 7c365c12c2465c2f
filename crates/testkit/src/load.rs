//! Client load shared by `demo`, `bench` and `chaos`: workers that issue one
//! request at a time and record what came back, and what the runs do with
//! the recorded history (collect it, read the final counters, check it).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::task::JoinSet;
use tsoracle_client::{Client, ClientBuilder, RetryPolicy};
use tsoracle_paxos_checker::{History, Op, Outcome, Report, Violation};

use crate::error::Error;

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
    /// The failed requests among `errors` that were `get_seq`.
    pub(crate) dense_errors: AtomicU64,
    issued: AtomicU64,
    max_ops: Option<u64>,
    /// Latencies since the last [`take_recent_p99_ms`](Self::take_recent_p99_ms), for
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
            dense_errors: AtomicU64::new(0),
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
        let dense = mix.dense_every.is_some_and(|every| n.is_multiple_of(every));
        match issue(id, &client, &shared, dense).await {
            Some((op, latency)) => {
                latencies.push(latency);
                ops.push(op);
            }
            // A failover or an overloaded node: back off a little.
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    (ops, latencies)
}

/// Issues one request for worker `id` (a `get_seq` of 4 when `dense`,
/// else a `get_ts`) and counts it in `shared`. Returns the operation, its
/// invocation and response times taken right around the call, and its
/// latency (µs); `None` when it failed.
pub(crate) async fn issue(
    id: u32,
    client: &Client,
    shared: &Shared,
    dense: bool,
) -> Option<(Op, u64)> {
    let invoked = shared.micros();
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
    let Some(outcome) = outcome else {
        shared.errors.fetch_add(1, Ordering::Relaxed);
        if dense {
            shared.dense_errors.fetch_add(1, Ordering::Relaxed);
        }
        return None;
    };
    shared.ok.fetch_add(1, Ordering::Relaxed);
    let latency = completed.saturating_sub(invoked);
    shared.record_recent(latency);
    Some((
        Op {
            worker: id,
            invoked,
            completed,
            outcome,
        },
        latency,
    ))
}

/// What one worker returns: its successful operations and their latencies.
pub(crate) type WorkerResult = (Vec<Op>, Vec<u64>);

/// A client of `endpoints` with its own retry and deadline `policy` (it
/// connects lazily).
pub(crate) async fn connect_with(
    endpoints: Vec<String>,
    policy: RetryPolicy,
) -> Result<Arc<Client>, Error> {
    ClientBuilder::endpoints(endpoints)
        .retry_policy(policy)
        .build()
        .await
        .map(Arc::new)
        .map_err(|err| Error::Client(format!("cannot connect: {err}")))
}

/// Connects a client to `endpoints` and waits (at most `within`) until the
/// cluster hands out a first timestamp, i.e. has a leader. Returns the
/// client and how long the wait took.
pub(crate) async fn ready_client(
    endpoints: Vec<String>,
    within: Duration,
) -> Result<(Arc<Client>, Duration), Error> {
    ready_client_with(endpoints, RetryPolicy::default(), within).await
}

/// [`ready_client`] with the client's retry and deadline `policy`.
pub(crate) async fn ready_client_with(
    endpoints: Vec<String>,
    policy: RetryPolicy,
    within: Duration,
) -> Result<(Arc<Client>, Duration), Error> {
    let client = connect_with(endpoints, policy).await?;
    let ready = Instant::now();
    while client.get_ts().await.is_err() {
        if ready.elapsed() > within {
            return Err(Error::runtime(
                "cluster",
                format!("no leader was elected within {} s", within.as_secs()),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((client, ready.elapsed()))
}

/// Starts `workers` workers; worker `i` uses `clients[i % clients.len()]`
/// (one shared client, or one each so each has its own leader cache).
pub(crate) fn spawn_workers(
    workers: u32,
    clients: &[Arc<Client>],
    shared: &Arc<Shared>,
    mix: Mix,
) -> JoinSet<WorkerResult> {
    let mut tasks = JoinSet::new();
    for (id, client) in (0..workers).zip(clients.iter().cycle()) {
        tasks.spawn(worker(id, Arc::clone(client), Arc::clone(shared), mix));
    }
    tasks
}

/// Waits for every worker (they stop at `shared.stop`) and gathers their
/// operations into one history and their latencies into one histogram.
pub(crate) async fn collect(
    mut tasks: JoinSet<WorkerResult>,
) -> Result<(History, Histogram<u64>), Error> {
    let mut history = History::default();
    let mut latency = Histogram::<u64>::new(3).map_err(|err| Error::runtime("histogram", err))?;
    while let Some(joined) = tasks.join_next().await {
        let (ops, latencies) = joined.map_err(|err| Error::runtime("client worker", err))?;
        history.ops.extend(ops);
        for l in latencies {
            let _ = latency.record(l.max(1));
        }
    }
    Ok((history, latency))
}

/// Records [`DENSE_KEY`]'s final counter in `history`: a block taken after
/// every worker stopped starts there. Retries for at most `within` (the
/// cluster may be recovering); `false` when no block could be taken.
pub(crate) async fn read_final_counter(
    client: &Client,
    history: &mut History,
    within: Duration,
) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(block) = client.get_seq(DENSE_KEY, 1).await {
            history
                .final_counters
                .insert(DENSE_KEY.to_owned(), block.start);
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Test hook behind the runs' hidden `--forge-history`: swaps the results
/// of the first and the last timestamp operations, which do not overlap in
/// time, a real-time order violation the checker must report.
pub(crate) fn forge(history: &mut History) {
    let ts: Vec<usize> = history
        .ops
        .iter()
        .enumerate()
        .filter(|(_, op)| matches!(op.outcome, Outcome::Timestamps(_)))
        .map(|(i, _)| i)
        .collect();
    if let (Some(&first), Some(&last)) = (ts.first(), ts.last()) {
        let a = history.ops[first].outcome.clone();
        history.ops[first].outcome = history.ops[last].outcome.clone();
        history.ops[last].outcome = a;
    }
}

/// The checker's rules as `(passed, rule)`, in the order runs print them.
pub(crate) fn verdicts(report: &Report) -> [(bool, &'static str); 4] {
    let none = |f: fn(&Violation) -> bool| !report.violations.iter().any(f);
    [
        (
            none(|v| matches!(v, Violation::DuplicateTimestamp { .. })),
            "every timestamp unique",
        ),
        (
            none(|v| matches!(v, Violation::WorkerNotIncreasing { .. })),
            "each worker's timestamps strictly increasing",
        ),
        (
            none(|v| matches!(v, Violation::RealTimeOrder { .. })),
            "a timestamp received before a request started is below its result",
        ),
        (
            none(|v| {
                matches!(
                    v,
                    Violation::DenseOverlap { .. } | Violation::DenseLost { .. }
                )
            }),
            "dense blocks disjoint and below the final counter",
        ),
    ]
}

/// `PASS` or `FAIL`.
pub(crate) fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "FAIL" }
}
