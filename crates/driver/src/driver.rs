//! [`PaxosDriver`]: the `ConsensusDriver` of tsoracle over a
//! [`PaxosHighWaterHost`].
//!
//! The driver owns the tsoracle side: the leader lease ([`LeaseTracker`]),
//! the leadership stream ([`LeaderEvents`]), the checks before proposing
//! ([`fence`]), proposal ids, deadlines, and the error split. The host owns
//! OmniPaxos and the apply path.
//!
//! One background task (owned by the driver, stopped by [`PaxosDriver::shutdown`]
//! or on drop) follows the host's leadership view, publishes leadership
//! changes, and proposes the idle leader's renewal barriers.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use futures_core::Stream;
use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::util::NodeId;
use tokio::sync::{Notify, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_stream::wrappers::WatchStream;
use tsoracle_consensus::{ConsensusDriver, ConsensusError, LeaderState};
use tsoracle_core::{Epoch, LeaseRecord, PeerEndpoint, SeqKey};
use tsoracle_paxos_state::{Command, Lease, ProposalId};

use crate::clock::{Clock, MonotonicClock};
use crate::core::events::LeaderEvents;
use crate::core::lease::LeaseTracker;
use crate::core::role::{Role, Term};
use crate::error::{ConfigError, RuntimeError};
use crate::fence;
use crate::gate::{NotServing, ReplyGate, reply_admitted};
use crate::host::{Applied, HostError, PaxosHighWaterHost};
use crate::timing::Timing;

/// Default bound on one driver call (`TransientDriver` after it).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Default cap on the number of distinct dense keys.
pub const DEFAULT_DENSE_KEY_CAP: u64 = 1_000_000;

/// Configuration of a [`PaxosDriver`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DriverConfig {
    /// Ticks, election timeout, lease, drift and renewal period.
    pub timing: Timing,
    /// The driver stops reporting `Leader` this long before its lease runs
    /// out. tsoracle-server keeps serving from its window until it has
    /// processed the leadership change, so this must cover the server's
    /// reaction time (a scheduling delay of its leader-watch task).
    pub stop_margin: Duration,
    /// Bound on each driver call; a call that cannot finish in time (quorum
    /// lost, leader changing) returns `TransientDriver`.
    pub request_timeout: Duration,
    /// Most distinct dense keys (`SeqKeyCardinalityExceeded` beyond it).
    pub dense_key_cap: u64,
}

impl DriverConfig {
    /// A configuration with `timing`, a stop margin of two ticks, and the
    /// default timeout and key cap.
    #[must_use]
    pub fn new(timing: Timing) -> Self {
        Self {
            timing,
            stop_margin: timing.tick.saturating_mul(2),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            dense_key_cap: DEFAULT_DENSE_KEY_CAP,
        }
    }

    /// Checks the configuration.
    ///
    /// # Errors
    ///
    /// The [`Timing::validate`] errors; [`ConfigError::StopMarginTooLong`] when
    /// `renew_every + stop_margin` does not fit in the effective lease (a
    /// leader would stop serving between two renewals);
    /// [`ConfigError::ZeroDuration`] for a zero `request_timeout`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.timing.validate()?;
        if self.request_timeout.is_zero() {
            return Err(ConfigError::ZeroDuration {
                field: "request_timeout",
            });
        }
        let effective_lease = self.timing.leader_lease_validity();
        if self.timing.renew_every.saturating_add(self.stop_margin) >= effective_lease {
            return Err(ConfigError::StopMarginTooLong {
                stop_margin: self.stop_margin,
                renew_every: self.timing.renew_every,
                effective_lease,
            });
        }
        Ok(())
    }
}

/// The OmniPaxos-backed `ConsensusDriver`.
///
/// Create it inside a tokio runtime with [`PaxosDriver::start`]; hand it to
/// `tsoracle-server` as `Arc<dyn ConsensusDriver>`.
pub struct PaxosDriver<H: PaxosHighWaterHost> {
    core: Arc<Core<H>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

struct Core<H> {
    host: Arc<H>,
    config: DriverConfig,
    clock: Arc<dyn Clock>,
    incarnation: u64,
    /// Next proposal sequence number. Minted and submitted under this lock,
    /// so this node's proposals reach the log in id order.
    seq: Mutex<u64>,
    lease: Mutex<LeaseTracker>,
    events: watch::Sender<LeaderState>,
    subscribed: Arc<AtomicBool>,
    /// Wakes the leadership task when a decision renewed the lease.
    wake: Notify,
    /// Set by `shutdown` and when the host's leadership watch closes: the
    /// node then claims no role at all, whatever the lease says.
    stopped: AtomicBool,
    /// Each member's client endpoint, for the reply gate's leader hint.
    endpoints: BTreeMap<NodeId, PeerEndpoint>,
    /// Set when the host reports that a StopSign ended the configuration:
    /// every call then fails with [`RuntimeError::ConfigurationEnded`], which
    /// tells the operator what to do (a `NotLeader` would only send clients
    /// from node to node).
    ended: AtomicBool,
}

impl<H: PaxosHighWaterHost> PaxosDriver<H> {
    /// Starts the driver over `host`: validates `config` and spawns the
    /// leadership task on the current tokio runtime. The lease runs on the
    /// process's monotonic clock.
    ///
    /// # Errors
    ///
    /// [`DriverConfig::validate`] errors, [`ConfigError::Epoch`] for a node id the
    /// epoch codec cannot encode, [`ConfigError::NoRuntime`] outside a runtime.
    pub fn start(host: Arc<H>, config: DriverConfig) -> Result<Self, ConfigError> {
        Self::start_with_clock(host, config, Arc::new(MonotonicClock::new()))
    }

