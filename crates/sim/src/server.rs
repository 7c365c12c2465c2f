//! A simulated tsoracle-server: the serving protocol of the real one, driven
//! by a [`PaxosDriver`] in virtual time.
//!
//! It follows `tsoracle-server` 3.2: on a `Leader` event it fences (step
//! down, linearized `load_high_water` and `load_leases`, persist a new window
//! above the old high-water under the new epoch, then serve from
//! `tsoracle_core::Allocator`); `get_ts` grants from the window and extends it
//! with `persist_high_water` when exhausted (committing the extension only
//! under the epoch it was prepared in); `get_seq` is `advance_dense` under the
//! serving epoch; leases go through `tsoracle_core::LeaseTable` and
//! `persist_leases`. Its awaits take scheduling delays, now and then long
//! ones: a slow server must still never hand out a timestamp twice or out of
//! order, because the driver fences stale epochs.
//!
//! Like the real server (`serving_core.rs`), extensions and lease mutations
//! hold a drain barrier across their driver calls and commit, and a fence
//! takes it exclusively: the driver may announce `Leader` again under the
//! epoch already served (a lease that lapsed and was renewed), and a fence
//! that loaded the lease set while a mutation was still in flight would serve
//! from a table missing what that mutation then persisted. A lease mutation
//! whose window commit was ignored, or whose persist was refused, fails as
//! the real server's does (`lease_flow.rs`), and a refused persist steps the
//! server down.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use omnipaxos::util::NodeId;
use tsoracle_consensus::{ConsensusDriver, ConsensusError, LeaderState};
use tsoracle_core::{
    AcquireDecision, Allocator, CommitOutcome, CoreError, Epoch, LeaseRecord, LeaseTable,
    PhysicalMs, SeqKey,
};
use tsoracle_driver_paxos::{PaxosDriver, Role, StandaloneHost};
use tsoracle_paxos_checker::Outcome;

use crate::clock::DriftingClock;
use crate::history::Recorder;
use crate::leaders::Monitor;
use tsoracle_driver_paxos::Clock as _;

/// The driver a simulated node runs.
pub(crate) type Driver = PaxosDriver<StandaloneHost>;

/// Lease TTL: longer than any run, so leases never lapse on their own and the
/// checker's lease rules apply (see `tsoracle_paxos_checker`).
pub(crate) const LEASE_TTL_MS: u64 = 300_000;

/// Tunables of a simulated server.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServerParams {
    /// How far ahead of now a window extension reaches.
    pub(crate) window_ahead_ms: u64,
    /// How far above the fence floor a new leader's first window reaches.
    pub(crate) failover_advance_ms: u64,
    /// Longest delay before the server acts on a leadership event. Kept
    /// below the driver's stop margin: the lease covers only that much
    /// reaction time (see `tsoracle_driver_paxos::timing`).
    pub(crate) max_reaction: Duration,
    /// Usual scheduling delay at an await of the fence or an extension.
    pub(crate) max_step: Duration,
    /// Probability that such an await stalls for long instead.
    pub(crate) slow_probability: f64,
    /// Longest such stall.
    pub(crate) max_slow: Duration,
    /// Offset of this node's wall clock, in ms (clocks need not agree).
    pub(crate) wall_offset_ms: u64,
}

/// Why a client request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    /// Not serving; the leader this node knows of, if any.
    #[error("not serving (leader hint {0:?})")]
    NotServing(Option<NodeId>),
    /// The node crashed while the request was in flight.
    #[error("the node is down")]
    Down,
    /// The driver refused or failed the call.
    #[error("driver: {0}")]
    Driver(String),
    /// The request itself was refused (lease rules, window rules).
    #[error("refused: {0}")]
    Rejected(String),
}

impl From<ConsensusError> for Refused {
    fn from(err: ConsensusError) -> Self {
        Refused::Driver(err.to_string())
    }
}

