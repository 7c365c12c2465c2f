//! The peer's Prometheus page (`--status-listen`): its role and log indices
//! for the benchmark's leader detection, next to tsoracle-server's own
//! metrics (among them `tsoracle_window_extension_latency`, the time of each
//! `persist_high_water` as the server sees it). The same exporter renders the
//! same server metrics on the paxos node, so both sides are read alike.

use std::net::SocketAddr;

use anyhow::{Result, anyhow};
use metrics::gauge;
use metrics_exporter_prometheus::PrometheusBuilder;

/// 2 leader, 1 follower, 0 anything else.
pub const ROLE: &str = "bench_peer_role";
pub const LAST_LOG: &str = "bench_peer_last_log_index";
pub const APPLIED: &str = "bench_peer_applied_index";
pub const SNAPSHOT: &str = "bench_peer_snapshot_index";

pub fn install(addr: SocketAddr) -> Result<()> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|err| anyhow!("cannot serve the status page on {addr}: {err}"))
}

pub fn set_role(role: f64) {
    gauge!(ROLE).set(role);
}

pub fn set_index(last_log: u64, applied: u64, snapshot: u64) {
    gauge!(LAST_LOG).set(last_log as f64);
    gauge!(APPLIED).set(applied as f64);
    gauge!(SNAPSHOT).set(snapshot as f64);
}
