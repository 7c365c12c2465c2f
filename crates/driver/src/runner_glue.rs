//! The two pieces of a [`PaxosHighWaterHost`] that any host built on the
//! toolkit [`Runner`] shares: [`StandaloneHost`](crate::StandaloneHost) uses
//! them, and so can a piggyback host that runs its own entry type (and its
//! own decided-entry hook around a [`PaxosApplier`](crate::PaxosApplier)).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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
    status: watch::Receiver<RunnerStatus>,
) -> (watch::Receiver<LeaderView>, JoinHandle<()>) {
    let bridge = Bridge::new(&status.borrow());
    let task = bridge_runner(&bridge, status, None);
    (bridge.leadership(), task)
}

/// The watches a host publishes from whichever runner is current: the
/// leadership view and the runner's status. A host that follows membership
/// changes points it at each configuration's runner in turn.
#[derive(Debug, Clone)]
pub(crate) struct Bridge {
    leadership: watch::Sender<LeaderView>,
    status: watch::Sender<RunnerStatus>,
    /// Set by a host that follows changes: a decided StopSign then means
    /// "the next configuration is starting", not "ended".
    follows: Arc<AtomicBool>,
    /// Set once this node left the cluster: the configuration ended for it.
    left: Arc<AtomicBool>,
}

impl Bridge {
    pub(crate) fn new(status: &RunnerStatus) -> Self {
        Self {
            leadership: watch::Sender::new(view_of(status, false)),
            status: watch::Sender::new(status.clone()),
            follows: Arc::default(),
            left: Arc::default(),
        }
    }

    pub(crate) fn leadership(&self) -> watch::Receiver<LeaderView> {
        self.leadership.subscribe()
    }

    pub(crate) fn status(&self) -> watch::Receiver<RunnerStatus> {
        self.status.subscribe()
    }

    /// From now on a decided StopSign that leads into a next configuration
    /// is not an end; `status` (the runner's now) is published again at
    /// once, so a StopSign shown before this call (a restart whose log
    /// ends with one) is taken back.
    pub(crate) fn follow_changes(&self, status: &RunnerStatus, started: bool) {
        self.follows.store(true, Ordering::SeqCst);
        self.publish(status, started);
    }

    /// This node is not in the next configuration: publish the ended
    /// configuration (and the StopSign in the status) from now on,
    /// starting with `status`, the runner's last (a decided StopSign ends
    /// the runner's updates, so none may follow).
    pub(crate) fn leave(&self, status: &RunnerStatus) {
        self.left.store(true, Ordering::SeqCst);
        self.leadership.send_modify(|view| {
            view.leader = None;
            view.configuration_ended = true;
        });
        self.publish(status, true);
    }

    /// Publishes `status` and the view of it; `started` false: the
    /// configuration's log has not begun (no genesis applied yet), so no
    /// leader is shown.
    fn publish(&self, status: &RunnerStatus, started: bool) {
        let continues = self.follows.load(Ordering::SeqCst) && !self.left.load(Ordering::SeqCst);
        let mut view = view_of(status, continues);
        if !started {
            view.leader = None;
        }
        self.leadership.send_if_modified(|current| {
            let changed = *current != view;
            *current = view;
            changed
        });
        let mut shown = status.clone();
        if continues {
            shown.stop_sign = None;
        }
        self.status.send_if_modified(|current| {
            let changed = *current != shown;
            *current = shown;
            changed
        });
    }
}

/// Feeds `bridge` from a runner's `status` until the runner stops (or the
/// task is aborted, when another runner takes over). `starting`: the
/// runner's configuration was started by a change, and shows no leader
/// until that applier's state holds the configuration's genesis.
pub(crate) fn bridge_runner(
    bridge: &Bridge,
    mut status: watch::Receiver<RunnerStatus>,
    starting: Option<(ApplierHandle, u32)>,
) -> JoinHandle<()> {
    let bridge = bridge.clone();
    tokio::spawn(async move {
        loop {
            let now = status.borrow_and_update().clone();
            let started = starting
                .as_ref()
                .is_none_or(|(applier, configuration)| applier.started(*configuration));
            bridge.publish(&now, started);
            if now.stopped {
                break;
            }
            if status.changed().await.is_err() {
                break;
            }
        }
        bridge.leadership.send_modify(|view| view.leader = None);
    })
}

/// `continues`: a decided StopSign leads into a next configuration that
/// includes this node, so it shows as no leader rather than an end.
fn view_of(status: &RunnerStatus, continues: bool) -> LeaderView {
    let ended = status.stop_sign.is_some();
    LeaderView {
        promise: status.promise,
        lease_until: status.lease_until,
        leader: if status.stopped || ended {
            None
        } else {
            status.leader
        },
        configuration_ended: ended && !continues,
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
