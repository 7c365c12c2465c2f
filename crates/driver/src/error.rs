//! The crate's errors, split by when they happen.
//!
//! - [`ConfigError`]: a configuration or a start refused (a [`Timing`], a
//!   [`DriverConfig`], a node id the epoch codec cannot encode, a host that
//!   cannot be built). Returned by constructors and `validate`; nothing has
//!   run yet.
//! - [`RuntimeError`]: why one call of a running driver failed. It reaches
//!   the server inside a [`ConsensusError`] (`From<RuntimeError>`): a
//!   [transient](RuntimeError::is_transient) one as `TransientDriver` (a
//!   retry may succeed), every other one as `PermanentDriver`.
//!
//! Write-path refusals (not leader, fenced, out of range) are neither: they
//! are [`ConsensusError`]s of their own, built by [`crate::fence`].
//!
//! [`Timing`]: crate::Timing
//! [`DriverConfig`]: crate::DriverConfig

use std::time::Duration;

use tsoracle_consensus::ConsensusError;
use tsoracle_paxos_epoch::EpochError;
use tsoracle_paxos_state::Membership;
use tsoracle_paxos_toolkit::InstanceId;

use crate::core::membership::Difference;

/// A refused configuration or start: a [`Timing`](crate::Timing) or
/// [`DriverConfig`](crate::DriverConfig) that breaks a rule, a node id or
/// ballot the epoch codec cannot represent, a driver or host that cannot
/// start.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A duration of the timing is zero.
    #[error("timing: {field} must be longer than zero")]
    ZeroDuration {
        /// The field's name.
        field: &'static str,
    },
    /// `election_ticks` is zero.
    #[error("timing: election_ticks must be at least 1")]
    ZeroElectionTicks,
    /// `tick × election_ticks` does not fit a [`Duration`].
    #[error("timing: tick × election_ticks overflows a Duration")]
    ElectionTimeoutOverflow,
    /// The lease is not strictly shorter than the election timeout.
    #[error(
        "timing: lease ({lease:?}) must be strictly shorter than the election timeout \
         ({election_timeout:?} = tick × election_ticks): a deposed leader's lease must run \
         out before its peers can elect a new leader"
    )]
    LeaseNotShorterThanElection {
        /// The configured lease.
        lease: Duration,
        /// `tick × election_ticks`.
        election_timeout: Duration,
    },
    /// The drift bound is not a number in `[0, 0.2]`.
    #[error(
        "timing: drift ({drift}) must be a relative clock-rate error in [0, 0.2] \
         (e.g. 0.01 for 1%)"
    )]
    DriftOutOfRange {
        /// The configured drift.
        drift: f64,
    },
    /// `renew_every` is not shorter than the effective lease.
    #[error(
        "timing: renew_every ({renew_every:?}) must be shorter than the effective lease \
         ({effective_lease:?} = lease × (1 − drift)), or an idle leader's lease runs out \
         before it renews"
    )]
    RenewNotShorterThanLease {
        /// The configured renewal period.
        renew_every: Duration,
        /// `lease × (1 − drift)`.
        effective_lease: Duration,
    },
    /// `renew_every + stop_margin` leaves no serving time between renewals.
    #[error(
        "driver: renew_every ({renew_every:?}) + stop_margin ({stop_margin:?}) must be shorter \
         than the effective lease ({effective_lease:?}), or a leader stops serving between \
         two renewals"
    )]
    StopMarginTooLong {
        /// The configured stop margin.
        stop_margin: Duration,
        /// The configured renewal period.
        renew_every: Duration,
        /// `lease × (1 − drift)`.
        effective_lease: Duration,
    },
    /// The driver was started outside a tokio runtime.
    #[error("the driver must be started inside a tokio runtime")]
    NoRuntime,
    /// The host's proposer slot was already claimed by another driver (see
    /// `PaxosHighWaterHost::claim_proposer`): one driver per host start.
    #[error(
        "the host already has a driver: start one PaxosDriver per host start (restart the host \
         to attach a new one)"
    )]
    ProposerClaimed,
    /// The host could not be built or started.
    #[error("host: {0}")]
    Host(String),
    /// The node was started as a member that has run before
    /// ([`StartMode::Rejoin`](crate::StartMode)) but its storage is empty.
    #[error(
        "node {node} finds no state in its storage, but it was not started to found a new \
         cluster: a member that lost its state has lost its Paxos promises and must not vote \
         again under its old id. Restore its data directory, or remove node {node} from the \
         cluster and add it back as a new member; only when founding a new cluster, start \
         every node with an empty data directory in the new-cluster mode"
    )]
    NoStateToRejoin {
        /// This node's id.
        node: u64,
    },
    /// A node id or ballot the epoch codec cannot encode (node id 0 or above
    /// `u32::MAX`).
    #[error("node id not usable as an epoch: {0}")]
    Epoch(#[from] EpochError),
    /// The storage recorded another member list than the one given.
    #[error(transparent)]
    Membership(#[from] MembershipMismatch),
}

/// This node was given a member list of another configuration, or with
/// other member ids, than the one the cluster recorded in its replicated
/// state (the first recorded list stands; see `Command::RecordMembership`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "node {node} was started with a member list that disagrees with the one the cluster \
     recorded: {}. The recorded list stands ({recorded}); a node with other member ids would \
     count its quorums over other members than its peers do. Start node {node} with the \
     recorded ids (its --peer flags, or the configuration file's peers; a peer's addresses may \
     differ from the record). This version cannot change a cluster's members: adding, \
     removing or replacing a member needs a membership change, not edited flags",
    join(differences)
)]
pub struct MembershipMismatch {
    /// This node's id.
    pub node: u64,
    /// The list on record.
    pub recorded: Membership,
    /// How the given list differs from it.
    pub differences: Vec<Difference>,
}

