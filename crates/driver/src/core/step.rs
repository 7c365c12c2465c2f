//! The leadership engine: events in, actions out.
//!
//! [`Engine`] holds every leadership decision the driver takes from its own
//! state: the lease ([`LeaseTracker`]), the published leadership stream
//! ([`LeaderEvents`]), and whether the node was shut down, lost its host's leadership watch, or saw its
//! configuration end. It is plain data: the async driver keeps it behind
//! one lock, reads its clock, and hands both to the engine.
//!
//! Two kinds of calls (openraft's Engine/Core split is the model: the
//! engine decides, the shell carries out):
//!
//! - [`Engine::step`]`(now, event)` for what changes state: the leadership
//!   task woke and read the host's view ([`Event::Observed`]), a caller was
//!   refused, the host or the driver stopped. It returns the [`Action`]s the
//!   shell must carry out, in order: publish a leadership state, log a
//!   lapsed lease, wake the leadership task, sleep until the next lease
//!   event.
//! - Queries (`&self`, with `now`) for what a caller is answered: the role
//!   ([`Engine::role`]), whether a write may be proposed
//!   ([`Engine::admit_write`]), whether an applied write is acknowledged
//!   ([`Engine::acknowledge`]), whether a waiting write's term is lost
//!   ([`Engine::leads_under`]), whether a reply may leave
//!   ([`Engine::check_reply`]).
//!
//! The shell keeps only what needs a runtime: the clock reading, the lock,
//! the watch channel, timers, tasks and the host's futures.

use std::collections::BTreeMap;
use std::time::Duration;

use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::util::NodeId;
use tsoracle_consensus::{ConsensusError, LeaderState};
use tsoracle_core::{Epoch, PeerEndpoint};

use crate::core::events::LeaderEvents;
use crate::core::fence;
use crate::core::gate::{NotServing, reply_admitted};
use crate::core::lease::{LeaderView, LeaseTracker};
use crate::core::role::{Role, Term};
use crate::core::timing::Timing;
use crate::error::{ConfigError, RuntimeError};

/// Something that happened, as the engine learns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The leadership task woke (the host's view changed, a caller was
    /// refused, or its timer ran out) and read the host's current view (the
    /// runner's lease included).
    Observed(LeaderView),
    /// The host's leadership watch closed: the node claims no role from now
    /// on.
    HostGone,
    /// The driver answered a caller `NotLeader` or `Fenced`. A server steps
    /// down on that answer and fences again only on its next leadership
    /// event; if this node still (or again) leads under the published epoch
    /// when it next observes, that epoch is published once more, or the
    /// server would never serve again (a lease that lapsed and was renewed
    /// between two observations changes nothing the stream shows).
    AnsweredNotLeader,
    /// The driver is shutting down: the node claims no role from now on.
    Shutdown,
    /// This node hands its leadership over: it stops serving under its
    /// ballot for good, *before* the runner tells the grantors to drop their
    /// holds (so the successor may serve at once). Publishes `Unknown`.
    HandOver,
    /// The host refused the hand-over of `ballot` with nothing released:
    /// this node may serve under it again.
    HandOverRefused {
        /// The ballot [`Event::HandOver`] gave up.
        ballot: Ballot,
    },
}

/// What the shell must do, in the order given.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// A StopSign ended the configuration (reported once per start): read
    /// the final high-water and log, at `ERROR`,
    /// [`RuntimeError::ConfigurationEnded`] with it.
    ReportConfigurationEnded,
    /// The host's view was refused (a ballot the epoch codec cannot encode):
    /// log it at `WARN`. The engine then knows no leader.
    WarnObservationRefused(ConfigError),
    /// Publish this state on the leadership stream (and log it).
    Publish(LeaderState),
    /// The lease under `epoch` ran out while this node still led: log it at
    /// `WARN` (clients see errors until a majority grants a new round or a
    /// new leader serves).
    WarnLeaseLapsed {
        /// The epoch this node stopped serving under.
        epoch: Epoch,
    },
    /// Wake the leadership task now: a caller was refused while this node
    /// published itself leader, so the role must be looked at again.
    WakeLeadershipTask,
    /// Sleep until the host's view changes, the task is woken, or this long
    /// has passed, then step [`Event::Observed`] again.
    SleepFor(Duration),
}