#[derive(Default)]
struct Serving {
    allocator: Allocator,
    leases: LeaseTable,
}

/// One node's simulated server.
pub(crate) struct SimServer {
    node: NodeId,
    driver: Arc<Driver>,
    clock: DriftingClock,
    params: ServerParams,
    serving: Mutex<Serving>,
    /// Serializes window extensions and lease mutations, as the real
    /// server's extension lock does (an async lock: it is held across the
    /// driver call).
    extension: tokio::sync::Mutex<()>,
    /// The real server's drain barrier (`extension_gate`): shared by an
    /// extension or lease mutation from before its persist until it
    /// committed or failed, exclusive for a fence from its loads until it
    /// serves. Extenders take it while holding `extension`; a fence never
    /// takes `extension` (the real lock order, so no cycle).
    gate: tokio::sync::RwLock<()>,
    alive: AtomicBool,
    /// Whether an await may still stall for long. A stall is a fault, and
    /// every fault ends at the heal: a server that stalled twice in a row
    /// after it (each up to `max_slow`) could miss the liveness deadline
    /// with nothing wrong in the driver (seed 313956 did).
    stalls: AtomicBool,
    /// Set while the node's process is paused: requests wait in its
    /// sockets, and no reply leaves until it resumes.
    paused: tokio::sync::watch::Sender<bool>,
    rng: Mutex<fastrand::Rng>,
    recorder: Recorder,
    monitor: Monitor,
}

/// Worker id under which a server records its own driver calls.
fn server_worker(node: NodeId) -> u32 {
    1_000 + u32::try_from(node).unwrap_or(u32::MAX - 1_000)
}

impl SimServer {
    pub(crate) fn new(
        node: NodeId,
        driver: Arc<Driver>,
        clock: DriftingClock,
        params: ServerParams,
        seed: u64,
        recorder: Recorder,
        monitor: Monitor,
    ) -> Arc<Self> {
        Arc::new(Self {
            node,
            driver,
            clock,
            params,
            serving: Mutex::default(),
            extension: tokio::sync::Mutex::new(()),
            gate: tokio::sync::RwLock::new(()),
            alive: AtomicBool::new(true),
            stalls: AtomicBool::new(true),
            paused: tokio::sync::watch::Sender::new(false),
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
            recorder,
            monitor,
        })
    }

    pub(crate) fn node(&self) -> NodeId {
        self.node
    }

    pub(crate) fn driver(&self) -> &Arc<Driver> {
        &self.driver
    }

    /// `Ok` while the node is up (and once it runs).
    pub(crate) async fn get_alive(&self) -> Result<(), Refused> {
        self.answer(Ok(())).await
    }

    /// The node crashed: nothing it answers from now on reaches a client.
    pub(crate) fn kill(&self) {
        self.alive.store(false, Ordering::SeqCst);
        // A paused process can be killed: what waited in it is lost.
        self.paused.send_replace(false);
    }

    /// No await stalls for long from now on (the heal); one already
    /// stalling runs out.
    pub(crate) fn end_stalls(&self) {
        self.stalls.store(false, Ordering::SeqCst);
    }

    /// Pauses (or resumes) the process as SIGSTOP (SIGCONT) would, as far
    /// as clients see it: requests wait, replies do not leave.
    pub(crate) fn set_paused(&self, paused: bool) {
        self.paused.send_replace(paused);
    }

    /// Returns once the process runs (at once unless it is paused).
    async fn running(&self) {
        let mut paused = self.paused.subscribe();
        // The sender lives in `self`: `wait_for` cannot fail while we do.
        let _ = paused.wait_for(|paused| !*paused).await;
    }

