//! The node's Prometheus endpoint (`--metrics-listen`) and what it shows.
//!
//! The driver records its proposal latency histogram and tsoracle-server its
//! own metrics through the `metrics` facade; this module installs the
//! exporter and samples the rest (role, epoch, indices, high-water, queue
//! depth, transport counters) every 250 ms. The gauges' names come from
//! `tsoracle-paxos-metrics`, so `status` and the tooling read back the
//! same ones.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use metrics::gauge;
use metrics_exporter_prometheus::PrometheusBuilder;
use tokio::task::JoinHandle;
use tsoracle_driver_paxos::{PaxosDriver, Role, StandaloneHost};
use tsoracle_paxos_metrics::{
    BALLOT, CHUNKED_OUT, COMPACTED, DECIDED, HIGH_WATER, IMPOSTOR_REFUSED, LEADER, PENDING,
    RECORDED_MEMBERS, REGISTERED, ROLE, STOP_SIGN_REFUSED, TRANSFER_BYTES_SKIPPED,
    TRANSFERS_FAILED_IN, TRANSFERS_IN,
};
use tsoracle_paxos_tonic::TransportStats;

use crate::error::Error;

/// Serves `/metrics` on `addr`.
pub(crate) fn install(addr: SocketAddr) -> Result<(), Error> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|err| Error::Bind {
            what: "the metrics endpoint",
            addr,
            reason: err.to_string(),
        })
}

/// Samples the node every 250 ms until aborted.
pub(crate) fn sample(
    host: Arc<StandaloneHost>,
    driver: Arc<PaxosDriver<StandaloneHost>>,
    outbound: Arc<TransportStats>,
    inbound: Arc<TransportStats>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(250));
        loop {
            every.tick().await;
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
            tsoracle_driver_paxos::PaxosHighWaterHost::read_state(host.as_ref(), &mut |s| {
                high_water = s.high_water();
                registered = s.instances().count();
                members = s.membership().map_or(0, |list| list.members().len());
            });
            gauge!(HIGH_WATER).set(high_water as f64);
            gauge!(REGISTERED).set(registered as f64);
            gauge!(RECORDED_MEMBERS).set(members as f64);
            gauge!(IMPOSTOR_REFUSED).set(host.inbox().stats().impostor() as f64);
            gauge!(PENDING).set(host.pending() as f64);
            gauge!("tsoracle_paxos_peer_refused_total").set(inbound.total_refusals() as f64);
            gauge!("tsoracle_paxos_peer_dropped_total").set(outbound.total_drops() as f64);
            gauge!("tsoracle_paxos_peer_reconnects_total").set(outbound.reconnects() as f64);
            gauge!("tsoracle_paxos_peer_messages_out_total").set(outbound.messages_out() as f64);
            gauge!("tsoracle_paxos_peer_messages_in_total").set(inbound.messages_in() as f64);
            gauge!(CHUNKED_OUT).set(outbound.chunked_messages_out() as f64);
            gauge!(TRANSFERS_IN).set(inbound.transfers_in() as f64);
            gauge!(TRANSFERS_FAILED_IN).set(inbound.transfers_failed_in() as f64);
            gauge!(TRANSFER_BYTES_SKIPPED).set(outbound.transfer_bytes_skipped() as f64);
            // Above zero: some peer tried to end the configuration (dropped
            // at the inbox; see `carries_stop_sign`).
            gauge!(STOP_SIGN_REFUSED).set(host.inbox().stats().stop_sign() as f64);
        }
    })
}
