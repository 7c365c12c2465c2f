//! The two pieces of a [`PaxosHighWaterHost`] that any host built on the
//! toolkit [`Runner`] shares: [`StandaloneHost`](crate::StandaloneHost) uses
//! them, and so can a piggyback host that runs its own entry type (and its
//! own decided-entry hook around a [`PaxosApplier`](crate::PaxosApplier)).

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tsoracle_paxos_state::{Command, PaxosEnvelope};
use tsoracle_paxos_toolkit::{Error as ToolkitError, Runner, RunnerStatus};

use crate::applier::ApplierHandle;
use crate::core::lease::LeaderView;
use crate::host::{HostError, PendingApply};

/// Publishes the runner's leadership fields as a [`LeaderView`] (for
/// [`PaxosHighWaterHost::leadership`](crate::PaxosHighWaterHost::leadership));
/// a stopped or failed runner shows no leader. The returned task ends on its
/// own when the runner stops; abort it to stop it earlier. Call inside a
/// tokio runtime.
#[must_use]
pub fn leadership_from_runner(
    mut status: watch::Receiver<RunnerStatus>,
) -> (watch::Receiver<LeaderView>, JoinHandle<()>) {
    let (tx, rx) = watch::channel(view_of(&status.borrow_and_update()));
    let task = tokio::spawn(async move {
        loop {
            let view = view_of(&status.borrow_and_update());
            tx.send_if_modified(|current| {
                let changed = *current != view;
                *current = view;
                changed
            });
            if status.borrow().stopped {
                break;
            }
            if status.changed().await.is_err() {
                break;
            }
        }
        tx.send_modify(|view| view.leader = None);
    });
    (rx, task)
}

fn view_of(status: &RunnerStatus) -> LeaderView {
    LeaderView {
        promise: status.promise,
        leader: if status.stopped { None } else { status.leader },
        configuration_ended: status.stop_sign.is_some(),
    }
}

/// [`PaxosHighWaterHost::submit`](crate::PaxosHighWaterHost::submit) on a
/// runner: registers the waiter first, queues the wrapped command without
/// waiting (in call order), and returns the wait for this node to apply it,
/// which ends early with [`HostError::Failed`] if the runner stops.
///
/// # Errors
///
/// [`HostError::Unavailable`] when the proposal queue is full,
/// [`HostError::Failed`] when the runner has stopped.
pub fn submit_to_runner<E>(
    runner: &Arc<Runner<E>>,
    applier: &ApplierHandle,
    command: Command,
) -> Result<PendingApply, HostError>
where
    E: PaxosEnvelope + Send + 'static,
    E::Snapshot: Send,
{
    // Registered before the entry can possibly be applied.
    let mut waiter = applier.register(command.proposal());
    let appended = runner
        .try_propose(E::wrap_paxos_command(command))
        .map_err(runner_error)?;
    let mut status = runner.status();
    Ok(Box::pin(async move {
        appended.await.map_err(runner_error)?;
        // Biased: a fixed branch order keeps a seeded simulation replayable.
        tokio::select! {
            biased;
            applied = waiter.wait() => applied.unwrap_or_else(|| {
                Err(HostError::Failed("the apply path stopped before applying".to_owned()))
            }),
            stopped = status.wait_for(|s| s.stopped) => {
                let reason = match stopped {
                    Ok(s) => s.failed.clone().unwrap_or_else(|| "shut down".to_owned()),
                    Err(_) => "gone".to_owned(),
                };
                Err(HostError::Failed(format!("the consensus thread stopped: {reason}")))
            }
        }
    }))
}

/// A full queue is worth a retry; anything else means the runner is gone,
/// or its configuration ended (said in full: the toolkit's own message does
/// not know that nothing here ever asks for a StopSign).
fn runner_error(err: ToolkitError) -> HostError {
    match err {
        ToolkitError::ProposalQueueFull { .. } => HostError::Unavailable(err.to_string()),
        ToolkitError::ConfigurationStopped => {
            HostError::Failed(crate::RuntimeError::ConfigurationEnded.to_string())
        }
        other => HostError::Failed(other.to_string()),
    }
}
