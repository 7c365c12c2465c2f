//! Simulated clients: they follow redirects like `tsoracle-client`, retry
//! after errors, and record every successful operation.
//!
//! - timestamp workers call `get_ts` (one or a small batch);
//! - a dense worker calls `get_seq` on a few keys;
//! - a reader calls the linearized reads (`load_high_water`,
//!   `load_dense_seq`) of any node, followers included;
//! - a lease worker drives one holder group through acquire (new, repeated,
//!   superseding, and stale epochs), renew and release.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use omnipaxos::util::NodeId;
use tsoracle_consensus::ConsensusDriver;
use tsoracle_core::SeqKey;
use tsoracle_paxos_checker::Outcome;

use crate::history::Recorder;
use crate::server::{Refused, SimServer};

/// The servers that are up, by node.
pub(crate) type Directory = Arc<Mutex<BTreeMap<NodeId, Arc<SimServer>>>>;

/// Dense keys the workers use.
pub(crate) const DENSE_KEYS: [&str; 3] = ["orders", "invoices", "tickets"];

/// What a worker does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Timestamps,
    Dense,
    Reader,
    Leases,
}

/// Counts of a worker's calls.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Calls {
    pub(crate) ok: u64,
    pub(crate) failed: u64,
    /// Failures by kind: not serving, node down, driver error, refused,
    /// abandoned after the call timeout.
    pub(crate) by_kind: [u64; 5],
}

/// One worker.
pub(crate) struct Worker {
    pub(crate) id: u32,
    pub(crate) kind: Kind,
    pub(crate) directory: Directory,
    pub(crate) recorder: Recorder,
    pub(crate) rng: fastrand::Rng,
    pub(crate) stop: Arc<AtomicBool>,
    /// A call not answered within this is abandoned (its future dropped).
    pub(crate) call_timeout: Duration,
    /// Longest pause between two calls.
    pub(crate) think: Duration,
    pub(crate) preferred: Option<NodeId>,
    pub(crate) calls: Calls,
    pub(crate) lease: LeaseScript,
}

/// The lease worker's holder group and where it stands.
#[derive(Debug, Clone, Default)]
pub(crate) struct LeaseScript {
    holder: String,
    epoch: u64,
    live: Option<u64>,
}

impl LeaseScript {
    pub(crate) fn new(holder: String) -> Self {
        Self {
            holder,
            epoch: 1,
            live: None,
        }
    }
}

impl Worker {
    fn pick(&mut self) -> Option<Arc<SimServer>> {
        let directory = self
            .directory
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(server) = self.preferred.and_then(|node| directory.get(&node)) {
            return Some(Arc::clone(server));
        }
        if directory.is_empty() {
            return None;
        }
        let nth = self.rng.usize(0..directory.len());
        directory.values().nth(nth).cloned()
    }