    /// [`start`](Self::start) with the lease measured on `clock` (a
    /// simulation's per-node clock, say).
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start).
    pub fn start_with_clock(
        host: Arc<H>,
        config: DriverConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ConfigError::NoRuntime)?;
        let me = host.node_id();
        let lease = LeaseTracker::new(me, &config.timing)?;
        // One driver per host start: a second one would count proposal ids
        // from zero again, below the ids already applied.
        let incarnation = host.claim_proposer().ok_or(ConfigError::ProposerClaimed)?;
        let endpoints: BTreeMap<NodeId, PeerEndpoint> = host
            .members()
            .into_iter()
            .filter_map(|node| host.client_endpoint(node).map(|e| (node, e)))
            .collect();
        let (events, _) = watch::channel(LeaderState::Unknown);
        let core = Arc::new(Core {
            incarnation,
            host,
            config,
            clock,
            seq: Mutex::new(0),
            lease: Mutex::new(lease),
            events,
            subscribed: Arc::new(AtomicBool::new(false)),
            wake: Notify::new(),
            stopped: AtomicBool::new(false),
            endpoints: endpoints.clone(),
            ended: AtomicBool::new(false),
        });
        let task = runtime.spawn(leadership_task(
            Arc::clone(&core),
            LeaderEvents::new(endpoints),
        ));
        Ok(Self {
            core,
            task: Mutex::new(Some(task)),
        })
    }

    /// The host this driver runs on.
    #[must_use]
    pub fn host(&self) -> &Arc<H> {
        &self.core.host
    }

    /// What this node may claim now (lease and stop margin applied).
    #[must_use]
    pub fn role(&self) -> Role {
        self.core.role_now()
    }

    /// The gate every reply carrying data must pass after it was produced
    /// and before it is sent (see [`crate::gate`]). Cheap to clone; hand it
    /// to the server's reply path (the `tsoracle-paxos-reply-gate` layer).
    #[must_use]
    pub fn reply_gate(&self) -> Arc<dyn ReplyGate> {
        Arc::clone(&self.core) as Arc<dyn ReplyGate>
    }

    /// A receiver of the leadership states this driver publishes (not
    /// counted as the server's subscription).
    #[must_use]
    pub fn watch_leadership(&self) -> watch::Receiver<LeaderState> {
        self.core.events.subscribe()
    }

    /// Stops the leadership task and waits for it. The stream then reports
    /// `Unknown` and writes are refused with `NotLeader` (reads still go
    /// through the host while it runs): stop the server first.
    pub async fn shutdown(&self) {
        self.core.stopped.store(true, Ordering::SeqCst);
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
        self.core.events.send_replace(LeaderState::Unknown);
    }
}

impl<H: PaxosHighWaterHost> Drop for PaxosDriver<H> {
    fn drop(&mut self) {
        if let Some(task) = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }
}

impl<H: PaxosHighWaterHost> Core<H> {
    fn now(&self) -> Duration {
        self.clock.now()
    }

    fn lease(&self) -> std::sync::MutexGuard<'_, LeaseTracker> {
        self.lease.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn role_now(&self) -> Role {
        if self.stopped.load(Ordering::SeqCst) || self.ended.load(Ordering::SeqCst) {
            return Role::Unknown;
        }
        let lease = self.lease();
        serving_role(&lease, self.now(), self.config.stop_margin)
    }

    /// `PermanentDriver` once a StopSign ended the configuration.
    fn check_not_ended(&self) -> Result<(), ConsensusError> {
        if self.ended.load(Ordering::SeqCst) {
            return Err(RuntimeError::ConfigurationEnded.into());
        }
        Ok(())
    }

    /// Mints the next proposal id and submits the command built with it,
    /// under one lock so ids reach the log in order. Records the proposal
    /// time for the lease when this node leads under `ballot`.
    fn submit(
        &self,
        ballot: Option<Ballot>,
        make: impl FnOnce(ProposalId) -> Command,
    ) -> Result<(Duration, crate::host::PendingApply), ConsensusError> {
        let mut seq = self.seq.lock().unwrap_or_else(PoisonError::into_inner);
        *seq = seq.saturating_add(1);
        let id = ProposalId::new(self.host.node_id(), self.incarnation, *seq);
        // Sampled before the entry is handed over: the lease runs from here.
        let proposed_at = self.now();
        if let Some(ballot) = ballot {
            self.lease().proposed(proposed_at, ballot);
        }
        let pending = self.host.submit(make(id)).map_err(host_error)?;
        Ok((proposed_at, pending))
    }

