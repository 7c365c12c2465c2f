//! What the node shows of itself: the Prometheus recorder, the sampler that
//! keeps the gauges and counters current, and the [`Observer`] that
//! liveness, readiness, the gRPC health service and the metrics share.
//!
//! The driver and the toolkit record their histograms (proposal, commit and
//! fsync latency) and counters (lease lapses, leadership changes, gated
//! replies) through the `metrics` facade as they happen; tsoracle-server
//! records its own. The rest (role, epoch, indices, high-water, queue
//! depth, the transport's counters, each peer's link) is sampled here
//! every 250 ms. The names come from `tsoracle-paxos-metrics`, so `status`
//! and the tooling read back the same ones; docs/operations.md lists every
//! series.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use metrics::{counter, gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use tokio::task::JoinHandle;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tsoracle_driver_paxos::{PaxosDriver, PaxosHighWaterHost, Role, StandaloneHost, Timing};
use tsoracle_paxos_metrics::{
    BALLOT, BUILD_INFO, CHUNKED_OUT, COMPACTED, DECIDED, HIGH_WATER, IMPOSTOR_REFUSED, LEADER,
    LIVE, PEER_LAST_HEARD, PEER_ROUND_TRIP, PEER_UP, PENDING, READY, RECORDED_MEMBERS, REGISTERED,
    ROLE, STOP_SIGN_REFUSED, TRANSFER_BYTES_SKIPPED, TRANSFERS_FAILED_IN, TRANSFERS_IN,
};
use tsoracle_paxos_tonic::TransportStats;
use tsoracle_paxos_toolkit::sink::InboxStats;

use crate::error::Error;
use crate::health::{self, Leadership, Standing, Vitals};

/// Bucket bounds of every `*_seconds` histogram: 50 µs to 10 s, so an
/// fsync on NVMe, a LAN round trip and a slow disk's stall all land in a
/// bucket of their own.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// tsoracle-server's latency histograms (in seconds), by their recorded
/// names (the page shows them with `_` for `.`).
const SERVER_LATENCIES: &[&str] = &[
    "tsoracle.leader_transition.fence_latency",
    "tsoracle.window.extension_latency",
];

/// tsoracle-server's histogram of keys per `get_seq_batch` call.
const SERVER_BATCH_KEYS: &str = "tsoracle.get_seq.batch.keys";

/// Bucket bounds of the keys per batch call (the server's default cap is
/// 128 keys).
const BATCH_KEY_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0];

/// How often the sampler runs.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// How long a gauge stays on the page once nothing sets it.
const GAUGE_IDLE: Duration = Duration::from_secs(10);

/// The gRPC health service names the node reports: the server as a whole
/// (`""`) and the tsoracle service.
const HEALTH_SERVICES: [&str; 2] = ["", "tsoracle.v1.TsoService"];

/// The process's Prometheus recorder: installed by the first node that
/// serves metrics, shared by any other node of the same process. The lock
/// makes the install once-only when two nodes start together.
static RECORDER: Mutex<Option<PrometheusHandle>> = Mutex::new(None);

/// How often the sampler runs the recorder's upkeep (it drains histogram
/// samples into their buckets; without it they pile up between scrapes).
const UPKEEP_EVERY: u32 = 20;

/// The process's Prometheus recorder, installed on first use.
pub(crate) fn recorder() -> Result<PrometheusHandle, Error> {
    let mut installed = RECORDER.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(handle) = installed.as_ref() {
        return Ok(handle.clone());
    }
    let mut builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS)
        .map_err(|err| Error::runtime("the metrics recorder", err))?;
    // tsoracle-server's own histograms: two latencies in seconds and the
    // keys per batch call; buckets for them too, so every histogram on the
    // page sums across nodes.
    for name in SERVER_LATENCIES {
        builder = builder
            .set_buckets_for_metric(Matcher::Full((*name).to_owned()), LATENCY_BUCKETS)
            .map_err(|err| Error::runtime("the metrics recorder", err))?;
    }
    let handle = builder
        .set_buckets_for_metric(
            Matcher::Full(SERVER_BATCH_KEYS.to_owned()),
            BATCH_KEY_BUCKETS,
        )
        .map_err(|err| Error::runtime("the metrics recorder", err))?
        // The sampler sets every gauge every 250 ms; one it stopped setting
        // (a peer a membership change removed) leaves the page.
        .idle_timeout(MetricKindMask::GAUGE, Some(GAUGE_IDLE))
        .install_recorder()
        .map_err(|err| Error::runtime("the metrics recorder", err))?;
    *installed = Some(handle.clone());
    Ok(handle)
}