/// The leadership decisions of one driver; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct Engine {
    lease: LeaseTracker,
    events: LeaderEvents,
    /// Each member's client endpoint, for the reply gate's leader hint.
    endpoints: BTreeMap<NodeId, PeerEndpoint>,
    stop_margin: Duration,
    tick: Duration,
    host_gone: bool,
    shut_down: bool,
    /// A StopSign ended the configuration: every call then fails with
    /// [`RuntimeError::ConfigurationEnded`], which tells the operator what
    /// to do (a `NotLeader` would only send clients from node to node).
    ended: bool,
    /// The leader epoch published when a caller was answered `NotLeader`
    /// or `Fenced` ([`Event::AnsweredNotLeader`]): republished at the next
    /// observation if this node then still leads under it.
    republish: Option<Epoch>,
}

impl Engine {
    /// An engine for node `me` that knows no leader and has published
    /// [`LeaderState::Unknown`]. It stops reporting `Leader` `stop_margin`
    /// before the lease ends, wakes at least every `timing.tick`, and names
    /// each node's client endpoint from `endpoints`.
    ///
    /// # Errors
    ///
    /// As [`LeaseTracker::new`]. The stop margin is checked by
    /// `DriverConfig::validate`.
    pub fn new(
        me: NodeId,
        timing: &Timing,
        stop_margin: Duration,
        endpoints: BTreeMap<NodeId, PeerEndpoint>,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            lease: LeaseTracker::new(me, timing)?,
            events: LeaderEvents::new(endpoints.clone()),
            endpoints,
            stop_margin,
            tick: timing.tick,
            host_gone: false,
            shut_down: false,
            ended: false,
            republish: None,
        })
    }

    /// Learns the client endpoints of a new configuration's members, so a
    /// follower of a member added by a change names its endpoint.
    pub fn learn_endpoints(&mut self, endpoints: &BTreeMap<NodeId, PeerEndpoint>) {
        self.events.learn_endpoints(endpoints);
        self.endpoints.extend(
            endpoints
                .iter()
                .map(|(node, endpoint)| (*node, endpoint.clone())),
        );
    }

    /// Takes `event` at `now` and returns what the shell must do.
    pub fn step(&mut self, now: Duration, event: Event) -> Vec<Action> {
        match event {
            Event::Observed(view) => self.observed(now, view),
            Event::HostGone => {
                self.host_gone = true;
                Vec::new()
            }
            Event::AnsweredNotLeader => match self.events.current() {
                LeaderState::Leader { epoch } => {
                    self.republish = Some(*epoch);
                    vec![Action::WakeLeadershipTask]
                }
                // A server that was told Unknown or Follower already waits
                // for the next change, which will be published.
                _ => Vec::new(),
            },
            Event::Shutdown => {
                self.shut_down = true;
                Vec::new()
            }
            Event::HandOverRefused { ballot } => {
                self.lease.unrelease(ballot);
                vec![Action::WakeLeadershipTask]
            }
            Event::HandOver => {
                self.lease.release();
                self.events
                    .next(&Role::Unknown)
                    .map(Action::Publish)
                    .into_iter()
                    .collect()
            }
        }
    }

    fn observed(&mut self, now: Duration, view: LeaderView) -> Vec<Action> {
        let mut actions = Vec::new();
        if view.configuration_ended && !self.ended {
            // Once per start: the node stays up but serves nothing, and only
            // an operator can act. The host reports the StopSign only once
            // everything before it was applied, so the high-water is final.
            self.ended = true;
            actions.push(Action::ReportConfigurationEnded);
        }
        if let Err(err) = self.lease.observe(view.into()) {
            actions.push(Action::WarnObservationRefused(err));
        }
        let quiet = self.host_gone || self.ended;
        let role = if quiet {
            Role::Unknown
        } else {
            serving_role(&self.lease, now, self.stop_margin)
        };
        let margin_end = self
            .lease
            .lease_expiry()
            .and_then(|until| until.checked_sub(self.stop_margin));
        let wakeup = [self.lease.next_wakeup(now), margin_end]
            .into_iter()
            .flatten()
            .filter(|t| *t > now)
            .min();
        let previous = self.events.current().clone();
        let republish = self.republish.take();
        if let Some(state) = self.events.next(&role) {
            let lapsed = state == LeaderState::Unknown && !quiet;
            actions.push(Action::Publish(state));
            // Operators need to see this at the default log level.
            if lapsed && let LeaderState::Leader { epoch } = previous {
                actions.push(Action::WarnLeaseLapsed { epoch });
            }
        } else if let (Some(epoch), LeaderState::Leader { epoch: current }) = (republish, &previous)
            && epoch == *current
        {
            // Still leading under the epoch a caller was refused under: the
            // same state again, so that the server fences anew.
            actions.push(Action::Publish(previous.clone()));
        }
        // Wake at the next lease event, and at least every tick: a role must
        // flip on time even if no new view arrives.
        let sleep = wakeup.map_or(self.tick, |at| at.saturating_sub(now).min(self.tick));
        actions.push(Action::SleepFor(sleep));
        actions
    }

    /// What this node may claim at `now`: the lease's role with the stop
    /// margin applied, and [`Role::Unknown`] once the driver was shut down,
    /// the host's watch closed, or the configuration ended.
    #[must_use]
    pub fn role(&self, now: Duration) -> Role {
        if self.stopped() || self.ended {
            return Role::Unknown;
        }
        serving_role(&self.lease, now, self.stop_margin)
    }

    /// The lease, for inspection.
    #[must_use]
    pub fn lease(&self) -> &LeaseTracker {
        &self.lease
    }

    /// The last state published ([`Action::Publish`]).
    #[must_use]
    pub fn published(&self) -> &LeaderState {
        self.events.current()
    }

    /// Whether a StopSign ended the configuration.
    #[must_use]
    pub fn ended(&self) -> bool {
        self.ended
    }

    fn stopped(&self) -> bool {
        self.shut_down || self.host_gone
    }

    /// Refuses every call once a StopSign ended the configuration.
    ///
    /// # Errors
    ///
    /// `PermanentDriver` with [`RuntimeError::ConfigurationEnded`], which
    /// says what happened and what to do.
    pub fn check_not_ended(&self) -> Result<(), ConsensusError> {
        if self.ended {
            return Err(RuntimeError::ConfigurationEnded.into());
        }
        Ok(())
    }

    /// The term a write fenced by `caller_epoch` is proposed under, after
    /// the checks every write runs at `now` (the range check first for a
    /// high-water advance, `advance = Some(at_least)`).
    ///
    /// # Errors
    ///
    /// As [`check_not_ended`](Self::check_not_ended), then
    /// [`fence::check_advance`] or [`fence::check_write`] against
    /// [`role`](Self::role).
    pub fn admit_write(
        &self,
        now: Duration,
        caller_epoch: Epoch,
        advance: Option<u64>,
    ) -> Result<Term, ConsensusError> {
        self.check_not_ended()?;
        let role = self.role(now);
        match advance {
            Some(at_least) => fence::check_advance(&role, at_least, caller_epoch)?,
            None => fence::check_write(&role, caller_epoch)?,
        }
        match role {
            Role::Leader(term) => Ok(term),
            // check_write admits leaders only.
            Role::Follower(_) | Role::Unknown => Err(ConsensusError::NotLeader {
                observed: role.leader_epoch(),
            }),
        }
    }

    /// The epoch a read's barrier is proposed with at `now`: the leader
    /// epoch this node knows of.
    #[must_use]
    pub fn barrier_epoch(&self, now: Duration) -> Epoch {
        match self.role(now) {
            Role::Leader(term) | Role::Follower(term) => term.epoch(),
            Role::Unknown => Epoch::ZERO,
        }
    }

    /// Whether this node still serves under `term` at `now`. A write waiting
    /// for its decision is answered [`not_leader`](Self::not_leader) as soon
    /// as this is false: once the lease under its term is gone no answer can
    /// be an acknowledgement any more (the entry may still be decided; a
    /// high-water only rises and a dense block becomes a gap).
    #[must_use]
    pub fn leads_under(&self, now: Duration, term: Term) -> bool {
        matches!(self.role(now), Role::Leader(current) if current == term)
    }

    /// The answer to a write whose term was lost while it waited.
    #[must_use]
    pub fn not_leader(&self, now: Duration) -> ConsensusError {
        ConsensusError::NotLeader {
            observed: self.role(now).leader_epoch(),
        }
    }

    /// Whether a write admitted under `term` for `caller_epoch`, applied
    /// while this node's promise was `promise`, is acknowledged at `now`.
    ///
    /// Only if this node still serves under `term` (lease and stop margin
    /// included) and applied it under `term`'s ballot. A decision can arrive
    /// late: after the lease lapsed, or carried into a newer leader's term
    /// by its prepare phase and learned only when this node rejoins. The
    /// write then took effect, but a caller that acted on its success (a
    /// server that starts serving the window it persisted) could overlap a
    /// newer leader that is already serving; `NotLeader` (or `Fenced`) tells
    /// it to step down instead.
    ///
    /// Not [`fence::check_write`]: this guards late decisions, not stale
    /// callers, and must hold even where a test removes the epoch fence.
    ///
    /// # Errors
    ///
    /// `Fenced { expected: caller_epoch, current }` when this node leads
    /// under another term now; `NotLeader` with the leader epoch this node
    /// knows of otherwise.
    pub fn acknowledge(
        &self,
        now: Duration,
        term: Term,
        caller_epoch: Epoch,
        promise: Ballot,
    ) -> Result<(), ConsensusError> {
        match self.role(now) {
            Role::Leader(current) if current == term && promise == term.ballot() => Ok(()),
            Role::Leader(current) if current != term => Err(ConsensusError::Fenced {
                expected: caller_epoch,
                current: current.epoch(),
            }),
            role => Err(ConsensusError::NotLeader {
                observed: role.leader_epoch(),
            }),
        }
    }

    /// Whether a reply produced under `epoch` may leave at `now`
    /// ([`reply_admitted`]: the lease, without the stop margin, says this
    /// node leads under exactly that epoch; never after a shutdown, a closed
    /// host watch or an ended configuration). Read `now` while holding the
    /// engine, so the reading is never older than the lease it is compared
    /// with.
    ///
    /// # Errors
    ///
    /// [`NotServing`] with the leader the lease names: the follower's leader
    /// and its endpoint, or this node's own epoch when it leads under
    /// another.
    pub fn check_reply(&self, now: Duration, epoch: Epoch) -> Result<(), NotServing> {
        let claims = !self.stopped() && !self.ended;
        if claims && reply_admitted(&self.lease, now, epoch) {
            return Ok(());
        }
        let role = self.lease.role(now);
        let leader_endpoint = match role {
            Role::Follower(term) => self.endpoints.get(&term.leader()).cloned(),
            Role::Leader(_) | Role::Unknown => None,
        };
        Err(NotServing {
            leader_endpoint,
            leader_epoch: role.leader_epoch(),
        })
    }
}