    /// The reply gate, as the real node's gRPC layer applies it: a reply
    /// produced under `epoch` leaves only if the driver still holds its
    /// lease under that epoch now.
    ///
    /// Also the stale-serving oracle for replies: one that passes must not
    /// leave after a newer leader than `epoch` started (a removed gate, the
    /// `reply-gate` mutation, lets a resumed node answer from its old
    /// window; caught here and, when a client saw the newer leader's values
    /// first, by the checker's real-time rule).
    fn gate(&self, epoch: Epoch) -> Result<(), Refused> {
        if self.driver.reply_gate().check(epoch).is_err() {
            tracing::debug!(
                at = self.recorder.now_us(),
                node = self.node,
                ?epoch,
                "reply held back by the gate"
            );
            return Err(self.not_serving());
        }
        if self.monitor.superseded(epoch.0) {
            self.recorder.stale_serving(self.node, epoch.0);
        }
        Ok(())
    }

    fn serving(&self) -> MutexGuard<'_, Serving> {
        self.serving.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now_ms(&self) -> u64 {
        let ms = u64::try_from(self.clock.now().as_millis()).unwrap_or(u64::MAX);
        ms.saturating_add(self.params.wall_offset_ms)
    }

    fn draw(&self, max: Duration) -> Duration {
        let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(
            self.rng
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .u64(0..=nanos),
        )
    }

    /// A scheduling delay at an await, now and then a long stall.
    async fn step(&self) {
        let slow = {
            let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
            // Drawn even after the heal, so the seed's draws stay the same.
            rng.f64() < self.params.slow_probability && self.stalls.load(Ordering::SeqCst)
        };
        let max = if slow {
            self.params.max_slow
        } else {
            self.params.max_step
        };
        tokio::time::sleep(self.draw(max)).await;
        if slow {
            tracing::debug!(
                at = self.recorder.now_us(),
                node = self.node,
                "slow step ended"
            );
        }
    }

    fn leader_hint(&self) -> Option<NodeId> {
        match self.driver.role() {
            Role::Follower(term) => Some(term.leader()),
            Role::Leader(_) | Role::Unknown => None,
        }
    }

    fn not_serving(&self) -> Refused {
        Refused::NotServing(self.leader_hint())
    }

    /// A reply produced under an epoch leaves: once the process runs (a
    /// paused process runs no code, its gRPC layer and reply gate
    /// included; the simulated one only stops its clock and its consensus
    /// input, so a handler in flight can finish during the pause), through
    /// the reply gate on the clock of then, while the node is up.
    async fn reply<T>(&self, result: Result<(T, Epoch), Refused>) -> Result<T, Refused> {
        self.running().await;
        let result = result.and_then(|(value, epoch)| self.gate(epoch).map(|()| value));
        self.answer(result).await
    }

    /// Answers only while the node is up, once it runs.
    async fn answer<T>(&self, result: Result<T, Refused>) -> Result<T, Refused> {
        self.running().await;
        if self.alive.load(Ordering::SeqCst) {
            result
        } else {
            Err(Refused::Down)
        }
    }

    fn step_down(&self) {
        let mut serving = self.serving();
        serving.allocator.step_down();
        serving.leases.clear();
    }

    /// Follows the driver's leadership stream until aborted.
    pub(crate) async fn leader_watch(self: Arc<Self>) {
        let mut stream = self.driver.leadership_events();
        let mut pending: Option<LeaderState> = None;
        loop {
            let event = match pending.take() {
                Some(event) => event,
                None => match stream.next().await {
                    Some(event) => event,
                    // The driver never ends its stream; if it did, serving
                    // stops (fail closed).
                    None => {
                        self.step_down();
                        return;
                    }
                },
            };
            tokio::time::sleep(self.draw(self.params.max_reaction)).await;
            tracing::debug!(
                at = self.recorder.now_us(),
                node = self.node,
                ?event,
                "leadership event"
            );
            let LeaderState::Leader { epoch } = event else {
                self.step_down();
                continue;
            };
            self.step_down();
            let mut backoff = Duration::from_millis(5);
            loop {
                match self.fence(epoch).await {
                    Ok(()) | Err(FenceEnd::GiveUp) => break,
                    Err(FenceEnd::Retry) => {
                        tokio::select! {
                            biased;
                            next = stream.next() => {
                                pending = next;
                                break;
                            }
                            () = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_millis(200));
                    }
                }
            }
        }
    }

