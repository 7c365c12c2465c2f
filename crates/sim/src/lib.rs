//! Deterministic simulation of whole `tsoracle-paxos` clusters.
//!
//! One run is one seed. Every node runs the real stack — OmniPaxos on the
//! toolkit runner, the driver's apply path, the [`PaxosDriver`] with its
//! lease, fencing and linearized reads, and a server that follows
//! `tsoracle-server`'s window protocol — on a single-threaded tokio runtime
//! whose clock is paused: time is virtual, jumps straight to the next timer,
//! and a seed replays a run exactly. Only the disk (synced or lost at a
//! crash), the network (the harness' `MemNetwork` with loss, delay, jitter,
//! reordering and duplication, at most once per link as the real transport)
//! and each node's clock (a rate inside the configured drift) are simulated.
//!
//! The seed also draws the timing (ticks, election timeout, a lease up to 95%
//! of it, drift up to 5%), the snapshot policy, and the faults: crashes and
//! restarts, a sync that fails (EIO) on the leader after its entries left, or
//! on the follower they reached, the leader isolated from its peers while clients still reach it,
//! symmetric and one-way cuts. Clients record a history that
//! [`tsoracle_paxos_checker`] checks for duplicate timestamps, real-time
//! order, high-water regressions, stale reads, dense overlaps and losses and
//! lease anomalies. After the faulty phase everything heals and a timestamp
//! must be served again within a bounded virtual time (liveness).
//!
//! [`PaxosDriver`]: tsoracle_driver_paxos::PaxosDriver
//!
//! ```no_run
//! use tsoracle_paxos_sim::{SimConfig, run};
//!
//! let report = run(7, &SimConfig::default())?;
//! assert!(report.passed(), "{report}");
//! # Ok::<(), tsoracle_paxos_sim::SimError>(())
//! ```

// Without it tokio's own random choices (see `run`) are not replayed.
#[cfg(not(any(tokio_unstable, doc)))]
compile_error!(
    "tsoracle-paxos-sim needs `--cfg tokio_unstable` to replay seeds exactly; \
     the workspace's .cargo/config.toml sets it, but a RUSTFLAGS environment \
     variable replaces that list: add `--cfg tokio_unstable` to RUSTFLAGS"
);

mod client;
mod clock;
mod cluster;
mod disk;
mod faults;
mod history;
mod leaders;
mod membership;
mod server;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use omnipaxos::util::NodeId;
use tokio::task::JoinSet;
use tsoracle_consensus::ConsensusDriver;
use tsoracle_core::SeqKey;
use tsoracle_driver_paxos::mutation::{self, Guard};
use tsoracle_driver_paxos::{DriverConfig, StartMode, Timing};
use tsoracle_paxos_checker::{Op, Report, Violation, check};
use tsoracle_paxos_harness::memnet::{LinkStats, MemNetConfig, MemNetwork};
use tsoracle_paxos_state::SnapshotPolicy;

pub use faults::FaultCounts;
pub use history::StaleServing;
pub use leaders::LeaderSpan;

use crate::client::{Calls, DENSE_KEYS, Kind, LeaseScript, Worker};
use crate::cluster::{Cluster, NodeSetup};
use crate::faults::{Agenda, Fault, Undo};
use crate::history::Recorder;
use crate::server::ServerParams;

/// Why a run could not be carried out (not a failed check: see
/// [`RunReport::passed`]).
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The cluster could not be built.
    #[error("setting up the simulated cluster: {0}")]
    Setup(String),
    /// The runtime could not be built.
    #[error("building the simulation runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

/// What to simulate. The seed draws everything else.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Nodes in the cluster (3 or more).
    pub nodes: u64,
    /// Length of the faulty phase, in election timeouts.
    pub fault_phase: u32,
    /// After everything heals, a timestamp must be served within this many
    /// election timeouts.
    pub heal_deadline: u32,
    /// Client workers (timestamps, dense, reader, leases, in turn).
    pub workers: u32,
    /// A guard removed for this run (to show the checks catch its absence).
    pub mutation: Option<Guard>,
    /// Draw membership changes (a node added, removed or replaced) among
    /// the faults.
    pub membership_changes: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            nodes: 3,
            fault_phase: 150,
            heal_deadline: 60,
            workers: 6,
            mutation: None,
            membership_changes: true,
        }
    }
}

/// Successful and failed client calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallCounts {
    /// Calls answered with success.
    pub ok: u64,
    /// Calls refused, failed or abandoned (faults make many).
    pub failed: u64,
}