fn join(differences: &[Difference]) -> String {
    differences
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why one call of a running driver failed (or a host failed to stop
/// cleanly). The driver hands it to the server inside a [`ConsensusError`]:
/// `TransientDriver` when [`is_transient`](Self::is_transient), otherwise
/// `PermanentDriver`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// A waiter received [`Outcome::Duplicate`](tsoracle_paxos_state::Outcome)
    /// for its own proposal: the command was not applied (its proposal id was
    /// not above the last one applied for its node), so nothing changed and
    /// a retry is safe.
    #[error("the proposal was applied as a duplicate: nothing changed, retry")]
    DuplicateProposal,
    /// A waiter received the outcome of another kind of command than it
    /// proposed: the proposal bookkeeping is broken.
    #[error("expected the outcome of {expected}, got {got}")]
    UnexpectedOutcome {
        /// The kind of command proposed.
        expected: &'static str,
        /// The outcome received, for the log.
        got: String,
    },
    /// A call did not complete within the request deadline (quorum lost, or
    /// a leader change in progress); retrying is safe.
    #[error("no decision within {0:?} (quorum lost or leader changing)")]
    Timeout(Duration),
    /// The host did not run the read it was given.
    #[error("the host did not run the state read")]
    HostSkippedRead,
    /// The OmniPaxos configuration this node served ended and this node
    /// takes no part in a next one: a membership change removed it, or a
    /// StopSign that names no agreed change ended it (decided by a build
    /// from before StopSigns were checked, or found in a foreign data
    /// directory).
    #[error(
        "this node's OmniPaxos configuration ended and this node is not a member of a next one. \
         If a membership change removed this node, that is expected: stop it. Otherwise the \
         configuration was ended by a StopSign that names no agreed change (a build from before \
         StopSigns were checked, or a foreign data directory); this cluster can decide nothing \
         more and restarts do not help. Restore every node's data directory from a backup taken \
         before the StopSign, or start a new cluster (fresh data directories) only once the wall \
         clock (Unix ms) is past the high-water this node exported (logged at ERROR, metric \
         tsoracle_paxos_high_water): timestamps then stay unique, but dense sequences and \
         leases start over"
    )]
    ConfigurationEnded,
    /// The cluster registered this node id with another data directory
    /// instance than this one: this directory was initialized after the
    /// node first joined (wiped, replaced, or started with
    /// `--initial-cluster-state new` by mistake) and does not hold the
    /// node's Paxos promises.
    #[error(
        "the cluster registered node {node} with data directory instance {registered}, but this \
         node's data directory is instance {mine}: it was wiped or replaced after node {node} \
         joined, so it has lost that node's Paxos promises and may not take part under id \
         {node}. Restore node {node}'s original data directory, or remove node {node} from the \
         cluster and add it back as a new member"
    )]
    NotTheRegisteredInstance {
        /// This node's id.
        node: u64,
        /// This directory's instance.
        mine: InstanceId,
        /// The instance the cluster registered for `node`.
        registered: InstanceId,
    },
    /// The cluster recorded another member list than the one this node
    /// was given: the node must stop.
    #[error(transparent)]
    Membership(#[from] MembershipMismatch),
    /// A configuration started by a membership change applied an entry
    /// before its genesis, so its state lacks the previous configuration's:
    /// the node must stop.
    #[error(
        "configuration {configuration}'s log began without the genesis that carries the \
         previous configuration's state over; this node's state cannot be trusted and it stops \
         (a bug: report it with the node's log)"
    )]
    GenesisMissing {
        /// The configuration whose log it is.
        configuration: u32,
    },
    /// The host's consensus thread had failed when it was stopped.
    #[error("host: {0}")]
    Host(String),
}

impl RuntimeError {
    /// Whether a retry of the call may succeed: a missed deadline, or a
    /// proposal applied as a duplicate (nothing changed). Everything else
    /// is permanent for this host's life.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Timeout(_) | Self::DuplicateProposal)
    }
}

/// The driver boundary: transient errors as `TransientDriver`, every other
/// one as `PermanentDriver`.
impl From<RuntimeError> for ConsensusError {
    fn from(error: RuntimeError) -> Self {
        if error.is_transient() {
            Self::TransientDriver(Box::new(error))
        } else {
            Self::PermanentDriver(Box::new(error))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_errors_keep_their_transient_or_permanent_side() {
        let transient = [
            RuntimeError::Timeout(Duration::from_secs(2)),
            RuntimeError::DuplicateProposal,
        ];
        for error in transient {
            assert!(error.is_transient());
            assert!(matches!(
                ConsensusError::from(error),
                ConsensusError::TransientDriver(_)
            ));
        }
        let permanent = [
            RuntimeError::UnexpectedOutcome {
                expected: "a Barrier",
                got: "Duplicate".to_owned(),
            },
            RuntimeError::HostSkippedRead,
            RuntimeError::ConfigurationEnded,
            RuntimeError::Host("stopped".to_owned()),
        ];
        for error in permanent {
            assert!(!error.is_transient());
            let message = error.to_string();
            match ConsensusError::from(error) {
                ConsensusError::PermanentDriver(inner) => assert_eq!(inner.to_string(), message),
                other => panic!("expected PermanentDriver, got {other:?}"),
            }
        }
    }
}
