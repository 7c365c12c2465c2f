//! The leadership engine: events in, actions out.
//!
//! [`Engine`] holds every leadership decision the driver takes from its own
//! state: the lease ([`LeaseTracker`]), the published leadership stream
//! ([`LeaderEvents`]), the single in-flight renewal, and whether the node
//! was shut down, lost its host's leadership watch, or saw its
//! configuration end. It is plain data: the async driver keeps it behind
//! one lock, reads its clock, and hands both to the engine.
//!
//! Two kinds of calls (openraft's Engine/Core split is the model: the
//! engine decides, the shell carries out):
//!
//! - [`Engine::step`]`(now, event)` for what changes state: the leadership
//!   task woke and read the host's view ([`Event::Observed`]), a proposal was
//!   handed over or applied, the renewal finished, the host or the driver
//!   stopped. It returns the [`Action`]s the shell must carry out, in order:
//!   publish a leadership state, log a lapsed lease, propose a renewal
//!   barrier, wake the leadership task, sleep until the next lease event.
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
    /// The leadership task woke (the host's view changed, a decision renewed
    /// the lease, a renewal finished, or its timer ran out) and read the
    /// host's current view. Step it with `now` read *after* the view, never
    /// before: the new-leader wait runs from the first observation.
    Observed(LeaderView),
    /// The host's leadership watch closed: the node claims no role from now
    /// on and renews nothing.
    HostGone,
    /// The renewal barrier of the last [`Action::ProposeRenewal`] finished
    /// (decided, refused or timed out): another one may be proposed.
    RenewalDone,
    /// This node handed an entry to the host at `now`, leading under
    /// `ballot`. Times the next renewal; the lease waits for the decision.
    Proposed {
        /// The ballot this node led under when it proposed.
        ballot: Ballot,
    },
    /// An entry this node proposed at `proposed_at` under `ballot` was
    /// applied by this node while its promise was `promise`.
    Applied {
        /// The ballot this node led under when it proposed.
        ballot: Ballot,
        /// When it was proposed, sampled before it was handed over.
        proposed_at: Duration,
        /// This node's promise when it applied the entry.
        promise: Ballot,
    },
    /// The driver answered a caller `NotLeader` or `Fenced`. A server steps
    /// down on that answer and fences again only on its next leadership
    /// event; if this node still (or again) leads under the published epoch
    /// when it next observes, that epoch is published once more, or the
    /// server would never serve again (a lease that lapsed and was renewed
    /// between two observations changes nothing the stream shows).
    AnsweredNotLeader,
    /// The driver is shutting down: the node claims no role from now on.
    Shutdown,
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
    /// `WARN` (clients see errors until a renewal is decided or a new leader
    /// serves).
    WarnLeaseLapsed {
        /// The epoch this node stopped serving under.
        epoch: Epoch,
    },
    /// Propose a no-op barrier as leader under the term, and step
    /// [`Event::RenewalDone`] once it finished. At most one is in flight.
    ProposeRenewal(Term),
    /// Wake the leadership task now: a decision renewed the lease, so the
    /// role and the next wake time may have changed.
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
    renewal_in_flight: bool,
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
            renewal_in_flight: false,
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
            Event::RenewalDone => {
                self.renewal_in_flight = false;
                Vec::new()
            }
            Event::Proposed { ballot } => {
                self.lease.proposed(now, ballot);
                Vec::new()
            }
            Event::Applied {
                ballot,
                proposed_at,
                promise,
            } => {
                // Ballots only grow: a promise still equal to the proposal's
                // ballot means this node decided the entry under it.
                if promise == ballot && self.lease.decided(proposed_at, ballot) {
                    vec![Action::WakeLeadershipTask]
                } else {
                    Vec::new()
                }
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
        if let Err(err) = self.lease.observe(now, view.into()) {
            actions.push(Action::WarnObservationRefused(err));
        }
        let quiet = self.host_gone || self.ended;
        let role = if quiet {
            Role::Unknown
        } else {
            serving_role(&self.lease, now, self.stop_margin)
        };
        // At most one renewal in flight: an isolated leader (which OmniPaxos
        // keeps calling leader) then appends one barrier per failed attempt
        // (each bounded by the request deadline), not one per `renew_every`.
        let renew = !quiet && !self.renewal_in_flight && self.lease.wants_renewal(now);
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
        // A renewal is wanted only while this node leads, in the accept
        // phase, under the promise just observed: the term always exists.
        if renew && let Ok(term) = Term::new(view.promise) {
            self.renewal_in_flight = true;
            actions.push(Action::ProposeRenewal(term));
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

    /// Whether a renewal barrier is in flight.
    #[must_use]
    pub fn renewal_in_flight(&self) -> bool {
        self.renewal_in_flight
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

    /// The ballot (when this node leads, so that the barrier's decision can
    /// renew the lease) and the epoch a read's barrier is proposed with at
    /// `now`.
    #[must_use]
    pub fn barrier_as(&self, now: Duration) -> (Option<Ballot>, Epoch) {
        match self.role(now) {
            Role::Leader(term) => (Some(term.ballot()), term.epoch()),
            Role::Follower(term) => (None, term.epoch()),
            Role::Unknown => (None, Epoch::ZERO),
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

    // sample(): tick 10 ms, new-leader wait 80.8 ms, lease validity 79.2 ms,
    // renewal every 30 ms; every engine here has a 10 ms stop margin.

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
        LeaderView {
            promise,
            leader: Some((promise.pid, true)),
            configuration_ended: false,
        }
    }

    fn following(promise: Ballot) -> LeaderView {
        LeaderView {
            promise,
            leader: Some((promise.pid, false)),
            configuration_ended: false,
        }
    }

    /// The renewal the shell carries out: handed over and decided at `at`
    /// under `ballot`, then finished.
    fn renewed(e: &mut Engine, at: Duration, ballot: Ballot) {
        assert_eq!(e.step(at, Event::Proposed { ballot }), []);
        let applied = Event::Applied {
            ballot,
            proposed_at: at,
            promise: ballot,
        };
        assert_eq!(e.step(at, applied), [Action::WakeLeadershipTask]);
        assert_eq!(e.step(at, Event::RenewalDone), []);
    }

    /// Node 1 elected under `ballot` at 0, renewing at 0, 30 and 60 ms and
    /// serving from 80.8 ms (lease until 139.2 ms, serving until 129.2 ms).
    fn serving(ballot: Ballot) -> Engine {
        let mut e = engine();
        for at in [0, 30, 60] {
            let actions = e.step(ms(at), Event::Observed(leading(ballot)));
            assert_eq!(actions[0], Action::ProposeRenewal(term(ballot)), "{at}");
            renewed(&mut e, ms(at), ballot);
        }
        let epoch = term(ballot).epoch();
        assert_eq!(
            e.step(us(80_800), Event::Observed(leading(ballot))),
            [
                Action::Publish(LeaderState::Leader { epoch }),
                Action::SleepFor(us(9_200)),
            ]
        );
        e
    }

    #[test]
    fn a_new_leader_proposes_one_renewal_at_once_and_publishes_nothing_yet() {
        let mut e = engine();
        let b1 = b(2, ME);
        assert_eq!(
            e.step(ms(0), Event::Observed(leading(b1))),
            [Action::ProposeRenewal(term(b1)), Action::SleepFor(ms(10))]
        );
        assert!(e.renewal_in_flight());
        // Woken again before the renewal finished: nothing new to do.
        assert_eq!(
            e.step(ms(1), Event::Observed(leading(b1))),
            [Action::SleepFor(ms(10))]
        );
        assert_eq!(e.published(), &LeaderState::Unknown);
        assert_eq!(e.role(ms(1)), Role::Unknown);
    }

    #[test]
    fn a_renewal_is_proposed_again_only_after_the_last_one_finished() {
        let mut e = engine();
        let b1 = b(2, ME);
        e.step(ms(0), Event::Observed(leading(b1)));
        assert_eq!(e.step(ms(0), Event::Proposed { ballot: b1 }), []);
        // Due again at 30 ms, but the first one has not finished.
        assert_eq!(
            e.step(ms(30), Event::Observed(leading(b1))),
            [Action::SleepFor(ms(10))]
        );
        assert_eq!(e.step(ms(31), Event::RenewalDone), []);
        assert!(!e.renewal_in_flight());
        assert_eq!(
            e.step(ms(31), Event::Observed(leading(b1))),
            [Action::ProposeRenewal(term(b1)), Action::SleepFor(ms(10))]
        );
    }

    #[test]
    fn the_leader_is_published_when_the_wait_ends_and_the_task_wakes_for_it() {
        let b1 = b(2, ME);
        let mut e = engine();
        for at in [0, 30, 60] {
            e.step(ms(at), Event::Observed(leading(b1)));
            renewed(&mut e, ms(at), b1);
        }
        // 0.8 ms before the wait ends: sleep exactly until then.
        assert_eq!(
            e.step(ms(80), Event::Observed(leading(b1))),
            [Action::SleepFor(us(800))]
        );
        let mut e = serving(b1);
        assert_eq!(e.role(us(80_800)), Role::Leader(term(b1)));
        // Nothing changed: nothing published again.
        assert_eq!(
            e.step(ms(85), Event::Observed(leading(b1))),
            [Action::SleepFor(ms(5))]
        );
    }

    #[test]
    fn a_lease_that_runs_out_publishes_unknown_and_warns() {
        let b1 = b(2, ME);
        let mut e = serving(b1);
        let epoch = term(b1).epoch();
        // The renewal proposed at 90 ms is never decided (a cut-off leader).
        assert_eq!(
            e.step(ms(90), Event::Observed(leading(b1))),
            [Action::ProposeRenewal(term(b1)), Action::SleepFor(ms(10))]
        );
        assert_eq!(e.step(ms(90), Event::Proposed { ballot: b1 }), []);
        // The next wake lands exactly on the end of serving (lease end minus
        // the stop margin).
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
    /// write is refused (the server steps down on it), and a renewal decided
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
        // A renewal proposed at 300 ms is decided at once.
        renewed(&mut e, ms(300), b1);
        assert!(e.leads_under(ms(300), term(b1)));
        assert_eq!(
            e.step(ms(300), Event::Observed(leading(b1))),
            [Action::Publish(leader.clone()), Action::SleepFor(ms(10))]
        );
        // Once: the next look publishes nothing.
        assert_eq!(
            e.step(ms(305), Event::Observed(leading(b1))),
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
                Action::ProposeRenewal(term(b1)),
                Action::SleepFor(ms(10)),
            ]
        );
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
            ..leading(b1)
        };
        // No lapse warning and no renewal, though one is due.
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
    fn a_closed_host_watch_publishes_unknown_without_a_warning_and_renews_nothing() {
        let b1 = b(2, ME);
        let mut e = serving(b1);
        assert_eq!(e.step(ms(95), Event::HostGone), []);
        assert_eq!(e.role(ms(95)), Role::Unknown);
        assert_eq!(
            e.step(ms(95), Event::Observed(leading(b1))),
            [
                Action::Publish(LeaderState::Unknown),
                Action::SleepFor(ms(10))
            ]
        );
        assert_eq!(
            e.step(ms(200), Event::Observed(leading(b1))),
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
    fn only_a_decision_under_the_proposal_ballot_wakes_the_task() {
        let b1 = b(2, ME);
        let mut e = engine();
        e.step(ms(0), Event::Observed(leading(b1)));
        e.step(ms(0), Event::Proposed { ballot: b1 });
        // Applied while this node had promised a newer ballot: decided by
        // someone else.
        let late = Event::Applied {
            ballot: b1,
            proposed_at: ms(0),
            promise: b(3, 2),
        };
        assert_eq!(e.step(ms(5), late), []);
        assert_eq!(e.lease().lease_expiry(), None);
        let own = Event::Applied {
            ballot: b1,
            proposed_at: ms(0),
            promise: b1,
        };
        assert_eq!(e.step(ms(5), own), [Action::WakeLeadershipTask]);
        assert_eq!(e.lease().lease_expiry(), Some(us(79_200)));
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
    fn a_barrier_renews_only_when_proposed_by_the_serving_leader() {
        let mut e = engine();
        assert_eq!(e.barrier_as(ms(0)), (None, Epoch::ZERO));
        let b1 = b(2, ME);
        e = serving(b1);
        assert_eq!(e.barrier_as(ms(85)), (Some(b1), term(b1).epoch()));
        let theirs = b(3, 2);
        e.step(ms(90), Event::Observed(following(theirs)));
        assert_eq!(e.barrier_as(ms(90)), (None, term(theirs).epoch()));
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
        lease.observe(Duration::ZERO, leading(b).into()).unwrap();
        lease.proposed(Duration::ZERO, b);
        assert!(lease.decided(Duration::ZERO, b));
        let wait = t.new_leader_wait();
        let margin = ms(10);
        // Lease until 39.6 ms, wait until 40.4 ms: no serving window at all.
        assert_eq!(serving_role(&lease, wait, margin), Role::Unknown);
        lease.proposed(ms(30), b);
        assert!(lease.decided(ms(30), b));
        // Lease until 69.6 ms: serving on [40.4, 59.6).
        assert!(serving_role(&lease, wait, margin).is_leader());
        assert!(serving_role(&lease, us(59_599), margin).is_leader());
        assert_eq!(serving_role(&lease, us(59_600), margin), Role::Unknown);
        assert!(lease.role(us(59_600)).is_leader());
    }

    /// One input of the property test below.
    #[derive(Debug, Clone, Copy)]
    enum Op {
        /// Time passes (ms), then the task wakes and observes a view.
        Observe(u64, u8),
        /// The renewal in flight, if any, is handed over.
        Propose,
        /// The last renewal handed over is applied, under its own ballot or
        /// not.
        Apply(bool),
        /// The renewal in flight finishes.
        Done,
        /// The host's watch closes.
        HostGone,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            40 => (0u64..40, 0u8..40).prop_map(|(ms, view)| Op::Observe(ms, view)),
            20 => Just(Op::Propose),
            20 => any::<bool>().prop_map(Op::Apply),
            20 => Just(Op::Done),
            1 => Just(Op::HostGone),
        ]
    }

    fn view(choice: u8) -> LeaderView {
        match choice {
            0..=29 => leading(b(2, ME)),
            30..=33 => leading(b(5, ME)),
            34..=36 => following(b(3, 2)),
            37 | 38 => LeaderView {
                promise: Ballot::default(),
                leader: None,
                configuration_ended: false,
            },
            _ => LeaderView {
                configuration_ended: true,
                ..leading(b(5, ME))
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
        /// Over any sequence of wake-ups, renewals and decisions: at most one
        /// renewal is in flight; every wake-up ends in one sleep of at most a
        /// tick; published epochs never decrease and a published `Leader`
        /// is the role at that instant; a lapse warning follows only the
        /// `Unknown` that ended a `Leader`; nothing is proposed or claimed
        /// after the host's watch closed or the configuration ended.
        #[test]
        fn the_engine_keeps_its_promises(ops in proptest::collection::vec(op(), 0..80)) {
            let mut e = engine();
            let mut now = Duration::ZERO;
            let mut in_flight: Option<Term> = None;
            let mut handed_over: Option<(Ballot, Duration)> = None;
            let mut highest: Option<Epoch> = None;
            let mut quiet = false;
            for op in ops {
                let actions = match op {
                    Op::Observe(elapsed, choice) => {
                        now += ms(elapsed);
                        let view = view(choice);
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
                                Action::ProposeRenewal(term) => {
                                    prop_assert!(in_flight.is_none(), "two renewals in flight");
                                    prop_assert!(!quiet);
                                    in_flight = Some(*term);
                                }
                                Action::ReportConfigurationEnded
                                | Action::WarnObservationRefused(_) => {}
                                Action::WakeLeadershipTask | Action::SleepFor(_) => {
                                    prop_assert!(false, "{:?}", actions);
                                }
                            }
                        }
                        prop_assert_eq!(e.published(), &previous);
                        actions
                    }
                    Op::Propose => match in_flight {
                        Some(term) if handed_over.is_none() => {
                            handed_over = Some((term.ballot(), now));
                            e.step(now, Event::Proposed { ballot: term.ballot() })
                        }
                        _ => Vec::new(),
                    },
                    Op::Apply(own) => match handed_over {
                        Some((ballot, proposed_at)) => {
                            let promise = if own { ballot } else { b(9, 3) };
                            let actions = e.step(now, Event::Applied { ballot, proposed_at, promise });
                            if !own {
                                prop_assert_eq!(&actions, &Vec::new());
                            }
                            actions
                        }
                        None => Vec::new(),
                    },
                    Op::Done => {
                        if in_flight.take().is_some() {
                            handed_over = None;
                            e.step(now, Event::RenewalDone)
                        } else {
                            Vec::new()
                        }
                    }
                    Op::HostGone => {
                        quiet = true;
                        e.step(now, Event::HostGone)
                    }
                };
                prop_assert_eq!(e.renewal_in_flight(), in_flight.is_some());
                if quiet {
                    prop_assert_eq!(e.role(now), Role::Unknown);
                }
                for action in &actions {
                    if matches!(op, Op::Propose | Op::Apply(_) | Op::Done | Op::HostGone) {
                        prop_assert_eq!(action, &Action::WakeLeadershipTask);
                    }
                }
            }
        }
    }
}