/// What one run did and found.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The seed (replays the run).
    pub seed: u64,
    /// Nodes in the cluster.
    pub nodes: u64,
    /// The timing the seed drew.
    pub timing: Timing,
    /// The snapshot interval the seed drew (`None`: no snapshots).
    pub snapshot_every: Option<u64>,
    /// The guard removed, if any.
    pub mutation: Option<Guard>,
    /// Virtual time simulated.
    pub simulated: Duration,
    /// Client calls.
    pub calls: CallCounts,
    /// Faults injected.
    pub faults: FaultCounts,
    /// Network counters, summed over every link.
    pub network: LinkStats,
    /// The checker's verdict on the history.
    pub check: Report,
    /// Virtual time from the final heal to the first timestamp served, or
    /// `None` when none was served within the deadline.
    pub recovery: Option<Duration>,
    /// A digest of the recorded history: equal for two runs of one seed.
    pub digest: u64,
    /// The operations named by the first violations, by index.
    pub evidence: BTreeMap<usize, Op>,
    /// With a guard removed: how often its absence let something through.
    pub bypassed: u64,
    /// Two nodes that reported `Leader` at the same virtual time (the
    /// lease forbids it).
    pub leader_overlaps: Vec<(LeaderSpan, LeaderSpan)>,
    /// Servers that started serving an epoch their driver no longer led
    /// under (what epoch fencing prevents).
    pub stale_serving: Vec<StaleServing>,
}

impl RunReport {
    /// Safety (no checker violation) and liveness (service resumed after
    /// the heal) both held.
    #[must_use]
    pub fn passed(&self) -> bool {
        self.check.is_ok()
            && self.leader_overlaps.is_empty()
            && self.stale_serving.is_empty()
            && self.recovery.is_some()
    }
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.timing;
        writeln!(
            f,
            "seed {} ({} nodes{}): {:.1} s simulated; tick {:?}, election {:?}, lease {:?}, \
             drift {:.3}, renew every {:?}, snapshot every {}",
            self.seed,
            self.nodes,
            self.mutation
                .map(|g| format!(
                    ", guard removed: {} (bypassed {}x)",
                    g.name(),
                    self.bypassed
                ))
                .unwrap_or_default(),
            self.simulated.as_secs_f64(),
            t.tick,
            t.election_timeout().unwrap_or_default(),
            t.lease,
            t.drift,
            t.renew_every,
            self.snapshot_every
                .map_or_else(|| "never".to_owned(), |n| format!("{n} entries")),
        )?;
        writeln!(
            f,
            "  calls: {} ok, {} failed; checked {} timestamps, {} dense blocks, {} high-waters, \
             {} dense reads, {} lease ops",
            self.calls.ok,
            self.calls.failed,
            self.check.timestamps,
            self.check.dense_blocks,
            self.check.high_waters,
            self.check.dense_reads,
            self.check.lease_ops,
        )?;
        writeln!(f, "  faults: {}", self.faults)?;
        writeln!(
            f,
            "  network: {} sent, {} dropped, {} cut, {} duplicated (all removed at the \
             receiving end), {} reordered",
            self.network.sent,
            self.network.dropped,
            self.network.cut,
            self.network.duplicated,
            self.network.reordered
        )?;
        match self.recovery {
            Some(after) => writeln!(f, "  liveness: served again {after:?} after the heal")?,
            None => writeln!(f, "  liveness: FAILED, nothing served after the heal")?,
        }
        for violation in self.check.violations.iter().take(10) {
            writeln!(f, "  VIOLATION: {violation}")?;
        }
        for (a, b) in self.leader_overlaps.iter().take(5) {
            writeln!(
                f,
                "  VIOLATION: nodes {} and {} both reported Leader: {a:?} and {b:?}",
                a.node, b.node
            )?;
        }
        for stale in self.stale_serving.iter().take(5) {
            writeln!(
                f,
                "  VIOLATION: node {} served epoch {} at {} µs (started serving it, or let a \
                 reply under it pass), which its driver no longer led under",
                stale.node, stale.epoch, stale.at
            )?;
        }
        for (index, op) in &self.evidence {
            writeln!(f, "    op {index}: {op:?}")?;
        }
        if self.check.violations.len() > 10 {
            writeln!(f, "  ... {} more", self.check.violations.len() - 10)?;
        }
        Ok(())
    }
}

/// Runs seed `seed`: builds a single-threaded runtime with a paused clock on
/// this thread and simulates the cluster on it.
///
/// # Errors
///
/// [`SimError`] when the runtime or the cluster cannot be built (a failed
/// check is a [`RunReport`] that did not pass, not an error).
pub fn run(seed: u64, config: &SimConfig) -> Result<RunReport, SimError> {
    // Tokio draws random numbers of its own: a `watch` receiver waits on one
    // of eight `Notify` shards picked at random, so the order in which a
    // change wakes its receivers (and so the order tasks run in) would differ
    // from process to process. Seeding tokio's generator from the seed makes
    // that order part of the replay (`rng_seed` needs `--cfg tokio_unstable`,
    // set for the workspace in `.cargo/config.toml`).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .rng_seed(tokio::runtime::RngSeed::from_bytes(&seed.to_le_bytes()))
        .build()?;
    // The switch is per thread: the whole cluster runs on this one.
    mutation::remove_on_this_thread(config.mutation);
    let result = runtime.block_on(simulate(seed, config));
    mutation::remove_on_this_thread(None);
    result
}

