//! [`ConfigBuilder`]: one place that writes an [`OmniPaxosConfig`] out.
//!
//! Every node of a configuration shares the cluster settings and the server
//! settings but its pid, so the builder holds the shared part and
//! [`ConfigBuilder::build`] fills in each node's pid. Everything is checked
//! first: invalid settings are an [`Error::InvalidConfig`], never a panic and
//! never a configuration OmniPaxos would refuse later.
//!
//! ```
//! use tsoracle_paxos_toolkit::config::ConfigBuilder;
//!
//! # fn main() -> Result<(), tsoracle_paxos_toolkit::Error> {
//! let nodes = ConfigBuilder::new([1, 2, 3]).election_ticks(5);
//! let config = nodes.build(2)?;
//! assert_eq!(config.server_config.pid, 2);
//! assert_eq!(config.server_config.resend_message_tick_timeout, 10);
//! assert_eq!(config.cluster_config.nodes, vec![1, 2, 3]);
//! assert!(nodes.build(4).is_err(), "not a member");
//! # Ok(())
//! # }
//! ```

use omnipaxos::util::NodeId;
use omnipaxos::{ClusterConfig, OmniPaxosConfig, ServerConfig};

use crate::error::Error;

/// The settings every node of one OmniPaxos configuration shares; see the
/// [module docs](self). The defaults are the ones this workspace runs
/// with: configuration id 1, a 5-tick election timeout, a resend after two
/// election timeouts, a 10 000-entry buffer, a batch of 1, a batch flushed
/// after 200 ticks, leader priority 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigBuilder {
    nodes: Vec<NodeId>,
    configuration_id: u32,
    election_ticks: u64,
    resend_ticks: Option<u64>,
    buffer_size: usize,
    batch_size: usize,
    flush_batch_ticks: u64,
    leader_priority: u32,
}

impl ConfigBuilder {
    /// The settings of a configuration of `nodes` (every member, each node
    /// included), with the defaults above.
    pub fn new(nodes: impl Into<Vec<NodeId>>) -> Self {
        Self {
            nodes: nodes.into(),
            configuration_id: 1,
            election_ticks: 5,
            resend_ticks: None,
            buffer_size: 10_000,
            batch_size: 1,
            flush_batch_ticks: 200,
            leader_priority: 0,
        }
    }

    /// The OmniPaxos configuration id (default 1; 0 is refused).
    #[must_use]
    pub fn configuration_id(mut self, id: u32) -> Self {
        self.configuration_id = id;
        self
    }

    /// Ticks without a heartbeat before an election (default 5; at least 1).
    /// Unless [`resend_ticks`](Self::resend_ticks) is set, a lost message is
    /// resent after twice this many ticks.
    #[must_use]
    pub fn election_ticks(mut self, ticks: u64) -> Self {
        self.election_ticks = ticks;
        self
    }

    /// Ticks before a lost message is resent (default: twice the election
    /// ticks; at least 1).
    #[must_use]
    pub fn resend_ticks(mut self, ticks: u64) -> Self {
        self.resend_ticks = Some(ticks);
        self
    }

    /// Entries OmniPaxos buffers (default 10 000; at least 1).
    #[must_use]
    pub fn buffer_size(mut self, size: usize) -> Self {
        self.buffer_size = size;
        self
    }

    /// Proposals OmniPaxos batches before it sends them (default 1, no
    /// batching: the runner already groups a round's proposals; at least 1).
    #[must_use]
    pub fn batch_size(mut self, size: usize) -> Self {
        self.batch_size = size;
        self
    }

    /// Ticks after which a partial batch is flushed (default 200).
    #[must_use]
    pub fn flush_batch_ticks(mut self, ticks: u64) -> Self {
        self.flush_batch_ticks = ticks;
        self
    }

    /// This configuration's leader priority (default 0: OmniPaxos'
    /// election order alone).
    #[must_use]
    pub fn leader_priority(mut self, priority: u32) -> Self {
        self.leader_priority = priority;
        self
    }

    /// Every member of the configuration.
    #[must_use]
    pub fn nodes(&self) -> &[NodeId] {
        &self.nodes
    }

    /// The cluster part alone, e.g. for a StopSign's next configuration.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for a configuration id of 0, fewer than two
    /// members, or member ids that repeat or lie outside `1..=MAX_NODE_ID`.
    pub fn cluster_config(&self) -> Result<ClusterConfig, Error> {
        if self.configuration_id == 0 {
            return Err(invalid("the configuration id must not be 0".to_owned()));
        }
        check_members(&self.nodes)?;
        Ok(ClusterConfig {
            configuration_id: self.configuration_id,
            nodes: self.nodes.clone(),
            flexible_quorum: None,
        })
    }

    /// The configuration of node `pid`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for the [`cluster_config`](Self::cluster_config)
    /// errors, a `pid` that is not a member, a zero tick count, buffer or
    /// batch size, or anything else OmniPaxos' own check refuses.
    pub fn build(&self, pid: NodeId) -> Result<OmniPaxosConfig, Error> {
        let cluster_config = self.cluster_config()?;
        if !self.nodes.contains(&pid) {
            return Err(invalid(format!(
                "node id {pid} is not one of the members {:?}",
                self.nodes
            )));
        }
        let resend_ticks = self
            .resend_ticks
            .unwrap_or_else(|| self.election_ticks.saturating_mul(2));
        for (name, value) in [
            ("election ticks", self.election_ticks),
            ("resend ticks", resend_ticks),
        ] {
            if value == 0 {
                return Err(invalid(format!("{name} must be at least 1")));
            }
        }
        let config = OmniPaxosConfig {
            cluster_config,
            server_config: ServerConfig {
                pid,
                election_tick_timeout: self.election_ticks,
                resend_message_tick_timeout: resend_ticks,
                buffer_size: self.buffer_size,
                batch_size: self.batch_size,
                flush_batch_tick_timeout: self.flush_batch_ticks,
                leader_priority: self.leader_priority,
            },
        };
        config
            .validate()
            .map_err(|err| invalid(format!("OmniPaxos refuses the configuration: {err}")))?;
        Ok(config)
    }
}