/// This build's version and commit, as `--version` prints them.
pub(crate) const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("TSORACLE_PAXOS_COMMIT"),
    ")"
);

/// One peer's link as this node sees it now ([`Observer::peers`]).
pub(crate) struct PeerView {
    pub(crate) id: u64,
    pub(crate) up: bool,
    /// Since a message of it last reached the consensus loop.
    pub(crate) heard_ago: Option<Duration>,
    /// Send-to-grant time of its last lease round (on a leader).
    pub(crate) round_trip: Option<Duration>,
}

/// What liveness, readiness and the sampler read of one node.
pub(crate) struct Observer {
    host: Arc<StandaloneHost>,
    driver: Arc<PaxosDriver<StandaloneHost>>,
    lease: Duration,
    /// A peer not heard from for this long is down.
    election_timeout: Duration,
    /// The consensus thread's round count when it last moved, and when.
    progress: Mutex<(u64, Instant)>,
    /// Whether the client service takes calls (set once it runs, cleared
    /// when a shutdown closes it).
    client_serving: AtomicBool,
}

impl Observer {
    pub(crate) fn new(
        host: Arc<StandaloneHost>,
        driver: Arc<PaxosDriver<StandaloneHost>>,
        timing: &Timing,
    ) -> Self {
        let rounds = host.rounds();
        Self {
            host,
            driver,
            lease: timing.lease,
            election_timeout: timing
                .election_timeout()
                .unwrap_or(timing.lease.saturating_mul(2)),
            progress: Mutex::new((rounds, Instant::now())),
            client_serving: AtomicBool::new(false),
        }
    }

    /// Records whether the client service takes calls.
    pub(crate) fn set_client_serving(&self, serving: bool) {
        self.client_serving.store(serving, Ordering::Release);
    }

    /// The consensus thread's vitals now.
    pub(crate) fn vitals(&self) -> Vitals {
        let (failed, stopped) = {
            let status = self.host.status();
            let status = status.borrow();
            (status.failed.clone(), status.stopped)
        };
        // From the runner itself: the followed status does not move on
        // rounds alone.
        let rounds = self.host.rounds();
        let mut progress = self.progress.lock().unwrap_or_else(PoisonError::into_inner);
        if progress.0 != rounds {
            *progress = (rounds, Instant::now());
        }
        Vitals {
            failed,
            stopped,
            since_last_round: progress.1.elapsed(),
        }
    }

    /// This node's standing now.
    pub(crate) fn standing(&self) -> Standing {
        let leadership = match self.driver.role() {
            Role::Leader(_) => Leadership::Serving,
            Role::Follower(term) => Leadership::Following {
                leader: term.leader(),
            },
            Role::Unknown => Leadership::Unknown,
        };
        let granted_leader_ago = match leadership {
            Leadership::Following { leader } => self.host.lease_clock().and_then(|clock| {
                let granted = self.host.links().snapshot().get(&leader)?.last_granted?;
                Some(clock.now().saturating_sub(granted))
            }),
            _ => None,
        };
        Standing {
            client_serving: self.client_serving.load(Ordering::Acquire),
            leadership,
            granted_leader_ago,
            lease: self.lease,
        }
    }

    /// Every other member of the current configuration and its link: up
    /// while a message of it reached the consensus loop within an election
    /// timeout (what the metrics and `Status` report).
    pub(crate) fn peers(&self) -> Vec<PeerView> {
        let now = self.host.lease_clock().map(|clock| clock.now());
        let links = self.host.links().snapshot();
        let me = self.host.node_id();
        let ids: Vec<u64> = match self.host.membership() {
            Some(list) => list.members().iter().map(|m| m.id).collect(),
            None => self.host.member_list().iter().map(|m| m.id).collect(),
        };
        ids.into_iter()
            .filter(|id| *id != me)
            .map(|id| {
                let link = links.get(&id).copied().unwrap_or_default();
                let heard_ago = now
                    .zip(link.last_heard)
                    .map(|(now, at)| now.saturating_sub(at));
                PeerView {
                    id,
                    up: heard_ago.is_some_and(|ago| ago < self.election_timeout),
                    heard_ago,
                    round_trip: link.round_trip,
                }
            })
            .collect()
    }

    /// [`health::liveness`] now.
    pub(crate) fn live(&self) -> Result<String, String> {
        health::liveness(&self.vitals())
    }

    /// [`health::readiness`] now.
    pub(crate) fn ready(&self) -> Result<String, String> {
        health::readiness(&self.standing())
    }
}

