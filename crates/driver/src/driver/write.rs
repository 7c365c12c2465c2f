//! The write path (`persist_high_water`, `advance_dense*`,
//! `persist_leases`): admission by the engine, the proposal, a wait that
//! ends early once the term is lost, and the engine's acknowledgement.

use tsoracle_consensus::ConsensusError;
use tsoracle_core::Epoch;
use tsoracle_paxos_state::{Command, ProposalId};

use super::Shell;
use crate::core::role::Term;
use crate::host::{Applied, PaxosHighWaterHost};

impl<H: PaxosHighWaterHost> Shell<H> {
    /// The term to write under, after the checks every write runs (the
    /// range check first for a high-water advance):
    /// [`Engine::admit_write`](crate::core::step::Engine::admit_write).
    pub(super) fn writer_term(
        &self,
        caller_epoch: Epoch,
        advance: Option<u64>,
    ) -> Result<Term, ConsensusError> {
        self.decide(|engine, now| engine.admit_write(now, caller_epoch, advance))
    }

    /// Proposes `make`'s command as leader under `term`, waits for it, and
    /// acknowledges it only if the engine says this node still serves under
    /// `term` once it is applied
    /// ([`Engine::acknowledge`](crate::core::step::Engine::acknowledge)).
    pub(super) async fn propose_as(
        &self,
        term: Term,
        caller_epoch: Epoch,
        make: impl FnOnce(ProposalId) -> Command,
    ) -> Result<Applied, ConsensusError> {
        let (at, pending) = self.submit(make)?;
        // Once the term is lost no answer can be an acknowledgement any
        // more: answer now instead of holding the caller to the request
        // deadline.
        let applied = tokio::select! {
            biased;
            applied = self.finish(at, pending) => applied?,
            () = self.lost(term) => {
                return Err(self.decide(|engine, now| engine.not_leader(now)));
            }
        };
        self.decide(|engine, now| engine.acknowledge(now, term, caller_epoch, applied.promise))?;
        Ok(applied)
    }

    /// Resolves once this node no longer serves under `term`
    /// ([`Engine::leads_under`](crate::core::step::Engine::leads_under)).
    /// The leadership task publishes every such change, so waking on its
    /// stream is enough.
    async fn lost(&self, term: Term) {
        let mut changes = self.events.subscribe();
        loop {
            if !self.decide(|engine, now| engine.leads_under(now, term)) {
                return;
            }
            if changes.changed().await.is_err() {
                // The sender lives as long as this shell: never reached.
                return std::future::pending().await;
            }
        }
    }
}