    /// Waits for a submitted command within the request deadline and credits
    /// the lease when the decision was made under `ballot`.
    async fn finish(
        &self,
        ballot: Option<Ballot>,
        proposed_at: Duration,
        pending: crate::host::PendingApply,
    ) -> Result<Applied, ConsensusError> {
        let applied = tokio::time::timeout(self.config.request_timeout, pending)
            .await
            .map_err(|_| ConsensusError::from(RuntimeError::Timeout(self.config.request_timeout)))?
            .map_err(host_error)?;
        // Submission to this node's apply: one log round trip (and the
        // group-commit syncs on the way).
        metrics::histogram!("tsoracle_paxos_proposal_seconds")
            .record(self.now().saturating_sub(proposed_at).as_secs_f64());
        if let Some(ballot) = ballot
            && applied.promise == ballot
            && self.lease().decided(proposed_at, ballot)
        {
            self.wake.notify_one();
        }
        Ok(applied)
    }

    /// Proposes `make`'s command as leader under `term`, waits for it, and
    /// acknowledges it only if this node still serves under `term` once it
    /// is applied.
    ///
    /// A write is acknowledged only while the lease it was admitted under
    /// still holds (stop margin included). A decision can arrive late: after
    /// the lease lapsed, or carried into a newer leader's term by its
    /// prepare phase and learned only when this node rejoins. The write then
    /// took effect, but a caller that acted on its success (a server that
    /// starts serving the window it persisted) could overlap a newer leader
    /// that is already serving; `NotLeader` (or `Fenced`) tells it to step
    /// down instead. The lease then covers the caller's reaction time, as for
    /// any role change.
    async fn propose_as(
        &self,
        term: Term,
        caller_epoch: Epoch,
        make: impl FnOnce(ProposalId) -> Command,
    ) -> Result<Applied, ConsensusError> {
        let ballot = Some(term.ballot());
        let (at, pending) = self.submit(ballot, make)?;
        // Once the lease under `term` is gone, no answer can be an
        // acknowledgement any more: answer now instead of holding the caller
        // to the request deadline (the entry may still be decided; a
        // high-water only rises and a dense block becomes a gap).
        let applied = tokio::select! {
            biased;
            applied = self.finish(ballot, at, pending) => applied?,
            () = self.lost(term) => {
                return Err(ConsensusError::NotLeader {
                    observed: self.role_now().leader_epoch(),
                });
            }
        };
        // Not `fence::check_write`: this guards late decisions, not stale
        // callers, and must hold even where a test removes the epoch fence.
        match self.role_now() {
            Role::Leader(now) if now == term && applied.promise == term.ballot() => Ok(applied),
            Role::Leader(now) if now != term => Err(ConsensusError::Fenced {
                expected: caller_epoch,
                current: now.epoch(),
            }),
            role => Err(ConsensusError::NotLeader {
                observed: role.leader_epoch(),
            }),
        }
    }

    /// Resolves once this node no longer serves under `term` (lease lapsed,
    /// stop margin included, or leadership moved). The leadership task
    /// publishes every such change, so waking on its stream is enough.
    async fn lost(&self, term: Term) {
        let mut changes = self.events.subscribe();
        loop {
            if !matches!(self.role_now(), Role::Leader(now) if now == term) {
                return;
            }
            if changes.changed().await.is_err() {
                // The sender lives as long as this core: never reached.
                return std::future::pending().await;
            }
        }
    }

    /// A linearized read: a barrier through the log, then `read` on the
    /// state this node applied up to (at least) the barrier.
    async fn barrier_read<R>(
        &self,
        read: impl FnOnce(&tsoracle_paxos_state::ApplyState) -> R,
    ) -> Result<(u64, R), ConsensusError> {
        self.check_not_ended()?;
        #[cfg(feature = "mutations")]
        if !crate::mutation::is_on(crate::mutation::Guard::ReadBarrier) {
            crate::mutation::count_bypass();
            return Ok(self.read_applied(read));
        }
        let role = self.role_now();
        let (ballot, epoch) = match role {
            Role::Leader(term) => (Some(term.ballot()), term.epoch()),
            Role::Follower(term) => (None, term.epoch()),
            Role::Unknown => (None, Epoch::ZERO),
        };
        let (at, pending) = self.submit(ballot, |proposal| Command::Barrier { epoch, proposal })?;
        let applied = self.finish(ballot, at, pending).await?;
        let high_water = fence::barrier_outcome(applied.outcome)?;
        let mut read = Some(read);
        let mut value = None;
        self.host.read_state(&mut |state| {
            if let Some(read) = read.take() {
                value = Some(read(state));
            }
        });
        let value = value.ok_or_else(|| ConsensusError::from(RuntimeError::HostSkippedRead))?;
        Ok((high_water, value))
    }