/// Samples the node every 250 ms until aborted: the gauges and counters
/// and the recorder's upkeep (with a recorder) and the gRPC health
/// service's status.
pub(crate) fn sample(
    observer: Arc<Observer>,
    health: HealthReporter,
    recorder: Option<PrometheusHandle>,
    outbound: Arc<TransportStats>,
    inbound: Arc<TransportStats>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let metrics = recorder.is_some();
        let mut samples = 0u32;
        let mut inbox_totals = InboxTotals::default();
        let mut every = tokio::time::interval(SAMPLE_EVERY);
        let mut serving = None;
        loop {
            every.tick().await;
            let live = observer.live().is_ok();
            let ready = observer.ready().is_ok();
            let status = if live && ready {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            if serving != Some(status) {
                for service in HEALTH_SERVICES {
                    health.set_service_status(service, status).await;
                }
                serving = Some(status);
            }
            samples = samples.wrapping_add(1);
            if let Some(recorder) = &recorder
                && samples.is_multiple_of(UPKEEP_EVERY)
            {
                recorder.run_upkeep();
            }
            if metrics {
                gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "commit" => env!("TSORACLE_PAXOS_COMMIT"))
                    .set(1.0);
                gauge!(LIVE).set(f64::from(u8::from(live)));
                gauge!(READY).set(f64::from(u8::from(ready)));
                record(&observer, &outbound, &inbound, &mut inbox_totals);
            }
        }
    })
}

/// The inbox refusals counted so far, followed across inboxes: each
/// membership change starts a new inbox whose counters start at zero, while
/// the old one may still count (its configuration's peer service stays on
/// the port). Every inbox seen and still alive adds what it counted since
/// the last sample.
#[derive(Default)]
struct InboxTotals {
    seen: Vec<(Weak<InboxStats>, InboxCounts)>,
}

/// The inbox counters the metrics carry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct InboxCounts {
    impostor: u64,
    stop_sign: u64,
}

impl InboxCounts {
    fn of(stats: &InboxStats) -> Self {
        Self {
            impostor: stats.impostor(),
            stop_sign: stats.stop_sign(),
        }
    }
}

impl InboxTotals {
    /// What every inbox seen so far (`current` included) counted since the
    /// last call, each read with `read`; inboxes dropped since are
    /// forgotten.
    fn since_last(
        &mut self,
        current: &Arc<InboxStats>,
        read: impl Fn(&InboxStats) -> InboxCounts,
    ) -> InboxCounts {
        let known = self.seen.iter().any(|(seen, _)| {
            seen.upgrade()
                .is_some_and(|seen| Arc::ptr_eq(&seen, current))
        });
        if !known {
            self.seen
                .push((Arc::downgrade(current), InboxCounts::default()));
        }
        let mut added = InboxCounts::default();
        self.seen.retain_mut(|(seen, last)| {
            let Some(stats) = seen.upgrade() else {
                return false;
            };
            let now = read(&stats);
            added.impostor += now.impostor.saturating_sub(last.impostor);
            added.stop_sign += now.stop_sign.saturating_sub(last.stop_sign);
            *last = now;
            true
        });
        added
    }
}