    /// One fence attempt under `epoch` (see the module docs).
    async fn fence(&self, epoch: Epoch) -> Result<(), FenceEnd> {
        // In-flight extensions and lease mutations end first, so the loads
        // below see whatever they persisted.
        let _drain = self.gate.write().await;
        let worker = server_worker(self.node);
        let invoked = self.recorder.now_us();
        let prior = self.driver.load_high_water().await.map_err(fence_end)?;
        self.recorder.record(
            worker,
            invoked,
            Outcome::HighWater {
                value: prior,
                read: true,
            },
        );
        let records = self.driver.load_leases().await.map_err(fence_end)?;
        tracing::debug!(
            at = self.recorder.now_us(),
            node = self.node,
            prior,
            leases = ?lease_ids(&records),
            "fence loaded"
        );
        self.step().await;
        let now = self.now_ms();
        let floor = prior.saturating_add(1).max(now);
        let requested = floor.saturating_add(self.params.failover_advance_ms);
        let invoked = self.recorder.now_us();
        let actual = self
            .driver
            .persist_high_water(requested, epoch)
            .await
            .map_err(fence_end)?;
        self.recorder.record(
            worker,
            invoked,
            Outcome::HighWater {
                value: actual,
                read: false,
            },
        );
        let (Ok(floor), Ok(ceiling)) = (PhysicalMs::try_new(floor), PhysicalMs::try_new(actual))
        else {
            return Err(FenceEnd::GiveUp);
        };
        tracing::debug!(
            at = self.recorder.now_us(),
            node = self.node,
            ?epoch,
            prior,
            "serving"
        );
        // The driver answered for `epoch`: it must lead under it now (or
        // have done so within the reaction time this server is allowed).
        let reaction = u64::try_from(self.params.max_reaction.as_micros()).unwrap_or(u64::MAX);
        let leads_now = matches!(self.driver.role(), Role::Leader(term) if term.epoch() == epoch);
        if !leads_now && !self.monitor.led_lately(epoch.0, reaction) {
            self.recorder.stale_serving(self.node, epoch.0);
        }
        let mut serving = self.serving();
        serving
            .allocator
            .become_leader(floor, ceiling, epoch)
            .map_err(|_| FenceEnd::GiveUp)?;
        serving.leases.seed(records, now);
        Ok(())
    }

    /// `get_ts` for `count` timestamps.
    pub(crate) async fn get_ts(&self, count: u32) -> Result<Vec<u64>, Refused> {
        self.running().await;
        let result = self.get_ts_inner(count).await;
        self.reply(result).await
    }

    async fn get_ts_inner(&self, count: u32) -> Result<(Vec<u64>, Epoch), Refused> {
        for _ in 0..4 {
            {
                let mut serving = self.serving();
                if !serving.allocator.is_leader() {
                    return Err(self.not_serving());
                }
                match serving.allocator.try_grant(self.now_ms(), count) {
                    Ok(grant) => {
                        let first = grant.first().0;
                        let values = (0..u64::from(grant.count())).map(|i| first + i).collect();
                        return Ok((values, grant.epoch()));
                    }
                    Err(CoreError::WindowExhausted) => {}
                    Err(err) => return Err(Refused::Rejected(err.to_string())),
                }
            }
            let _extension = self.extension.lock().await;
            let now = self.now_ms();
            if self.serving().allocator.would_grant(now, count) {
                continue;
            }
            let _gate = self.gate.read().await;
            self.extend(now, self.params.window_ahead_ms).await?;
        }
        Err(Refused::Rejected("the window kept running out".to_owned()))
    }