    fn pause(&mut self) -> Duration {
        let nanos = u64::try_from(self.think.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(self.rng.u64(0..=nanos))
    }

    /// Runs until the stop flag is set.
    pub(crate) async fn run(mut self) -> Calls {
        while !self.stop.load(Ordering::SeqCst) {
            let Some(server) = self.pick() else {
                tokio::time::sleep(self.think).await;
                continue;
            };
            let invoked = self.recorder.now_us();
            let done = tokio::time::timeout(self.call_timeout, self.call(&server, invoked)).await;
            let kind = match &done {
                Ok(Ok(())) => None,
                Ok(Err(Refused::NotServing(_))) => Some(0),
                Ok(Err(Refused::Down)) => Some(1),
                Ok(Err(Refused::Driver(_))) => Some(2),
                Ok(Err(Refused::Rejected(_))) => Some(3),
                Err(_) => Some(4),
            };
            if kind.is_some() {
                tracing::debug!(at = self.recorder.now_us(), worker = self.id, kind = ?self.kind, outcome = ?done, "call failed");
            }
            match done {
                Ok(Ok(())) => self.calls.ok += 1,
                Ok(Err(Refused::NotServing(Some(leader)))) => {
                    self.calls.failed += 1;
                    self.preferred = Some(leader);
                }
                Ok(Err(_)) | Err(_) => {
                    self.calls.failed += 1;
                    self.preferred = None;
                }
            }
            if let Some(kind) = kind {
                self.calls.by_kind[kind] += 1;
            }
            let pause = self.pause();
            tokio::time::sleep(pause).await;
        }
        self.calls
    }

    async fn call(&mut self, server: &SimServer, invoked: u64) -> Result<(), Refused> {
        match self.kind {
            Kind::Timestamps => {
                let count = if self.rng.u8(0..4) == 0 {
                    self.rng.u32(2..=4)
                } else {
                    1
                };
                let values = server.get_ts(count).await?;
                self.recorder
                    .record(self.id, invoked, Outcome::Timestamps(values));
                self.preferred = Some(server.node());
            }
            Kind::Dense => {
                let name = DENSE_KEYS[self.rng.usize(0..DENSE_KEYS.len())];
                let key = seq_key(name)?;
                let count = self.rng.u32(1..=5);
                let start = server.get_seq(&key, count).await?;
                self.recorder.record(
                    self.id,
                    invoked,
                    Outcome::Dense {
                        key: name.to_owned(),
                        start,
                        count,
                    },
                );
                self.preferred = Some(server.node());
            }
            Kind::Reader => {
                // Any node, followers included: reads are linearized
                // everywhere. The preferred node is not kept.
                self.preferred = None;
                let driver = server.driver();
                if self.rng.bool() {
                    let value = driver.load_high_water().await?;
                    server_alive(server).await?;
                    self.recorder.record(
                        self.id,
                        invoked,
                        Outcome::HighWater { value, read: true },
                    );
                } else {
                    let name = DENSE_KEYS[self.rng.usize(0..DENSE_KEYS.len())];
                    let value = driver.load_dense_seq(&seq_key(name)?).await?;
                    server_alive(server).await?;
                    self.recorder.record(
                        self.id,
                        invoked,
                        Outcome::DenseRead {
                            key: name.to_owned(),
                            value,
                        },
                    );
                }
            }
            Kind::Leases => self.lease_step(server, invoked).await?,
        }
        Ok(())
    }

    async fn lease_step(&mut self, server: &SimServer, invoked: u64) -> Result<(), Refused> {
        let holder = self.lease.holder.clone();
        tracing::debug!(at = invoked, worker = self.id, node = server.node(), lease = ?self.lease, "lease step");
        let Some(live) = self.lease.live else {
            let epoch = self.lease.epoch;
            let lease_id = server.acquire_lease(holder.as_bytes(), epoch).await?;
            self.acquired(invoked, epoch, lease_id);
            self.preferred = Some(server.node());
            return Ok(());
        };
        self.preferred = Some(server.node());
        match self.rng.u8(0..10) {
            0..=3 => {
                server.renew_lease(live).await?;
                self.recorder.record(
                    self.id,
                    invoked,
                    Outcome::LeaseRenewed {
                        holder,
                        lease_id: live,
                    },
                );
            }
            4..=5 => {
                // Repeating the live epoch is idempotent.
                let epoch = self.lease.epoch;
                let lease_id = server.acquire_lease(holder.as_bytes(), epoch).await?;
                self.acquired(invoked, epoch, lease_id);
            }
            6..=7 => {
                let epoch = self.lease.epoch + 1;
                let lease_id = server.acquire_lease(holder.as_bytes(), epoch).await?;
                self.lease.epoch = epoch;
                self.acquired(invoked, epoch, lease_id);
            }
            8 if self.lease.epoch > 1 => {
                // A stale epoch: must be refused while the live lease stands.
                let epoch = self.lease.epoch - 1;
                let lease_id = server.acquire_lease(holder.as_bytes(), epoch).await?;
                self.acquired(invoked, epoch, lease_id);
            }
            _ => {
                // Released, or maybe released: a failed or abandoned call
                // may still take effect. Either way never use this epoch (or
                // a lower one) again, so forget it before the call: the
                // checker's lease rules assume a holder never re-acquires an
                // epoch it released.
                self.lease.live = None;
                self.lease.epoch += 1;
                server.release_lease(live).await?;
            }
        }
        Ok(())
    }

    fn acquired(&mut self, invoked: u64, holder_epoch: u64, lease_id: u64) {
        if holder_epoch >= self.lease.epoch {
            self.lease.live = Some(lease_id);
        }
        self.recorder.record(
            self.id,
            invoked,
            Outcome::LeaseAcquired {
                holder: self.lease.holder.clone(),
                holder_epoch,
                lease_id,
            },
        );
    }
}

fn seq_key(name: &str) -> Result<SeqKey, Refused> {
    SeqKey::try_new(name).map_err(|e| Refused::Rejected(e.to_string()))
}

async fn server_alive(server: &SimServer) -> Result<(), Refused> {
    // A reply from a node that crashed meanwhile never arrives.
    server.get_alive().await
}