fn record(
    observer: &Observer,
    outbound: &TransportStats,
    inbound: &TransportStats,
    inbox_totals: &mut InboxTotals,
) {
    let (host, driver) = (&observer.host, &observer.driver);
    let (role, ballot, leader) = match driver.role() {
        Role::Leader(term) => (2.0, term.ballot().n, term.leader()),
        Role::Follower(term) => (1.0, term.ballot().n, term.leader()),
        Role::Unknown => (0.0, 0, 0),
    };
    gauge!(ROLE).set(role);
    gauge!(BALLOT).set(f64::from(ballot));
    gauge!(LEADER).set(leader as f64);
    let status = host.status().borrow().clone();
    gauge!(DECIDED).set(status.decided_idx as f64);
    gauge!(COMPACTED).set(status.compacted_idx as f64);
    let (mut high_water, mut registered, mut members) = (0, 0, 0);
    host.read_state(&mut |s| {
        high_water = s.high_water();
        registered = s.instances().count();
        members = s.membership().map_or(0, |list| list.members().len());
    });
    gauge!(HIGH_WATER).set(high_water as f64);
    gauge!(REGISTERED).set(registered as f64);
    gauge!(RECORDED_MEMBERS).set(members as f64);
    gauge!(PENDING).set(host.pending() as f64);
    // Counters: the transport's totals since start, and what the inboxes
    // counted since the last sample.
    let refused = inbox_totals.since_last(&host.inbox().shared_stats(), InboxCounts::of);
    counter!(IMPOSTOR_REFUSED).increment(refused.impostor);
    // Above zero: some peer tried to end the configuration (dropped at
    // the inbox; see `carries_stop_sign`).
    counter!(STOP_SIGN_REFUSED).increment(refused.stop_sign);
    counter!(tsoracle_paxos_metrics::PEER_REFUSED).absolute(inbound.total_refusals());
    counter!(tsoracle_paxos_metrics::PEER_DROPPED).absolute(outbound.total_drops());
    counter!(tsoracle_paxos_metrics::PEER_RECONNECTS).absolute(outbound.reconnects());
    counter!(tsoracle_paxos_metrics::PEER_MESSAGES_OUT).absolute(outbound.messages_out());
    counter!(tsoracle_paxos_metrics::PEER_MESSAGES_IN).absolute(inbound.messages_in());
    counter!(CHUNKED_OUT).absolute(outbound.chunked_messages_out());
    counter!(TRANSFERS_IN).absolute(inbound.transfers_in());
    counter!(TRANSFERS_FAILED_IN).absolute(inbound.transfers_failed_in());
    counter!(TRANSFER_BYTES_SKIPPED).absolute(outbound.transfer_bytes_skipped());
    for link in observer.peers() {
        let peer = link.id.to_string();
        gauge!(PEER_UP, "peer" => peer.clone()).set(f64::from(u8::from(link.up)));
        if let Some(ago) = link.heard_ago {
            gauge!(PEER_LAST_HEARD, "peer" => peer.clone()).set(ago.as_secs_f64());
        }
        if let Some(rtt) = link.round_trip {
            gauge!(PEER_ROUND_TRIP, "peer" => peer).set(rtt.as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::sync::Arc;

    use tsoracle_paxos_toolkit::sink::InboxStats;

    use super::{InboxCounts, InboxTotals};

    /// A new inbox (after a membership change) counts from zero, and the
    /// old one may go on counting: both add to the totals.
    #[test]
    fn refusals_of_every_live_inbox_add_up() {
        let counts = |impostor, stop_sign| InboxCounts {
            impostor,
            stop_sign,
        };
        // The test's counts per inbox, by address.
        let values: RefCell<HashMap<usize, InboxCounts>> = RefCell::default();
        let set = |stats: &Arc<InboxStats>, value| {
            values
                .borrow_mut()
                .insert(Arc::as_ptr(stats) as usize, value);
        };
        let read = |stats: &InboxStats| values.borrow()[&(std::ptr::from_ref(stats) as usize)];
        let mut totals = InboxTotals::default();
        let first = Arc::new(InboxStats::default());
        set(&first, counts(3, 0));
        assert_eq!(totals.since_last(&first, read), counts(3, 0));
        set(&first, counts(4, 0));
        assert_eq!(totals.since_last(&first, read), counts(1, 0));
        assert_eq!(totals.since_last(&first, read), counts(0, 0));
        // A new inbox at (1, 1), below the old one's 4: counted; the old
        // one, still alive, counts one more StopSign: counted too.
        let second = Arc::new(InboxStats::default());
        set(&second, counts(1, 1));
        set(&first, counts(4, 1));
        assert_eq!(totals.since_last(&second, read), counts(1, 2));
        // The old inbox gone: forgotten, the new one goes on.
        drop(first);
        set(&second, counts(2, 1));
        assert_eq!(totals.since_last(&second, read), counts(1, 0));
        assert_eq!(totals.seen.len(), 1);
    }

    /// The TLS accept loop's counter is the name documented.
    #[test]
    fn the_transport_records_the_documented_handshake_counter() {
        assert_eq!(
            tsoracle_paxos_tonic::accept::HANDSHAKES_REFUSED,
            tsoracle_paxos_metrics::TLS_HANDSHAKES_REFUSED
        );
    }

    /// The toolkit records two series under names of its own (it may not
    /// depend on the metrics crate): they are the names documented.
    #[test]
    fn the_toolkit_records_the_documented_names() {
        assert_eq!(
            tsoracle_paxos_toolkit::telemetry::COMMIT_SECONDS,
            tsoracle_paxos_metrics::COMMIT_SECONDS
        );
        assert_eq!(
            tsoracle_paxos_toolkit::telemetry::FSYNC_SECONDS,
            tsoracle_paxos_metrics::FSYNC_SECONDS
        );
    }
}
