//! The load of the pause fault: workers pinned to the paused node.
//!
//! A process stopped with SIGSTOP cannot answer, but the kernel still
//! accepts connections to it and queues what they carry. Requests sent to
//! it wait, and are answered the moment it resumes, by a process that may
//! still believe it leads and still hold an in-memory timestamp window
//! while a new leader has served in between. To observe that, a pinned
//! worker starts every [`PIN_EVERY`] of the pause, each with a client that
//! knows only the paused node's endpoint (so it cannot move on to the
//! others) and is not shared (a client coalesces concurrent `get_ts` calls
//! into one RPC, so a shared one would send only the first). Each first
//! request is thus invoked at its own moment of the pause, some of them
//! after a new leader served the other workers: the real-time order a
//! resumed leader answering from its old window breaks. The last one
//! starts [`LAST_BEFORE_RESUME`] before the SIGCONT, as late as possible.
//! Each pinned worker then goes on, one request at a time, until
//! [`PINNED_TAIL`] after the resume, since fresh requests right after
//! SIGCONT face the same question.
//!
//! Whether a resumed node without a reply gate answers the queued requests
//! is a race inside it: its lease timer (which steps it down) against the
//! tasks that read the sockets. In the runs so far the sockets won in about
//! one leader pause in five, and then for every queued request at once.
//!
//! The clients of a pause of the leader connect before the SIGSTOP (one
//! request each, not recorded), so their requests wait on established
//! HTTP/2 connections, as a busy client's would: on resume the node can
//! read them at once, without first accepting and handshaking a
//! connection.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tsoracle_client::{Client, RetryPolicy};
use tsoracle_paxos_checker::{History, Op};

use super::report::Pinned;
use crate::error::Error;
use crate::load::{Shared, connect_with, issue};

/// A new pinned worker starts this often during a pause: many requests,
/// invoked at many moments, so that some follow the new leader's first
/// answers.
pub(crate) const PIN_EVERY: Duration = Duration::from_millis(25);
/// The last pinned worker's first request goes out this long before the
/// SIGCONT: late in the pause, after a new leader most likely served, yet
/// surely written to the socket before the node resumes.
pub(crate) const LAST_BEFORE_RESUME: Duration = Duration::from_millis(30);
/// Pinned workers keep sending this long after the resume.
pub(crate) const PINNED_TAIL: Duration = Duration::from_millis(500);
/// How long the pinned clients may take to connect before the pause.
const WARM_WITHIN: Duration = Duration::from_secs(1);

/// The pinned clients' policy: a per-attempt deadline above the longest
/// pause ([`super::plan::PAUSE_MS`]), so a request queued at the stopped
/// node is still awaited when it resumes and its answer is recorded.
fn pinned_policy() -> RetryPolicy {
    RetryPolicy {
        per_attempt_deadline: Duration::from_secs(5),
        ..RetryPolicy::default()
    }
}

/// What one pinned worker did.
#[derive(Default)]
struct Outcome {
    ops: Vec<Op>,
    latencies: Vec<u64>,
    failed: u64,
}

/// The pinned workers of every pause of a run.
pub(crate) struct PinnedLoad {
    tasks: JoinSet<Outcome>,
    /// The next worker id: after the regular workers', so every pinned
    /// worker has its own and the per-worker order check applies to it.
    next_id: u32,
    workers: u64,
    /// Each pause's stop and continue (µs since the load started).
    windows: Vec<(u64, u64)>,
}

impl PinnedLoad {
    /// No pinned workers yet; their ids start at `first_id`.
    pub(crate) fn new(first_id: u32) -> Self {
        Self {
            tasks: JoinSet::new(),
            next_id: first_id,
            workers: 0,
            windows: Vec::new(),
        }
    }

    /// The clients for the workers pinned to `endpoint` during a pause of
    /// `hold`: one per [`PIN_EVERY`], and one for the request just before
    /// the resume. With `warm`, each first takes one
    /// timestamp (bounded, unrecorded) so that its connection is open
    /// before the node is stopped; `warm` only for a node believed to lead,
    /// since a follower would redirect the client to the leader and its
    /// requests would no longer go to the paused node.
    pub(crate) async fn connect(
        endpoint: &str,
        hold: Duration,
        warm: bool,
    ) -> Result<Vec<Arc<Client>>, Error> {
        let count = hold.as_micros().div_ceil(PIN_EVERY.as_micros()) + 1;
        let mut clients = Vec::new();
        for _ in 0..count {
            clients.push(connect_with(vec![endpoint.to_owned()], pinned_policy()).await?);
        }
        if warm {
            let mut warming = JoinSet::new();
            for client in &clients {
                let client = Arc::clone(client);
                warming.spawn(async move { client.get_ts().await.is_ok() });
            }
            // A client that is not warm by then connects on its first
            // request instead; the pause is not held up for it.
            let _ = tokio::time::timeout(WARM_WITHIN, async {
                while warming.join_next().await.is_some() {}
            })
            .await;
        }
        Ok(clients)
    }

