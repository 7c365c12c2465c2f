//! Every metric name the toolkit, the driver and the `tsoracle-paxos` node
//! record, and the one reader of Prometheus text pages in this workspace.
//!
//! One list, so the code that records a series, the tooling that reads it
//! back (the test kit's process clusters, `cargo xtask bench`) and the
//! table in `docs/operations.md` name the same ones. No dependencies, so
//! the tooling that reads a page (xtask among it) does not compile the
//! node.
//!
//! ```
//! use tsoracle_paxos_metrics::{DECIDED, ROLE, parse};
//!
//! let page = "# TYPE tsoracle_paxos_role gauge\ntsoracle_paxos_role 2\n\
//!             tsoracle_paxos_decided_index 1234\n";
//! let samples = parse(page);
//! assert_eq!(samples.get(ROLE), Some(&2.0));
//! assert_eq!(samples.get(DECIDED), Some(&1234.0));
//! ```

use std::collections::BTreeMap;

/// This node's role: 2 leader, 1 follower, 0 unknown.
pub const ROLE: &str = "tsoracle_paxos_role";
/// The ballot number of the term this node last saw.
pub const BALLOT: &str = "tsoracle_paxos_ballot";
/// The node id of the leader this node last saw (0: none).
pub const LEADER: &str = "tsoracle_paxos_leader";
/// The absolute index of the last decided log entry (across compaction).
pub const DECIDED: &str = "tsoracle_paxos_decided_index";
/// The absolute index up to which the log is compacted into a snapshot.
pub const COMPACTED: &str = "tsoracle_paxos_compacted_index";
/// The replicated high-water.
pub const HIGH_WATER: &str = "tsoracle_paxos_high_water";
/// Proposals waiting for their decision.
pub const PENDING: &str = "tsoracle_paxos_pending_proposals";
/// StopSign-class messages dropped at the inbox (a peer tried to end the
/// configuration).
pub const STOP_SIGN_REFUSED: &str = "tsoracle_paxos_peer_stop_sign_refused_total";
/// Members whose data-directory instance this node's applied state holds.
pub const REGISTERED: &str = "tsoracle_paxos_registered_members";
/// Members on the member list this node's applied state recorded (0
/// while none is on record).
pub const RECORDED_MEMBERS: &str = "tsoracle_paxos_recorded_members";
/// Peer messages refused because their sender presented another instance
/// than the registered one (a wiped or replaced data directory).
pub const IMPOSTOR_REFUSED: &str = "tsoracle_paxos_peer_impostor_refused_total";

/// Peer messages larger than one frame that this node sent in chunks, as
/// spooled transfers (a catch-up snapshot of a large state is one such
/// message).
pub const CHUNKED_OUT: &str = "tsoracle_paxos_peer_chunked_messages_out_total";
/// Transfers (messages larger than one frame) this node received whole.
pub const TRANSFERS_IN: &str = "tsoracle_paxos_peer_transfers_in_total";
/// Inbound transfer pieces this node gave up (a body that does not match
/// its head, a chunk out of place, a spool file that cannot be written).
pub const TRANSFERS_FAILED_IN: &str = "tsoracle_paxos_peer_transfers_failed_in_total";
/// Transfer bytes this node did not send again because the peer held them
/// from a transfer a broken link cut.
pub const TRANSFER_BYTES_SKIPPED: &str = "tsoracle_paxos_peer_transfer_bytes_skipped_total";

/// Histogram: a proposal's submission to its apply on this node, in
/// seconds (what a client's write waits for).
pub const PROPOSAL_SECONDS: &str = "tsoracle_paxos_proposal_seconds";
/// Histogram: on the leader, from the round that appended proposals to the
/// round that saw them decided, in seconds. (Recorded by the toolkit, which
/// names it in `tsoracle_paxos_toolkit::telemetry`: the node's tests check
/// that both say the same.)
pub const COMMIT_SECONDS: &str = "tsoracle_paxos_commit_seconds";
/// Counter: connections a TLS port (peer or client) closed before their
/// handshake because the handshake slots were taken, labelled `listener`
/// and `reason` (`address`: that source address held its share; `total`:
/// every slot). (Recorded by the peer transport's accept loop, which names
/// it in `tsoracle_paxos_tonic::accept`: the node's tests check that both
/// say the same.)
pub const TLS_HANDSHAKES_REFUSED: &str = "tsoracle_paxos_tls_handshakes_refused_total";
/// Histogram: one synced storage write (a round's WAL sync), in seconds.
/// (Recorded by the toolkit, as [`COMMIT_SECONDS`].)
pub const FSYNC_SECONDS: &str = "tsoracle_paxos_fsync_seconds";
/// Counter: times this node stopped serving as leader because its lease
/// ran out before a majority granted a new round.
pub const LEASE_LAPSES: &str = "tsoracle_paxos_lease_lapses_total";
/// Counter: changes of the leadership this node publishes to its server,
/// labelled `to` (`leader`, `follower`, `unknown`).
pub const LEADERSHIP_CHANGES: &str = "tsoracle_paxos_leadership_changes_total";
/// Counter: replies held back because the lease under their epoch had
/// ended when they were ready (a paused process).
pub const REPLIES_GATED: &str = "tsoracle_paxos_replies_gated_total";