/// Everything the seed draws before the run starts.
struct Draw {
    timing: Timing,
    driver: DriverConfig,
    setup: NodeSetup,
}

fn draw_setup(rng: &mut fastrand::Rng, nodes: u64) -> Draw {
    let tick = Duration::from_millis([5, 10, 20][rng.usize(0..3)]);
    let election_ticks = rng.u64(10..=20);
    let election = tick * u32::try_from(election_ticks).unwrap_or(20);
    let lease = election.mul_f64(0.5 + rng.f64() * 0.45);
    let drift = rng.f64() * 0.05;
    let mut timing = Timing {
        tick,
        election_ticks,
        lease,
        drift,
        renew_every: lease,
    };
    timing.renew_every = timing
        .leader_lease_validity()
        .mul_f64(0.2 + rng.f64() * 0.25);
    let mut driver = DriverConfig::new(timing);
    driver.request_timeout = election * 10;
    let snapshots = match rng.u8(0..4) {
        0 => SnapshotPolicy::Disabled,
        n => SnapshotPolicy::EveryDecided(
            std::num::NonZeroU64::new([16, 64, 256][usize::from(n - 1)])
                .unwrap_or(tsoracle_paxos_state::DEFAULT_SNAPSHOT_INTERVAL),
        ),
    };
    let election_ms = u64::try_from(election.as_millis()).unwrap_or(100);
    let server = ServerParams {
        // Up to several elections ahead, as a real server runs (3 s against
        // a 200 ms election by default): a paused leader then resumes with
        // timestamps left in its window.
        window_ahead_ms: rng.u64(election_ms / 2..=election_ms * 12),
        failover_advance_ms: rng.u64(election_ms / 2..=election_ms * 3),
        // Below the stop margin: the lease covers that much reaction time.
        max_reaction: driver.stop_margin / 2,
        max_step: tick / 2,
        slow_probability: 0.05,
        max_slow: election * 40,
        wall_offset_ms: 0,
    };
    let rates = (1..=nodes)
        .map(|id| (id, 1.0 + (rng.f64() * 2.0 - 1.0) * drift))
        .collect();
    let wall_offsets = (1..=nodes)
        .map(|id| (id, 1_000_000 + rng.u64(0..=5_000)))
        .collect();
    Draw {
        timing,
        driver,
        setup: NodeSetup {
            timing,
            driver,
            snapshots,
            server,
            rates,
            wall_offsets,
        },
    }
}

