//! Membership changes under the simulation's faults: a node added (a fresh
//! one that joins), a member removed, a member replaced (added, then the
//! old one removed), each asked through the driver's admin path on any live
//! node and retried as an operator would, while crashes, pauses and cuts go
//! on.
//!
//! Each node keeps one simulated disk per configuration and a durable record
//! of the configuration it runs ([`Record`]): a restart boots that one, and
//! a node that crashed mid-change finishes it from there (its ended
//! configuration's StopSign leads it to the next one, whose disk it reopens).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use omnipaxos::OmniPaxosConfig;
use omnipaxos::util::NodeId;
use tsoracle_driver_paxos::{
    ChangeError, ChangeFailure, ChangeRequest, NextConfiguration, PaxosApplier,
};
use tsoracle_paxos_harness::memnet::MemNetwork;
use tsoracle_paxos_state::{MemberRecord, Membership, PaxosEntry};
use tsoracle_paxos_toolkit::{Inbox, InstanceId, Runner, RunnerConfig};

use crate::client::Directory;
use crate::disk::Disk;

/// The configuration a node runs, as its data directory records it.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    /// Its member list.
    pub(crate) membership: Membership,
    /// Started by a change and not begun yet on this node: its log waits
    /// for the genesis.
    pub(crate) joining: bool,
}

/// One node's disks, by configuration id.
pub(crate) type Disks = Arc<Mutex<BTreeMap<u32, Disk>>>;

/// The newest configuration each node started (which it does only once the
/// one before ended): what a node asks its peers when it missed a change
/// (`NextConfiguration::newer`), as the real transport would ask a peer.
pub(crate) type Runs = Arc<Mutex<BTreeMap<NodeId, Membership>>>;

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How a simulated node starts its instance of a later configuration.
pub(crate) struct SimNext {
    pub(crate) id: NodeId,
    pub(crate) instance: InstanceId,
    pub(crate) disks: Disks,
    pub(crate) record: Arc<Mutex<Record>>,
    pub(crate) net: Arc<MemNetwork<PaxosEntry>>,
    pub(crate) runs: Runs,
}

impl NextConfiguration<PaxosEntry> for SimNext {
    fn spawn(
        &self,
        membership: &Membership,
        config: OmniPaxosConfig,
        hook: PaxosApplier,
        runner: RunnerConfig,
    ) -> Result<Runner<PaxosEntry>, String> {
        // Reopened when it exists: a node that crashed after starting this
        // configuration must not forget what it promised there.
        let disk = lock(&self.disks)
            .entry(membership.configuration())
            .or_default()
            .clone();
        let omnipaxos = config
            .build(disk.storage())
            .map_err(|err| err.to_string())?;
        let ids: Vec<NodeId> = membership.members().iter().map(|m| m.id).collect();
        lock(&self.runs).insert(self.id, membership.clone());
        let sink = self
            .net
            .add_node_in(membership.configuration(), self.id, self.instance);
        Runner::spawn(omnipaxos, &ids, sink, disk.durability(), hook, runner)
            .map_err(|err| err.to_string())
    }

    fn attach(&self, membership: &Membership, inbox: Inbox<PaxosEntry>) {
        self.net.attach_in(membership.configuration(), inbox);
    }

    fn newer(&self, configuration: u32) -> Option<Membership> {
        lock(&self.runs)
            .iter()
            .filter(|(id, _)| **id != self.id)
            .map(|(_, list)| list)
            .filter(|list| list.configuration() > configuration)
            .max_by_key(|list| list.configuration())
            .cloned()
    }

    fn started(&self, membership: &Membership) {
        tracing::debug!(
            node = self.id,
            configuration = membership.configuration(),
            "configuration began on this node"
        );
        *lock(&self.record) = Record {
            membership: membership.clone(),
            joining: false,
        };
    }
}

/// What an operator asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChangeKind {
    /// Add a fresh node.
    Add,
    /// Remove a member (the leader of the moment, or another).
    Remove { leader: bool },
    /// Add a fresh node, then remove a member.
    Replace { leader: bool },
}

/// The changes of one run: when, and what. Drawn from a generator of their
/// own, so the other faults of a seed stay what they were.
pub(crate) fn draw(
    seed: u64,
    fault_end: Duration,
    election: Duration,
) -> Vec<(Duration, ChangeKind)> {
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x6d65_6d62_6572_7368);
    let count = [0, 1, 1, 2][rng.usize(0..4)];
    let mut changes: Vec<(Duration, ChangeKind)> = (0..count)
        .map(|_| {
            let latest = fault_end.saturating_sub(election * 20);
            let at = election * 5 + latest.mul_f64(rng.f64() * 0.8);
            let leader = rng.bool();
            let kind = match rng.u8(0..3) {
                0 => ChangeKind::Add,
                1 => ChangeKind::Remove { leader },
                _ => ChangeKind::Replace { leader },
            };
            (at, kind)
        })
        .collect();
    changes.sort_by_key(|(at, _)| *at);
    changes
}

/// When a peer forges a StopSign, if it does in this run (one seed in two),
/// and which member sends it (an index into the live members). Drawn from a
/// generator of its own, like the changes.
pub(crate) fn draw_forgery(
    seed: u64,
    fault_end: Duration,
    election: Duration,
) -> Option<(Duration, usize)> {
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x666f_7267_6572_7931);
    if !rng.bool() {
        return None;
    }
    let latest = fault_end.saturating_sub(election * 20);
    Some((
        election * 5 + latest.mul_f64(rng.f64() * 0.8),
        rng.usize(0..16),
    ))
}

/// The member record of a node the simulation adds.
pub(crate) fn record_of(id: NodeId) -> MemberRecord {
    MemberRecord {
        id,
        peer_address: format!("sim-{id}"),
        client_endpoint: format!("127.0.0.{id}:7000"),
    }
}

/// Asks for `requests` in turn through the admin path of any live node,
/// retrying (as an operator repeats a request) until each is done or
/// `deadline` passes. Returns how many were done.
pub(crate) async fn carry_out(
    directory: Directory,
    requests: Vec<ChangeRequest>,
    wait: Duration,
    pause: Duration,
    deadline: Duration,
) -> usize {
    let started = tokio::time::Instant::now();
    let mut done = 0;
    let mut turn = 0usize;
    for request in requests {
        loop {
            if started.elapsed() > deadline {
                return done;
            }
            let servers: Vec<_> = lock(&directory).values().cloned().collect();
            let Some(server) = servers.get(turn % servers.len().max(1)).cloned() else {
                tokio::time::sleep(pause).await;
                continue;
            };
            turn = turn.wrapping_add(1);
            let driver = std::sync::Arc::clone(server.driver());
            match driver.change_membership(&request, wait).await {
                Ok(next) => {
                    tracing::debug!(%request, next = %next, "membership change done");
                    done += 1;
                    break;
                }
                // Already done: a retry after an answer that was lost.
                Err(ChangeFailure::Refused(
                    ChangeError::AlreadyMember(_) | ChangeError::NotAMember(_),
                )) => {
                    done += 1;
                    break;
                }
                Err(err) => {
                    tracing::debug!(%request, %err, "membership change not done yet");
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }
    done
}