/// Counter: peer messages this node's peer service refused (every reason).
pub const PEER_REFUSED: &str = "tsoracle_paxos_peer_refused_total";
/// Counter: outbound peer messages dropped (every reason: a full queue, a
/// message above the size limit, a link that failed).
pub const PEER_DROPPED: &str = "tsoracle_paxos_peer_dropped_total";
/// Counter: outbound peer links established again after one failed.
pub const PEER_RECONNECTS: &str = "tsoracle_paxos_peer_reconnects_total";
/// Counter: peer messages sent.
pub const PEER_MESSAGES_OUT: &str = "tsoracle_paxos_peer_messages_out_total";
/// Counter: peer messages received.
pub const PEER_MESSAGES_IN: &str = "tsoracle_paxos_peer_messages_in_total";
/// Gauge, per `peer`: 1 while a message of that peer reached the consensus
/// loop within an election timeout, else 0.
pub const PEER_UP: &str = "tsoracle_paxos_peer_up";
/// Gauge, per `peer`: seconds since a message of that peer reached the
/// consensus loop.
pub const PEER_LAST_HEARD: &str = "tsoracle_paxos_peer_last_heard_seconds";
/// Gauge, per `peer`: send-to-grant time of the last lease round that peer
/// granted this node (only a leader asks rounds).
pub const PEER_ROUND_TRIP: &str = "tsoracle_paxos_peer_round_trip_seconds";
/// Gauge: 1 while the node is live (`/livez`).
pub const LIVE: &str = "tsoracle_paxos_live";
/// Gauge: 1 while the node is ready (`/readyz`).
pub const READY: &str = "tsoracle_paxos_ready";
/// Gauge, always 1, labelled with the build's `version` and `commit`.
pub const BUILD_INFO: &str = "tsoracle_paxos_build_info";

/// The samples of a Prometheus text page, keyed by everything before the
/// value: `name`, or `name{labels}` for a labelled sample. Comment lines
/// (`# HELP`, `# TYPE`) and lines without a numeric value are skipped.
pub fn parse(page: &str) -> BTreeMap<String, f64> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.trim().to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every name this crate defines is in the metrics table of the
    /// runbook (so the table cannot fall behind the code).
    #[test]
    fn every_series_is_documented() {
        let manifest = env!("CARGO_MANIFEST_DIR");
        let source = include_str!("lib.rs");
        let docs = std::fs::read_to_string(format!("{manifest}/../../docs/operations.md")).unwrap();
        let names: Vec<&str> = source
            .lines()
            .filter(|line| line.starts_with("pub const ") && line.contains(": &str = \""))
            .filter_map(|line| line.split('"').nth(1))
            .collect();
        assert!(names.len() > 20, "{names:?}");
        for name in names {
            assert!(
                docs.contains(&format!("`{name}")),
                "{name} is not in docs/operations.md's metrics table"
            );
        }
    }

    #[test]
    fn samples_are_read_and_comments_skipped() {
        let page = "# TYPE tsoracle_paxos_role gauge\ntsoracle_paxos_role 2\n\
                    tsoracle_paxos_decided_index 1234\nwith{label=\"x\"} 5\n";
        let m = parse(page);
        assert_eq!(m.get(ROLE), Some(&2.0));
        assert_eq!(m.get(DECIDED), Some(&1234.0));
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn labelled_samples_keep_their_labels() {
        let page = "# TYPE x summary\nx{quantile=\"0.5\"} 0.002\nx_count 12\nrole 2\nbad line\n";
        let m = parse(page);
        assert_eq!(m.get("x{quantile=\"0.5\"}"), Some(&0.002));
        assert_eq!(m.get("x_count"), Some(&12.0));
        assert_eq!(m.get("role"), Some(&2.0));
        assert_eq!(m.len(), 3);
    }
}