async fn simulate(seed: u64, config: &SimConfig) -> Result<RunReport, SimError> {
    if config.nodes < 3 {
        return Err(SimError::Setup(
            "a simulated cluster needs at least 3 nodes (one may fail)".to_owned(),
        ));
    }
    let mut rng = fastrand::Rng::with_seed(seed);
    let Draw {
        timing,
        driver: driver_config,
        setup,
    } = draw_setup(&mut rng, config.nodes);
    let snapshot_every = match &setup.snapshots {
        SnapshotPolicy::EveryDecided(n) => Some(n.get()),
        _ => None,
    };
    let election = timing
        .election_timeout()
        .map_err(|e| SimError::Setup(e.to_string()))?;
    let recorder = Recorder::new();
    let net = MemNetwork::new(MemNetConfig {
        seed: rng.u64(..),
        at_most_once: true,
        ..MemNetConfig::default()
    })
    .map_err(|e| SimError::Setup(e.to_string()))?;
    let mut cluster = Cluster::start(config.nodes, net, setup, recorder.clone(), seed)?;
    let control = cluster.control();

    // Clients.
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = JoinSet::new();
    let kinds = [Kind::Timestamps, Kind::Dense, Kind::Reader, Kind::Leases];
    for id in 0..config.workers {
        let kind = kinds[usize::try_from(id).unwrap_or(0) % kinds.len()];
        let worker = Worker {
            id,
            kind,
            directory: cluster.directory(),
            recorder: recorder.clone(),
            rng: fastrand::Rng::with_seed(seed ^ (u64::from(id) + 1).wrapping_mul(0x9E37_79B9)),
            stop: Arc::clone(&stop),
            call_timeout: driver_config.request_timeout * 2,
            think: timing.tick * 2,
            preferred: None,
            calls: Calls::default(),
            lease: LeaseScript::new(format!("holder-{id}")),
        };
        workers.spawn(worker.run());
    }

    // The faulty phase.
    let fault_end = election * config.fault_phase;
    let mut faults = FaultCounts::default();
    let mut agenda = Agenda::default();
    let mut next_fault = election * 5;
    let start = tokio::time::Instant::now();

    // Requests from clients pinned to a paused node.
    let mut probes = JoinSet::new();
    let mut next_probe = PROBE_WORKERS;
    // Membership changes: when, what, and the one in progress.
    let mut changes = if config.membership_changes {
        membership::draw(seed, fault_end, election)
    } else {
        Vec::new()
    };
    changes.reverse();
    let mut changing: JoinSet<usize> = JoinSet::new();
    // A StopSign forged on a peer link, which must change nothing.
    let mut forgery = if config.membership_changes {
        membership::draw_forgery(seed, fault_end, election)
    } else {
        None
    };
    loop {
        let next_change = changes.last().map_or(fault_end, |(at, _)| *at);
        let next_forgery = forgery.map_or(fault_end, |(at, _)| at);
        let next = agenda
            .next()
            .map_or(next_fault, |due| due.min(next_fault))
            .min(next_change)
            .min(next_forgery)
            // Nodes a change removed are stopped soon after they learn it.
            .min(start.elapsed() + election);
        if next >= fault_end {
            break;
        }
        tokio::time::sleep_until(start + next).await;
        let now = start.elapsed();
        retire_the_removed(&mut cluster).await;
        while let Some(done) = changing.try_join_next() {
            faults.changes_done += u64::try_from(done.unwrap_or(0)).unwrap_or(0);
        }
        if now >= next_forgery
            && let Some((_, pick)) = forgery.take()
        {
            // From a member that runs the configuration, at a settled moment
            // (otherwise a little later).
            let live: Vec<NodeId> = cluster
                .ids()
                .into_iter()
                .filter(|&id| cluster.is_up(id))
                .collect();
            match (cluster.membership(), live.get(pick % live.len().max(1))) {
                (Some(list), Some(&from)) if list.member(from).is_some() => {
                    let queued = cluster.forge_stop_sign(&list, from);
                    faults.forged_stop_signs += u64::try_from(queued).unwrap_or(0);
                    tracing::debug!(at = ?now, from, queued, "forged StopSigns sent");
                }
                _ if now + election * 10 < fault_end => {
                    forgery = Some((now + election * 10, pick + 1));
                }
                _ => {}
            }
        }
        if now >= next_change
            && let Some((_, kind)) = changes.pop()
        {
            if changing.is_empty() && cluster.membership().is_some() {
                if let Some(requests) = begin_change(&mut cluster, kind)? {
                    faults.changes += u64::try_from(requests.len()).unwrap_or(0);
                    changing.spawn(membership::carry_out(
                        cluster.directory(),
                        requests,
                        election * 20,
                        election * 2,
                        fault_end.saturating_sub(now) + election * config.heal_deadline,
                    ));
                }
            } else if now + election * 10 < fault_end {
                // One change at a time, from a settled cluster: this one a
                // little later.
                changes.push((now + election * 10, kind));
            }
        }
        for undo in agenda.take_due(now) {
            if let Undo::TornSync { victim, cut, until } = undo {
                if cluster.torn_sync_fired(victim) {
                    // The runner stopped at the failed sync; the process
                    // exits and a supervisor starts it again. A follower
                    // victim's leader is cut off: the victim and the other
                    // follower go on from what they synced.
                    cluster.crash(victim).await;
                    if let Some((a, b)) = cut {
                        control.heal(a, b);
                    }
                    cluster.boot(victim)?;
                    faults.torn_syncs_fired += 1;
                    let hold = election.mul_f64(5.0 + rng.f64() * 15.0);
                    if let Some((leader, _)) = cut {
                        control.isolate(leader);
                        agenda.push(now + hold, Undo::Rejoin(leader));
                    }
                } else if now < until {
                    agenda.push(now + election / 4, undo);
                } else {
                    cluster.arm_torn_sync(victim, false);
                    if let Some((a, b)) = cut {
                        control.heal(a, b);
                    }
                }
                continue;
            }
            if let Undo::Wipe {
                victim,
                lagging,
                refused_at_start,
            } = undo
            {
                let hold = election.mul_f64(5.0 + rng.f64() * 15.0);
                if faults.changes > 0 {
                    // A change began during the lag: the wiped node would
                    // restart from flags that name an older configuration,
                    // which this simulation does not model. Call it off.
                    control.rejoin(lagging);
                    faults.wipes = faults.wipes.saturating_sub(1);
                    continue;
                }
                for undo in wipe(&mut cluster, victim, lagging, refused_at_start).await? {
                    agenda.push(now + hold, undo);
                }
                continue;
            }
            if let Some(follow_up) = apply_undo(&mut cluster, undo)? {
                agenda.push(now + election.mul_f64(3.0 + rng.f64() * 10.0), follow_up);
            }
        }
        if now < next_fault {
            continue;
        }
        next_fault = now + election.mul_f64(2.0 + rng.f64() * 13.0);
        let hold = election.mul_f64(2.0 + rng.f64() * 28.0);
        let fault = faults::draw(
            &mut rng,
            config.nodes,
            election,
            timing.leader_lease_validity(),
        );
        tracing::debug!(at = recorder.now_us(), ?fault, ?hold, leader = ?cluster.leader(), "fault");
        match fault {
            Fault::Amnesia {
                victim,
                lagging,
                lag,
                refused_at_start,
            } => {
                // Once per run, from a whole cluster whose members all know
                // each other's instances (registered at start-up), before
                // any membership change (the wiped node restarts from its
                // flags, the founding list).
                if faults.wipes == 0
                    && faults.changes == 0
                    && cluster.down_count() == 0
                    && cluster.registered_everywhere()
                {
                    control.isolate(lagging);
                    faults.wipes += 1;
                    agenda.push(
                        now + lag,
                        Undo::Wipe {
                            victim,
                            lagging,
                            refused_at_start,
                        },
                    );
                }
            }
            Fault::TornSync { victim } => {
                let ids = cluster.ids();
                if let Some(leader) = cluster.leader()
                    && ids.len() == 3
                    && cluster.down_count() == 0
                    && changing.is_empty()
                {
                    let followers: Vec<NodeId> =
                        ids.into_iter().filter(|&id| id != leader).collect();
                    if let &[a, b] = followers.as_slice() {
                        let (victim, cut) = match victim {
                            0 => (leader, None),
                            1 => (a, Some((leader, b))),
                            _ => (b, Some((leader, a))),
                        };
                        if cluster.arm_torn_sync(victim, true) {
                            if let Some((x, y)) = cut {
                                control.cut(x, y);
                            }
                            faults.torn_syncs += 1;
                            agenda.push(
                                now + election / 4,
                                Undo::TornSync {
                                    victim,
                                    cut,
                                    until: now + election * 4,
                                },
                            );
                        }
                    }
                }
            }
            Fault::Crash(node) => {
                if cluster.is_up(node) && cluster.down_count() < minority(&cluster) {
                    cluster.crash(node).await;
                    faults.crashes += 1;
                    agenda.push(now + hold, Undo::Restart(node));
                }
            }
            Fault::Pause {
                node,
                length,
                requests_first,
            } => {
                if let Some(node) = node.or_else(|| cluster.leader())
                    && cluster.down_count() < minority(&cluster)
                    && cluster.pause(node)
                {
                    faults.pauses += 1;
                    agenda.push(
                        now + length,
                        Undo::Resume {
                            node,
                            requests_first,
                        },
                    );
                    let timeout = length + driver_config.request_timeout * 2;
                    if let Some(server) = cluster.server(node) {
                        let pinned = Pinned {
                            servers: vec![server],
                            recorder: recorder.clone(),
                            timeout,
                        };
                        for _ in 0..rng.u8(2..=5) {
                            next_probe += 1;
                            let delay = length.mul_f64(rng.f64());
                            let dense = rng.u8(0..3) == 0;
                            probes.spawn(pinned.clone().call(next_probe, delay, dense));
                        }
                    }
                    // Clients of the other nodes meanwhile: what a newer
                    // leader serves during the pause, which a reply of the
                    // paused node must never undercut.
                    let others = Pinned {
                        servers: cluster
                            .ids()
                            .into_iter()
                            .filter(|&id| id != node)
                            .filter_map(|id| cluster.server(id))
                            .collect(),
                        recorder: recorder.clone(),
                        timeout,
                    };
                    for _ in 0..rng.u8(2..=5) {
                        next_probe += 1;
                        let delay = length.mul_f64(rng.f64());
                        probes.spawn(others.clone().call(next_probe, delay, false));
                    }
                }
            }
            Fault::HandOver {
                restart,
                slow_inbound,
            } => {
                if let Some(leader) = cluster.leader()
                    && let Some(driver) = cluster.driver(leader)
                {
                    faults.hand_overs += 1;
                    if let Some(slow) = slow_inbound {
                        for peer in cluster.ids() {
                            if peer != leader {
                                control.set_link_delay(peer, leader, slow);
                            }
                        }
                        agenda.push(now + hold, Undo::Unslow(leader));
                    }
                    // As `serve` on SIGTERM: hand over, then stop.
                    let handed = driver.hand_over(None, election * 4).await;
                    tracing::debug!(at = recorder.now_us(), leader, ?handed, "hand-over");
                    if restart && cluster.is_up(leader) && cluster.down_count() < minority(&cluster)
                    {
                        cluster.crash(leader).await;
                        agenda.push(now + hold, Undo::Restart(leader));
                    }
                }
            }
            Fault::IsolateLeader => {
                if let Some(leader) = cluster.leader() {
                    control.isolate(leader);
                    faults.leader_isolations += 1;
                    agenda.push(now + hold, Undo::Rejoin(leader));
                }
            }
            Fault::Flap => {
                if let Some(leader) = cluster.leader() {
                    control.isolate(leader);
                    faults.flaps += 1;
                    // Long enough for another node to take over.
                    agenda.push(now + election * 6, Undo::FlapOn(leader));
                }
            }
            Fault::MuteLeader => {
                if let Some(leader) = cluster.leader() {
                    mute(&cluster, leader);
                    faults.mutes += 1;
                    agenda.push(now + hold, Undo::Unmute(leader));
                }
            }
            Fault::GrayLeader { slow, after } => {
                if let Some(leader) = cluster.leader() {
                    for peer in cluster.ids() {
                        if peer != leader {
                            control.set_link_delay(peer, leader, slow);
                        }
                    }
                    faults.gray_failures += 1;
                    agenda.push(now + after, Undo::Mute(leader));
                    agenda.push(now + after + hold, Undo::Unmute(leader));
                    agenda.push(now + after + hold, Undo::Unslow(leader));
                }
            }
            Fault::Slow {
                node,
                inbound,
                extra,
            } => {
                if let Some(node) = node.or_else(|| cluster.leader()) {
                    for peer in cluster.ids() {
                        if peer != node {
                            let (from, to) = if inbound { (peer, node) } else { (node, peer) };
                            control.set_link_delay(from, to, extra);
                        }
                    }
                    faults.slow_links += 1;
                    agenda.push(now + hold, Undo::Unslow(node));
                }
            }
            Fault::Cut(a, b) => {
                control.cut(a, b);
                faults.cuts += 1;
                agenda.push(now + hold, Undo::Heal(a, b));
            }
            Fault::CutOneWay(a, b) => {
                control.cut_one_way(a, b);
                faults.one_way_cuts += 1;
                agenda.push(now + hold, Undo::HealOneWay(a, b));
            }
            Fault::Network(network) => {
                control
                    .set_faults(network)
                    .map_err(|e| SimError::Setup(e.to_string()))?;
                faults.network_changes += 1;
            }
        }
    }

    // Heal everything; service must resume.
    tokio::time::sleep_until(start + fault_end).await;
    for undo in agenda.take_all() {
        // Follow-up faults are not started at the heal.
        match undo {
            Undo::FlapOn(node) => cluster.control().rejoin(node),
            Undo::Mute(_) | Undo::Wipe { .. } => {}
            Undo::TornSync { victim, .. } => {
                if cluster.torn_sync_fired(victim) {
                    cluster.crash(victim).await;
                } else {
                    cluster.arm_torn_sync(victim, false);
                }
            }
            other => {
                apply_undo(&mut cluster, other)?;
            }
        }
    }
    control.heal_all();
    control.clear_faults();
    cluster.end_stalls();
    for node in cluster.ids() {
        apply_undo(&mut cluster, Undo::Unslow(node))?;
    }
    for id in cluster.ids() {
        cluster.boot(id)?;
    }
    // A change still in progress finishes during the heal.
    let _ = tokio::time::timeout(election * config.heal_deadline, async {
        while let Some(done) = changing.join_next().await {
            faults.changes_done += u64::try_from(done.unwrap_or(0)).unwrap_or(0);
        }
    })
    .await;
    changing.abort_all();
    retire_the_removed(&mut cluster).await;
    let healed_at = recorder.now_us();
    let recovery = wait_for_service(&recorder, healed_at, election * config.heal_deadline).await;

    // Stop the clients, then read the final counters through the leader.
    stop.store(true, Ordering::SeqCst);
    let mut calls = CallCounts::default();
    let drain = tokio::time::timeout(driver_config.request_timeout * 3, async {
        while let Some(done) = workers.join_next().await {
            if let Ok(worker_calls) = done {
                calls.ok += worker_calls.ok;
                calls.failed += worker_calls.failed;
            }
        }
    })
    .await;
    if drain.is_err() {
        workers.abort_all();
    }
    // Every pause was undone at the heal: a pinned call has its answer or
    // was abandoned by now.
    probes.abort_all();
    while probes.join_next().await.is_some() {}
    let finals = final_counters(&cluster, election * config.heal_deadline).await;
    let simulated = start.elapsed();
    let network = control.total_stats();
    let leaders = cluster.leaders().clone();
    cluster.shutdown().await;
    let leader_overlaps = leaders::overlaps(&leaders.spans());

    let mut history = recorder.snapshot();
    if let Some(finals) = finals {
        history.final_counters = finals;
    }
    let report = check(&history);
    let evidence = report
        .violations
        .iter()
        .take(10)
        .flat_map(violation_ops)
        .filter_map(|i| history.ops.get(i).map(|op| (i, op.clone())))
        .collect();
    Ok(RunReport {
        seed,
        nodes: config.nodes,
        timing,
        mutation: config.mutation,
        snapshot_every,
        simulated,
        calls,
        faults,
        network,
        check: report,
        recovery,
        digest: digest(&history),
        evidence,
        bypassed: mutation::bypassed(),
        leader_overlaps,
        stale_serving: recorder.stale(),
    })
}