    /// Persists a window `ahead_ms` past now under the serving epoch and
    /// commits it if that epoch still serves; also answers whether it did.
    /// Hold `extension` and `gate` around it.
    async fn extend(&self, now: u64, ahead_ms: u64) -> Result<(u64, Epoch, bool), Refused> {
        let (epoch, requested) = {
            let serving = self.serving();
            let Some(epoch) = serving.allocator.epoch() else {
                return Err(self.not_serving());
            };
            let requested = serving
                .allocator
                .try_prepare_window_extension(
                    PhysicalMs::try_new(now).map_err(|e| Refused::Rejected(e.to_string()))?,
                    ahead_ms,
                )
                .map_err(|e| Refused::Rejected(e.to_string()))?;
            (epoch, requested.get())
        };
        self.step().await;
        let invoked = self.recorder.now_us();
        let actual = self
            .driver
            .persist_high_water(requested, epoch)
            .await
            .map_err(|err| self.persist_refused(err))?;
        self.recorder.record(
            server_worker(self.node),
            invoked,
            Outcome::HighWater {
                value: actual,
                read: false,
            },
        );
        let persisted =
            PhysicalMs::try_new(actual).map_err(|e| Refused::Rejected(e.to_string()))?;
        // Ignored (not leader, another epoch, not advanced) is fine for a
        // grant: it is retried against whatever the window is now.
        let commit = self
            .serving()
            .allocator
            .try_commit_window_extension(persisted, epoch);
        tracing::debug!(
            at = self.recorder.now_us(),
            node = self.node,
            requested,
            actual,
            ?commit,
            "window extended"
        );
        let applied = matches!(commit, Ok(CommitOutcome::Applied { .. }));
        Ok((actual, epoch, applied))
    }

    /// The real server's `persist_extension_bound`: a lease's bound whose
    /// window commit was ignored fails (the epoch it was prepared under no
    /// longer serves, or serves again only after a fence).
    async fn extend_for_lease(&self, now: u64, ahead_ms: u64) -> Result<(u64, Epoch), Refused> {
        match self.extend(now, ahead_ms).await? {
            (actual, epoch, true) => Ok((actual, epoch)),
            (_, _, false) => Err(self.not_serving()),
        }
    }

    /// A refused persist, as the real server answers it
    /// (`persist_error_status`): `NotLeader` and `Fenced` prove the epoch
    /// stale, so the server steps down at once.
    fn persist_refused(&self, err: ConsensusError) -> Refused {
        match err {
            ConsensusError::NotLeader { .. } | ConsensusError::Fenced { .. } => {
                self.step_down();
                self.not_serving()
            }
            other => Refused::from(other),
        }
    }

    /// `get_seq`: a block of `count` values of `key`.
    pub(crate) async fn get_seq(&self, key: &SeqKey, count: u32) -> Result<u64, Refused> {
        self.running().await;
        let epoch = self.serving().allocator.epoch();
        let result = match epoch {
            None => Err(self.not_serving()),
            Some(epoch) => self
                .driver
                .advance_dense(key, count, epoch)
                .await
                .map_err(Refused::from)
                .map(|start| (start, epoch)),
        };
        self.reply(result).await
    }

    /// `acquire_lease`: the lease id granted (or the live one, for a repeat).
    pub(crate) async fn acquire_lease(
        &self,
        holder: &[u8],
        holder_epoch: u64,
    ) -> Result<u64, Refused> {
        self.running().await;
        let result = self.acquire_inner(holder, holder_epoch).await;
        self.reply(result).await
    }

