//! The gauges a `tsoracle-paxos serve --metrics-listen` node samples, and
//! the one reader of Prometheus text pages in this workspace.
//!
//! The node exports these names; `tsoracle-paxos status`, the test kit's
//! process clusters and `cargo xtask bench` read them back with [`parse`].
//! No dependencies, so the tooling that reads a page (xtask among it) does
//! not compile the node.
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