/// The most nodes that may be down at once: a minority of the members of
/// the moment (a change moves it).
fn minority(cluster: &Cluster) -> usize {
    cluster.ids().len().saturating_sub(1) / 2
}

/// Stops the nodes that learned a change removed them.
async fn retire_the_removed(cluster: &mut Cluster) {
    for id in cluster.ids() {
        if cluster.left(id) {
            tracing::debug!(
                at = cluster.now_us(),
                node = id,
                "removed from the cluster; stopped"
            );
            cluster.retire(id).await;
        }
    }
}

/// Prepares a membership change (a node to add is started, joining the
/// list the change will agree on) and returns the requests to ask for, or
/// `None` when there is no member list to change yet.
fn begin_change(
    cluster: &mut Cluster,
    kind: membership::ChangeKind,
) -> Result<Option<Vec<tsoracle_driver_paxos::ChangeRequest>>, SimError> {
    use membership::ChangeKind;
    use tsoracle_driver_paxos::ChangeRequest;
    let Some(current) = cluster.membership() else {
        return Ok(None);
    };
    let members: Vec<NodeId> = current.members().iter().map(|m| m.id).collect();
    let victim = |leader: bool| {
        cluster
            .leader()
            .filter(|id| leader && members.contains(id))
            .or_else(|| members.last().copied())
    };
    let add = |cluster: &mut Cluster| -> Result<ChangeRequest, SimError> {
        let id = cluster.max_id() + 1;
        let record = membership::record_of(id);
        let mut next = current.members().to_vec();
        next.push(record.clone());
        let list = tsoracle_paxos_state::Membership::new(current.configuration() + 1, next)
            .map_err(|e| SimError::Setup(e.to_string()))?;
        cluster.add_joiner(id, list)?;
        Ok(ChangeRequest::Add(record))
    };
    let requests = match kind {
        ChangeKind::Add => vec![add(cluster)?],
        // Three members stay at least: one may still fail.
        ChangeKind::Remove { leader } if members.len() > 3 => victim(leader)
            .map(ChangeRequest::Remove)
            .into_iter()
            .collect(),
        ChangeKind::Remove { leader } | ChangeKind::Replace { leader } => {
            let gone = victim(leader);
            let mut requests = vec![add(cluster)?];
            requests.extend(gone.map(ChangeRequest::Remove));
            requests
        }
    };
    tracing::debug!(
        at = cluster.now_us(),
        ?kind,
        ?requests,
        "membership change asked for"
    );
    Ok(Some(requests))
}

