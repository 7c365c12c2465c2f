//! The shell against a host whose leadership, lease and decisions the test
//! sets: granted rounds, the lease lapsing, late decisions, waiting writes,
//! the reply gate, an ended configuration. The decisions themselves are tested as
//! plain functions in `crate::core::step`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::util::NodeId;
use tokio::sync::watch;
use tsoracle_consensus::{ConsensusDriver, ConsensusError, LeaderState};
use tsoracle_core::{PeerEndpoint, SeqKey};
use tsoracle_paxos_state::{ApplyState, Command, Outcome};

use super::{DriverConfig, PaxosDriver};
use crate::core::gate::NotServing;
use crate::core::lease::LeaderView;
use crate::core::role::{Role, Term};
use crate::core::timing::Timing;
use crate::error::ConfigError;
use crate::host::{Applied, HostError, PaxosHighWaterHost, PendingApply, ProposerSlot};
use crate::{Clock, MonotonicClock};

/// A host whose leadership is set by the test, whose runner "grants" a
/// lease round every 5 ms while it is not stalled, and whose commands are
/// "applied" at once, with a chosen promise.
struct FakeHost {
    view: watch::Sender<LeaderView>,
    promise_at_apply: Mutex<Ballot>,
    proposer: ProposerSlot,
    submitted: AtomicU64,
    /// From now on no command is decided and no lease round granted (a
    /// cut-off leader: OmniPaxos takes the entry, no quorum accepts it).
    stalled: AtomicBool,
}

impl FakeHost {
    /// Its lease rounds run until the host is dropped.
    fn new(view: LeaderView, promise_at_apply: Ballot) -> Arc<Self> {
        let host = Arc::new(Self {
            view: watch::channel(view).0,
            promise_at_apply: Mutex::new(promise_at_apply),
            proposer: ProposerSlot::new(1),
            submitted: AtomicU64::new(0),
            stalled: AtomicBool::new(false),
        });
        tokio::spawn(grant_rounds(Arc::downgrade(&host)));
        host
    }
}