    async fn acquire_inner(
        &self,
        holder: &[u8],
        holder_epoch: u64,
    ) -> Result<(u64, Epoch), Refused> {
        if !self.serving().allocator.is_leader() {
            return Err(self.not_serving());
        }
        let now = self.now_ms();
        let _extension = self.extension.lock().await;
        let decision = self
            .serving()
            .leases
            .prepare_acquire(holder, holder_epoch, now)
            .map_err(|e| Refused::Rejected(e.to_string()))?;
        let supersedes = match decision {
            AcquireDecision::Idempotent(live) => {
                let Some(epoch) = self.serving().allocator.epoch() else {
                    return Err(self.not_serving());
                };
                return Ok((live.lease_id, epoch));
            }
            AcquireDecision::Grant { supersedes } => supersedes,
        };
        let _gate = self.gate.read().await;
        let (actual, epoch) = self.extend_for_lease(now, LEASE_TTL_MS).await?;
        let record = LeaseRecord {
            lease_id: actual,
            holder: holder.to_vec(),
            holder_epoch,
            ttl_ms: LEASE_TTL_MS,
            ts_upper_bound: actual,
            expires_at_ms: now.saturating_add(LEASE_TTL_MS),
            superseded: false,
        };
        let set = self
            .serving()
            .leases
            .projected_live_set(Some(&record), supersedes, None, now);
        self.persist_leases(&set, epoch).await?;
        self.serving()
            .leases
            .commit_acquire(record, supersedes, now);
        Ok((actual, epoch))
    }

    /// `renew_lease`.
    pub(crate) async fn renew_lease(&self, lease_id: u64) -> Result<(), Refused> {
        self.running().await;
        let result = self.renew_inner(lease_id).await.map(|epoch| ((), epoch));
        self.reply(result).await
    }

    async fn renew_inner(&self, lease_id: u64) -> Result<Epoch, Refused> {
        if !self.serving().allocator.is_leader() {
            return Err(self.not_serving());
        }
        let now = self.now_ms();
        let _extension = self.extension.lock().await;
        let mut record = self
            .serving()
            .leases
            .prepare_renew(lease_id, now)
            .map_err(|e| Refused::Rejected(e.to_string()))?;
        let _gate = self.gate.read().await;
        let (actual, epoch) = self.extend_for_lease(now, record.ttl_ms).await?;
        record.ts_upper_bound = actual;
        record.expires_at_ms = now.saturating_add(record.ttl_ms);
        let set = self
            .serving()
            .leases
            .projected_live_set(Some(&record), None, None, now);
        self.persist_leases(&set, epoch).await?;
        self.serving().leases.commit_renew(record, now);
        Ok(epoch)
    }

    /// `release_lease`.
    pub(crate) async fn release_lease(&self, lease_id: u64) -> Result<(), Refused> {
        self.running().await;
        // No data in the reply: the real gate lets it through unchecked.
        let result = self.release_inner(lease_id).await;
        self.answer(result).await
    }

    async fn release_inner(&self, lease_id: u64) -> Result<(), Refused> {
        if !self.serving().allocator.is_leader() {
            return Err(self.not_serving());
        }
        let now = self.now_ms();
        let _extension = self.extension.lock().await;
        let (known, epoch) = {
            let serving = self.serving();
            (
                serving.leases.prepare_release(lease_id).is_some(),
                serving.allocator.epoch(),
            )
        };
        if !known {
            return Ok(());
        }
        let Some(epoch) = epoch else {
            return Err(self.not_serving());
        };
        let _gate = self.gate.read().await;
        let set = self
            .serving()
            .leases
            .projected_live_set(None, None, Some(lease_id), now);
        self.persist_leases(&set, epoch).await?;
        self.serving().leases.commit_release(lease_id, now);
        Ok(())
    }

    async fn persist_leases(&self, set: &[LeaseRecord], epoch: Epoch) -> Result<(), Refused> {
        self.step().await;
        let result = self
            .driver
            .persist_leases(set, epoch)
            .await
            .map_err(|err| self.persist_refused(err));
        tracing::debug!(
            at = self.recorder.now_us(),
            node = self.node,
            leases = ?lease_ids(set),
            ?result,
            "lease set persisted"
        );
        result?;
        // The real server commits a lease mutation only while it still
        // serves the epoch it persisted under.
        if self.serving().allocator.epoch() == Some(epoch) {
            Ok(())
        } else {
            Err(self.not_serving())
        }
    }
}

