//! Liveness and readiness: pure decisions over what the node observes, so
//! unit tests drive them directly; [`crate::http`] and the gRPC health
//! service only report them.
//!
//! - Live (`/livez`): the consensus thread runs (no failure, not stopped)
//!   and finished a round within [`STALL_LIMIT`]. It ticks every few
//!   milliseconds and applies decided entries in its rounds, so a stalled
//!   thread is a stalled apply path too. A supervisor restarts a node that
//!   stays not live.
//! - Ready (`/readyz`, gRPC health `SERVING`): its client service runs (not
//!   before it started, e.g. while it restores an export, nor once a
//!   shutdown closed it), and this node serves (it leads under a live
//!   lease) or follows a leader to which it granted a lease round less than
//!   a lease ago, so that leader's lease is live as far as this node can
//!   tell. A load balancer sends clients only to
//!   ready nodes; a node that is not ready answers "not leader" or
//!   "unavailable".

use std::time::Duration;

/// How long the consensus thread may go without a round before the node is
/// not live (it runs a round every tick, 10 ms by default).
pub(crate) const STALL_LIMIT: Duration = Duration::from_secs(5);

/// What the liveness decision needs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Vitals {
    /// The consensus thread's failure, if it failed.
    pub(crate) failed: Option<String>,
    /// Whether it stopped.
    pub(crate) stopped: bool,
    /// How long since its round count last moved.
    pub(crate) since_last_round: Duration,
}

/// `Ok` with a short description when live, `Err` with the reason when not.
pub(crate) fn liveness(vitals: &Vitals) -> Result<String, String> {
    if let Some(failure) = &vitals.failed {
        return Err(format!("the consensus thread failed: {failure}"));
    }
    if vitals.stopped {
        return Err("the consensus thread stopped".to_owned());
    }
    if vitals.since_last_round > STALL_LIMIT {
        return Err(format!(
            "the consensus thread ran no round for {:.1} s",
            vitals.since_last_round.as_secs_f64()
        ));
    }
    Ok("live".to_owned())
}

/// This node's leadership as the driver sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Leadership {
    /// It leads and holds a live lease: it serves.
    Serving,
    /// Node `leader` leads, as far as this node knows.
    Following { leader: u64 },
    /// No leader it may name (an election, or a lease that lapsed).
    Unknown,
}

/// What the readiness decision needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Standing {
    /// Whether the client service takes calls.
    pub(crate) client_serving: bool,
    pub(crate) leadership: Leadership,
    /// How long ago this node last granted the leader it follows a lease
    /// round (`None`: never, since this configuration started here).
    pub(crate) granted_leader_ago: Option<Duration>,
    /// The lease length.
    pub(crate) lease: Duration,
}

/// `Ok` with what the node does when ready, `Err` with why not.
pub(crate) fn readiness(standing: &Standing) -> Result<String, String> {
    if !standing.client_serving {
        return Err(
            "the client service is not serving (starting, restoring an export, or stopping)"
                .to_owned(),
        );
    }
    match standing.leadership {
        Leadership::Serving => Ok("leader: serving under a live lease".to_owned()),
        Leadership::Following { leader } => match standing.granted_leader_ago {
            Some(ago) if ago < standing.lease => Ok(format!(
                "follower of node {leader}, whose lease is live (granted {} ms ago)",
                ago.as_millis()
            )),
            Some(ago) => Err(format!(
                "follows node {leader}, but granted it no lease round for {} ms (lease {} ms): \
                 its lease may have lapsed",
                ago.as_millis(),
                standing.lease.as_millis()
            )),
            None => Err(format!(
                "follows node {leader}, but has granted it no lease round yet"
            )),
        },
        Leadership::Unknown => {
            Err("no leader: an election is under way, or this node's lease lapsed".to_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_running_thread_is_live_and_a_stalled_failed_or_stopped_one_is_not() {
        let vitals = Vitals {
            failed: None,
            stopped: false,
            since_last_round: ms(20),
        };
        assert!(liveness(&vitals).is_ok());
        let stalled = Vitals {
            since_last_round: STALL_LIMIT + ms(1),
            ..vitals.clone()
        };
        assert!(liveness(&stalled).unwrap_err().contains("no round"));
        let failed = Vitals {
            failed: Some("disk full".into()),
            ..vitals.clone()
        };
        assert!(liveness(&failed).unwrap_err().contains("disk full"));
        let stopped = Vitals {
            stopped: true,
            ..vitals
        };
        assert!(liveness(&stopped).is_err());
    }

    #[test]
    fn a_leader_is_ready_and_a_follower_only_while_its_leaders_lease_is_live() {
        let lease = ms(150);
        let standing = |leadership, granted_leader_ago| Standing {
            client_serving: true,
            leadership,
            granted_leader_ago,
            lease,
        };
        assert!(readiness(&standing(Leadership::Serving, None)).is_ok());
        let following = Leadership::Following { leader: 2 };
        assert!(readiness(&standing(following, Some(ms(40)))).is_ok());
        assert!(readiness(&standing(following, Some(ms(150)))).is_err());
        assert!(readiness(&standing(following, None)).is_err());
        assert!(readiness(&standing(Leadership::Unknown, Some(ms(1)))).is_err());
        // Not before the client service takes calls, whatever the lease.
        let starting = Standing {
            client_serving: false,
            ..standing(Leadership::Serving, None)
        };
        assert!(readiness(&starting).unwrap_err().contains("client service"));
    }
}