/// A round sent now and granted at once, every 5 ms, while the host leads
/// and is not stalled: the lease the runner would report.
async fn grant_rounds(host: Weak<FakeHost>) {
    let clock = MonotonicClock::new();
    let validity = timing().leader_lease_validity();
    loop {
        let Some(host) = host.upgrade() else {
            return;
        };
        if !host.stalled.load(Ordering::SeqCst) {
            let until = clock.now() + validity;
            host.view.send_modify(|view| {
                if view.leader == Some((1, true)) && view.promise.pid == 1 {
                    view.lease_until = Some(until);
                }
            });
        }
        drop(host);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

impl PaxosHighWaterHost for FakeHost {
    fn node_id(&self) -> NodeId {
        1
    }
    fn claim_proposer(&self) -> Option<u64> {
        self.proposer.claim()
    }
    fn members(&self) -> Vec<NodeId> {
        vec![1, 2, 3]
    }
    fn client_endpoint(&self, node: NodeId) -> Option<PeerEndpoint> {
        PeerEndpoint::try_from(format!("127.0.0.1:{}", 7000 + node)).ok()
    }
    fn leadership(&self) -> watch::Receiver<LeaderView> {
        self.view.subscribe()
    }
    fn submit(&self, command: Command) -> Result<PendingApply, HostError> {
        self.submitted.fetch_add(1, Ordering::SeqCst);
        if self.stalled.load(Ordering::SeqCst) {
            return Ok(Box::pin(std::future::pending()));
        }
        let promise = *self.promise_at_apply.lock().unwrap();
        let outcome = match command {
            Command::Advance { at_least, .. } => Outcome::HighWater(at_least),
            _ => Outcome::Barrier { high_water: 0 },
        };
        Ok(Box::pin(async move { Ok(Applied { outcome, promise }) }))
    }
    fn read_state(&self, read: &mut dyn FnMut(&ApplyState)) {
        read(&ApplyState::new());
    }
}

/// Fast timing for drivers on the real clock (also the config tests').
pub(super) fn timing() -> Timing {
    let ms = Duration::from_millis;
    Timing {
        tick: ms(5),
        election_ticks: 10,
        lease: ms(40),
        drift: 0.01,
        renew_every: ms(10),
    }
}

fn leading(ballot: Ballot) -> LeaderView {
    LeaderView {
        promise: ballot,
        leader: Some((1, true)),
        lease_until: None,
        configuration_ended: false,
    }
}

/// A driver over a host that leads under ballot (1, 2, 0, 1) and decides
/// under it, once the driver leads (within 2 s); and the epoch it leads
/// under.
async fn leading_driver(
    config: DriverConfig,
) -> (Arc<FakeHost>, PaxosDriver<FakeHost>, tsoracle_core::Epoch) {
    let b = Ballot::with(1, 2, 0, 1);
    let host = FakeHost::new(leading(b), b);
    let driver = PaxosDriver::start(Arc::clone(&host), config).unwrap();
    assert!(leads_within(&driver, Duration::from_secs(2)).await);
    (host, driver, Term::new(b).unwrap().epoch())
}

async fn leads_within(driver: &PaxosDriver<FakeHost>, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if driver.role().is_leader() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    false
}

/// The lease is the runner's: an idle leader keeps it for many lease
/// lengths without proposing anything (an idle cluster writes nothing).
#[tokio::test]
async fn granted_rounds_keep_an_idle_leader_without_a_proposal() {
    let (host, driver, _) = leading_driver(DriverConfig::new(timing())).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(driver.role().is_leader());
    assert_eq!(host.submitted.load(Ordering::SeqCst), 0);
    driver.shutdown().await;
    assert_eq!(driver.role(), Role::Unknown);
}

/// Elected, but no round granted (a leader whose grantors still hold
/// another ballot): no leader, however long, and no write admitted.
#[tokio::test]
async fn an_elected_node_without_a_granted_round_never_leads() {
    let b = Ballot::with(1, 2, 0, 1);
    let host = FakeHost::new(leading(b), b);
    host.stalled.store(true, Ordering::SeqCst);
    let driver = PaxosDriver::start(Arc::clone(&host), DriverConfig::new(timing())).unwrap();
    assert!(!leads_within(&driver, Duration::from_millis(300)).await);
    let epoch = Term::new(b).unwrap().epoch();
    assert!(matches!(
        driver.persist_high_water(7, epoch).await,
        Err(ConsensusError::NotLeader { .. })
    ));
    driver.shutdown().await;
}

#[tokio::test]
async fn the_lease_lapses_a_stop_margin_early_and_the_stream_follows() {
    let b = Ballot::with(1, 2, 0, 1);
    let host = FakeHost::new(leading(b), b);
    let driver = PaxosDriver::start(Arc::clone(&host), DriverConfig::new(timing())).unwrap();
    let mut events = driver.watch_leadership();
    assert!(leads_within(&driver, Duration::from_secs(2)).await);
    events
        .wait_for(|s| matches!(s, LeaderState::Leader { .. }))
        .await
        .unwrap();
    // No round is granted any more: the lease runs out.
    host.stalled.store(true, Ordering::SeqCst);
    let lost_at = Instant::now();
    tokio::time::timeout(
        Duration::from_secs(2),
        events.wait_for(|s| *s == LeaderState::Unknown),
    )
    .await
    .unwrap()
    .unwrap();
    // At most lease × (1 − drift) − stop_margin after the last granted
    // round (plus scheduling slack).
    assert!(lost_at.elapsed() < Duration::from_millis(200));
    assert!(!driver.role().is_leader());
    driver.shutdown().await;
}

/// A write decided under another ballot (carried into a newer leader's
/// term, say) took effect, but this node no longer leads: acknowledging
/// it would let a server serve beside the newer leader.
#[tokio::test]
async fn a_write_decided_after_leadership_moved_is_not_acknowledged() {
    let (host, driver, epoch) = leading_driver(DriverConfig::new(timing())).await;
    assert_eq!(driver.persist_high_water(7, epoch).await.unwrap(), 7);
    // From now on every command is applied while this node has promised
    // a newer ballot: the lease still holds for a while, but the
    // decision was not this leader's.
    *host.promise_at_apply.lock().unwrap() = Ballot::with(1, 3, 0, 2);
    let submitted = host.submitted.load(Ordering::SeqCst);
    match driver.persist_high_water(9, epoch).await {
        Err(ConsensusError::NotLeader { .. }) => {}
        other => panic!("expected NotLeader, got {other:?}"),
    }
    assert!(
        host.submitted.load(Ordering::SeqCst) > submitted,
        "nothing was proposed"
    );
    driver.shutdown().await;
}

/// A write waiting for a decision when the lease lapses is answered at
/// once, not at the request deadline.
#[tokio::test]
async fn a_write_waiting_when_the_lease_lapses_is_answered_at_once() {
    let mut config = DriverConfig::new(timing());
    config.request_timeout = Duration::from_secs(600);
    let (host, driver, epoch) = leading_driver(config).await;
    // Cut off: neither the write is decided nor a round granted from now on.
    host.stalled.store(true, Ordering::SeqCst);
    let answered =
        tokio::time::timeout(Duration::from_secs(60), driver.persist_high_water(9, epoch))
            .await
            .expect("the write hung although the lease lapsed");
    match answered {
        Err(ConsensusError::NotLeader { .. }) => {}
        other => panic!("expected NotLeader, got {other:?}"),
    }
    assert!(!driver.role().is_leader());
    driver.shutdown().await;
}

/// The reply gate admits replies of the epoch this node leads under,
/// and refuses them once the lease lapsed, naming no leader.
#[tokio::test]
async fn the_reply_gate_follows_the_lease() {
    let (host, driver, epoch) = leading_driver(DriverConfig::new(timing())).await;
    let gate = driver.reply_gate();
    assert_eq!(gate.check(epoch), Ok(()));
    let other = Term::new(Ballot::with(1, 1, 0, 1)).unwrap().epoch();
    assert_eq!(
        gate.check(other),
        Err(NotServing {
            leader_endpoint: None,
            leader_epoch: Some(epoch),
        })
    );
    host.stalled.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(10);
    while gate.check(epoch).is_ok() {
        assert!(Instant::now() < deadline, "the gate outlived the lease");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(!driver.role().is_leader());
    driver.shutdown().await;
    assert!(gate.check(epoch).is_err());
}

/// A StopSign that ended the configuration turns a leader into a node
/// that serves nothing and answers every call with the permanent error
/// that tells the operator what happened, without proposing anything.
#[tokio::test]
async fn an_ended_configuration_fails_every_call_permanently_and_says_why() {
    let b = Ballot::with(1, 2, 0, 1);
    let host = FakeHost::new(leading(b), b);
    let driver = PaxosDriver::start(Arc::clone(&host), DriverConfig::new(timing())).unwrap();
    let mut events = driver.watch_leadership();
    assert!(leads_within(&driver, Duration::from_secs(2)).await);
    events
        .wait_for(|s| matches!(s, LeaderState::Leader { .. }))
        .await
        .unwrap();
    host.view
        .send_modify(|view| view.configuration_ended = true);
    tokio::time::timeout(
        Duration::from_secs(2),
        events.wait_for(|s| *s == LeaderState::Unknown),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(driver.role(), Role::Unknown);
    let submitted = host.submitted.load(Ordering::SeqCst);
    let epoch = Term::new(b).unwrap().epoch();
    let key = SeqKey::try_new("k").unwrap();
    let errors = [
        driver.persist_high_water(7, epoch).await.map(|_| ()),
        driver.load_high_water().await.map(|_| ()),
        driver.advance_dense(&key, 1, epoch).await.map(|_| ()),
        driver.load_dense_seq(&key).await.map(|_| ()),
        driver.persist_leases(&[], epoch).await,
        driver.load_leases().await.map(|_| ()),
    ];
    for result in errors {
        match result {
            Err(ConsensusError::PermanentDriver(err)) => {
                let message = err.to_string();
                assert!(message.contains("names no agreed change"), "{message}");
                assert!(message.contains("Restore"), "{message}");
            }
            other => panic!("expected PermanentDriver, got {other:?}"),
        }
    }
    assert_eq!(
        host.submitted.load(Ordering::SeqCst),
        submitted,
        "a call was proposed after the configuration ended"
    );
    driver.shutdown().await;
}

#[tokio::test]
async fn a_second_driver_on_one_host_start_is_refused() {
    let b = Ballot::with(1, 2, 0, 1);
    let host = FakeHost::new(leading(b), b);
    let first = PaxosDriver::start(Arc::clone(&host), DriverConfig::new(timing())).unwrap();
    let second = PaxosDriver::start(Arc::clone(&host), DriverConfig::new(timing()));
    assert!(matches!(second, Err(ConfigError::ProposerClaimed)));
    first.shutdown().await;
}

/// A host that refuses the hand-over (this fake keeps the trait's default:
/// nothing released) leaves the node serving: a refused hand-over must not
/// leave the cluster with a leader that serves nothing.
#[tokio::test]
async fn a_refused_hand_over_serves_again() {
    let (_host, driver, epoch) = leading_driver(DriverConfig::new(timing())).await;
    match driver.hand_over(None, Duration::from_secs(1)).await {
        Err(super::HandOverError::Host(HostError::Unavailable(_))) => {}
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(leads_within(&driver, Duration::from_secs(2)).await);
    assert_eq!(driver.persist_high_water(3, epoch).await.unwrap(), 3);
    // A successor that is not a member is refused before anything changes.
    assert!(matches!(
        driver.hand_over(Some(9), Duration::from_secs(1)).await,
        Err(super::HandOverError::NotAMember(9))
    ));
    assert!(driver.role().is_leader());
    driver.shutdown().await;
}