/// How a fence attempt ended without serving.
enum FenceEnd {
    /// Leadership moved (`NotLeader`, `Fenced`) or the driver failed for
    /// good: stay not serving until the next event.
    GiveUp,
    /// A transient failure: retry unless a new event arrives.
    Retry,
}

/// `(lease id, holder epoch, superseded)` of each record, for traces.
fn lease_ids(set: &[LeaseRecord]) -> Vec<(u64, u64, bool)> {
    set.iter()
        .map(|r| (r.lease_id, r.holder_epoch, r.superseded))
        .collect()
}

fn fence_end(err: ConsensusError) -> FenceEnd {
    match err {
        ConsensusError::TransientDriver(_) => FenceEnd::Retry,
        _ => FenceEnd::GiveUp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Cluster;
    use std::collections::BTreeSet;
    use tsoracle_paxos_harness::memnet::{MemNetConfig, MemNetwork};

    fn ids(set: &[LeaseRecord]) -> BTreeSet<(u64, u64, bool)> {
        lease_ids(set).into_iter().collect()
    }

    /// Seeds 100365, 101963 and 102148 of `cargo xtask sim --first 100000`:
    /// the driver announced `Leader` again under the epoch already served (a
    /// lease that lapsed and was renewed), and the server re-fenced while a
    /// lease acquire was in flight. The fence loaded the lease set before the
    /// acquire persisted its own, and served from a table without it; the
    /// acquire, its window commit already ignored, persisted anyway. A repeat
    /// of that holder epoch was then granted a second lease id. Each round
    /// here races an acquire with such a re-fence, the acquire arriving just
    /// before the event; afterwards the server must serve exactly the durable
    /// lease set, and a repeat acquire must get the id already granted.
    #[tokio::test(start_paused = true)]
    async fn a_refence_serves_the_lease_set_an_in_flight_acquire_persisted() {
        let seed = 7;
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut draw = crate::draw_setup(&mut rng, 3);
        // Short scheduling delays only: they vary the race from round to
        // round, and no stall outlasts the lease.
        draw.setup.server.slow_probability = 0.0;
        let net = MemNetwork::new(MemNetConfig {
            seed,
            at_most_once: true,
            ..MemNetConfig::default()
        })
        .unwrap();
        let cluster = Cluster::start(3, net, draw.setup, Recorder::new(), seed).unwrap();
        let directory = cluster.directory();
        let serving = || {
            directory
                .lock()
                .unwrap()
                .values()
                .find(|server| server.serving().allocator.is_leader())
                .cloned()
        };
        let mut server = None;
        for _ in 0..10_000 {
            server = serving();
            if server.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let server = server.expect("a leader serves");
        let epoch = server.serving().allocator.epoch().unwrap();
        let holder = b"holder".as_slice();
        for holder_epoch in 1..=20 {
            let refence = async {
                server.step_down();
                server.fence(epoch).await
            };
            let (acquired, fenced) =
                tokio::join!(server.acquire_lease(holder, holder_epoch), refence);
            assert!(fenced.is_ok(), "round {holder_epoch}: the re-fence failed");
            let durable = server.driver.load_leases().await.unwrap();
            let now = server.now_ms();
            let served = server.serving().leases.live_set(now);
            assert_eq!(
                ids(&served),
                ids(&durable),
                "round {holder_epoch}: the table served differs from the durable lease set"
            );
            let again = server.acquire_lease(holder, holder_epoch).await.unwrap();
            if let Ok(first) = acquired {
                assert_eq!(again, first, "round {holder_epoch}: a second lease id");
            }
        }
        cluster.shutdown().await;
    }
}