fn invalid(reason: String) -> Error {
    Error::InvalidConfig(reason)
}

/// The largest node id a configuration may hold. OmniPaxos sizes a
/// leader's per-follower tables by the largest id, so ids stay small.
pub const MAX_NODE_ID: NodeId = 4096;

/// At least two members, with distinct ids in `1..=MAX_NODE_ID`.
///
/// Gaps are allowed (a member replaced by another keeps the others' ids).
/// They cost OmniPaxos' leader-driven `trim`, which waits for every id up
/// to the largest one; this workspace compacts with local snapshots
/// (`OmniPaxos::snapshot`) instead, which do not.
fn check_members(ids: &[NodeId]) -> Result<(), Error> {
    if ids.len() < 2 {
        return Err(invalid(format!(
            "OmniPaxos needs at least two nodes in a configuration, got {}",
            ids.len()
        )));
    }
    if let Some(bad) = ids.iter().find(|&&id| id == 0 || id > MAX_NODE_ID) {
        return Err(invalid(format!(
            "member id {bad} is outside 1..={MAX_NODE_ID}, got {ids:?}"
        )));
    }
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    if let Some(pair) = sorted.windows(2).find(|pair| pair[0] == pair[1]) {
        return Err(invalid(format!(
            "member id {} appears twice, got {ids:?}",
            pair[0]
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_ones_written_out_before() {
        let config = ConfigBuilder::new([1, 2, 3]).build(1).unwrap();
        assert_eq!(config.cluster_config.configuration_id, 1);
        assert_eq!(config.cluster_config.nodes, vec![1, 2, 3]);
        assert_eq!(config.cluster_config.flexible_quorum, None);
        let server = &config.server_config;
        assert_eq!(server.pid, 1);
        assert_eq!(server.election_tick_timeout, 5);
        assert_eq!(server.resend_message_tick_timeout, 10);
        assert_eq!(server.buffer_size, 10_000);
        assert_eq!(server.batch_size, 1);
        assert_eq!(server.flush_batch_tick_timeout, 200);
        assert_eq!(server.leader_priority, 0);
    }

    #[test]
    fn every_setting_is_carried_over() {
        let config = ConfigBuilder::new(vec![2, 1])
            .configuration_id(7)
            .election_ticks(3)
            .resend_ticks(4)
            .buffer_size(16)
            .batch_size(2)
            .flush_batch_ticks(10)
            .leader_priority(9)
            .build(2)
            .unwrap();
        assert_eq!(config.cluster_config.configuration_id, 7);
        assert_eq!(config.cluster_config.nodes, vec![2, 1]);
        let server = &config.server_config;
        assert_eq!(
            (
                server.pid,
                server.election_tick_timeout,
                server.resend_message_tick_timeout,
                server.buffer_size,
                server.batch_size,
                server.flush_batch_tick_timeout,
                server.leader_priority,
            ),
            (2, 3, 4, 16, 2, 10, 9)
        );
        // The resend follows the election ticks unless set.
        let config = ConfigBuilder::new([1, 2])
            .election_ticks(7)
            .build(1)
            .unwrap();
        assert_eq!(config.server_config.resend_message_tick_timeout, 14);
    }

    /// After a member was replaced the ids have a gap: still a configuration.
    #[test]
    fn member_ids_may_have_gaps() {
        let config = ConfigBuilder::new([4, 1, 3])
            .configuration_id(2)
            .build(4)
            .unwrap();
        assert_eq!(config.cluster_config.nodes, [4, 1, 3]);
        assert_eq!(config.cluster_config.configuration_id, 2);
    }

    #[test]
    fn invalid_settings_are_typed_errors() {
        let nodes = || ConfigBuilder::new([1, 2, 3]);
        for (builder, pid, needle) in [
            (ConfigBuilder::new([1]), 1, "at least two"),
            (ConfigBuilder::new([0, 1]), 1, "outside"),
            (ConfigBuilder::new([1, MAX_NODE_ID + 1]), 1, "outside"),
            (ConfigBuilder::new([1, 1, 2]), 1, "twice"),
            (nodes(), 4, "not one of the members"),
            (nodes(), 0, "not one of the members"),
            (nodes().configuration_id(0), 1, "configuration id"),
            (nodes().election_ticks(0), 1, "election ticks"),
            (
                nodes().election_ticks(0).resend_ticks(3),
                1,
                "election ticks",
            ),
            (nodes().resend_ticks(0), 1, "resend ticks"),
            (nodes().buffer_size(0), 1, "Buffer size"),
            (nodes().batch_size(0), 1, "Batch size"),
        ] {
            let err = builder.build(pid).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidConfig(reason) if reason.contains(needle)),
                "{builder:?} for {pid}: {err}"
            );
        }
    }
}