    /// The read without its barrier: whatever this node has applied so far
    /// (the `ReadBarrier` mutation).
    #[cfg(feature = "mutations")]
    fn read_applied<R>(
        &self,
        read: impl FnOnce(&tsoracle_paxos_state::ApplyState) -> R,
    ) -> (u64, R) {
        let mut state = tsoracle_paxos_state::ApplyState::new();
        self.host.read_state(&mut |applied| state = applied.clone());
        (state.high_water(), read(&state))
    }

    /// The term to write under, after the checks every write runs (the
    /// range check first for a high-water advance).
    fn writer_term(
        &self,
        caller_epoch: Epoch,
        advance: Option<u64>,
    ) -> Result<Term, ConsensusError> {
        self.check_not_ended()?;
        let role = self.role_now();
        match advance {
            Some(at_least) => fence::check_advance(&role, at_least, caller_epoch)?,
            None => fence::check_write(&role, caller_epoch)?,
        }
        match role {
            Role::Leader(term) => Ok(term),
            // check_write admits leaders only.
            Role::Follower(_) | Role::Unknown => Err(ConsensusError::NotLeader {
                observed: role.leader_epoch(),
            }),
        }
    }
}

/// `Leader` only while the lease still holds `stop_margin` from now.
fn serving_role(lease: &LeaseTracker, now: Duration, stop_margin: Duration) -> Role {
    match lease.role(now) {
        Role::Leader(term) if lease.role(now.saturating_add(stop_margin)).is_leader() => {
            Role::Leader(term)
        }
        Role::Leader(_) => Role::Unknown,
        other => other,
    }
}

impl<H: PaxosHighWaterHost> ReplyGate for Core<H> {
    fn check(&self, epoch: Epoch) -> Result<(), NotServing> {
        let role = {
            let lease = self.lease();
            // Read under the lease lock: the clock reading is then never
            // older than the lease state it is compared with.
            let now = self.now();
            let claims = !self.stopped.load(Ordering::SeqCst) && !self.ended.load(Ordering::SeqCst);
            if claims && reply_admitted(&lease, now, epoch) {
                return Ok(());
            }
            lease.role(now)
        };
        let leader_epoch = role.leader_epoch();
        let leader_endpoint = match role {
            Role::Follower(term) => self.endpoints.get(&term.leader()).cloned(),
            Role::Leader(_) | Role::Unknown => None,
        };
        metrics::counter!("tsoracle_paxos_replies_gated_total").increment(1);
        Err(NotServing {
            leader_endpoint,
            leader_epoch,
        })
    }
}

fn host_error(error: HostError) -> ConsensusError {
    match error {
        HostError::Unavailable(_) => ConsensusError::TransientDriver(Box::new(error)),
        HostError::Failed(_) => ConsensusError::PermanentDriver(Box::new(error)),
    }
}

/// Follows the host's leadership view and the lease clock; publishes every
/// leadership change and proposes renewal barriers. Runs until aborted.
async fn leadership_task<H: PaxosHighWaterHost>(core: Arc<Core<H>>, mut events: LeaderEvents) {
    let mut views = core.host.leadership();
    // At most one renewal in flight: an isolated leader (which OmniPaxos
    // keeps calling leader) then appends one barrier per failed attempt
    // (each bounded by the request deadline), not one per `renew_every`.
    let mut renewals = JoinSet::new();
    let tick = core.config.timing.tick;
    let mut host_gone = false;
    loop {
        while renewals.try_join_next().is_some() {}
        let view = *views.borrow_and_update();
        if view.configuration_ended && !core.ended.swap(true, Ordering::SeqCst) {
            // Once per start, at ERROR: the node stays up but serves nothing,
            // and only an operator can act. The host reports the StopSign
            // only once everything before it was applied, so this
            // high-water is final.
            let mut high_water = 0;
            core.host
                .read_state(&mut |state| high_water = state.high_water());
            tracing::error!(high_water, "{}", RuntimeError::ConfigurationEnded);
        }
        let ended = core.ended.load(Ordering::SeqCst);
        let (now, role, wakeup, renew) = {
            let mut lease = core.lease();
            // Sampled after the view was read, never before: the new-leader
            // wait runs from the first observation of this node as leader.
            let now = core.now();
            if let Err(err) = lease.observe(now, view.into()) {
                tracing::warn!(%err, "leadership observation refused; no leader known");
            }
            let role = if host_gone || ended {
                Role::Unknown
            } else {
                serving_role(&lease, now, core.config.stop_margin)
            };
            let renew = !host_gone && !ended && renewals.is_empty() && lease.wants_renewal(now);
            let margin_end = lease
                .lease_expiry()
                .and_then(|until| until.checked_sub(core.config.stop_margin));
            let wakeup = [lease.next_wakeup(now), margin_end]
                .into_iter()
                .flatten()
                .filter(|t| *t > now)
                .min();
            (now, role, wakeup, renew)
        };
        if let Some(state) = events.next(&role) {
            tracing::info!(?state, "leadership changed");
            let lapsed = state == LeaderState::Unknown && !host_gone && !ended;
            let previous = core.events.send_replace(state);
            // Operators need to see this at the default log level: clients
            // get errors until the next renewal is decided or a new leader
            // is elected.
            if lapsed && let LeaderState::Leader { epoch } = previous {
                tracing::warn!(
                    ?epoch,
                    "stopped serving as leader: the lease ran out before a renewal was decided \
                     (this node stalled for about a lease, or cannot reach a quorum)"
                );
            }
        }
        if renew {
            let core = Arc::clone(&core);
            renewals.spawn(async move { renew_lease(&core, view.promise).await });
        }
        // Wake at the next lease event, and at least every tick: a role must
        // flip on time even if no new view arrives.
        let sleep = wakeup.map_or(tick, |at| at.saturating_sub(now).min(tick));
        // Biased: a fixed branch order keeps a seeded simulation replayable.
        tokio::select! {
            biased;
            changed = views.changed(), if !host_gone => {
                if changed.is_err() {
                    tracing::error!("the host's leadership watch closed; reporting no leader");
                    host_gone = true;
                    core.stopped.store(true, Ordering::SeqCst);
                }
            }
            () = core.wake.notified() => {}
            () = tokio::time::sleep(sleep) => {}
        }
    }
}

