//! [`PaxosDriver`]: the `ConsensusDriver` of tsoracle over a
//! [`PaxosHighWaterHost`], as a thin async shell around the pure
//! [`Engine`].
//!
//! The driver owns the tsoracle side: the leader lease, the leadership
//! stream, the checks before proposing, proposal ids, deadlines, and the
//! error split. The host owns OmniPaxos and the apply path.
//!
//! Every leadership decision is the engine's (`crate::core`): it is stepped
//! with an event and the time and returns actions, or asked a question with
//! the time. This shell reads the clock, keeps the engine behind one lock,
//! and carries the actions out with tokio:
//!
//! - `config` — [`DriverConfig`];
//! - `propose` — proposal ids, submission to the host, the bounded wait;
//! - `write` — the write path (admission, the wait that ends early once
//!   the term is lost, the acknowledgement);
//! - `read` — the read path (a barrier, then the applied state);
//! - `leadership` — the one background task (owned by the driver, stopped
//!   by [`PaxosDriver::shutdown`] or on drop) that follows the host's
//!   leadership view (the runner's lease included) and publishes
//!   leadership changes;
//! - `consensus` — the `ConsensusDriver` impl and the leadership stream;
//! - `change` — the admin path of a membership change;
//! - `hand_over` — a planned hand-over of leadership.

mod change;
mod config;
mod consensus;
mod hand_over;
mod leadership;
mod propose;
mod read;
mod write;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use omnipaxos::util::NodeId;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tsoracle_consensus::{ConsensusError, LeaderState};
use tsoracle_core::{Epoch, PeerEndpoint};

pub use self::change::ChangeFailure;
pub use self::config::{DEFAULT_DENSE_KEY_CAP, DEFAULT_REQUEST_TIMEOUT, DriverConfig};
pub use self::hand_over::HandOverError;
use crate::Clock;
use crate::core::gate::{NotServing, ReplyGate};
use crate::core::role::Role;
use crate::core::step::{Action, Engine, Event};
use crate::error::{ConfigError, RuntimeError};
use crate::host::PaxosHighWaterHost;

/// The OmniPaxos-backed `ConsensusDriver`.
///
/// Create it inside a tokio runtime with [`PaxosDriver::start`]; hand it to
/// `tsoracle-server` as `Arc<dyn ConsensusDriver>`.
pub struct PaxosDriver<H: PaxosHighWaterHost> {
    shell: Arc<Shell<H>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// What the driver's calls and its leadership task share.
struct Shell<H> {
    host: Arc<H>,
    config: DriverConfig,
    clock: Arc<dyn Clock>,
    incarnation: u64,
    /// Next proposal sequence number. Minted and submitted under this lock,
    /// so this node's proposals reach the log in id order.
    seq: Mutex<u64>,
    /// Every leadership decision. Held only to step or ask it, never across
    /// an await; the clock is read while holding it.
    engine: Mutex<Engine>,
    events: watch::Sender<LeaderState>,
    subscribed: Arc<AtomicBool>,
    /// Wakes the leadership task ([`Action::WakeLeadershipTask`], and when a
    /// record was put on the log).
    wake: Notify,
}

impl<H: PaxosHighWaterHost> PaxosDriver<H> {
    /// Starts the driver over `host`: validates `config` and spawns the
    /// leadership task on the current tokio runtime. The lease is read on
    /// the host's clock ([`PaxosHighWaterHost::clock`]), the one its runner
    /// grants and times the lease on.
    ///
    /// # Errors
    ///
    /// [`DriverConfig::validate`] errors, [`ConfigError::Epoch`] for a node
    /// id the epoch codec cannot encode, [`ConfigError::NoRuntime`] outside
    /// a runtime, [`ConfigError::ProposerClaimed`] when the host already has
    /// a driver.
    pub fn start(host: Arc<H>, config: DriverConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let clock = host.clock();
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ConfigError::NoRuntime)?;
        let endpoints: BTreeMap<NodeId, PeerEndpoint> = host
            .members()
            .into_iter()
            .filter_map(|node| host.client_endpoint(node).map(|e| (node, e)))
            .collect();
        let engine = Engine::new(
            host.node_id(),
            &config.timing,
            config.stop_margin,
            endpoints,
        )?;
        // One driver per host start: a second one would count proposal ids
        // from zero again, below the ids already applied.
        let incarnation = host.claim_proposer().ok_or(ConfigError::ProposerClaimed)?;
        let (events, _) = watch::channel(engine.published().clone());
        let shell = Arc::new(Shell {
            incarnation,
            host,
            config,
            clock,
            seq: Mutex::new(0),
            engine: Mutex::new(engine),
            events,
            subscribed: Arc::new(AtomicBool::new(false)),
            wake: Notify::new(),
        });
        let task = runtime.spawn(leadership::run(Arc::clone(&shell)));
        Ok(Self {
            shell,
            task: Mutex::new(Some(task)),
        })
    }

