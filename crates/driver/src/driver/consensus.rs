//! The `ConsensusDriver` impl: each method routed to the write or read
//! path, and the leadership stream handed to the server.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use async_trait::async_trait;
use futures_core::Stream;
use tokio_stream::wrappers::WatchStream;
use tsoracle_consensus::{ConsensusDriver, ConsensusError, LeaderState};
use tsoracle_core::{Epoch, LeaseRecord, SeqKey};
use tsoracle_paxos_state::{Command, Lease};

use super::PaxosDriver;
use crate::core::fence;
use crate::error::RuntimeError;
use crate::host::PaxosHighWaterHost;

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
        let slot = Arc::clone(&self.shell.subscribed);
        if slot.swap(true, Ordering::SeqCst) {
            tracing::error!(
                "a second leadership subscription while one is live: it only ever reports \
                 Unknown (drop the first stream to re-subscribe)"
            );
            return Box::pin(Refused { sent: false });
        }
        Box::pin(Subscription {
            inner: WatchStream::new(self.shell.events.subscribe()),
            slot,
        })
    }

    async fn load_high_water(&self) -> Result<u64, ConsensusError> {
        self.shell
            .answered(async { self.shell.barrier_read(|_| ()).await.map(|(hw, ())| hw) }.await)
    }

    async fn persist_high_water(&self, at_least: u64, epoch: Epoch) -> Result<u64, ConsensusError> {
        self.shell.answered(
            async {
                let term = self.shell.writer_term(epoch, Some(at_least))?;
                let applied = self
                    .shell
                    .propose_as(term, epoch, |proposal| Command::Advance {
                        at_least,
                        epoch,
                        proposal,
                    })
                    .await?;
                fence::high_water_outcome(applied.outcome)
            }
            .await,
        )
    }

    async fn load_dense_seq(&self, key: &SeqKey) -> Result<u64, ConsensusError> {
        self.shell.answered(
            async {
                self.shell
                    .barrier_read(|state| state.dense_value(key))
                    .await
                    .map(|(_, value)| value)
            }
            .await,
        )
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
        self.shell.answered(
            async {
                let term = self.shell.writer_term(expected_epoch, None)?;
                let key_cap = self.shell.config.dense_key_cap;
                let entries = entries.to_vec();
                let applied = self
                    .shell
                    .propose_as(term, expected_epoch, |proposal| Command::DenseAdvance {
                        entries,
                        key_cap,
                        epoch: expected_epoch,
                        proposal,
                    })
                    .await?;
                fence::dense_outcome(applied.outcome, expected_epoch)
            }
            .await,
        )
    }

    async fn load_leases(&self) -> Result<Vec<LeaseRecord>, ConsensusError> {
        self.shell.answered(
            async {
                self.shell
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
            .await,
        )
    }

    async fn persist_leases(
        &self,
        live: &[LeaseRecord],
        epoch: Epoch,
    ) -> Result<(), ConsensusError> {
        self.shell.answered(
            async {
                let term = self.shell.writer_term(epoch, None)?;
                let leases: Vec<Lease> = live.iter().cloned().map(Lease::from).collect();
                let applied = self
                    .shell
                    .propose_as(term, epoch, |proposal| Command::ReplaceLeases {
                        leases,
                        epoch,
                        proposal,
                    })
                    .await?;
                fence::lease_outcome(applied.outcome, epoch)
            }
            .await,
        )
    }
}
