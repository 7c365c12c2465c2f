//! Proposals: ids, submission to the host and the bounded wait. Shared by
//! the write path, the read path and the records a node puts on the log.
//! (The lease is not renewed by proposals: the runner's lease rounds keep
//! it, without writing the log.)

use std::sync::PoisonError;
use std::time::Duration;

use tsoracle_consensus::ConsensusError;
use tsoracle_paxos_state::{Command, ProposalId};

use super::Shell;
use crate::error::RuntimeError;
use crate::host::{Applied, HostError, PaxosHighWaterHost, PendingApply};

impl<H: PaxosHighWaterHost> Shell<H> {
    /// Mints the next proposal id and submits the command built with it,
    /// under one lock so ids reach the log in order. Returns the submission
    /// time (for the proposal latency) and the wait.
    pub(super) fn submit(
        &self,
        make: impl FnOnce(ProposalId) -> Command,
    ) -> Result<(Duration, PendingApply), ConsensusError> {
        let mut seq = self.seq.lock().unwrap_or_else(PoisonError::into_inner);
        *seq = seq.saturating_add(1);
        let id = ProposalId::new(self.host.node_id(), self.incarnation, *seq);
        let proposed_at = self.now();
        let pending = self.host.submit(make(id)).map_err(host_error)?;
        Ok((proposed_at, pending))
    }

    /// Waits for a submitted command within the request deadline.
    pub(super) async fn finish(
        &self,
        proposed_at: Duration,
        pending: PendingApply,
    ) -> Result<Applied, ConsensusError> {
        let timeout = self.config.request_timeout;
        let applied = tokio::time::timeout(timeout, pending)
            .await
            .map_err(|_| ConsensusError::from(RuntimeError::Timeout(timeout)))?
            .map_err(host_error)?;
        // Submission to this node's apply: one log round trip (and the
        // group-commit syncs on the way).
        let now = self.now();
        metrics::histogram!(tsoracle_paxos_metrics::PROPOSAL_SECONDS)
            .record(now.saturating_sub(proposed_at).as_secs_f64());
        Ok(applied)
    }
}

/// The host's failure at the driver boundary: `Unavailable` is transient,
/// `Failed` permanent.
fn host_error(error: HostError) -> ConsensusError {
    match error {
        HostError::Unavailable(_) => ConsensusError::TransientDriver(Box::new(error)),
        HostError::Failed(_) => ConsensusError::PermanentDriver(Box::new(error)),
    }
}