/// An idle (or newly elected) leader's no-op barrier.
async fn renew_lease<H: PaxosHighWaterHost>(core: &Core<H>, ballot: Ballot) {
    let Ok(term) = Term::new(ballot) else {
        return;
    };
    let epoch = term.epoch();
    let submitted = core.submit(Some(ballot), |proposal| Command::Barrier {
        epoch,
        proposal,
    });
    let result = match submitted {
        Ok((at, pending)) => core.finish(Some(ballot), at, pending).await.map(|_| ()),
        Err(err) => Err(err),
    };
    if let Err(err) = result {
        tracing::debug!(%err, "lease renewal failed");
    }
    core.wake.notify_one();
}

/// The leadership stream handed to the server: the watch, plus a guard that
/// frees the single subscription slot when the stream is dropped.
struct Subscription {
    inner: WatchStream<LeaderState>,
    slot: Arc<AtomicBool>,
}

impl Stream for Subscription {
    type Item = LeaderState;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<LeaderState>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.slot.store(false, Ordering::SeqCst);
    }
}

/// A second concurrent subscription: `Unknown` once, then nothing, never
/// ending (an ended stream would stop the server). Fails closed: a server
/// holding it never serves.
struct Refused {
    sent: bool,
}

impl Stream for Refused {
    type Item = LeaderState;

    fn poll_next(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<LeaderState>> {
        if self.sent {
            Poll::Pending
        } else {
            self.sent = true;
            Poll::Ready(Some(LeaderState::Unknown))
        }
    }
}

#[async_trait]
impl<H: PaxosHighWaterHost> ConsensusDriver for PaxosDriver<H> {
    fn leadership_events(&self) -> Pin<Box<dyn Stream<Item = LeaderState> + Send>> {
        let slot = Arc::clone(&self.core.subscribed);
        if slot.swap(true, Ordering::SeqCst) {
            tracing::error!(
                "a second leadership subscription while one is live: it only ever reports \
                 Unknown (drop the first stream to re-subscribe)"
            );
            return Box::pin(Refused { sent: false });
        }
        Box::pin(Subscription {
            inner: WatchStream::new(self.core.events.subscribe()),
            slot,
        })
    }

    async fn load_high_water(&self) -> Result<u64, ConsensusError> {
        self.core.barrier_read(|_| ()).await.map(|(hw, ())| hw)
    }

    async fn persist_high_water(&self, at_least: u64, epoch: Epoch) -> Result<u64, ConsensusError> {
        let term = self.core.writer_term(epoch, Some(at_least))?;
        let applied = self
            .core
            .propose_as(term, epoch, |proposal| Command::Advance {
                at_least,
                epoch,
                proposal,
            })
            .await?;
        fence::high_water_outcome(applied.outcome)
    }

    async fn load_dense_seq(&self, key: &SeqKey) -> Result<u64, ConsensusError> {
        self.core
            .barrier_read(|state| state.dense_value(key))
            .await
            .map(|(_, value)| value)
    }

    async fn advance_dense(
        &self,
        key: &SeqKey,
        count: u32,
        expected_epoch: Epoch,
    ) -> Result<u64, ConsensusError> {
        let starts = self
            .advance_dense_batch(&[(key.clone(), count)], expected_epoch)
            .await?;
        starts.first().copied().ok_or_else(|| {
            ConsensusError::from(RuntimeError::UnexpectedOutcome {
                expected: "one block start",
                got: "none".to_owned(),
            })
        })
    }