/// Worker ids of the clients pinned to a paused node, one per call.
const PROBE_WORKERS: u32 = 100_000;

/// A client that can reach only some nodes: pinned to a paused one, it
/// cannot chase a new leader, so its request waits in that node's sockets
/// and is answered, if at all, after the node resumes; pinned to the others,
/// it sees what a newer leader serves meanwhile.
#[derive(Clone)]
struct Pinned {
    servers: Vec<Arc<server::SimServer>>,
    recorder: history::Recorder,
    timeout: Duration,
}

impl Pinned {
    /// One call `delay` from now, to each server in turn until one
    /// succeeds, recorded under `worker` if one does.
    async fn call(self, worker: u32, delay: Duration, dense: bool) {
        tokio::time::sleep(delay).await;
        let invoked = self.recorder.now_us();
        let name = client::DENSE_KEYS[usize::try_from(worker).unwrap_or(0) % 3];
        let Ok(key) = SeqKey::try_new(name) else {
            return;
        };
        for server in &self.servers {
            let outcome = if dense {
                match tokio::time::timeout(self.timeout, server.get_seq(&key, 1)).await {
                    Ok(Ok(start)) => tsoracle_paxos_checker::Outcome::Dense {
                        key: name.to_owned(),
                        start,
                        count: 1,
                    },
                    _ => continue,
                }
            } else {
                match tokio::time::timeout(self.timeout, server.get_ts(1)).await {
                    Ok(Ok(values)) => tsoracle_paxos_checker::Outcome::Timestamps(values),
                    _ => continue,
                }
            };
            self.recorder.record(worker, invoked, outcome);
            return;
        }
    }
}

