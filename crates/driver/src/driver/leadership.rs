//! The leadership task: feeds the engine what it observes and carries out
//! what the engine decides.
//!
//! Each time it wakes (the host's view changed, a caller was refused, or
//! the engine's [`Action::SleepFor`] ran out) it steps [`Event::Observed`]
//! with the host's current view (the runner's lease included), publishes
//! and logs what the engine says, and sleeps as long as it says. The wake
//! times, the role published and the lapse warning are the engine's; the
//! task owns only the channel and the timer. It proposes nothing to keep
//! the lease: the runner's lease rounds do, without writing the log.
//!
//! [`Action::SleepFor`]: crate::core::step::Action::SleepFor

use std::sync::Arc;

use tokio::task::JoinSet;
use tsoracle_core::Epoch;
use tsoracle_paxos_state::{Command, Membership};
use tsoracle_paxos_toolkit::InstanceId;

use super::Shell;
use crate::core::identity::{Registration, registration};
use crate::core::membership::{self, Recording};
use crate::core::step::Event;
use crate::host::PaxosHighWaterHost;

/// Runs until aborted (by `PaxosDriver::shutdown` or its drop).
pub(super) async fn run<H: PaxosHighWaterHost>(shell: Arc<Shell<H>>) {
    let mut views = shell.host.leadership();
    // This node's registration or member list in flight (one at a time),
    // until both are on record: aborted with the task.
    let mut recording = JoinSet::new();
    let mut recorded = shell.host.instance().is_none() && shell.host.membership().is_none();
    let tick = shell.config.timing.tick;
    let mut host_gone = false;
    let mut members = shell.host.members();
    loop {
        let now_members = shell.host.members();
        if now_members != members {
            // A membership change: the new members' client endpoints.
            let endpoints = now_members
                .iter()
                .filter_map(|&node| shell.host.client_endpoint(node).map(|e| (node, e)))
                .collect();
            shell.engine().learn_endpoints(&endpoints);
            members = now_members;
        }
        while recording.try_join_next().is_some() {}
        if !recorded && recording.is_empty() {
            match next_record(&shell) {
                Some(record) => {
                    let shell = Arc::clone(&shell);
                    recording.spawn(async move { put_on_record(&shell, record).await });
                }
                None => recorded = true,
            }
        }
        let view = *views.borrow_and_update();
        let followup = shell.step_now(Event::Observed(view));
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

/// What this node still has to put on record.
enum Record {
    /// Its data-directory instance.
    Instance(InstanceId),
    /// The member list it was given.
    Membership(Membership),
}

/// What this node has to propose next, from the applied state: its
/// registration first, then its member list. `None` once nothing is left
/// (a refusal included: the applier stops the host with the reason).
fn next_record<H: PaxosHighWaterHost>(shell: &Shell<H>) -> Option<Record> {
    let me = shell.host.node_id();
    let mut on_record = (None, None);
    shell.host.read_state(&mut |state| {
        on_record = (state.instance_of(me), state.membership().cloned());
    });
    let (instance, membership) = on_record;
    if let Registration::Propose(instance) = registration(shell.host.instance(), instance) {
        return Some(Record::Instance(instance));
    }
    let given = shell.host.membership();
    match membership::recording(given.as_ref(), membership.as_ref()) {
        Recording::Propose => given.map(Record::Membership),
        Recording::Done(_) | Recording::Refused(_) => None,
    }
}

/// Proposes one record (OmniPaxos forwards it to the leader from a
/// follower), then waits an election timeout before the task looks again,
/// so a cluster without a leader is not flooded with retries.
async fn put_on_record<H: PaxosHighWaterHost>(shell: &Shell<H>, record: Record) {
    let node = shell.host.node_id();
    let what = match &record {
        Record::Instance(instance) => format!("data directory instance {instance}"),
        Record::Membership(membership) => format!("member list ({membership})"),
    };
    let submitted = shell.submit(|proposal| match record {
        Record::Instance(instance) => Command::Register {
            node,
            instance: instance.0,
            epoch: Epoch(0),
            proposal,
        },
        Record::Membership(membership) => Command::RecordMembership {
            membership,
            epoch: Epoch(0),
            proposal,
        },
    });
    let result = match submitted {
        Ok((at, pending)) => shell.finish(at, pending).await.map(|_| ()),
        Err(err) => Err(err),
    };
    match result {
        Ok(()) => tracing::info!("this node's {what} is on record"),
        Err(err) => {
            tracing::debug!(%err, "{what} not on record yet; retrying");
            let pause = shell
                .config
                .timing
                .election_timeout()
                .unwrap_or(shell.config.timing.tick);
            tokio::time::sleep(pause).await;
        }
    }
    shell.wake.notify_one();
}