    /// Starts the pinned workers on the clients of
    /// [`connect`](Self::connect), the node having been stopped at `from`
    /// and to be continued at `to` (since the load started): the `k`-th at
    /// `from + k *` [`PIN_EVERY`] while that is before `to -`
    /// [`LAST_BEFORE_RESUME`], and the last one at that moment. Returns how
    /// many started.
    pub(crate) fn start(
        &mut self,
        mut clients: Vec<Arc<Client>>,
        shared: &Arc<Shared>,
        from: Duration,
        to: Duration,
    ) -> usize {
        let until = to + PINNED_TAIL;
        let last_at = to.saturating_sub(LAST_BEFORE_RESUME).max(from);
        let Some(last) = clients.pop() else { return 0 };
        let mut starts: Vec<Duration> = (0u32..)
            .map(|k| from + PIN_EVERY * k)
            .take_while(|&at| at < last_at)
            .take(clients.len())
            .collect();
        starts.push(last_at);
        clients.push(last);
        let started = starts.len();
        // The clients that did not fit (the pause began late) are dropped;
        // the last one is always used.
        let skip = clients.len() - started;
        for (client, at) in clients.into_iter().skip(skip).zip(starts) {
            let id = self.next_id;
            self.next_id = self.next_id.saturating_add(1);
            self.tasks
                .spawn(pinned_worker(id, client, Arc::clone(shared), at, until));
            self.workers += 1;
        }
        started
    }

    /// Notes a pause from `stopped` to `continued` (µs since the load
    /// started), for [`Pinned::queued_across_pause`].
    pub(crate) fn paused(&mut self, stopped: u64, continued: u64) {
        self.windows.push((stopped, continued));
    }

    /// Waits for every pinned worker (each stops on its own shortly after
    /// its pause; every request is bounded by the client's deadlines),
    /// adds their operations to `history` and their latencies to
    /// `latency`, and counts them.
    pub(crate) async fn finish(
        mut self,
        history: &mut History,
        latency: &mut Histogram<u64>,
    ) -> Result<Pinned, Error> {
        let mut pinned = Pinned {
            workers: self.workers,
            ..Pinned::default()
        };
        let joined = tokio::time::timeout(Duration::from_secs(30), async {
            let mut all = Vec::new();
            while let Some(done) = self.tasks.join_next().await {
                all.push(done.map_err(|err| Error::runtime("pinned worker", err))?);
            }
            Ok::<_, Error>(all)
        })
        .await
        .map_err(|_| Error::runtime("chaos", "the pinned workers did not stop within 30 s"))??;
        for outcome in joined {
            pinned.ok += outcome.ops.len() as u64;
            pinned.failed += outcome.failed;
            pinned.queued_across_pause += outcome
                .ops
                .iter()
                .filter(|op| {
                    self.windows
                        .iter()
                        .any(|&(s, c)| op.invoked >= s && op.invoked < c && op.completed >= c)
                })
                .count() as u64;
            history.ops.extend(outcome.ops);
            for l in outcome.latencies {
                let _ = latency.record(l.max(1));
            }
        }
        Ok(pinned)
    }
}

/// Waits, at most `within`, until the leader behind `client` (a warm
/// pinned client) may serve from its current timestamp window for at least
/// `needed` more: its window's end, the committed high-water, is its
/// reported max-safe point plus `window_ahead` plus 1 ms, in the same
/// wall-clock milliseconds as this machine's clock. `false` when it did not
/// get there (e.g. the node no longer leads and reports 0).
pub(crate) async fn await_window(
    client: &Client,
    window_ahead: Duration,
    needed: Duration,
    within: Duration,
) -> bool {
    let deadline = Instant::now() + within;
    let ahead = u64::try_from(window_ahead.as_millis()).unwrap_or(u64::MAX);
    let needed = u64::try_from(needed.as_millis()).unwrap_or(u64::MAX);
    loop {
        if let Ok(Ok(safe)) =
            tokio::time::timeout(Duration::from_millis(200), client.get_current_max_safe()).await
            && safe.max_safe_physical_ms > 0
        {
            let end = safe
                .max_safe_physical_ms
                .saturating_add(ahead)
                .saturating_add(1);
            if end >= unix_ms().saturating_add(needed) {
                return true;
            }
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One pinned worker: from `start` until `until` (since the load started)
/// one request at a time, `get_ts` and every tenth a `get_seq`; the first,
/// the one that waits in the paused node's socket, is a `get_ts`.
async fn pinned_worker(
    id: u32,
    client: Arc<Client>,
    shared: Arc<Shared>,
    start: Duration,
    until: Duration,
) -> Outcome {
    let began = Instant::from_std(shared.start);
    tokio::time::sleep_until(began + start).await;
    let mut outcome = Outcome::default();
    let mut n: u64 = 0;
    while shared.start.elapsed() < until && !shared.stop.load(Ordering::Relaxed) {
        n += 1;
        match issue(id, &client, &shared, n.is_multiple_of(10)).await {
            Some((op, latency)) => {
                outcome.ops.push(op);
                outcome.latencies.push(latency);
            }
            None => {
                outcome.failed += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    outcome
}