/// The operations a violation names.
fn violation_ops(violation: &Violation) -> Vec<usize> {
    match violation {
        Violation::DuplicateTimestamp { ops, .. }
        | Violation::DenseOverlap { ops, .. }
        | Violation::LeaseAnomaly { ops, .. } => vec![ops.0, ops.1],
        Violation::RealTimeOrder { earlier, later }
        | Violation::HighWaterRegression { earlier, later } => vec![*earlier, *later],
        Violation::WorkerNotIncreasing { op, .. } | Violation::DenseLost { op, .. } => vec![*op],
        Violation::StaleDenseRead { read, block, .. } => vec![*block, *read],
    }
}

/// Cuts every link out of `node`.
fn mute(cluster: &Cluster, node: NodeId) {
    let control = cluster.control();
    for peer in cluster.ids() {
        if peer != node {
            control.cut_one_way(node, peer);
        }
    }
}

/// Undoes a fault; returns a fault's follow-up undo, if it started one.
fn apply_undo(cluster: &mut Cluster, undo: Undo) -> Result<Option<Undo>, SimError> {
    let control = cluster.control();
    match undo {
        Undo::Restart(node) => cluster.boot(node)?,
        Undo::Resume {
            node,
            requests_first,
        } => cluster.resume(node, requests_first),
        Undo::Rejoin(node) => control.rejoin(node),
        Undo::FlapOn(node) => {
            control.rejoin(node);
            if let Some(leader) = cluster.leader().filter(|&l| l != node) {
                control.isolate(leader);
                return Ok(Some(Undo::Rejoin(leader)));
            }
        }
        Undo::Unslow(node) => {
            for peer in cluster.ids() {
                control.set_link_delay(node, peer, Duration::ZERO);
                control.set_link_delay(peer, node, Duration::ZERO);
            }
        }
        Undo::Mute(node) => mute(cluster, node),
        Undo::Unmute(node) => {
            for peer in cluster.ids() {
                if peer != node {
                    control.heal_one_way(node, peer);
                }
            }
        }
        Undo::Heal(a, b) => control.heal(a, b),
        Undo::HealOneWay(a, b) => control.heal_one_way(a, b),
        // Carried out by the fault loop, which can wait for the crash.
        Undo::Wipe { .. } | Undo::TornSync { .. } => {}
    }
    Ok(None)
}

