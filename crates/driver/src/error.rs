//! The crate's error type.

use std::time::Duration;

use tsoracle_paxos_epoch::EpochError;

/// Errors of the driver's decision core: a refused [`Timing`](crate::Timing)
/// or a node id / ballot the epoch codec cannot represent.
///
/// Write-path refusals (not leader, fenced, out of range) are not here: they
/// are [`tsoracle_consensus::ConsensusError`]s, built by [`crate::fence`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
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
    /// A call did not complete within the request deadline (quorum lost, or
    /// a leader change in progress); retrying is safe.
    #[error("no decision within {0:?} (quorum lost or leader changing)")]
    Timeout(Duration),
    /// The host did not run the read it was given.
    #[error("the host did not run the state read")]
    HostSkippedRead,
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
    /// A decided StopSign ended the OmniPaxos configuration. Nothing here
    /// asks for one (there is no membership-change path yet, and peer links
    /// drop StopSign-carrying messages), so it was decided before that
    /// filter existed: the cluster can decide nothing more.
    #[error(
        "this OmniPaxos configuration was ended by a StopSign that no admin request started \
         (there is no membership-change path yet: it came over a peer link, e.g. a plaintext \
         peer port); this cluster can decide nothing more and restarts do not help. Restore \
         every node's data directory from a backup taken before the StopSign, or start a new \
         cluster (fresh data directories) only once the wall clock (Unix ms) is past the \
         high-water this node exported (logged at ERROR, metric tsoracle_paxos_high_water): \
         timestamps then stay unique, but dense sequences and leases start over"
    )]
    ConfigurationEnded,
    /// A node id or ballot the epoch codec cannot encode (node id 0 or above
    /// `u32::MAX`).
    #[error("node id not usable as an epoch: {0}")]
    Epoch(#[from] EpochError),
}