    /// The host this driver runs on.
    #[must_use]
    pub fn host(&self) -> &Arc<H> {
        &self.shell.host
    }

    /// What this node may claim now (lease and stop margin applied).
    #[must_use]
    pub fn role(&self) -> Role {
        self.shell.decide(Engine::role)
    }

    /// The gate every reply carrying data must pass after it was produced
    /// and before it is sent (see [`crate::gate`]). Cheap to clone; hand it
    /// to the server's reply path (the `tsoracle-paxos-reply-gate` layer).
    #[must_use]
    pub fn reply_gate(&self) -> Arc<dyn ReplyGate> {
        Arc::clone(&self.shell) as Arc<dyn ReplyGate>
    }

    /// A receiver of the leadership states this driver publishes (not
    /// counted as the server's subscription).
    #[must_use]
    pub fn watch_leadership(&self) -> watch::Receiver<LeaderState> {
        self.shell.events.subscribe()
    }

    /// Stops the leadership task and waits for it. The stream then reports
    /// `Unknown` and writes are refused with `NotLeader` (reads still go
    /// through the host while it runs): stop the server first.
    pub async fn shutdown(&self) {
        self.shell.step_now(Event::Shutdown);
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
        self.shell.events.send_replace(LeaderState::Unknown);
    }
}

impl<H: PaxosHighWaterHost> Drop for PaxosDriver<H> {
    fn drop(&mut self) {
        if let Some(task) = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }
}

/// What the leadership task does itself after [`Shell::carry_out`]: the
/// actions that need its own state.
#[derive(Debug, Default)]
struct Followup {
    /// [`Action::SleepFor`].
    sleep: Option<Duration>,
}

impl<H: PaxosHighWaterHost> Shell<H> {
    fn now(&self) -> Duration {
        self.clock.now()
    }

    fn engine(&self) -> MutexGuard<'_, Engine> {
        self.engine.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks the engine at the current time. The clock is read under the
    /// engine's lock: the reading is then never older than the state it is
    /// compared with.
    fn decide<R>(&self, ask: impl FnOnce(&Engine, Duration) -> R) -> R {
        let engine = self.engine();
        let now = self.now();
        ask(&engine, now)
    }

    /// Steps the engine at the current time, read under its lock, and
    /// carries out what it returns.
    fn step_now(&self, event: Event) -> Followup {
        let actions = {
            let mut engine = self.engine();
            let now = self.now();
            engine.step(now, event)
        };
        self.carry_out(actions)
    }

    /// Passes `result` on, telling the engine when it is `NotLeader` or
    /// `Fenced` ([`Event::AnsweredNotLeader`]): the server steps down on
    /// those, and fences again only on a new leadership event.
    fn answered<T>(&self, result: Result<T, ConsensusError>) -> Result<T, ConsensusError> {
        if matches!(
            result,
            Err(ConsensusError::NotLeader { .. } | ConsensusError::Fenced { .. })
        ) {
            self.step_now(Event::AnsweredNotLeader);
        }
        result
    }

    /// Carries out the engine's actions, in order, outside its lock.
    fn carry_out(&self, actions: Vec<Action>) -> Followup {
        let mut followup = Followup::default();
        for action in actions {
            match action {
                Action::ReportConfigurationEnded => {
                    // The node stays up but serves nothing, and only an
                    // operator can act: this high-water is final.
                    let mut high_water = 0;
                    self.host
                        .read_state(&mut |state| high_water = state.high_water());
                    tracing::error!(high_water, "{}", RuntimeError::ConfigurationEnded);
                }
                Action::WarnObservationRefused(err) => {
                    tracing::warn!(%err, "leadership observation refused; no leader known");
                }
                Action::Publish(state) => {
                    tracing::info!(?state, "leadership changed");
                    let to = match &state {
                        LeaderState::Leader { .. } => "leader",
                        LeaderState::Follower { .. } => "follower",
                        _ => "unknown",
                    };
                    metrics::counter!(tsoracle_paxos_metrics::LEADERSHIP_CHANGES, "to" => to)
                        .increment(1);
                    self.events.send_replace(state);
                }
                Action::WarnLeaseLapsed { epoch } => {
                    metrics::counter!(tsoracle_paxos_metrics::LEASE_LAPSES).increment(1);
                    tracing::warn!(
                        ?epoch,
                        "stopped serving as leader: the lease ran out before a majority granted \
                         a new round (this node stalled for about a lease, or cannot reach a \
                         quorum)"
                    );
                }
                Action::WakeLeadershipTask => self.wake.notify_one(),
                Action::SleepFor(sleep) => followup.sleep = Some(sleep),
            }
        }
        followup
    }
}

impl<H: PaxosHighWaterHost> ReplyGate for Shell<H> {
    fn check(&self, epoch: Epoch) -> Result<(), NotServing> {
        let checked = self.decide(|engine, now| engine.check_reply(now, epoch));
        if checked.is_err() {
            metrics::counter!(tsoracle_paxos_metrics::REPLIES_GATED).increment(1);
        }
        checked
    }
}
