//! The leadership task: feeds the engine what it observes and carries out
//! what the engine decides.
//!
//! Each time it wakes (the host's view changed, a decision renewed the
//! lease, a renewal finished, or the engine's [`Action::SleepFor`] ran out)
//! it steps [`Event::Observed`] with the host's current view, publishes and
//! logs what the engine says, starts the renewal barrier the engine asks
//! for, and sleeps as long as it says. The single-flight rule, the wake
//! times, the role published and the lapse warning are the engine's; the
//! task owns only the channel, the timer and the renewal task.
//!
//! [`Action::SleepFor`]: crate::core::step::Action::SleepFor

use std::sync::Arc;

use tokio::task::JoinSet;
use tsoracle_paxos_state::Command;

use super::Shell;
use crate::core::role::Term;
use crate::core::step::Event;
use crate::host::PaxosHighWaterHost;

/// Runs until aborted (by `PaxosDriver::shutdown` or its drop).
pub(super) async fn run<H: PaxosHighWaterHost>(shell: Arc<Shell<H>>) {
    let mut views = shell.host.leadership();
    // The renewal in flight (the engine allows one): aborted with the task.
    let mut renewals = JoinSet::new();
    let tick = shell.config.timing.tick;
    let mut host_gone = false;
    loop {
        while renewals.try_join_next().is_some() {
            shell.step_now(Event::RenewalDone);
        }
        let view = *views.borrow_and_update();
        // The engine reads the clock after the view, never before: the
        // new-leader wait runs from the first observation.
        let followup = shell.step_now(Event::Observed(view));
        if let Some(term) = followup.renew {
            let shell = Arc::clone(&shell);
            renewals.spawn(async move { renew_lease(&shell, term).await });
        }
        let sleep = followup.sleep.unwrap_or(tick);
        // Biased: a fixed branch order keeps a seeded simulation replayable.
        tokio::select! {
            biased;
            changed = views.changed(), if !host_gone => {
                if changed.is_err() {
                    tracing::error!("the host's leadership watch closed; reporting no leader");
                    host_gone = true;
                    shell.step_now(Event::HostGone);
                }
            }
            () = shell.wake.notified() => {}
            () = tokio::time::sleep(sleep) => {}
        }
    }
}

/// An idle (or newly elected) leader's no-op barrier under `term`; wakes
/// the task when it finished, so that it steps [`Event::RenewalDone`].
async fn renew_lease<H: PaxosHighWaterHost>(shell: &Shell<H>, term: Term) {
    let ballot = term.ballot();
    let epoch = term.epoch();
    let submitted = shell.submit(Some(ballot), |proposal| Command::Barrier {
        epoch,
        proposal,
    });
    let result = match submitted {
        Ok((at, pending)) => shell.finish(Some(ballot), at, pending).await.map(|_| ()),
        Err(err) => Err(err),
    };
    if let Err(err) = result {
        tracing::debug!(%err, "lease renewal failed");
    }
    shell.wake.notify_one();
}
