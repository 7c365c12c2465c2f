//! A planned hand-over of leadership (before a restart, or asked by an
//! operator): stop serving, release the lease so the successor need not
//! wait the grantors' holds out, let the successor take over, and wait
//! (bounded) until it leads.

use std::time::Duration;

use omnipaxos::util::NodeId;
use tokio::time::Instant;

use super::PaxosDriver;
use crate::core::role::Role;
use crate::core::step::Event;
use crate::host::{HostError, PaxosHighWaterHost};

/// Why a hand-over did not finish.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandOverError {
    /// Only the serving leader hands over; nothing changed.
    #[error("this node is not the serving leader{}", leader.map_or_else(String::new, |id| format!(" (node {id} leads)")))]
    NotLeader {
        /// The leader this node follows, if any.
        leader: Option<NodeId>,
    },
    /// The successor asked for is not another member; nothing changed.
    #[error("node {0} is not another member of this configuration")]
    NotAMember(NodeId),
    /// The host did not release the lease: it refused with nothing
    /// released (this node serves again; `HostError::Unavailable`), or its
    /// consensus thread stopped.
    #[error("the lease was not released: {0}")]
    Host(#[source] HostError),
    /// The lease was released and the successor asked to take over, but no
    /// other node was seen leading within the wait (the successor may be
    /// slow or cut off; the cluster elects on its own).
    #[error("released; no successor was seen leading within {0:?}")]
    Unfinished(Duration),
}

/// How often the wait for the successor looks at the host's view.
const POLL: Duration = Duration::from_millis(2);

impl<H: PaxosHighWaterHost> PaxosDriver<H> {
    /// Hands leadership to `to` (or, with `None`, to a follower the host
    /// picks: the runner takes the peer that granted a lease round last,
    /// so one that is up and follows this leader), waiting at most `wait`
    /// for another node to lead. Returns the node seen leading.
    ///
    /// In order: this node stops serving under its ballot for good (the
    /// leadership stream says `Unknown`, so the server steps down, and the
    /// reply gate refuses that epoch from now on); only then does the
    /// runner release the lease (its grantors drop their holds of the
    /// ballot) and ask `to` to take leadership. The successor therefore
    /// serves one round trip after its election instead of after the holds,
    /// and the two never serve at once. Writes waiting under the released
    /// ballot are answered `NotLeader`. Should no successor take over, the
    /// runner leads again under a new ballot after twice the hold.
    ///
    /// # Errors
    ///
    /// [`HandOverError`]: not the leader or no such member (nothing
    /// changed), the host could not release, or no successor led in time.
    pub async fn hand_over(
        &self,
        to: Option<NodeId>,
        wait: Duration,
    ) -> Result<NodeId, HandOverError> {
        let started = Instant::now();
        let shell = &self.shell;
        let me = shell.host.node_id();
        if let Some(to) = to
            && (to == me || !shell.host.members().contains(&to))
        {
            return Err(HandOverError::NotAMember(to));
        }
        match shell.decide(|engine, now| engine.role(now)) {
            Role::Leader(_) => {}
            Role::Follower(term) => {
                return Err(HandOverError::NotLeader {
                    leader: Some(term.leader()),
                });
            }
            Role::Unknown => return Err(HandOverError::NotLeader { leader: None }),
        }
        #[cfg(feature = "mutations")]
        if !crate::mutation::is_on(crate::mutation::Guard::StopBeforeRelease) {
            // The bug the guard prevents: release first, stop serving only
            // once the successor is seen leading.
            crate::mutation::count_bypass();
            let ballot = shell.decide(|engine, now| match engine.role(now) {
                Role::Leader(term) => Some(term.ballot()),
                _ => None,
            });
            let ballot = ballot.ok_or(HandOverError::NotLeader { leader: None })?;
            shell
                .host
                .hand_over(ballot, to)
                .await
                .map_err(HandOverError::Host)?;
            let result = self.await_successor(me, started, wait).await;
            shell.step_now(Event::HandOver);
            return result;
        }
        // Stop serving first: a grantor that drops its hold may grant the
        // successor at once. The runner releases exactly the ballot given
        // up here, or refuses (re-elected meanwhile under another).
        shell.step_now(Event::HandOver);
        let Some(ballot) = shell.engine().lease().released() else {
            return Err(HandOverError::NotLeader { leader: None });
        };
        let released = tokio::time::timeout(wait, shell.host.hand_over(ballot, to)).await;
        let successor = match released {
            Ok(Ok(successor)) => successor,
            Ok(Err(err @ HostError::Unavailable(_))) => {
                // Nothing was released: serve again rather than leave the
                // cluster with a leader that serves nothing.
                shell.step_now(Event::HandOverRefused { ballot });
                return Err(HandOverError::Host(err));
            }
            // The runner may have released (a stopped runner, or the wait
            // ran out after the request was queued): it leads again under
            // a new ballot by itself if nobody takes over.
            Ok(Err(err)) => return Err(HandOverError::Host(err)),
            Err(_) => return Err(HandOverError::Unfinished(wait)),
        };
        tracing::info!(
            successor,
            "leadership handed over; waiting for the successor"
        );
        self.await_successor(me, started, wait).await
    }

    /// Waits until another node leads (accept phase) in the host's view.
    async fn await_successor(
        &self,
        me: NodeId,
        started: Instant,
        wait: Duration,
    ) -> Result<NodeId, HandOverError> {
        let deadline = started + wait;
        loop {
            let view = *self.shell.host.leadership().borrow();
            if let Some((leader, _)) = view.leader
                && leader != me
                && view.promise.pid == leader
            {
                return Ok(leader);
            }
            if Instant::now() >= deadline {
                return Err(HandOverError::Unfinished(wait));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}