    async fn advance_dense_batch(
        &self,
        entries: &[(SeqKey, u32)],
        expected_epoch: Epoch,
    ) -> Result<Vec<u64>, ConsensusError> {
        let term = self.core.writer_term(expected_epoch, None)?;
        let key_cap = self.core.config.dense_key_cap;
        let entries = entries.to_vec();
        let applied = self
            .core
            .propose_as(term, expected_epoch, |proposal| Command::DenseAdvance {
                entries,
                key_cap,
                epoch: expected_epoch,
                proposal,
            })
            .await?;
        fence::dense_outcome(applied.outcome, expected_epoch)
    }

    async fn load_leases(&self) -> Result<Vec<LeaseRecord>, ConsensusError> {
        self.core
            .barrier_read(|state| {
                state
                    .leases()
                    .iter()
                    .cloned()
                    .map(LeaseRecord::from)
                    .collect()
            })
            .await
            .map(|(_, leases)| leases)
    }

    async fn persist_leases(
        &self,
        live: &[LeaseRecord],
        epoch: Epoch,
    ) -> Result<(), ConsensusError> {
        let term = self.core.writer_term(epoch, None)?;
        let leases: Vec<Lease> = live.iter().cloned().map(Lease::from).collect();
        let applied = self
            .core
            .propose_as(term, epoch, |proposal| Command::ReplaceLeases {
                leases,
                epoch,
                proposal,
            })
            .await?;
        fence::lease_outcome(applied.outcome, epoch)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;
    use std::time::Instant;

    use omnipaxos::util::NodeId;
    use tsoracle_core::PeerEndpoint;
    use tsoracle_paxos_state::{ApplyState, Outcome};

    use super::*;
    use crate::core::lease::LeaderView;
    use crate::host::{PendingApply, ProposerSlot};

    /// A host whose leadership is set by the test and whose commands are
    /// "applied" at once, with a chosen promise.
    struct FakeHost {
        view: watch::Sender<LeaderView>,
        promise_at_apply: Mutex<Ballot>,
        proposer: ProposerSlot,
        submitted: AtomicU64,
        /// Every command submitted from now on is never decided (a cut-off
        /// leader: OmniPaxos takes the entry, no quorum accepts it).
        stalled: AtomicBool,
    }

    impl FakeHost {
        fn new(view: LeaderView, promise_at_apply: Ballot) -> Arc<Self> {
            Arc::new(Self {
                view: watch::channel(view).0,
                promise_at_apply: Mutex::new(promise_at_apply),
                proposer: ProposerSlot::new(1),
                submitted: AtomicU64::new(0),
                stalled: AtomicBool::new(false),
            })
        }
    }

    impl PaxosHighWaterHost for FakeHost {
        fn node_id(&self) -> NodeId {
            1
        }
        fn claim_proposer(&self) -> Option<u64> {
            self.proposer.claim()
        }
        fn members(&self) -> Vec<NodeId> {
            vec![1, 2, 3]
        }
        fn client_endpoint(&self, node: NodeId) -> Option<PeerEndpoint> {
            PeerEndpoint::try_from(format!("127.0.0.1:{}", 7000 + node)).ok()
        }
        fn leadership(&self) -> watch::Receiver<LeaderView> {
            self.view.subscribe()
        }
        fn submit(&self, command: Command) -> Result<PendingApply, HostError> {
            self.submitted.fetch_add(1, Ordering::SeqCst);
            if self.stalled.load(Ordering::SeqCst) {
                return Ok(Box::pin(std::future::pending()));
            }
            let promise = *self.promise_at_apply.lock().unwrap();
            let outcome = match command {
                Command::Advance { at_least, .. } => Outcome::HighWater(at_least),
                _ => Outcome::Barrier { high_water: 0 },
            };
            Ok(Box::pin(async move { Ok(Applied { outcome, promise }) }))
        }
        fn read_state(&self, read: &mut dyn FnMut(&ApplyState)) {
            read(&ApplyState::new());
        }
    }

    fn timing() -> Timing {
        let ms = Duration::from_millis;
        Timing {
            tick: ms(5),
            election_ticks: 10,
            lease: ms(40),
            drift: 0.01,
            renew_every: ms(10),
        }
    }

    fn leading(ballot: Ballot) -> LeaderView {
        LeaderView {
            promise: ballot,
            leader: Some((1, true)),
            configuration_ended: false,
        }
    }

    async fn leads_within(driver: &PaxosDriver<FakeHost>, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if driver.role().is_leader() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        false
    }

    #[tokio::test]
    async fn renewals_decided_under_the_same_ballot_make_a_leader() {
        let b = Ballot::with(1, 2, 0, 1);
        let host = FakeHost::new(leading(b), b);
        let driver = PaxosDriver::start(Arc::clone(&host), DriverConfig::new(timing())).unwrap();
        assert!(leads_within(&driver, Duration::from_secs(2)).await);
        // It renews while idle: still leading many lease lengths later.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(driver.role().is_leader());
        assert!(host.submitted.load(Ordering::SeqCst) >= 5);
        driver.shutdown().await;
        assert_eq!(driver.role(), Role::Unknown);
    }

    /// Entries applied while this node's promise is another ballot were
    /// decided by someone else: they must never renew the lease.
    #[tokio::test]
    async fn decisions_under_another_ballot_never_renew_the_lease() {
        let b = Ballot::with(1, 2, 0, 1);
        let newer = Ballot::with(1, 3, 0, 2);
        let host = FakeHost::new(leading(b), newer);
        let driver = PaxosDriver::start(Arc::clone(&host), DriverConfig::new(timing())).unwrap();
        assert!(!leads_within(&driver, Duration::from_millis(300)).await);
        assert!(
            host.submitted.load(Ordering::SeqCst) >= 1,
            "no renewal was tried"
        );
        driver.shutdown().await;
    }

    #[tokio::test]
    async fn the_lease_lapses_a_stop_margin_early_and_the_stream_follows() {
        let b = Ballot::with(1, 2, 0, 1);
        let host = FakeHost::new(leading(b), b);
        let driver = PaxosDriver::start(Arc::clone(&host), DriverConfig::new(timing())).unwrap();
        let mut events = driver.watch_leadership();
        assert!(leads_within(&driver, Duration::from_secs(2)).await);
        events
            .wait_for(|s| matches!(s, LeaderState::Leader { .. }))
            .await
            .unwrap();
        // Decisions stop counting: the lease runs out.
        *host.promise_at_apply.lock().unwrap() = Ballot::with(1, 9, 0, 2);
        let lost_at = Instant::now();
        tokio::time::timeout(
            Duration::from_secs(2),
            events.wait_for(|s| *s == LeaderState::Unknown),
        )
        .await
        .unwrap()
        .unwrap();
        // At most lease × (1 − drift) − stop_margin after the last renewal
        // (plus scheduling slack).
        assert!(lost_at.elapsed() < Duration::from_millis(200));
        assert!(!driver.role().is_leader());
        driver.shutdown().await;
    }

    /// A write decided under another ballot (carried into a newer leader's
    /// term, say) took effect, but this node no longer leads: acknowledging
    /// it would let a server serve beside the newer leader.
    #[tokio::test]
    async fn a_write_decided_after_leadership_moved_is_not_acknowledged() {
        let b = Ballot::with(1, 2, 0, 1);
        let host = FakeHost::new(leading(b), b);
        let driver = PaxosDriver::start(Arc::clone(&host), DriverConfig::new(timing())).unwrap();
        assert!(leads_within(&driver, Duration::from_secs(2)).await);
        let epoch = crate::core::role::Term::new(b).unwrap().epoch();
        assert_eq!(driver.persist_high_water(7, epoch).await.unwrap(), 7);
        // From now on every command is applied while this node has promised
        // a newer ballot: the lease still holds for a while, but the
        // decision was not this leader's.
        *host.promise_at_apply.lock().unwrap() = Ballot::with(1, 3, 0, 2);
        let submitted = host.submitted.load(Ordering::SeqCst);
        match driver.persist_high_water(9, epoch).await {
            Err(ConsensusError::NotLeader { .. }) => {}
            other => panic!("expected NotLeader, got {other:?}"),
        }
        assert!(
            host.submitted.load(Ordering::SeqCst) > submitted,
            "nothing was proposed"
        );
        driver.shutdown().await;
    }

    /// A write waiting for a decision when the lease lapses is answered at
    /// once, not at the request deadline.
    #[tokio::test]
    async fn a_write_waiting_when_the_lease_lapses_is_answered_at_once() {
        let b = Ballot::with(1, 2, 0, 1);
        let host = FakeHost::new(leading(b), b);
        let mut config = DriverConfig::new(timing());
        config.request_timeout = Duration::from_secs(600);
        let driver = PaxosDriver::start(Arc::clone(&host), config).unwrap();
        assert!(leads_within(&driver, Duration::from_secs(2)).await);
        let epoch = crate::core::role::Term::new(b).unwrap().epoch();
        // Cut off: neither the write nor any renewal is decided from now on.
        host.stalled.store(true, Ordering::SeqCst);
        let answered =
            tokio::time::timeout(Duration::from_secs(60), driver.persist_high_water(9, epoch))
                .await
                .expect("the write hung although the lease lapsed");
        match answered {
            Err(ConsensusError::NotLeader { .. }) => {}
            other => panic!("expected NotLeader, got {other:?}"),
        }
        assert!(!driver.role().is_leader());
        driver.shutdown().await;
    }

    /// The reply gate admits replies of the epoch this node leads under,
    /// and refuses them once the lease lapsed, naming no leader.
    #[tokio::test]
    async fn the_reply_gate_follows_the_lease() {
        let b = Ballot::with(1, 2, 0, 1);
        let host = FakeHost::new(leading(b), b);
        let driver = PaxosDriver::start(Arc::clone(&host), DriverConfig::new(timing())).unwrap();
        let gate = driver.reply_gate();
        let epoch = crate::core::role::Term::new(b).unwrap().epoch();
        assert!(leads_within(&driver, Duration::from_secs(2)).await);
        assert_eq!(gate.check(epoch), Ok(()));
        let other = crate::core::role::Term::new(Ballot::with(1, 1, 0, 1))
            .unwrap()
            .epoch();
        assert_eq!(
            gate.check(other),
            Err(NotServing {
                leader_endpoint: None,
                leader_epoch: Some(epoch),
            })
        );
        host.stalled.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(10);
        while gate.check(epoch).is_ok() {
            assert!(Instant::now() < deadline, "the gate outlived the lease");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert!(!driver.role().is_leader());
        driver.shutdown().await;
        assert!(gate.check(epoch).is_err());
    }

    /// A StopSign that ended the configuration turns a leader into a node
    /// that serves nothing and answers every call with the permanent error
    /// that tells the operator what happened, without proposing anything.
    #[tokio::test]
    async fn an_ended_configuration_fails_every_call_permanently_and_says_why() {
        let b = Ballot::with(1, 2, 0, 1);
        let host = FakeHost::new(leading(b), b);
        let driver = PaxosDriver::start(Arc::clone(&host), DriverConfig::new(timing())).unwrap();
        let mut events = driver.watch_leadership();
        assert!(leads_within(&driver, Duration::from_secs(2)).await);
        events
            .wait_for(|s| matches!(s, LeaderState::Leader { .. }))
            .await
            .unwrap();
        host.view
            .send_modify(|view| view.configuration_ended = true);
        tokio::time::timeout(
            Duration::from_secs(2),
            events.wait_for(|s| *s == LeaderState::Unknown),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(driver.role(), Role::Unknown);
        let submitted = host.submitted.load(Ordering::SeqCst);
        let epoch = crate::core::role::Term::new(b).unwrap().epoch();
        let key = SeqKey::try_new("k").unwrap();
        let errors = [
            driver.persist_high_water(7, epoch).await.map(|_| ()),
            driver.load_high_water().await.map(|_| ()),
            driver.advance_dense(&key, 1, epoch).await.map(|_| ()),
            driver.load_dense_seq(&key).await.map(|_| ()),
            driver.persist_leases(&[], epoch).await,
            driver.load_leases().await.map(|_| ()),
        ];
        for result in errors {
            match result {
                Err(ConsensusError::PermanentDriver(err)) => {
                    let message = err.to_string();
                    assert!(message.contains("no admin request"), "{message}");
                    assert!(message.contains("Restore"), "{message}");
                }
                other => panic!("expected PermanentDriver, got {other:?}"),
            }
        }
        assert_eq!(
            host.submitted.load(Ordering::SeqCst),
            submitted,
            "a call was proposed after the configuration ended"
        );
        driver.shutdown().await;
    }

    #[test]
    fn serving_role_stops_a_margin_before_the_lease_ends() {
        let t = timing();
        let b = Ballot::with(1, 2, 0, 1);
        let mut lease = LeaseTracker::new(1, &t).unwrap();
        let view = leading(b).into();
        lease.observe(Duration::ZERO, view).unwrap();
        lease.proposed(Duration::ZERO, b);
        assert!(lease.decided(Duration::ZERO, b));
        let wait = t.new_leader_wait();
        let margin = Duration::from_millis(10);
        // Lease until 39.6 ms, wait until 40.4 ms: no serving window at all.
        assert_eq!(serving_role(&lease, wait, margin), Role::Unknown);
        lease.proposed(Duration::from_millis(30), b);
        assert!(lease.decided(Duration::from_millis(30), b));
        // Lease until 69.6 ms: serving on [40.4, 59.6).
        assert!(serving_role(&lease, wait, margin).is_leader());
        assert!(serving_role(&lease, Duration::from_micros(59_599), margin).is_leader());
        assert_eq!(
            serving_role(&lease, Duration::from_micros(59_600), margin),
            Role::Unknown
        );
        assert!(lease.role(Duration::from_micros(59_600)).is_leader());
    }

    #[test]
    fn a_margin_that_leaves_no_serving_time_is_refused() {
        let mut config = DriverConfig::new(timing());
        assert!(config.validate().is_ok());
        config.stop_margin = Duration::from_millis(30); // 10 + 30 >= 39.6
        assert!(matches!(
            config.validate(),
            Err(ConfigError::StopMarginTooLong { .. })
        ));
        config.stop_margin = Duration::from_millis(5);
        config.request_timeout = Duration::ZERO;
        assert!(matches!(
            config.validate(),
            Err(ConfigError::ZeroDuration { .. })
        ));
    }

    #[tokio::test]
    async fn a_second_driver_on_one_host_start_is_refused() {
        let b = Ballot::with(1, 2, 0, 1);
        let host = FakeHost::new(leading(b), b);
        let first = PaxosDriver::start(Arc::clone(&host), DriverConfig::new(timing())).unwrap();
        let second = PaxosDriver::start(Arc::clone(&host), DriverConfig::new(timing()));
        assert!(matches!(second, Err(ConfigError::ProposerClaimed)));
        first.shutdown().await;
    }
}