/// The second step of [`Fault::Amnesia`]: `victim` loses its data directory
/// and restarts at once; the nodes that decided without `lagging` are cut
/// off and `lagging` rejoins, so `lagging` and `victim` alone could form a
/// majority that never saw those decisions. Returns the undos (the cut
/// nodes rejoin).
async fn wipe(
    cluster: &mut Cluster,
    victim: NodeId,
    lagging: NodeId,
    refused_at_start: bool,
) -> Result<Vec<Undo>, SimError> {
    let control = cluster.control();
    let mode = if refused_at_start {
        StartMode::Rejoin
    } else {
        StartMode::Initialize
    };
    tracing::debug!(
        at = cluster.now_us(),
        victim,
        lagging,
        ?mode,
        "data directory wiped"
    );
    cluster.wipe(victim, mode).await;
    let mut undos = Vec::new();
    for node in cluster.ids() {
        if node != victim && node != lagging {
            control.isolate(node);
            undos.push(Undo::Rejoin(node));
        }
    }
    control.rejoin(lagging);
    cluster.boot(victim)?;
    Ok(undos)
}

/// Virtual time from `healed_at` (µs) to the first timestamp invoked after
/// it and served, polled every millisecond, or `None` past `deadline`.
async fn wait_for_service(
    recorder: &Recorder,
    healed_at: u64,
    deadline: Duration,
) -> Option<Duration> {
    let waited = tokio::time::timeout(deadline, async {
        loop {
            let served = recorder.any_invoked_since(healed_at, |op| {
                matches!(op.outcome, tsoracle_paxos_checker::Outcome::Timestamps(_))
            });
            if served {
                return recorder.now_us().saturating_sub(healed_at);
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    waited.ok().map(Duration::from_micros)
}

/// Each dense key's counter, read (linearized) through any node that
/// answers, or `None` when no node answered in time.
async fn final_counters(cluster: &Cluster, deadline: Duration) -> Option<BTreeMap<String, u64>> {
    let keys: Vec<SeqKey> = DENSE_KEYS
        .iter()
        .filter_map(|k| SeqKey::try_new(*k).ok())
        .collect();
    let ids: Vec<NodeId> = cluster.ids();
    tokio::time::timeout(deadline, async {
        loop {
            for &id in &ids {
                let Some(driver) = cluster.driver(id) else {
                    continue;
                };
                let mut finals = BTreeMap::new();
                for key in &keys {
                    match driver.load_dense_seq(key).await {
                        Ok(value) => {
                            finals.insert(key.as_str().to_owned(), value);
                        }
                        Err(_) => break,
                    }
                }
                if finals.len() == keys.len() {
                    return finals;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .ok()
}

/// FNV-1a over the history's debug form: cheap and stable within a build.
fn digest(history: &tsoracle_paxos_checker::History) -> u64 {
    let text = format!("{history:?}");
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}
