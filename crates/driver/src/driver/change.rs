//! The admin path of a membership change: agree on the next member list
//! in the log, then wait until this node runs the next configuration (or
//! left the cluster). The StopSign and the switch are the host's
//! (`reconfigure.rs`); the rules are [`crate::core::change`]'s.

use std::time::Duration;

use omnipaxos::util::NodeId;
use tokio::time::Instant;
use tsoracle_consensus::ConsensusError;
use tsoracle_core::Epoch;
use tsoracle_paxos_state::{Command, Membership, Outcome};

use super::PaxosDriver;
use crate::core::change::{self, ChangeError, ChangeRequest};
use crate::host::PaxosHighWaterHost;

/// Why a membership change did not finish.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChangeFailure {
    /// The request makes no next member list (see [`ChangeError`]).
    #[error("refused: {0}")]
    Refused(#[from] ChangeError),
    /// The agreement could not be decided (no quorum, no leader); nothing
    /// changed unless a later attempt finds the change agreed.
    #[error("the change could not be agreed: {0}")]
    NotAgreed(#[source] ConsensusError),
    /// A change not agreed yet is proposed only by the leader (a forwarded
    /// one is dropped, so that a peer link cannot start a change): ask the
    /// leader's admin path.
    #[error(
        "this node does not lead{}: ask the leader to change the members",
        leader.map_or_else(|| " (no leader is known right now)".to_owned(), |id| format!(" (node {id} does)"))
    )]
    NotLeader {
        /// The leader this node sees, if any.
        leader: Option<NodeId>,
    },
    /// The change is agreed but this node did not reach the next
    /// configuration in time; it goes on without the caller (repeat the
    /// request to wait again).
    #[error(
        "the change to {next} is agreed but configuration {} did not start on this node within \
         {waited:?}; it continues on its own (repeat the request to wait for it)",
        next.configuration()
    )]
    Unfinished {
        /// The agreed next list.
        next: Membership,
        /// How long this call waited.
        waited: Duration,
    },
}

/// How often the wait for the next configuration looks at the state.
const POLL: Duration = Duration::from_millis(20);

impl<H: PaxosHighWaterHost> PaxosDriver<H> {
    /// Changes the cluster's members: agrees on the next list in the log
    /// (on the leader only: its peers drop a forwarded change, so a follower
    /// answers [`ChangeFailure::NotLeader`]; repeating a change already
    /// agreed works on any node),
    /// and returns it once this node runs the next configuration, or once
    /// it left the cluster when the change removed it. The leader then
    /// ends the configuration with the StopSign that names the list, and
    /// every member of the list starts the next configuration's instance
    /// with the state carried over. Repeating a request whose change is in
    /// progress waits for that change: a change interrupted by a crash is
    /// finished by repeating it.
    ///
    /// Needs a host that follows changes
    /// ([`StandaloneHost::follow_changes`](crate::StandaloneHost::follow_changes));
    /// on any other, an agreed change ends the configuration for good.
    ///
    /// # Errors
    ///
    /// [`ChangeFailure`]: refused by the rules, not agreed, or not finished
    /// within `wait`.
    pub async fn change_membership(
        &self,
        request: &ChangeRequest,
        wait: Duration,
    ) -> Result<Membership, ChangeFailure> {
        let started = Instant::now();
        let host = &self.shell.host;
        let (mut current, mut pending) = (None, None);
        host.read_state(&mut |state| {
            current = state.membership().cloned();
            pending = state.pending_change().cloned();
        });
        let next = change::plan(current.as_ref(), pending.as_ref(), request)?;
        if pending.is_none() {
            // Only the leader proposes a change: its peers drop a forwarded
            // one (`ChangeAdmission::admit_forward`).
            let leader = host.leadership().borrow().leader;
            if leader != Some((host.node_id(), true)) {
                return Err(ChangeFailure::NotLeader {
                    leader: leader.map(|(id, _)| id),
                });
            }
            let (at, submitted) = self
                .shell
                .submit(|proposal| Command::PrepareChange {
                    next: next.clone(),
                    epoch: Epoch(0),
                    proposal,
                })
                .map_err(ChangeFailure::NotAgreed)?;
            let applied = self
                .shell
                .finish(at, submitted)
                .await
                .map_err(ChangeFailure::NotAgreed)?;
            match applied.outcome {
                Outcome::ChangePrepared(Ok(agreed)) if agreed == next => {}
                Outcome::ChangePrepared(Ok(other)) => {
                    return Err(ChangeError::InProgress { pending: other }.into());
                }
                Outcome::ChangePrepared(Err(rejection)) => {
                    return Err(ChangeFailure::NotAgreed(ConsensusError::PermanentDriver(
                        Box::new(rejection),
                    )));
                }
                other => {
                    return Err(ChangeFailure::NotAgreed(ConsensusError::PermanentDriver(
                        format!("unexpected outcome of a PrepareChange: {other:?}").into(),
                    )));
                }
            }
        }
        tracing::info!(next = %next, "membership change agreed; waiting for the next configuration");
        let deadline = started + wait;
        loop {
            let mut reached = false;
            host.read_state(&mut |state| {
                reached = state
                    .membership()
                    .is_some_and(|list| list.configuration() >= next.configuration());
            });
            let left = host.leadership().borrow().configuration_ended;
            if reached || left {
                return Ok(next);
            }
            if Instant::now() >= deadline {
                return Err(ChangeFailure::Unfinished { next, waited: wait });
            }
            tokio::time::sleep(POLL).await;
        }
    }
}