/// `Leader` only while the lease still holds `stop_margin` from now.
fn serving_role(lease: &LeaseTracker, now: Duration, stop_margin: Duration) -> Role {
    match lease.role(now) {
        Role::Leader(term) if lease.role(now.saturating_add(stop_margin)).is_leader() => {
            Role::Leader(term)
        }
        Role::Leader(_) => Role::Unknown,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use tsoracle_paxos_epoch::EpochError;

    use super::*;
    use crate::core::timing::tests::sample;

    // sample(): tick 10 ms; every engine here has a 10 ms stop margin. The
    // runner's lease is given as `lease_until` in each view.

    const ME: NodeId = 1;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn us(v: u64) -> Duration {
        Duration::from_micros(v)
    }

    fn b(n: u32, pid: NodeId) -> Ballot {
        Ballot::with(1, n, 0, pid)
    }

    fn term(ballot: Ballot) -> Term {
        Term::new(ballot).unwrap()
    }

    fn endpoint(node: NodeId) -> PeerEndpoint {
        PeerEndpoint::try_from(format!("client-{node}:{}", 7000 + node)).unwrap()
    }

    fn engine() -> Engine {
        let endpoints = (1..=3).map(|node| (node, endpoint(node))).collect();
        Engine::new(ME, &sample(), ms(10), endpoints).unwrap()
    }

    fn leading(promise: Ballot) -> LeaderView {
        leased(promise, None)
    }

    /// Accept-phase leader under `promise`, the runner's lease until `until`.
    fn leased(promise: Ballot, until: Option<Duration>) -> LeaderView {
        LeaderView {
            promise,
            leader: Some((promise.pid, true)),
            lease_until: until,
            configuration_ended: false,
        }
    }

    fn following(promise: Ballot) -> LeaderView {
        LeaderView {
            promise,
            leader: Some((promise.pid, false)),
            lease_until: None,
            configuration_ended: false,
        }
    }

    /// Node 1 leading under `ballot`, its lease granted until 139.2 ms,
    /// published at 80 ms (serving until 129.2 ms).
    fn serving(ballot: Ballot) -> Engine {
        let mut e = engine();
        assert_eq!(
            e.step(ms(0), Event::Observed(leading(ballot))),
            [Action::SleepFor(ms(10))]
        );
        let epoch = term(ballot).epoch();
        assert_eq!(
            e.step(ms(80), Event::Observed(leased(ballot, Some(us(139_200))))),
            [
                Action::Publish(LeaderState::Leader { epoch }),
                Action::SleepFor(ms(10)),
            ]
        );
        e
    }

    #[test]
    fn a_new_leader_publishes_nothing_before_a_majority_granted_its_lease() {
        let mut e = engine();
        let b1 = b(2, ME);
        assert_eq!(
            e.step(ms(0), Event::Observed(leading(b1))),
            [Action::SleepFor(ms(10))]
        );
        assert_eq!(e.published(), &LeaderState::Unknown);
        assert_eq!(e.role(ms(1)), Role::Unknown);
        // Granted at once: no wait after the election.
        let epoch = term(b1).epoch();
        assert_eq!(
            e.step(ms(2), Event::Observed(leased(b1, Some(ms(81))))),
            [
                Action::Publish(LeaderState::Leader { epoch }),
                Action::SleepFor(ms(10)),
            ]
        );
        // Nothing changed: nothing published again; the last sleep lands
        // on the end of serving.
        assert_eq!(
            e.step(ms(65), Event::Observed(leased(b1, Some(ms(81))))),
            [Action::SleepFor(ms(6))]
        );
    }

    #[test]
    fn a_lease_that_runs_out_publishes_unknown_and_warns() {
        let b1 = b(2, ME);
        let mut e = serving(b1);
        let epoch = term(b1).epoch();
        // No round granted after the one that runs until 139.2 ms (a
        // cut-off leader): the wake lands exactly on the end of serving
        // (lease end minus the stop margin).
        assert_eq!(
            e.step(ms(120), Event::Observed(leading(b1))),
            [Action::SleepFor(us(9_200))]
        );
        assert!(e.leads_under(us(129_199), term(b1)));
        assert_eq!(
            e.step(us(129_200), Event::Observed(leading(b1))),
            [
                Action::Publish(LeaderState::Unknown),
                Action::WarnLeaseLapsed { epoch },
                Action::SleepFor(ms(10)),
            ]
        );
        assert_eq!(e.published(), &LeaderState::Unknown);
    }

    /// Seed 349936: a paused leader resumes after its lease ran out, a
    /// write is refused (the server steps down on it), and a round granted
    /// at the same instant restores the lease before the leadership task
    /// looks. The stream would show nothing new, and the server, waiting for
    /// a leadership event to fence again, would never serve: the epoch is
    /// published once more.
    #[test]
    fn a_refusal_under_a_lease_renewed_before_the_next_look_republishes_the_leader() {
        let b1 = b(2, ME);
        let mut e = serving(b1);
        let epoch = term(b1).epoch();
        let leader = LeaderState::Leader { epoch };
        // Paused from 90 ms to 300 ms: the lease (serving until 129.2 ms)
        // ran out meanwhile.
        assert!(matches!(
            e.admit_write(ms(300), epoch, Some(1)),
            Err(ConsensusError::NotLeader { observed: None })
        ));
        assert_eq!(
            e.step(ms(300), Event::AnsweredNotLeader),
            [Action::WakeLeadershipTask]
        );
        // A round sent at 300 ms is granted at once.
        let renewed = leased(b1, Some(us(379_200)));
        assert_eq!(
            e.step(ms(300), Event::Observed(renewed)),
            [Action::Publish(leader.clone()), Action::SleepFor(ms(10))]
        );
        assert!(e.leads_under(ms(300), term(b1)));
        // Once: the next look publishes nothing.
        assert_eq!(
            e.step(ms(305), Event::Observed(renewed)),
            [Action::SleepFor(ms(10))]
        );
        // A refusal while the published state is not a leader is a change
        // the server already waits on.
        let mut e = engine();
        assert_eq!(e.step(ms(1), Event::AnsweredNotLeader), []);
        // And a lapse the task does see is published as it always was.
        let mut e = serving(b1);
        assert_eq!(
            e.step(ms(90), Event::AnsweredNotLeader),
            [Action::WakeLeadershipTask]
        );
        assert_eq!(
            e.step(ms(300), Event::Observed(leading(b1))),
            [
                Action::Publish(LeaderState::Unknown),
                Action::WarnLeaseLapsed { epoch },
                Action::SleepFor(ms(10)),
            ]
        );
    }

    #[test]
    fn a_hand_over_stops_serving_at_once_and_for_good() {
        let b1 = b(2, ME);
        let epoch = term(b1).epoch();
        let mut e = serving(b1);
        assert_eq!(
            e.step(ms(85), Event::HandOver),
            [Action::Publish(LeaderState::Unknown)]
        );
        assert_eq!(e.role(ms(85)), Role::Unknown);
        assert!(e.check_reply(ms(85), epoch).is_err());
        assert!(e.admit_write(ms(85), epoch, None).is_err());
        // The runner may still report the lease for a moment: no warning,
        // nothing published, no leader.
        assert_eq!(
            e.step(ms(86), Event::Observed(leased(b1, Some(us(139_200))))),
            [Action::SleepFor(ms(10))]
        );
        assert_eq!(e.role(ms(86)), Role::Unknown);
        // Not leading: nothing to publish.
        assert_eq!(engine().step(ms(0), Event::HandOver), []);
    }

    #[test]
    fn losing_the_ballot_publishes_the_follower_without_a_warning() {
        let mut e = serving(b(2, ME));
        let theirs = b(3, 2);
        assert_eq!(
            e.step(ms(100), Event::Observed(following(theirs))),
            [
                Action::Publish(LeaderState::Follower {
                    leader_endpoint: Some(endpoint(2)),
                    leader_epoch: Some(term(theirs).epoch()),
                }),
                Action::SleepFor(ms(10)),
            ]
        );
        assert_eq!(e.role(ms(100)), Role::Follower(term(theirs)));
    }

    #[test]
    fn an_ended_configuration_is_reported_once_and_serves_nothing() {
        let b1 = b(2, ME);
        let mut e = serving(b1);
        let ended = LeaderView {
            configuration_ended: true,
            ..leased(b1, Some(us(139_200)))
        };
        // No lapse warning, though the lease still runs.
        assert_eq!(
            e.step(ms(95), Event::Observed(ended)),
            [
                Action::ReportConfigurationEnded,
                Action::Publish(LeaderState::Unknown),
                Action::SleepFor(ms(10)),
            ]
        );
        assert_eq!(
            e.step(ms(96), Event::Observed(ended)),
            [Action::SleepFor(ms(10))]
        );
        assert!(e.ended());
        assert_eq!(e.role(ms(96)), Role::Unknown);
        let epoch = term(b1).epoch();
        for refused in [
            e.check_not_ended(),
            e.admit_write(ms(96), epoch, None).map(|_| ()),
        ] {
            match refused {
                Err(ConsensusError::PermanentDriver(err)) => {
                    assert!(err.to_string().contains("Restore"), "{err}");
                }
                other => panic!("expected PermanentDriver, got {other:?}"),
            }
        }
        assert!(e.check_reply(ms(96), epoch).is_err());
    }

    #[test]
    fn a_closed_host_watch_publishes_unknown_without_a_warning() {
        let b1 = b(2, ME);
        let mut e = serving(b1);
        assert_eq!(e.step(ms(95), Event::HostGone), []);
        assert_eq!(e.role(ms(95)), Role::Unknown);
        assert_eq!(
            e.step(ms(95), Event::Observed(leased(b1, Some(us(139_200))))),
            [
                Action::Publish(LeaderState::Unknown),
                Action::SleepFor(ms(10))
            ]
        );
        assert_eq!(
            e.step(ms(200), Event::Observed(leased(b1, Some(ms(300))))),
            [Action::SleepFor(ms(10))]
        );
        assert!(!e.leads_under(ms(95), term(b1)));
    }

    #[test]
    fn an_unencodable_ballot_is_refused_with_a_warning() {
        let mut e = engine();
        let pid = u64::from(u32::MAX) + 1;
        assert_eq!(
            e.step(ms(0), Event::Observed(leading(b(2, pid)))),
            [
                Action::WarnObservationRefused(ConfigError::Epoch(EpochError::PidOutOfRange {
                    pid
                })),
                Action::SleepFor(ms(10)),
            ]
        );
        assert_eq!(e.role(ms(0)), Role::Unknown);
    }

    #[test]
    fn writes_are_admitted_only_by_the_serving_leader_under_its_epoch() {
        let b1 = b(2, ME);
        let epoch = term(b1).epoch();
        let mut e = engine();
        assert!(matches!(
            e.admit_write(ms(0), epoch, None),
            Err(ConsensusError::NotLeader { observed: None })
        ));
        e = serving(b1);
        assert_eq!(e.admit_write(ms(85), epoch, None).ok(), Some(term(b1)));
        assert_eq!(e.admit_write(ms(85), epoch, Some(7)).ok(), Some(term(b1)));
        let stale = term(b(1, ME)).epoch();
        assert!(matches!(
            e.admit_write(ms(85), stale, None),
            Err(ConsensusError::Fenced { expected, current })
                if expected == stale && current == epoch
        ));
        // The range check comes first, whatever the epoch.
        assert!(matches!(
            e.admit_write(ms(85), stale, Some(u64::MAX)),
            Err(ConsensusError::AdvanceOutOfRange(_))
        ));
        let theirs = b(3, 2);
        e.step(ms(90), Event::Observed(following(theirs)));
        assert!(matches!(
            e.admit_write(ms(90), epoch, None),
            Err(ConsensusError::NotLeader { observed: Some(observed) })
                if observed == term(theirs).epoch()
        ));
    }

    #[test]
    fn an_applied_write_is_acknowledged_only_under_its_term() {
        let b1 = b(2, ME);
        let t1 = term(b1);
        let e = serving(b1);
        assert!(e.acknowledge(ms(85), t1, t1.epoch(), b1).is_ok());
        // Applied under a newer promise: the decision was not this leader's.
        assert!(matches!(
            e.acknowledge(ms(85), t1, t1.epoch(), b(3, 2)),
            Err(ConsensusError::NotLeader { observed: Some(observed) }) if observed == t1.epoch()
        ));
        // Past the end of serving (129.2 ms), though the lease holds.
        assert!(matches!(
            e.acknowledge(us(129_200), t1, t1.epoch(), b1),
            Err(ConsensusError::NotLeader { observed: None })
        ));
        // Leading again, under a higher ballot: fenced with the new epoch.
        let b3 = b(4, ME);
        let mut e = serving(b3);
        assert!(matches!(
            e.acknowledge(ms(85), t1, t1.epoch(), b1),
            Err(ConsensusError::Fenced { expected, current })
                if expected == t1.epoch() && current == term(b3).epoch()
        ));
        e.step(ms(85), Event::Shutdown);
        assert!(matches!(
            e.acknowledge(ms(85), term(b3), term(b3).epoch(), b3),
            Err(ConsensusError::NotLeader { observed: None })
        ));
    }

    #[test]
    fn a_waiting_write_is_lost_once_its_term_stops_serving() {
        let b1 = b(2, ME);
        let e = serving(b1);
        assert!(e.leads_under(us(129_199), term(b1)));
        assert!(!e.leads_under(us(129_199), term(b(1, ME))));
        assert!(!e.leads_under(us(129_200), term(b1)));
        assert!(matches!(
            e.not_leader(us(129_200)),
            ConsensusError::NotLeader { observed: None }
        ));
        let mut e = serving(b1);
        e.step(ms(100), Event::Observed(following(b(3, 2))));
        assert!(!e.leads_under(ms(100), term(b1)));
        assert!(matches!(
            e.not_leader(ms(100)),
            ConsensusError::NotLeader { observed: Some(observed) }
                if observed == term(b(3, 2)).epoch()
        ));
    }

    #[test]
    fn a_reply_leaves_under_the_lease_without_the_stop_margin() {
        let b1 = b(2, ME);
        let epoch = term(b1).epoch();
        let mut e = serving(b1);
        assert_eq!(e.check_reply(ms(85), epoch), Ok(()));
        // Past the end of serving, inside the lease: the gate is the
        // server's reaction, taken at the last moment.
        assert_eq!(e.check_reply(ms(130), epoch), Ok(()));
        assert_eq!(
            e.check_reply(us(139_200), epoch),
            Err(NotServing {
                leader_endpoint: None,
                leader_epoch: None,
            })
        );
        let old = term(b(1, ME)).epoch();
        assert_eq!(
            e.check_reply(ms(85), old),
            Err(NotServing {
                leader_endpoint: None,
                leader_epoch: Some(epoch),
            })
        );
        let theirs = b(3, 2);
        e.step(ms(90), Event::Observed(following(theirs)));
        assert_eq!(
            e.check_reply(ms(90), epoch),
            Err(NotServing {
                leader_endpoint: Some(endpoint(2)),
                leader_epoch: Some(term(theirs).epoch()),
            })
        );
        let mut e = serving(b1);
        e.step(ms(85), Event::Shutdown);
        assert_eq!(
            e.check_reply(ms(85), epoch),
            Err(NotServing {
                leader_endpoint: None,
                leader_epoch: Some(epoch),
            })
        );
    }

    #[test]
    fn a_barrier_carries_the_leader_epoch_this_node_knows() {
        let mut e = engine();
        assert_eq!(e.barrier_epoch(ms(0)), Epoch::ZERO);
        let b1 = b(2, ME);
        e = serving(b1);
        assert_eq!(e.barrier_epoch(ms(85)), term(b1).epoch());
        let theirs = b(3, 2);
        e.step(ms(90), Event::Observed(following(theirs)));
        assert_eq!(e.barrier_epoch(ms(90)), term(theirs).epoch());
    }

    #[test]
    fn serving_role_stops_a_margin_before_the_lease_ends() {
        let t = crate::core::timing::Timing {
            tick: ms(5),
            election_ticks: 10,
            lease: ms(40),
            drift: 0.01,
            renew_every: ms(10),
        };
        let b = Ballot::with(1, 2, 0, 1);
        let mut lease = LeaseTracker::new(1, &t).unwrap();
        let margin = ms(10);
        // A lease shorter than the margin: no serving window at all.
        lease.observe(leased(b, Some(ms(9))).into()).unwrap();
        assert_eq!(serving_role(&lease, ms(0), margin), Role::Unknown);
        assert!(lease.role(ms(0)).is_leader());
        // Lease until 69.6 ms: serving until 59.6 ms.
        lease.observe(leased(b, Some(us(69_600))).into()).unwrap();
        assert!(serving_role(&lease, ms(40), margin).is_leader());
        assert!(serving_role(&lease, us(59_599), margin).is_leader());
        assert_eq!(serving_role(&lease, us(59_600), margin), Role::Unknown);
        assert!(lease.role(us(59_600)).is_leader());
    }

    fn view(choice: u8, now: Duration) -> LeaderView {
        match choice {
            0..=14 => leased(b(2, ME), Some(now + ms(u64::from(choice) * 5))),
            15..=29 => leading(b(2, ME)),
            30..=33 => leased(b(5, ME), Some(now + ms(40))),
            34..=36 => following(b(3, 2)),
            37 | 38 => LeaderView {
                promise: Ballot::default(),
                leader: None,
                lease_until: None,
                configuration_ended: false,
            },
            _ => LeaderView {
                configuration_ended: true,
                ..leased(b(5, ME), Some(now + ms(40)))
            },
        }
    }

    fn epoch_of(state: &LeaderState) -> Option<Epoch> {
        match state {
            LeaderState::Leader { epoch } => Some(*epoch),
            LeaderState::Follower { leader_epoch, .. } => *leader_epoch,
            LeaderState::Unknown => None,
        }
    }

    proptest! {
        /// Over any sequence of wake-ups, views and leases: every wake-up
        /// ends in one sleep of at most a tick; published epochs never
        /// decrease and a published `Leader` is the role at that instant; a
        /// lapse warning follows only the `Unknown` that ended a `Leader`;
        /// nothing is claimed after the host's watch closed or the
        /// configuration ended.
        #[test]
        fn the_engine_keeps_its_promises(
            ops in proptest::collection::vec((0u64..40, 0u8..40, 0u8..60), 0..80),
        ) {
            let mut e = engine();
            let mut now = Duration::ZERO;
            let mut highest: Option<Epoch> = None;
            let mut quiet = false;
            for (elapsed, choice, gone) in ops {
                now += ms(elapsed);
                if gone == 0 {
                    quiet = true;
                    prop_assert_eq!(e.step(now, Event::HostGone), Vec::new());
                }
                let view = view(choice, now);
                quiet |= view.configuration_ended;
                let before = e.published().clone();
                let actions = e.step(now, Event::Observed(view));
                let (last, rest) = actions.split_last().unwrap();
                prop_assert!(
                    matches!(last, Action::SleepFor(d) if !d.is_zero() && *d <= ms(10)),
                    "{:?}", actions
                );
                let mut previous = before;
                for action in rest {
                    match action {
                        Action::Publish(state) => {
                            prop_assert_ne!(state, &previous);
                            if let Some(epoch) = epoch_of(state) {
                                prop_assert!(Some(epoch) >= highest);
                                highest = Some(epoch);
                            }
                            if let LeaderState::Leader { epoch } = state {
                                prop_assert!(!quiet);
                                prop_assert_eq!(e.role(now).leader_epoch(), Some(*epoch));
                            }
                            previous = state.clone();
                        }
                        Action::WarnLeaseLapsed { .. } => {
                            prop_assert_eq!(&previous, &LeaderState::Unknown);
                            prop_assert!(!quiet);
                        }
                        Action::ReportConfigurationEnded
                        | Action::WarnObservationRefused(_) => {}
                        Action::WakeLeadershipTask | Action::SleepFor(_) => {
                            prop_assert!(false, "{:?}", actions);
                        }
                    }
                }
                prop_assert_eq!(e.published(), &previous);
                if quiet {
                    prop_assert_eq!(e.role(now), Role::Unknown);
                }
            }
        }
    }
}
