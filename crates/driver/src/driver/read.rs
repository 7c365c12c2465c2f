//! The read path (`load_*`): a barrier through the log, waited for until
//! this node applied it, then a read of the applied state.

use tsoracle_consensus::ConsensusError;
use tsoracle_paxos_state::{ApplyState, Command};

use super::Shell;
use crate::core::fence;
use crate::error::RuntimeError;
use crate::host::PaxosHighWaterHost;

impl<H: PaxosHighWaterHost> Shell<H> {
    /// A linearized read: a barrier through the log, then `read` on the
    /// state this node applied up to (at least) the barrier.
    pub(super) async fn barrier_read<R>(
        &self,
        read: impl FnOnce(&ApplyState) -> R,
    ) -> Result<(u64, R), ConsensusError> {
        self.engine().check_not_ended()?;
        #[cfg(feature = "mutations")]
        if !crate::mutation::is_on(crate::mutation::Guard::ReadBarrier) {
            crate::mutation::count_bypass();
            return Ok(self.read_applied(read));
        }
        let epoch = self.decide(|engine, now| engine.barrier_epoch(now));
        let (at, pending) = self.submit(|proposal| Command::Barrier { epoch, proposal })?;
        let applied = self.finish(at, pending).await?;
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
    fn read_applied<R>(&self, read: impl FnOnce(&ApplyState) -> R) -> (u64, R) {
        let mut state = ApplyState::new();
        self.host.read_state(&mut |applied| state = applied.clone());
        (state.high_water(), read(&state))
    }
}
